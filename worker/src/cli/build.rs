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

use super::GitTimeoutArgs;
use crate::events::redact::Redactor;
use crate::events::terminal::{exit_code, TerminalSink};
use crate::events::{self, AttemptId, LogBatching, SinkError};
use crate::pipeline::docker;
use crate::pipeline::Pipeline;
use base64::Engine as _;
use buildbot_protocol::{
    decode_job, Build, Image, Job, JobStatus, Problem, RegistryAuth, Repo, RepoAuth, Secret,
    DEFAULT_TIMEOUT_SECS, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Environment variable holding the registry password of `--registry-user`.
pub(crate) const REGISTRY_PASSWORD_ENV: &str = "BUILDBOT_REGISTRY_PASSWORD";
/// Environment variable holding the passphrase of `--key-file`'s key.
pub(crate) const KEY_PASSPHRASE_ENV: &str = "BUILDBOT_KEY_PASSPHRASE";
/// Environment variable holding the HTTPS token of `--repo-user`.
pub(crate) const REPO_TOKEN_ENV: &str = "BUILDBOT_REPO_TOKEN";

/// Settings of `buildbot build`.
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
    pub(crate) git_timeouts: GitTimeoutArgs,
}

/// The job made from flags, named like the original `buildbot.sh`'s.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct JobFlags {
    /// Git URL to clone: `ssh://user@host[:port]/path`, scp-like
    /// `user@host:path`, or `https://host/path`.
    #[arg(
        long,
        env = "BUILDBOT_REPO",
        value_name = "URL",
        required_unless_present = "job"
    )]
    pub(crate) repo: Option<String>,

    /// Commit SHA to build, or a branch or tag name (resolved and reported
    /// as a SHA).
    #[arg(long, env = "BUILDBOT_REVISION", required_unless_present = "job")]
    pub(crate) revision: Option<String>,

    /// SSH private key file (PEM or OpenSSH) for the repository. It is
    /// read into memory; its passphrase, if any, comes from
    /// BUILDBOT_KEY_PASSPHRASE.
    #[arg(long, env = "BUILDBOT_KEY_FILE", value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,

    /// User name for an https:// repository; the token or password comes
    /// from BUILDBOT_REPO_TOKEN.
    #[arg(
        long,
        env = "BUILDBOT_REPO_USER",
        value_name = "USER",
        conflicts_with = "key_file"
    )]
    pub(crate) repo_user: Option<String>,

    /// File of OpenSSH `known_hosts` lines the SSH host key must match.
    /// Without it the host key is not checked.
    #[arg(long, env = "BUILDBOT_KNOWN_HOSTS", value_name = "FILE")]
    pub(crate) known_hosts: Option<PathBuf>,

    /// Also check out the repository's submodules.
    #[arg(long)]
    pub(crate) submodules: bool,

    /// Image repository without tag, e.g.
    /// `registry.example.com:5000/team/app`.
    #[arg(
        long,
        env = "BUILDBOT_IMAGE",
        value_name = "REPOSITORY",
        required_unless_present = "job"
    )]
    pub(crate) image: Option<String>,

    /// Tag to apply and push; repeat for more (all pushed in one job).
    /// In the environment, comma-separated.
    #[arg(
        long = "tag",
        env = "BUILDBOT_TAGS",
        value_name = "TAG",
        value_delimiter = ',',
        default_value = "latest"
    )]
    pub(crate) tags: Vec<String>,

    /// Label for logs and results. Defaults to the last path component of
    /// --image.
    #[arg(long, env = "BUILDBOT_SERVICE_ID", value_name = "ID")]
    pub(crate) service_id: Option<String>,

    /// Build context directory, relative to the checkout root.
    #[arg(
        long,
        env = "BUILDBOT_CONTEXT",
        value_name = "DIR",
        default_value = "."
    )]
    pub(crate) context: String,

    /// Dockerfile path, relative to the context.
    #[arg(
        long,
        env = "BUILDBOT_DOCKERFILE",
        value_name = "PATH",
        default_value = "Dockerfile"
    )]
    pub(crate) dockerfile: String,

    /// Build argument; repeat for more.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) build_args: Vec<(String, String)>,

    /// Extra image label; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,

    /// Stage of a multi-stage Dockerfile to build.
    #[arg(long, env = "BUILDBOT_TARGET", value_name = "STAGE")]
    pub(crate) target: Option<String>,

    /// Build without the daemon's layer cache.
    #[arg(long)]
    pub(crate) no_cache: bool,

    /// Pull newer versions of the base images first.
    #[arg(long)]
    pub(crate) pull: bool,

    /// Build and tag the image on the local daemon, but do not push it.
    #[arg(long, env = "BUILDBOT_NO_PUSH")]
    pub(crate) no_push: bool,

    /// Registry user name; the password or token comes from
    /// BUILDBOT_REGISTRY_PASSWORD.
    #[arg(
        long,
        env = "BUILDBOT_REGISTRY_USER",
        value_name = "USER",
        conflicts_with = "docker_config"
    )]
    pub(crate) registry_user: Option<String>,

    /// Registry host (`host[:port]`) the --registry-user login is for.
    /// Defaults to the registry of --image.
    #[arg(
        long,
        env = "BUILDBOT_REGISTRY_SERVER",
        value_name = "HOST",
        requires = "registry_user"
    )]
    pub(crate) registry_server: Option<String>,

    /// Docker `config.json` whose `auths` entry for the image's registry is
    /// used (the original's --docker_login_cache). Credential helpers are
    /// not consulted: the file must hold the `auth` itself.
    #[arg(long, env = "BUILDBOT_DOCKER_CONFIG", value_name = "FILE")]
    pub(crate) docker_config: Option<PathBuf>,

    /// Seconds the whole job may take before it is stopped (at most 86400).
    #[arg(long = "timeout", env = "BUILDBOT_TIMEOUT_SECS", value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub(crate) timeout_secs: u64,
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
    args.git_timeouts.apply().map_err(BuildError::GitTimeouts)?;
    let docker = docker::connect().await?;
    let pipeline = Pipeline::new(docker, local_worker_id(), args.workspace_dir.clone());
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

