//! The build job an orchestrator publishes: everything a worker needs, so the
//! worker keeps no state of its own.

use crate::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Seconds a job may run when it does not set `timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;

/// One self-contained build: clone `repo` at its revision, build it as `build`
/// says, tag the result as `image` and push every tag.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Protocol version; must be 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Unique id of this job, chosen by the orchestrator. Every event carries it.
    pub job_id: Uuid,
    /// Name of the service being built, used as a label in logs, metrics and
    /// the dashboard routing key. Letters, digits, `.`, `_`, `-`; at most
    /// 128 characters.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub service_id: String,
    /// Where the source comes from.
    pub repo: Repo,
    /// How the image is built.
    #[serde(default)]
    pub build: Build,
    /// The image to produce and where to push it.
    pub image: Image,
    /// Credentials for the registry of `image.repository` (and of a builder
    /// image, if it must be pulled). None for a registry without auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    /// Seconds the whole job may take before it is stopped and reported
    /// `timed_out`. Defaults to 3600; at most 86400 (one day).
    #[serde(default = "default_timeout_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_secs: u64,
    /// Base64 ed25519 signature over the job without this field, for workers
    /// that accept only signed jobs. Ignored by workers without trusted keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// The git repository to build from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// Clone URL: `ssh://user@host[:port]/path`, scp-like `user@host:path`, or
    /// `https://host/path`. Must not embed credentials; put them in `auth`.
    pub url: String,
    /// What to build: a full 40-hex commit SHA, or a branch or tag name, which
    /// the worker resolves and reports as a SHA.
    pub revision: String,
    /// How to authenticate to the remote.
    #[serde(default)]
    pub auth: RepoAuth,
    /// OpenSSH `known_hosts` lines the SSH host key must match. When absent,
    /// the host key is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// Also check out the repository's submodules, with the same credentials.
    #[serde(default)]
    pub submodules: bool,
}

/// Credentials for the git remote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RepoAuth {
    /// Anonymous access.
    #[default]
    None,
    /// SSH public-key authentication.
    SshKey {
        /// The private key as base64 of its PEM/OpenSSH text (as the original's
        /// `--repo_auth_key`). Held in memory only; never written to disk.
        private_key: Secret,
        /// Passphrase of an encrypted private key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<Secret>,
    },
    /// HTTPS basic authentication with a username and token or password.
    Https {
        /// User name sent to the remote.
        username: String,
        /// Token or password.
        token: Secret,
    },
}

/// How to build the image from the checkout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Build context directory, relative to the checkout root. Defaults to `.`.
    #[serde(default = "default_context")]
    pub context: String,
    /// Dockerfile path, relative to the context. Defaults to `Dockerfile`.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// `--build-arg` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// Stage of a multi-stage Dockerfile to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Extra image labels. The worker adds the OCI labels
    /// `org.opencontainers.image.revision`, `.source` and `.created`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Build without the daemon's layer cache.
    #[serde(default)]
    pub no_cache: bool,
    /// Pull newer versions of base images before building.
    #[serde(default)]
    pub pull: bool,
    /// Images whose layers may serve as cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// Build the artifact in a separate builder container first and ship only
    /// the artifact in the runtime image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
}

fn default_context() -> String {
    ".".to_owned()
}

fn default_dockerfile() -> String {
    "Dockerfile".to_owned()
}

impl Default for Build {
    fn default() -> Self {
        Self {
            context: default_context(),
            dockerfile: default_dockerfile(),
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            no_cache: false,
            pull: false,
            cache_from: Vec::new(),
            builder: None,
        }
    }
}

/// A builder container that turns the source into an artifact, which is then
/// copied into the runtime build context. Exactly one of `image` and
/// `dockerfile` is set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    /// Builder image reference, pulled with the job's registry credentials
    /// when it is not present on the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Dockerfile in the checkout (e.g. `Dockerfile.build`) to build the
    /// builder image from, relative to the checkout root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Command (argv) run in the builder container.
    pub command: Vec<String>,
    /// Absolute directory in the builder where the source is placed and the
    /// command runs. Defaults to `/src`.
    #[serde(default = "default_builder_workdir")]
    pub workdir: String,
    /// Environment of the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Path in the builder (absolute, or relative to `workdir`) of the
    /// artifact, a file or directory, copied out after the command succeeds.
    pub artifacts: String,
    /// Where the artifact is placed in the runtime build context, relative to
    /// the context. Defaults to `artifact`.
    #[serde(default = "default_artifacts_dest")]
    pub artifacts_dest: String,
}

fn default_builder_workdir() -> String {
    "/src".to_owned()
}

fn default_artifacts_dest() -> String {
    "artifact".to_owned()
}

/// The image to produce.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Repository without tag, e.g. `registry.example.com:5000/team/app`.
    pub repository: String,
    /// Tags to apply and push; at least one (e.g. the revision and `latest`).
    /// Each is up to 128 letters, digits, `_`, `.` and `-`, not starting
    /// with `.` or `-`.
    #[schemars(
        length(min = 1),
        inner(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"))
    )]
    pub tags: Vec<String>,
    /// Push the tags to the registry. Defaults to true.
    #[serde(default = "default_push")]
    pub push: bool,
}

fn default_push() -> bool {
    true
}

/// Credentials for the image's registry. Never a shell command.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegistryAuth {
    /// Username and password or token.
    Basic {
        /// Registry host (`host[:port]`) these credentials are for. When
        /// absent they are used for the registry of `image.repository`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        /// User name.
        username: String,
        /// Password or token.
        password: Secret,
    },
    /// Base64 of a Docker `config.json` (or of just its `auths` map), as the
    /// original's `--docker_login_cache`. The entry whose key matches the
    /// image's registry is used.
    DockerConfig {
        /// The base64 text.
        config: Secret,
    },
}
