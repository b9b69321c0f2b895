//! The one push through the Docker Engine: the built image, by id, under a
//! tag private to the job, so no other job on the same engine can move that
//! tag between tagging and pushing. The engine uploads the layers (it has
//! them) and reports the manifest digest.

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;
use buildbot_protocol::StepName;
use futures_util::StreamExt;
use std::time::Duration;

/// Pushes of the private tag answered with a registry server error, and
/// the pause before the next (times the pushes so far).
const ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Tags `image_id` as `repository:tag`, pushes that reference, checks the
/// engine pushed this image, and removes the local tag again whatever
/// happened. Returns the manifest digest the engine reported.
pub(super) async fn push(
    docker: &Docker,
    image_id: &str,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let options = TagImageOptions {
        repo: Some(repository.to_owned()),
        tag: Some(tag.to_owned()),
    };
    docker.tag_image(image_id, Some(options)).await?;
    let pushed = push_retrying(docker, repository, tag, credentials, reporter).await;
    let checked = match pushed {
        Ok(digest) => verify_pushed(docker, image_id, repository, &digest)
            .await
            .map(|()| digest),
        Err(e) => Err(e),
    };
    untag(docker, &format!("{repository}:{tag}")).await;
    checked
}

/// [`push_tag`], again after the registry answered a server error, up to
/// [`ATTEMPTS`] times in all. Registries answer 500 when a read races a
/// write of the same file (distribution's filesystem storage rewrites a
/// layer's link in place when concurrent jobs push it to one repository);
/// pushing the job's own tag again is harmless.
async fn push_retrying(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let mut attempt = 1;
    loop {
        match push_tag(docker, repository, tag, credentials.clone(), reporter).await {
            Err(DockerError::Push { message, .. })
                if attempt < ATTEMPTS && is_server_error(&message) =>
            {
                let line = format!("the registry failed ({message}); pushing again");
                reporter.system(StepName::Push, line).await;
                tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Whether the daemon's push error is the registry's 5xx answer
/// (`received unexpected HTTP status: 500 Internal Server Error`).
fn is_server_error(message: &str) -> bool {
    message.contains("unexpected HTTP status: 5")
}

/// Pushes `repository:tag`; returns the digest of the daemon's final line.
async fn push_tag(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let reference = format!("{repository}:{tag}");
    reporter
        .system(StepName::Push, format!("pushing {reference}"))
        .await;
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

/// Checks that `digest`, pushed for `repository`, is image `image_id`. The
/// tag is the job's own, so only a second delivery of the same job running
/// at the same time on this engine could have moved it.
async fn verify_pushed(
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

/// Removes the job's private tag from the engine, so it does not keep the
/// image from being pruned once the job's own tags move on. The image and
/// its parents stay (`noprune`): other tags and the build cache use them.
/// A failure only leaves a tag behind, so it is logged, not reported.
async fn untag(docker: &Docker, reference: &str) {
    let options = RemoveImageOptions {
        force: false,
        noprune: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_image(reference, Some(options), None).await {
        tracing::warn!(%reference, error = %e, "could not remove the job's push tag from the Docker Engine");
    }
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

    #[test]
    fn only_the_registrys_server_errors_are_pushed_again() {
        assert!(is_server_error(
            "received unexpected HTTP status: 500 Internal Server Error"
        ));
        assert!(!is_server_error("unauthorized: authentication required"));
        assert!(!is_server_error(
            "received unexpected HTTP status: 404 Not Found"
        ));
    }

    #[test]
    fn per_layer_progress_is_noise_and_outcomes_are_not() {
        assert!(is_progress_noise("Pushing"));
        assert!(!is_progress_noise("Layer already exists"));
    }
}
