//! Builder step ("build in a separate container"): produces the artifact
//! the runtime image is built from, in a container of its own.
//!
//! Owns everything between the clone and the runtime build when a job sets
//! `build.builder`: getting the builder image (pulled with the job's
//! registry credentials when the daemon lacks it, or built from the
//! repository's Dockerfile), creating the container labelled with the job
//! id, uploading the checkout into it through the Docker API, running the
//! command with its output streamed as log events of step `builder`, and
//! copying the artifact back out (placed by [`artifact`]).
//!
//! Only the Docker API is used, never a host bind mount, so this works the
//! same when the worker itself runs in a container with only the Docker
//! socket. The container is removed whatever the outcome, also when the
//! step's future is dropped by the job's timeout or a cancellation; an
//! image built from the repository is kept under its cache key for the
//! next job with the same inputs ([`cache`]), or removed like the
//! container when it cannot be cached. The container's environment is
//! exactly `build.builder.env`: no credential ever reaches it.
//!
//! This file is the step's outline ([`run`]) and its error; each stage has
//! its module:
//!
//! - [`image`]: the builder image, pulled or built from the repository.
//! - [`cache`]: the key a builder image built from the repository is kept
//!   under.
//! - [`container`]: create, upload the source, run the command.
//! - [`artifact`]: copy the artifact out and unpack it into the context.
//! - [`tail`]: the command's last output lines, quoted when it fails.
//! - [`leftovers`]: removing what a run created, or what a crashed run of
//!   this worker left behind.
//! - [`labels`]: what every builder container and image is labelled with.
//! - [`plan`]: which builder runs: the job's, or the original buildbot's
//!   `build.sh` convention detected in the checkout.

mod artifact;
mod cache;
mod container;
mod image;
mod labels;
mod leftovers;
mod limits;
mod plan;
mod tail;

pub(crate) use container::{follow, oom_killed, Exited};
pub(crate) use labels::{job_labels, TEST_ROLE};
pub(crate) use leftovers::{remove_leftovers, Leftovers};
pub(crate) use limits::{
    parse_cpus, parse_memory, parse_network, parse_size, ContainerLimits, Memory, Network,
};
pub(crate) use plan::{BuilderPlan, WHOLE_WORKDIR_DIR};

use crate::events::Reporter;
use crate::pipeline::conventions::ConventionError;
use crate::pipeline::docker::DockerError;
use crate::pipeline::images::{ImageAccessError, ImagePolicy};
use crate::pipeline::registry_auth::RegistryAuthError;
use crate::pipeline::steps::build::context::ContextError;
use crate::pipeline::steps::build::DaemonBuilder;
use crate::pipeline::SizeLimits;
use artifact::{ArtifactError, Unpacked};
use bollard::Docker;
use buildbot_protocol::{Builder, Job, StepName};
use std::path::Path;

