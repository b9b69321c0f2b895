//! Push step: every tag of the built image to its registry, with the
//! job's registry credentials, reporting the manifest digest.

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use crate::pipeline::registry_auth;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::PushImageOptions;
use bollard::Docker;
use buildbot_protocol::{registry_host, Job, StepName};
use futures_util::StreamExt;

/// Pushes every tag of `image_id` and checks the registry holds this
/// job's image under them; returns the manifest digest.
pub(crate) async fn run(
    docker: &Docker,
    job: &Job,
    image_id: &str,
    reporter: &Reporter,
) -> Result<String, String> {
    let registry = registry_host(&job.image.repository);
    let credentials = registry_auth::credentials_for(job.registry_auth.as_ref(), &registry)
        .map_err(|e| e.to_string())?;
    if credentials.is_none() && job.registry_auth.is_some() {
        let line =
            format!("registry_auth holds no credentials for {registry}; pushing anonymously");
        reporter.system(StepName::Push, line).await;
    }
    let digest = push_tags(
        docker,
        &job.image.repository,
        &job.image.tags,
        credentials,
        reporter,
    )
    .await
    .map_err(|e| e.to_string())?;
    verify_pushed(docker, image_id, &job.image.repository, &digest)
        .await
        .map_err(|e| e.to_string())?;
    reporter
        .system(
            StepName::Push,
            format!(
                "pushed {}:{} as {digest}",
                job.image.repository,
                job.image.tags.join(",")
            ),
        )
        .await;
    Ok(digest)
}

/// Pushes every tag; returns the manifest digest the registry reported,
/// which is the same for every tag of one image.
async fn push_tags(
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
