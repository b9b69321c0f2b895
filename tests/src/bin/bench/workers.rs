//! The workers being measured: the release `buildbot` binary started as
//! child processes on a queue of their own, and their memory as the kernel
//! reports it in `/proc/<pid>/status`.

use crate::report::mib;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// Of which anonymous memory: heap, stacks (`RssAnon`).
    pub anon: u64,
    /// Of which file-backed pages, mostly the binary's own code, shared by
    /// every worker started from the same file (`RssFile`).
    pub file: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub peak: u64,
}

impl Memory {
    /// `VmRSS` with its anonymous and file-backed parts.
    pub fn describe_rss(&self) -> String {
        format!(
            "{} ({} anonymous + {} file-backed)",
            mib(self.rss),
            mib(self.anon),
            mib(self.file)
        )
    }
}

/// A running `buildbot worker`, killed when dropped.
pub struct Worker {
    child: Child,
    pid: u32,
}

/// How workers are started.
pub struct Launcher {
    /// The `buildbot` binary (the release build).
    pub binary: PathBuf,
    /// RabbitMQ.
    pub amqp_url: String,
    /// Directory the workers' own logs go to.
    pub log_dir: PathBuf,
    /// The rig's base image, which only the engine has: the jobs build
    /// FROM it, so the workers list it with `--local-image`.
    pub base_image: String,
}

impl Launcher {
    /// Starts one worker on `queue` taking `concurrency` jobs at once. Its
    /// log (the default `info` level, as a user would run it) goes to
    /// `<log_dir>/<name>.log` so it neither clutters the table nor costs a
    /// terminal.
    pub fn start(&self, name: &str, queue: &str, concurrency: u16) -> anyhow::Result<Worker> {
        self.spawn(&self.amqp_url, name, queue, concurrency, &[])
    }

    /// [`Launcher::start`] with more flags (e.g. `--image-cache-bytes`).
    pub fn start_with(
        &self,
        name: &str,
        queue: &str,
        concurrency: u16,
        flags: &[&str],
    ) -> anyhow::Result<Worker> {
        self.spawn(&self.amqp_url, name, queue, concurrency, flags)
    }

    /// [`Launcher::start`] with another AMQP URL (e.g. one setting
    /// connection parameters in its query).
    pub fn start_on(
        &self,
        amqp_url: &str,
        name: &str,
        queue: &str,
        concurrency: u16,
    ) -> anyhow::Result<Worker> {
        self.spawn(amqp_url, name, queue, concurrency, &[])
    }

    fn spawn(
        &self,
        amqp_url: &str,
        name: &str,
        queue: &str,
        concurrency: u16,
        flags: &[&str],
    ) -> anyhow::Result<Worker> {
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .arg("worker")
            .args(["--amqp-url", amqp_url, "--queue", queue])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--worker-id", name])
            .args(["--local-image", &self.base_image])
            .args(flags)
            .env("BUILDBOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        Ok(Worker { child, pid })
    }
}

impl Worker {
    /// Resident and peak memory, from `/proc/<pid>/status`.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// Fails when the process has exited (it should run until dropped).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the worker (pid {}) exited: {status}", self.pid),
        }
    }
}

/// Resident and peak memory of process `pid`, from `/proc/<pid>/status`.
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text).with_context(|| format!("{path} has no VmRSS/VmHWM"))
}

/// `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text (kB values).
fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
        peak: field("VmHWM:")?,
    })
}

/// Size of a file in bytes.
pub fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak_from_proc_status() {
        let text = "Name:\tbuildbot\nVmPeak:\t  900 kB\nVmHWM:\t    8192 kB\n\
                    VmRSS:\t    4096 kB\nRssAnon:\t    1024 kB\nRssFile:\t    3072 kB\n";
        let memory = parse_status(text).expect("both fields");
        assert_eq!(memory.rss, 4096 * 1024);
        assert_eq!(memory.peak, 8192 * 1024);
        assert_eq!((memory.anon, memory.file), (1024 * 1024, 3072 * 1024));
    }
}
