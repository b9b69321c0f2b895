//! `buildbot build`: one job run on this machine against the local Docker
//! Engine, with no broker. The job is made from flags like the original
//! `buildbot.sh`'s (repository, revision, key file, image, tags, registry
//! login) or read from a job file as is; either way it passes the same
//! validation as a queued job and runs through the same [`Pipeline`], and
//! its events go to the [`TerminalSink`] instead of a reply queue. The
//! exit status is the result's, as with `buildbot submit --follow`.
//!
//! Credentials never come from argv: the SSH key and a docker config are
//! read from files, passwords and tokens from environment variables, and
//! they are held only in memory (masked in the log like a worker's).

mod flags;
mod job;

use super::JobRunArgs;
use crate::events::redact::Redactor;
use crate::events::terminal::{exit_code, TerminalSink};
use crate::events::{self, AttemptId, LogBatching, SinkError};
use crate::pipeline::{docker, ImagePolicy};
use buildbot_protocol::{Job, JobStatus};
use flags::JobFlags;
use job::{job_from_file, job_from_flags};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BuildArgs {
    /// Run this job file (protocol v1 JSON, see `protocol/examples/`) as
    /// is, instead of a job made from the flags below.
    #[arg(
        long,
        env = "BUILDBOT_JOB_FILE",
        value_name = "FILE",
        conflicts_with = "JobFlags"
    )]
    pub(crate) job: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) flags: JobFlags,

    /// Print every event as one JSON line instead of the log.
    #[arg(long)]
    pub(crate) json: bool,

    /// Directory for the job's checkout, removed after the job.
    #[arg(long, env = "BUILDBOT_WORKSPACE_DIR", value_name = "DIR")]
    pub(crate) workspace_dir: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) jobs: JobRunArgs,
}

/// Why a local build could not run (exit status 2 for an invalid job, 5
/// otherwise). A job that ran and failed is not an error: its result is
/// the exit status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// A file named by a flag cannot be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// What the file is for (`job file`, `key file`...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A flag needs a credential from the environment that is not set.
    #[error("{flag} needs {var} set in the environment")]
    MissingEnv {
        /// The flag.
        flag: &'static str,
        /// The environment variable.
        var: &'static str,
    },
    /// `--secret ID=ENV` names an environment variable that is not set.
    #[error("--secret {id}={var} needs {var} set in the environment")]
    MissingSecretEnv {
        /// The secret's id.
        id: String,
        /// The environment variable.
        var: String,
    },
    /// The job is not valid; every problem is listed with its field.
    #[error("{origin} is not a valid job:\n  {}", problems.join("\n  "))]
    Invalid {
        /// Where the job came from: the file, or "the flags".
        origin: String,
        /// Every problem, `field: reason`.
        problems: Vec<String>,
    },
    /// The Docker Engine cannot be reached.
    #[error("cannot reach the Docker Engine (DOCKER_HOST or /var/run/docker.sock): {0}")]
    Docker(#[from] docker::DockerError),
    /// libgit2 refused the network timeouts.
    #[error("cannot set the git network timeouts: {0}")]
    GitTimeouts(git2::Error),
    /// The events could not be printed to the end.
    #[error(transparent)]
    Events(#[from] SinkError),
}

impl BuildError {
    /// Exit status: an invalid job is `rejected` (2), as a worker would
    /// report it; anything else means the job could not run (5).
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            BuildError::Invalid { .. } => ExitCode::from(2),
            _ => ExitCode::from(5),
        }
    }
}

/// Runs the job and prints its events; returns the result's exit status.
pub(crate) async fn run(args: &BuildArgs) -> Result<ExitCode, BuildError> {
    let job = match &args.job {
        Some(path) => job_from_file(path)?,
        None => job_from_flags(&args.flags)?,
    };
    let docker = docker::connect().await?;
    let pipeline = args
        .jobs
        .pipeline(
            docker,
            local_worker_id(),
            args.workspace_dir.clone(),
            None,
            // The user's own engine: its images are theirs, and the built
            // image keeps the job's tags, as with `docker build -t`.
            ImagePolicy::Owner,
        )
        .map_err(BuildError::GitTimeouts)?;
    if !args.json {
        println!("{}", announcement(&job));
    }
    let attempt = AttemptId {
        job_id: job.job_id.to_string(),
        attempt: 1,
    };
    let sink = TerminalSink::new(args.json);
    let (reporter, finisher) = events::start(
        sink,
        attempt,
        Redactor::for_job(&job),
        LogBatching::default(),
    );
    // Ctrl-C or SIGTERM stops the job: it is reported `cancelled` (exit
    // status 4) and its containers removed, as a cancelled queued job is.
    let result = pipeline
        .run(&job, &reporter, crate::shutdown::signalled())
        .await;
    let status = result.status;
    finisher.finish(result).await?;
    if !args.json && status == JobStatus::Succeeded && !job.image.push {
        println!("    tagged {} (not pushed)", image_names(&job));
    }
    Ok(exit_code(status))
}

