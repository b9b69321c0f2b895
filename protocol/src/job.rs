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
    /// A command run in a container of the built image after the build and
    /// before the push; a non-zero exit fails the job and nothing is
    /// pushed. Unset: the Dockerfile's `#test_in_container_entrypoint=`
    /// line, if any (unless `build.conventions` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
    /// Seconds the whole job may take before it is stopped and reported
    /// `timed_out`. Defaults to 3600; at most 86400 (one day).
    #[serde(default = "default_timeout_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_secs: u64,
    /// What a signature binds the job to: when it is valid, a nonce, the
    /// queue and the reply queue. Required by workers with trusted keys,
    /// which refuse a job outside its validity, on another queue, with
    /// another `reply_to`, or whose nonce a worker already accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<SignedEnvelope>,
    /// Base64 ed25519 signature over the job without this field, for workers
    /// that accept only signed jobs. Ignored by workers without trusted keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The part of a signed job that makes a captured copy useless elsewhere
/// or later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    /// When the job was signed, in Unix seconds.
    pub issued_at: u64,
    /// After this (Unix seconds) the job is refused. Keep it short: a few
    /// minutes past the time the job may wait in the queue.
    pub expires_at: u64,
    /// Unique per signed job: 16 to 128 letters, digits, `_` or `-`.
    #[schemars(length(min = 16, max = 128), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub nonce: String,
    /// The queue the job is published to.
    pub queue: String,
    /// The message's `reply_to`: events go only to this queue.
    pub reply_to: String,
}

impl SignedEnvelope {
    /// Valid from `issued_at` for `valid_for` seconds, with a fresh random
    /// nonce, for `queue` and `reply_to`.
    pub fn new(
        issued_at: u64,
        valid_for: u64,
        queue: impl Into<String>,
        reply_to: impl Into<String>,
    ) -> Self {
        Self {
            issued_at,
            expires_at: issued_at.saturating_add(valid_for),
            nonce: Uuid::new_v4().simple().to_string(),
            queue: queue.into(),
            reply_to: reply_to.into(),
        }
    }
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
    /// The daemon's builder: `buildkit` or `legacy`. Unset: BuildKit where
    /// the Docker Engine has it, else the legacy builder (the build log says
    /// which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<BuildEngine>,
    /// Build secrets by id, for `RUN --mount=type=secret,id=<id>` (BuildKit
    /// only). Served to the build while it runs; never in the image's
    /// config, history or layers, and masked in every event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
    /// Put BuildKit's inline cache metadata in the image, so a worker
    /// that has never built the app reuses its layers when a later job
    /// names this image in `cache_from` (BuildKit only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_inline: bool,
    /// Follow the original buildbot's conventions when the job does not
    /// say otherwise: a `build.sh` with a `#build_inside_docker_image=`
    /// line runs as the builder (when `builder` is unset), and a
    /// Dockerfile's `#test_in_container_entrypoint=` line is the test
    /// (when `test` is unset). Defaults to true.
    #[serde(default = "default_conventions", skip_serializing_if = "is_true")]
    #[schemars(extend("default" = true))]
    pub conventions: bool,
    /// A file, relative to the checkout, that the job's first tag is
    /// written into before the build (the original's `VERSION` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_file: Option<String>,
}

fn default_conventions() -> bool {
    true
}

/// Left out when true, the default, so jobs round-trip as written.
fn is_true(value: &bool) -> bool {
    *value
}

/// The test run in a container of the built image before the push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Command (argv) run in the built image; it replaces the image's
    /// entrypoint.
    pub command: Vec<String>,
    /// Environment of the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds the test may run before it fails the job. Defaults to 600.
    #[serde(default = "default_test_timeout_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_secs: u64,
    /// Give the test the worker's job network; without it the test runs
    /// with no network at all.
    #[serde(default)]
    pub network: bool,
}

/// Seconds a test may run when it does not set `timeout_secs`.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;

fn default_test_timeout_secs() -> u64 {
    DEFAULT_TEST_TIMEOUT_SECS
}

impl Test {
    /// `command` with no environment, the default timeout and no network.
    pub fn new(command: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            command: command.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            timeout_secs: DEFAULT_TEST_TIMEOUT_SECS,
            network: false,
        }
    }
}

/// Which of the Docker Engine's builders builds the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildEngine {
    /// BuildKit, through the Engine API (`RUN --mount`, build secrets,
    /// parallel stages, inline cache).
    Buildkit,
    /// The classic builder, which the Docker CLI calls deprecated.
    Legacy,
}

impl BuildEngine {
    /// The job field's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildEngine::Buildkit => "buildkit",
            BuildEngine::Legacy => "legacy",
        }
    }
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
            engine: None,
            secrets: BTreeMap::new(),
            cache_inline: false,
            conventions: default_conventions(),
            version_file: None,
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
    /// Credentials for the command's environment only (e.g. a package
    /// registry token): never in an image, masked in every event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, Secret>,
    /// Path in the builder (absolute, or relative to `workdir`) of the
    /// artifact, a file or directory, copied out after the command succeeds.
    pub artifacts: String,
    /// Where the artifact is placed in the runtime build context, relative to
    /// the context. Defaults to `artifact`. `.` makes the artifact (e.g.
    /// `artifacts: "."`, the whole workdir) the checkout the runtime build
    /// reads: `build.context` and `build.dockerfile` are looked up in it,
    /// as the original buildbot's `build.sh` convention does.
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

