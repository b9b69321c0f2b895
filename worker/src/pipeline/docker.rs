//! The Docker Engine connection the steps share (through bollard), and the
//! one error type for what the daemon says.

use bollard::Docker;

/// Why a Docker step failed. Messages carry the daemon's own words.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    /// The daemon could not be reached or answered with an API error.
    #[error("Docker Engine: {0}")]
    Api(String),
    /// The build failed; the daemon's error text.
    #[error("{0}")]
    Build(String),
    /// A step of the build failed; its command's exit code where it ran
    /// one.
    #[error("{instruction} failed: {message}")]
    Instruction {
        /// The step, as the builder names it (`[2/3] RUN make`).
        instruction: String,
        /// What the builder said.
        message: String,
        /// The exit code of the step's command.
        exit_code: Option<i64>,
    },
    /// The build ended without reporting the image it built.
    #[error("the daemon did not report the id of the built image")]
    NoImageId,
    /// Pushing a tag failed; the daemon's error text.
    #[error("pushing {reference} failed: {message}")]
    Push {
        /// The reference being pushed.
        reference: String,
        /// What the daemon said.
        message: String,
    },
    /// A tag was moved to another image while the job pushed it (another
    /// job on the same daemon building the same tag).
    #[error("{0}: another job on this Docker Engine pushed the same tag at the same time; run the job again")]
    Moved(String),
    /// The registry accepted the push but no digest was reported.
    #[error("pushing {0} reported no manifest digest")]
    NoDigest(String),
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        DockerError::Api(e.to_string())
    }
}

/// Connects to the daemon named by `DOCKER_HOST` (default: the local
/// socket) and agrees on an API version both sides speak.
pub(crate) async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults()?;
    Ok(docker.negotiate_version().await?)
}

/// A client for the daemon named by `DOCKER_HOST` that works before the
/// daemon answers: the API version is negotiated when it does, else the
/// client's default is used and jobs fail with the daemon's absence until
/// it is back. Errs only on a malformed `DOCKER_HOST`.
pub(crate) async fn client() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults()?;
    match docker.clone().negotiate_version().await {
        Ok(negotiated) => Ok(negotiated),
        Err(e) => {
            tracing::warn!(error = %e, "the Docker Engine does not answer; jobs fail until it does");
            Ok(docker)
        }
    }
}