/// Reads and validates a job file, as a worker would decode it.
fn job_from_file(path: &Path) -> Result<Job, BuildError> {
    let bytes = read(path, "job file")?;
    decode_job(&bytes).map_err(|e| BuildError::Invalid {
        origin: path.display().to_string(),
        problems: e.problems(),
    })
}

/// Makes the job the flags describe and validates it; each problem names
/// the job field and the flag that sets it.
pub(crate) fn job_from_flags(flags: &JobFlags) -> Result<Job, BuildError> {
    let image = flags.image.clone().unwrap_or_default();
    let job = Job {
        version: PROTOCOL_VERSION,
        job_id: uuid::Uuid::new_v4(),
        service_id: flags
            .service_id
            .clone()
            .unwrap_or_else(|| default_service_id(&image)),
        repo: Repo {
            url: flags.repo.clone().unwrap_or_default(),
            revision: flags.revision.clone().unwrap_or_default(),
            auth: repo_auth(flags)?,
            known_hosts: flags
                .known_hosts
                .as_deref()
                .map(|path| read_text(path, "known_hosts file"))
                .transpose()?,
            submodules: flags.submodules,
        },
        build: Build {
            context: flags.context.clone(),
            dockerfile: flags.dockerfile.clone(),
            build_args: flags.build_args.iter().cloned().collect::<BTreeMap<_, _>>(),
            target: flags.target.clone(),
            labels: flags.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            no_cache: flags.no_cache,
            pull: flags.pull,
            ..Build::default()
        },
        image: Image {
            repository: image,
            tags: flags.tags.clone(),
            push: !flags.no_push,
        },
        registry_auth: registry_auth(flags)?,
        timeout_secs: flags.timeout_secs,
        signature: None,
    };
    job.validate().map_err(|errors| BuildError::Invalid {
        origin: "the job made from the flags".into(),
        problems: errors.0.iter().map(with_flag).collect(),
    })?;
    Ok(job)
}