/// Building jobs in code (orchestrators in Rust, tests, the bench, the
/// worker's `buildbot build`) without writing every field.
impl Job {
    /// A job with a fresh id building `revision` of `repo_url` into
    /// `image_repository` with `tags`, pushed; anonymous clone, default
    /// build, no registry credentials, the default timeout. Not validated:
    /// call [`Job::validate`].
    pub fn new(
        service_id: impl Into<String>,
        repo_url: impl Into<String>,
        revision: impl Into<String>,
        image_repository: impl Into<String>,
        tags: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            version: crate::PROTOCOL_VERSION,
            job_id: Uuid::new_v4(),
            service_id: service_id.into(),
            repo: Repo::new(repo_url, revision),
            build: Build::default(),
            image: Image::new(image_repository, tags),
            registry_auth: None,
            test: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            envelope: None,
            signature: None,
        }
    }

    /// The same job under `job_id` (e.g. a fresh one, to submit it again).
    pub fn with_job_id(mut self, job_id: Uuid) -> Self {
        self.job_id = job_id;
        self
    }

    /// With `envelope`, to be signed with the job.
    pub fn with_envelope(mut self, envelope: SignedEnvelope) -> Self {
        self.envelope = Some(envelope);
        self
    }

    /// With `auth` for the git remote.
    pub fn with_repo_auth(mut self, auth: RepoAuth) -> Self {
        self.repo.auth = auth;
        self
    }

    /// With `known_hosts` lines pinning the SSH host key.
    pub fn with_known_hosts(mut self, known_hosts: impl Into<String>) -> Self {
        self.repo.known_hosts = Some(known_hosts.into());
        self
    }

    /// Also checking out submodules, or not.
    pub fn with_submodules(mut self, submodules: bool) -> Self {
        self.repo.submodules = submodules;
        self
    }

    /// With `build` instead of the default build.
    pub fn with_build(mut self, build: Build) -> Self {
        self.build = build;
        self
    }

    /// With `test` run before the push.
    pub fn with_test(mut self, test: Test) -> Self {
        self.test = Some(test);
        self
    }

    /// Pushing the tags, or only tagging the image.
    pub fn with_push(mut self, push: bool) -> Self {
        self.image.push = push;
        self
    }

    /// With credentials for the image's registry.
    pub fn with_registry_auth(mut self, auth: RegistryAuth) -> Self {
        self.registry_auth = Some(auth);
        self
    }

    /// With another time limit, in seconds.
    pub fn with_timeout_secs(mut self, timeout_secs: u64) -> Self {
        self.timeout_secs = timeout_secs;
        self
    }
}

impl Repo {
    /// `revision` of `url`, anonymous, no host key pinning, no submodules.
    pub fn new(url: impl Into<String>, revision: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            revision: revision.into(),
            auth: RepoAuth::None,
            known_hosts: None,
            submodules: false,
        }
    }
}

impl RepoAuth {
    /// SSH key auth with `private_key_base64` (base64 of the key file) and
    /// no passphrase.
    pub fn ssh_key(private_key_base64: impl Into<String>) -> Self {
        RepoAuth::SshKey {
            private_key: Secret::new(private_key_base64),
            passphrase: None,
        }
    }

    /// HTTPS auth as `username` with `token`.
    pub fn https(username: impl Into<String>, token: impl Into<String>) -> Self {
        RepoAuth::Https {
            username: username.into(),
            token: Secret::new(token),
        }
    }
}

impl Image {
    /// `repository` tagged with `tags`, pushed.
    pub fn new(
        repository: impl Into<String>,
        tags: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            repository: repository.into(),
            tags: tags.into_iter().map(Into::into).collect(),
            push: default_push(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_job_is_valid_and_complete() {
        let job = Job::new(
            "app",
            "git@git.example.com:team/app.git",
            "main",
            "registry.example.com/team/app",
            ["latest", "v1"],
        )
        .with_repo_auth(RepoAuth::https("ci", "t0ken"))
        .with_push(false)
        .with_timeout_secs(60);
        assert_eq!(job.version, crate::PROTOCOL_VERSION);
        assert!(!job.job_id.is_nil());
        assert_eq!(job.image.tags, ["latest", "v1"]);
        assert!(!job.image.push);
        assert_eq!(job.build.dockerfile, "Dockerfile");
        assert_eq!(job.timeout_secs, 60);
        // https auth with an scp-like URL: the one problem.
        assert_eq!(
            job.validate().unwrap_err().messages(),
            ["repo.auth: https needs an https:// repo.url"]
        );
        let job = job.with_repo_auth(RepoAuth::None);
        assert_eq!(job.validate(), Ok(()));
        let id = Uuid::new_v4();
        assert_eq!(job.with_job_id(id).job_id, id);
    }

    #[test]
    fn a_new_job_serializes_like_a_decoded_one() {
        let job = Job::new(
            "app",
            "https://g.example.com/a.git",
            "main",
            "r.example.com/a",
            ["x"],
        )
        .with_known_hosts("unused")
        .with_submodules(true);
        let json = serde_json::to_vec(&job).unwrap();
        let back: Job = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&job).unwrap()
        );
        assert!(back.repo.submodules);
    }
}