/// The first line of a local run: what is built from where.
fn announcement(job: &Job) -> String {
    format!(
        "==> job {}: {} at {} -> {}",
        job.job_id,
        job.repo.url,
        job.repo.revision,
        image_names(job)
    )
}

/// `repository:tag1, repository:tag2`.
fn image_names(job: &Job) -> String {
    job.image
        .tags
        .iter()
        .map(|tag| format!("{}:{tag}", job.image.repository))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Results of local runs are reported as `local@<hostname>`.
fn local_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        "local".to_owned()
    } else {
        format!("local@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::flags::parse_key_value;
    use super::*;
    use buildbot_protocol::grammar::base64;
    use buildbot_protocol::{RepoAuth, DEFAULT_TIMEOUT_SECS};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        build: BuildArgs,
    }

    fn parse(args: &[&str]) -> Result<BuildArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("build").chain(args.iter().copied()))
            .map(|cli| cli.build)
    }

    const MINIMAL: [&str; 6] = [
        "--repo",
        "https://git.example.com/team/app.git",
        "--revision",
        "main",
        "--image",
        "registry.example.com:5000/team/app",
    ];

    #[test]
    fn flags_make_a_valid_job_with_defaults_like_the_original() {
        let args = parse(&MINIMAL).expect("parses");
        let job = job_from_flags(&args.flags).expect("valid");
        assert_eq!(job.service_id, "app");
        assert_eq!(job.image.tags, ["latest"]);
        assert!(job.image.push);
        assert_eq!(job.build.context, ".");
        assert_eq!(job.build.dockerfile, "Dockerfile");
        assert_eq!(job.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert!(matches!(job.repo.auth, RepoAuth::None));
        assert!(job.registry_auth.is_none());
    }

    #[test]
    fn repeated_flags_and_key_values_are_collected() {
        let mut args = MINIMAL.to_vec();
        args.extend([
            "--tag",
            "v1",
            "--tag",
            "latest",
            "--build-arg",
            "A=1=2",
            "--label",
            "team=x",
            "--no-push",
            "--timeout",
            "60",
        ]);
        let job = job_from_flags(&parse(&args).expect("parses").flags).expect("valid");
        assert_eq!(job.image.tags, ["v1", "latest"]);
        assert_eq!(job.build.build_args["A"], "1=2");
        assert_eq!(job.build.labels["team"], "x");
        assert!(!job.image.push);
        assert_eq!(job.timeout_secs, 60);
    }

    #[test]
    fn the_key_file_is_carried_as_base64_of_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").expect("write");
        let mut args = MINIMAL.to_vec();
        args[1] = "ssh://git@git.example.com/team/app.git";
        args.extend(["--key-file", key.to_str().expect("utf-8 path")]);
        let job = job_from_flags(&parse(&args).expect("parses").flags).expect("valid");
        let RepoAuth::SshKey { private_key, .. } = &job.repo.auth else {
            panic!("an ssh_key auth: {:?}", job.repo.auth);
        };
        let decoded = base64::decode(private_key.expose()).expect("base64");
        assert_eq!(decoded, b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n");
    }

    #[test]
    fn problems_name_the_field_and_the_flag() {
        let mut args = MINIMAL.to_vec();
        args[5] = "Not A Repository";
        args.extend(["--tag=-bad", "--timeout", "0"]);
        let Err(BuildError::Invalid { problems, .. }) =
            job_from_flags(&parse(&args).expect("parses").flags)
        else {
            panic!("invalid");
        };
        let text = problems.join("\n");
        assert!(text.contains("image.repository (--image): "), "{text}");
        assert!(text.contains("image.tags[0] (--tag): "), "{text}");
        assert!(text.contains("timeout_secs (--timeout): "), "{text}");
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let mut args = MINIMAL.to_vec();
        args.extend(["--key-file", "/nonexistent/key"]);
        let error = job_from_flags(&parse(&args).expect("parses").flags).unwrap_err();
        assert!(matches!(error, BuildError::Read { .. }), "{error}");
        assert!(
            error.to_string().contains("key file /nonexistent/key"),
            "{error}"
        );
    }

    #[test]
    fn a_job_file_excludes_the_job_flags_and_stands_in_for_the_required_ones() {
        assert!(parse(&["--job", "job.json"]).is_ok());
        assert!(parse(&["--job", "job.json", "--repo", "https://x/y.git"]).is_err());
        assert!(
            parse(&["--image", "x"]).is_err(),
            "--repo and --revision are required"
        );
    }

    #[test]
    fn key_values_need_an_equals_sign_and_a_key() {
        assert_eq!(parse_key_value("A="), Ok(("A".into(), String::new())));
        assert!(parse_key_value("A").is_err());
        assert!(parse_key_value("=1").is_err());
    }
}