/// Why the builder step failed. Messages name the job's fields.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuilderError {
    /// The daemon could not be reached or answered with an API error.
    #[error("Docker Engine: {0}")]
    Api(String),
    /// The checkout's `build.sh` marker is unusable.
    #[error(transparent)]
    Convention(#[from] ConventionError),
    /// The runtime context or the builder's Dockerfile is unusable.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// `registry_auth` could not be read.
    #[error(transparent)]
    RegistryAuth(#[from] RegistryAuthError),
    /// Building the builder image from the repository failed.
    #[error("building the builder image from build.builder.dockerfile failed: {0}")]
    Build(#[source] DockerError),
    /// The job may not use an image the builder needs, or it could not
    /// be pulled.
    #[error(transparent)]
    Image(#[from] ImageAccessError),
    /// The source could not be copied into the container.
    #[error("copying the checkout into the builder container failed: {0}")]
    Upload(String),
    /// The command exited with a non-zero code.
    #[error("build.builder.command exited with code {code}{}", quoted(.tail))]
    CommandFailed {
        /// The command's exit code.
        code: i64,
        /// Its last output lines.
        tail: String,
    },
    /// The kernel killed the command for exceeding `--job-memory`.
    #[error("build.builder.command was killed: out of memory (limit {limit}){}", quoted(.tail))]
    OutOfMemory {
        /// The memory limit, e.g. `256 MiB`.
        limit: limits::Memory,
        /// The exit code (137 when the main process was killed).
        code: i64,
        /// Its last output lines.
        tail: String,
    },
    /// The daemon could not start the command (no such executable, not
    /// executable): the job's mistake, not the infrastructure's.
    #[error("build.builder.command could not be started: {message}")]
    CommandNotStarted {
        /// What the daemon said.
        message: String,
        /// The shell's code for the same mistake: 127 not found, 126 not
        /// executable.
        code: Option<i64>,
    },
    /// The artifact path does not exist in the container.
    #[error("build.builder.artifacts: {path} does not exist in the builder container after the command ran")]
    ArtifactMissing {
        /// The absolute path looked up.
        path: String,
    },
    /// Copying the artifact out of the container failed.
    #[error(
        "copying build.builder.artifacts ({path}) out of the builder container failed: {message}"
    )]
    Download {
        /// The absolute path copied.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The artifact could not be placed into the build context.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl BuilderError {
    /// The command's exit code, when it was the command that failed.
    pub(crate) fn exit_code(&self) -> Option<i64> {
        match self {
            BuilderError::CommandFailed { code, .. } | BuilderError::OutOfMemory { code, .. } => {
                Some(*code)
            }
            BuilderError::CommandNotStarted { code, .. } => *code,
            _ => None,
        }
    }
}

impl From<bollard::errors::Error> for BuilderError {
    fn from(e: bollard::errors::Error) -> Self {
        BuilderError::Api(e.to_string())
    }
}

/// The last output lines as the end of an error message.
fn quoted(tail: &str) -> String {
    if tail.is_empty() {
        "; it wrote no output".to_owned()
    } else {
        format!("; its last output lines:\n{tail}")
    }
}

/// One job's builder run: what [`run`] needs from the job and the
/// pipeline.
pub(crate) struct BuilderRun<'a> {
    /// The job: its id is labelled on everything the run creates, its
    /// `registry_auth` pulls or builds the builder image.
    pub(crate) job: &'a Job,
    /// The job's `build.builder`.
    pub(crate) builder: &'a Builder,
    /// The worker running it, labelled for the clean-up after a crash.
    pub(crate) worker_id: &'a str,
    /// The checkout (uploaded as the source).
    pub(crate) checkout: &'a Path,
    /// Modification time of the uploaded files (the commit's).
    pub(crate) mtime: u64,
    /// The runtime build's context directory, checked to be inside the
    /// checkout: the artifact is placed under it.
    pub(crate) context_dir: &'a Path,
    /// What the builder container (and a builder image's build) may use.
    pub(crate) limits: &'a ContainerLimits,
    /// How much of the checkout and the artifact the run takes on.
    pub(crate) size_limits: SizeLimits,
    /// Which images on the engine the job may use.
    pub(crate) images: &'a ImagePolicy,
    /// The Engine's builder that builds a builder image.
    pub(crate) engine: DaemonBuilder,
}

/// Runs the builder: image, container, upload, command, artifact. Whatever
/// happens, the container and a built builder image are removed before
/// this returns (or, if the future is dropped, right after).
pub(crate) async fn run(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let mut leftovers = Leftovers::new(docker.clone(), StepName::Builder);
    let outcome = run_in(docker, spec, &mut leftovers, reporter).await;
    leftovers.remove(reporter).await;
    outcome
}

/// The stages of [`run`]; whatever they create is recorded in `leftovers`
/// as soon as it exists.
async fn run_in(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let image = image::builder_image(docker, spec, leftovers, reporter).await?;
    let container = container::create(docker, spec, &image).await?;
    leftovers.record_container(container.clone());
    container::upload_source(docker, spec, &container).await?;
    container::run_command(docker, spec, &container, reporter).await?;
    artifact::copy_out(docker, spec, &container, reporter).await
}

/// Whether the daemon answered that the object does not exist (a missing
/// image is pulled, a missing artifact named, a container already gone is
/// no problem).
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_failure_carries_its_code_and_quotes_the_tail() {
        let failed = BuilderError::CommandFailed {
            code: 7,
            tail: "compiling\nerror: no such file".into(),
        };
        assert_eq!(failed.exit_code(), Some(7));
        assert_eq!(
            failed.to_string(),
            "build.builder.command exited with code 7; its last output lines:\ncompiling\nerror: no such file"
        );
        let silent = BuilderError::CommandFailed {
            code: 1,
            tail: String::new(),
        };
        assert_eq!(
            silent.to_string(),
            "build.builder.command exited with code 1; it wrote no output"
        );
        let missing = BuilderError::ArtifactMissing {
            path: "/out".into(),
        };
        assert_eq!(missing.exit_code(), None);
    }
}
