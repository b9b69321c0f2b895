//! Build and push steps: talks to the Docker Engine API through bollard,
//! streaming the daemon's output as log events while it runs.

use crate::events::Reporter;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions, TagImageOptions};
use bollard::Docker;
use buildbot_protocol::{LogStream, StepName};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;

/// Why a Docker step failed. Messages carry the daemon's own words.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon could not be reached or answered with an API error.
    #[error("Docker Engine: {0}")]
    Api(String),
    /// The build failed; the daemon's error text.
    #[error("{0}")]
    Build(String),
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
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults()?;
    Ok(docker.negotiate_version().await?)
}

/// A client for the daemon named by `DOCKER_HOST` that works before the
/// daemon answers: the API version is negotiated when it does, else the
/// client's default is used and jobs fail with the daemon's absence until
/// it is back. Errs only on a malformed `DOCKER_HOST`.
pub async fn client() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults()?;
    match docker.clone().negotiate_version().await {
        Ok(negotiated) => Ok(negotiated),
        Err(e) => {
            tracing::warn!(error = %e, "the Docker Engine does not answer; jobs fail until it does");
            Ok(docker)
        }
    }
}

/// What to build; paths are those inside the context tar.
#[derive(Debug, Clone, Default)]
pub struct ImageBuild {
    /// Dockerfile path relative to the context.
    pub dockerfile: String,
    /// Reference the image is tagged with while building (`repo:tag`).
    pub reference: String,
    /// `--build-arg` values.
    pub build_args: HashMap<String, String>,
    /// Image labels, the OCI ones included.
    pub labels: HashMap<String, String>,
    /// Multi-stage target.
    pub target: Option<String>,
    /// Disable the layer cache.
    pub no_cache: bool,
    /// Always pull base images.
    pub pull: bool,
    /// Cache source images.
    pub cache_from: Vec<String>,
    /// Credentials for base-image pulls, by registry host.
    pub registry_credentials: HashMap<String, DockerCredentials>,
}

/// Builds an image from a streamed context tar; returns the image id.
/// The daemon's output is reported as it arrives, as output of `step`
/// (the runtime image's build, or a builder image's).
pub async fn build_image(
    docker: &Docker,
    build: ImageBuild,
    context: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    step: StepName,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let options = BuildImageOptions {
        dockerfile: build.dockerfile,
        t: Some(build.reference),
        buildargs: Some(build.build_args),
        labels: Some(build.labels),
        target: build.target.unwrap_or_default(),
        nocache: build.no_cache,
        pull: build.pull.then(|| "1".to_owned()),
        cachefrom: Some(build.cache_from),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let credentials = Some(build.registry_credentials);
    let body = bollard::body_try_stream(context);
    let mut output = docker.build_image(options, credentials, Some(body));
    let mut image_id = None;
    while let Some(item) = output.next().await {
        let info = item.map_err(build_error)?;
        if let Some(text) = info.stream {
            reporter.log(step, LogStream::Stdout, text).await;
        }
        if let Some(status) = info.status {
            reporter.system(step, status).await;
        }
        if let Some(id) = info.aux.and_then(|aux| aux.id) {
            image_id = Some(id);
        }
    }
    image_id.ok_or(DockerError::NoImageId)
}

fn build_error(e: bollard::errors::Error) -> DockerError {
    match e {
        bollard::errors::Error::DockerStreamError { error } => DockerError::Build(error),
        other => other.into(),
    }
}

/// Tags `image_id` as `repository:tag` for every tag.
pub async fn tag_image(
    docker: &Docker,
    image_id: &str,
    repository: &str,
    tags: &[String],
) -> Result<(), DockerError> {
    for tag in tags {
        let options = TagImageOptions {
            repo: Some(repository.to_owned()),
            tag: Some(tag.clone()),
        };
        docker.tag_image(image_id, Some(options)).await?;
    }
    Ok(())
}

/// Pushes every tag; returns the manifest digest the registry reported,
/// which is the same for every tag of one image.
pub async fn push_tags(
    docker: &Docker,
    repository: &str,
    tags: &[String],
    credentials: Option<DockerCredentials>,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let mut digest: Option<String> = None;
    for tag in tags {
        let reference = format!("{repository}:{tag}");
        reporter
            .system(StepName::Push, format!("pushing {reference}"))
            .await;
        let pushed = push_one(docker, repository, tag, credentials.clone(), reporter).await?;
        if let Some(first) = digest.as_ref().filter(|first| **first != pushed) {
            return Err(DockerError::Moved(format!(
                "{reference} was pushed as {pushed} but the job's first tag as {first}"
            )));
        }
        digest = Some(pushed);
    }
    digest.ok_or_else(|| DockerError::NoDigest(repository.to_owned()))
}

/// Checks that `digest`, pushed for `repository`, is image `image_id`:
/// the tags are pushed by name, so another job on the same daemon tagging
/// the same name in between would otherwise be reported as this job's.
pub async fn verify_pushed(
    docker: &Docker,
    image_id: &str,
    repository: &str,
    digest: &str,
) -> Result<(), DockerError> {
    let image = docker.inspect_image(image_id).await?;
    let expected = format!("{repository}@{digest}");
    if image.repo_digests.unwrap_or_default().contains(&expected) {
        Ok(())
    } else {
        Err(DockerError::Moved(format!(
            "{expected} is not the image this job built ({image_id})"
        )))
    }
}

async fn push_one(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let reference = format!("{repository}:{tag}");
    let options = PushImageOptions {
        tag: Some(tag.to_owned()),
        ..Default::default()
    };
    let mut output = docker.push_image(repository, Some(options), credentials);
    let mut digest = None;
    while let Some(item) = output.next().await {
        let info = item.map_err(|e| push_error(e, &reference))?;
        let Some(status) = info.status else { continue };
        if let Some(found) = digest_in(&status) {
            digest = Some(found.to_owned());
        }
        if !is_progress_noise(&status) {
            reporter.system(StepName::Push, status).await;
        }
    }
    digest.ok_or(DockerError::NoDigest(reference))
}

fn push_error(e: bollard::errors::Error, reference: &str) -> DockerError {
    match e {
        bollard::errors::Error::DockerStreamError { error } => DockerError::Push {
            reference: reference.to_owned(),
            message: error,
        },
        other => other.into(),
    }
}

/// The digest in the daemon's final push line, `TAG: digest: sha256:… size: N`.
fn digest_in(status: &str) -> Option<&str> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then_some(digest)
}

/// Per-layer progress states repeated many times per push; the outcome
/// lines (`Pushed`, `Layer already exists`, the digest) are kept.
fn is_progress_noise(status: &str) -> bool {
    matches!(status, "Preparing" | "Waiting" | "Pushing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_read_from_the_final_push_line() {
        let line = "v1: digest: sha256:0123abcd size: 528";
        assert_eq!(digest_in(line), Some("sha256:0123abcd"));
        assert_eq!(digest_in("Pushed"), None);
    }
}