/// The SSH key of --key-file, the HTTPS login of --repo-user, or none.
fn repo_auth(flags: &JobFlags) -> Result<RepoAuth, BuildError> {
    if let Some(path) = &flags.key_file {
        return Ok(RepoAuth::SshKey {
            private_key: base64_of_file(path, "key file")?,
            passphrase: std::env::var(KEY_PASSPHRASE_ENV).ok().map(Secret::new),
        });
    }
    if let Some(username) = &flags.repo_user {
        return Ok(RepoAuth::Https {
            username: username.clone(),
            token: secret_from_env("--repo-user", REPO_TOKEN_ENV)?,
        });
    }
    Ok(RepoAuth::None)
}

/// The login of --registry-user, the file of --docker-config, or none.
fn registry_auth(flags: &JobFlags) -> Result<Option<RegistryAuth>, BuildError> {
    if let Some(username) = &flags.registry_user {
        return Ok(Some(RegistryAuth::Basic {
            server: flags.registry_server.clone(),
            username: username.clone(),
            password: secret_from_env("--registry-user", REGISTRY_PASSWORD_ENV)?,
        }));
    }
    match &flags.docker_config {
        Some(path) => Ok(Some(RegistryAuth::DockerConfig {
            config: base64_of_file(path, "docker config")?,
        })),
        None => Ok(None),
    }
}

fn secret_from_env(flag: &'static str, var: &'static str) -> Result<Secret, BuildError> {
    std::env::var(var)
        .ok()
        .filter(|value| !value.is_empty())
        .map(Secret::new)
        .ok_or(BuildError::MissingEnv { flag, var })
}

/// A credential file as a job carries it: base64 of its bytes. The plain
/// bytes are wiped from memory once encoded.
fn base64_of_file(path: &Path, what: &'static str) -> Result<Secret, BuildError> {
    let bytes = Zeroizing::new(read(path, what)?);
    Ok(Secret::new(
        base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()),
    ))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path, what: &'static str) -> Result<String, BuildError> {
    std::fs::read_to_string(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// `--build-arg` / `--label` values: `KEY=VALUE`, split at the first `=`.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found {text:?}")),
    }
}

/// The image repository's last path component (`team/app` -> `app`), which
/// the reference grammar keeps within service_id's characters.
fn default_service_id(repository: &str) -> String {
    repository.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Which flag (or environment variable) sets each job field, most specific
/// first, so a problem can say what to change on the command line.
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("service_id", "--service-id"),
    ("repo.url", "--repo"),
    ("repo.revision", "--revision"),
    ("repo.auth.private_key", "--key-file"),
    ("repo.auth.passphrase", KEY_PASSPHRASE_ENV),
    ("repo.auth.username", "--repo-user"),
    ("repo.auth.token", REPO_TOKEN_ENV),
    ("repo.auth", "--key-file / --repo-user"),
    ("repo.known_hosts", "--known-hosts"),
    ("build.context", "--context"),
    ("build.dockerfile", "--dockerfile"),
    ("build.build_args", "--build-arg"),
    ("build.labels", "--label"),
    ("build.target", "--target"),
    ("image.repository", "--image"),
    ("image.tags", "--tag"),
    ("registry_auth.server", "--registry-server"),
    ("registry_auth.username", "--registry-user"),
    ("registry_auth.password", REGISTRY_PASSWORD_ENV),
    ("registry_auth.config", "--docker-config"),
    ("registry_auth", "--registry-user / --docker-config"),
    ("timeout_secs", "--timeout"),
];

/// `field (--flag): reason`, or `field: reason` when no flag sets it.
fn with_flag(problem: &Problem) -> String {
    let field = problem.field.as_str();
    let flag = FIELD_FLAGS.iter().find(|(prefix, _)| {
        field
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    });
    match flag {
        Some((_, flag)) => format!("{field} ({flag}): {}", problem.reason),
        None => problem.to_string(),
    }
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
    use super::*;
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
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(private_key.expose())
            .expect("base64");
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
