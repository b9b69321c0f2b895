//! The baseline: what a user would run by hand without the worker, with the
//! git and docker command-line tools against the same SSH remote, daemon and
//! registry. Only the baseline uses these tools; the worker is measured
//! through the queue.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

/// The bare pipeline: full clone, checkout of the revision, a build with
/// the same tags (and the same OCI labels the worker adds, so both do the
/// same work), a push of every tag. Everything from the job's fields.
/// `bench-phase` lines (bash's microsecond clock) split the time by step.
const PIPELINE: &str = r#"set -euo pipefail
mark() { echo "bench-phase $1 $EPOCHREALTIME"; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mark start
git clone --quiet "$URL" "$dir/src"
git -C "$dir/src" checkout --quiet "$REV"
mark cloned
args=(--label "org.opencontainers.image.revision=$REV"
      --label "org.opencontainers.image.source=$URL"
      --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
for tag in $TAGS; do args+=(-t "$IMAGE:$tag"); done
docker build "${args[@]}" "$dir/src"
mark built
for tag in $TAGS; do docker push "$IMAGE:$tag"; done
mark pushed
"#;

/// One run of the bare pipeline.
pub struct BareRun {
    /// Wall time of the whole script.
    pub total: Duration,
    /// Seconds of `git clone` and `git checkout`.
    pub clone: f64,
    /// Seconds of `docker build`.
    pub build: f64,
    /// Seconds of the pushes.
    pub push: f64,
}

impl BareRun {
    /// Reads the phase marks from the script's output.
    fn parse(total: Duration, stdout: &str) -> anyhow::Result<Self> {
        let mark = |name: &str| -> anyhow::Result<f64> {
            let prefix = format!("bench-phase {name} ");
            let line = stdout
                .lines()
                .find(|line| line.starts_with(&prefix))
                .with_context(|| format!("the pipeline printed no {name} mark"))?;
            Ok(line[prefix.len()..].trim().parse()?)
        };
        let (start, cloned) = (mark("start")?, mark("cloned")?);
        let (built, pushed) = (mark("built")?, mark("pushed")?);
        Ok(Self {
            total,
            clone: cloned - start,
            build: built - cloned,
            push: pushed - built,
        })
    }
}

/// The command-line tools, set up to reach the rig's SSH remote with its
/// key and pinned host key.
pub struct Cli {
    git_ssh_command: String,
}

impl Cli {
    /// `known_hosts` is a file holding the remote's pinned host key.
    pub fn new(ssh_key: &Path, known_hosts: &Path) -> Self {
        let git_ssh_command = format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile={}",
            ssh_key.display(),
            known_hosts.display()
        );
        Self { git_ssh_command }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("GIT_SSH_COMMAND", &self.git_ssh_command)
            // The worker uses the Engine's classic builder (the build API
            // without BuildKit); the CLI is told to use the same one rather
            // than fall back to it with a warning.
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null());
        command
    }

    /// Runs the bare pipeline and returns its wall time.
    pub async fn pipeline(
        &self,
        url: &str,
        revision: &str,
        image: &str,
        tags: &[String],
    ) -> anyhow::Result<BareRun> {
        let started = Instant::now();
        let output = self
            .command("bash")
            .args(["-c", PIPELINE])
            .env("URL", url)
            .env("REV", revision)
            .env("IMAGE", image)
            .env("TAGS", tags.join(" "))
            .output()
            .await
            .context("running the bare pipeline")?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "the bare pipeline failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        BareRun::parse(elapsed, &String::from_utf8_lossy(&output.stdout))
    }

    /// Clones `url` at `revision` into `dir` (not measured: the log and
    /// latency baselines compare only the build).
    pub async fn checkout(&self, url: &str, revision: &str, dir: &Path) -> anyhow::Result<()> {
        let dir_text = dir.to_string_lossy().into_owned();
        self.run("git", &["clone", "--quiet", url, &dir_text])
            .await?;
        self.run("git", &["-C", &dir_text, "checkout", "--quiet", revision])
            .await
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self.command(program).args(args).output().await?;
        if !output.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// `docker build --no-cache` of `checkout` with `build_args` and the
    /// OCI labels the worker adds (the classic builder applies labels in a
    /// step of their own, so leaving them out would flatter the CLI),
    /// reading its output line by line as it arrives; `on_line` gets each
    /// line with its arrival time. Returns the wall time.
    pub async fn build_streaming(
        &self,
        checkout: &Checkout,
        build_args: &[(&str, String)],
        tag: &str,
        mut on_line: impl FnMut(&str, DateTime<Utc>),
    ) -> anyhow::Result<Duration> {
        let dir = checkout.path();
        let mut command = self.command("docker");
        command.args(["build", "--no-cache", "-t", tag]);
        for (name, value) in build_args {
            command.arg("--build-arg").arg(format!("{name}={value}"));
        }
        for (name, value) in checkout.labels() {
            command.arg("--label").arg(format!("{name}={value}"));
        }
        let started = Instant::now();
        let mut child = command
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker build")?;
        let stdout = child.stdout.take().context("docker build has no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            on_line(&line, Utc::now());
        }
        let output = child.wait_with_output().await?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "docker build of {} failed ({}): {}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(elapsed)
    }
}

/// A baseline checkout in a directory removed when dropped.
pub struct Checkout {
    dir: tempfile::TempDir,
    url: String,
    revision: String,
}

impl Checkout {
    /// Clones `url` at `revision` with the CLI.
    pub async fn new(cli: &Cli, url: &str, revision: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        cli.checkout(url, revision, &dir.path().join("src")).await?;
        Ok(Self {
            dir,
            url: url.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// The working tree.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    /// The OCI labels the worker puts on an image of this checkout.
    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("org.opencontainers.image.revision", self.revision.clone()),
            ("org.opencontainers.image.source", self.url.clone()),
            (
                "org.opencontainers.image.created",
                Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        ]
    }
}
