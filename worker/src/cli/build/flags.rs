//! The raw flags of `buildbot build`, named like the original
//! `buildbot.sh`'s, and which flag sets which job field (so a problem with
//! the job names the flag to change). What they mean as a job is
//! [`super::job`]'s.

use buildbot_protocol::{BuildEngine, Problem, DEFAULT_TIMEOUT_SECS};
use std::path::PathBuf;

/// Environment variable holding the registry password of `--registry-user`.
pub(crate) const REGISTRY_PASSWORD_ENV: &str = "BUILDBOT_REGISTRY_PASSWORD";
/// Environment variable holding the passphrase of `--key-file`'s key.
pub(crate) const KEY_PASSPHRASE_ENV: &str = "BUILDBOT_KEY_PASSPHRASE";
/// Environment variable holding the HTTPS token of `--repo-user`.
pub(crate) const REPO_TOKEN_ENV: &str = "BUILDBOT_REPO_TOKEN";

/// Settings of `buildbot build`.
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
    /// Without it an SSH clone fails, unless --accept-any-host-key.
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

    /// Build secret for `RUN --mount=type=secret,id=ID`, its value read
    /// from the environment variable ENV (never from argv); repeat for
    /// more. Needs BuildKit.
    #[arg(long = "secret", value_name = "ID=ENV", value_parser = parse_key_value)]
    pub(crate) secrets: Vec<(String, String)>,

    /// The Docker Engine's builder: `buildkit` or `legacy`. Default:
    /// BuildKit where the engine has it.
    #[arg(long, env = "BUILDBOT_BUILD_ENGINE", value_name = "ENGINE", value_parser = parse_engine)]
    pub(crate) engine: Option<BuildEngine>,

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

/// `--build-arg` / `--label` values: `KEY=VALUE`, split at the first `=`.
pub(super) fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found {text:?}")),
    }
}

/// `--engine`: the job field's spelling.
fn parse_engine(text: &str) -> Result<BuildEngine, String> {
    [BuildEngine::Buildkit, BuildEngine::Legacy]
        .into_iter()
        .find(|engine| engine.as_str() == text)
        .ok_or_else(|| format!("expected buildkit or legacy, found {text:?}"))
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
    ("build.secrets", "--secret"),
    ("build.engine", "--engine"),
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
pub(super) fn with_flag(problem: &Problem) -> String {
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
