//! The worker under test: the real `buildbot` binary as a child process.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// Path of the `buildbot` binary built from this workspace. `scripts/test`
/// builds it before the tests; `BUILDBOT_BIN` overrides the path.
pub fn worker_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BUILDBOT_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug/buildbot");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p buildbot-worker` (scripts/test does)",
        binary.display()
    );
    binary
}

/// A running `buildbot worker`, killed when dropped.
pub struct WorkerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl WorkerProcess {
    /// Starts `buildbot worker` on `queue` with extra `args`; its log goes
    /// to the test's stderr, so a failing test shows what the worker did,
    /// and is kept for [`WorkerProcess::log`].
    pub fn start(amqp_url: &str, queue: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(amqp_url, queue, args, &[])
    }

    /// [`WorkerProcess::start`] with extra environment variables.
    pub fn start_with_env(
        amqp_url: &str,
        queue: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(worker_binary())
            .arg("worker")
            .args(["--amqp-url", amqp_url, "--queue", queue])
            .args(args)
            .env("BUILDBOT_LOG", "info,buildbot_worker=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_log(stderr, Arc::clone(&log)));
        }
        Ok(Self { child, log })
    }

    /// The address of the worker's HTTP endpoint (started with
    /// `--http-addr 127.0.0.1:0`), read from its log.
    pub async fn http_addr(&self, limit: std::time::Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let log = self.log();
            let addr = log
                .lines()
                .filter(|line| line.contains("serving /metrics"))
                .find_map(|line| line.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = addr {
                return Ok(addr.to_owned());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the worker logged no HTTP address within {limit:?}:\n{log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Everything the worker logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Process id, for sending signals.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM) and waits up to `limit` for it
    /// to exit; its exit status, or None when it is still running.
    pub async fn terminate(
        &mut self,
        limit: std::time::Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the worker already exited"))?;
        // The test crate has no libc binding; kill(1) is the plain way.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => Ok(None),
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Copies the worker's stderr to the test's stderr and into `log`.
async fn keep_log(stderr: ChildStderr, log: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        if let Ok(mut log) = log.lock() {
            log.push_str(&line);
            log.push('\n');
        }
    }
}
