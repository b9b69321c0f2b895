//! The builder image: the job's `build.builder.image`, used as the daemon
//! has it or pulled with the job's registry credentials, or an image built
//! from the repository's `build.builder.dockerfile` (labelled, and removed
//! with the run's other leftovers).

use super::labels::builder_labels;
use super::leftovers::Leftovers;
use super::{is_not_found, BuilderError, BuilderRun};
use crate::events::Reporter;
use crate::pipeline::registry_auth;
use crate::pipeline::steps::build::context::{self, ContextSpec, BUILDER_DOCKERFILE_FIELD};
use crate::pipeline::steps::build::{build_image, ImageBuild};
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use buildbot_protocol::{registry_host, StepName};
use futures_util::StreamExt;

/// Repository of builder images built from a job's Dockerfile; the tag is
/// the job id.
const BUILDER_IMAGE_REPOSITORY: &str = "buildbot-builder";

/// The image to run: the job's `builder.image` (pulled when missing) or
/// one built from `builder.dockerfile`. Returns a reference or id.
pub(super) async fn builder_image(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<String, BuilderError> {
    if let Some(dockerfile) = &spec.builder.dockerfile {
        let reference = format!("{BUILDER_IMAGE_REPOSITORY}:{}", spec.job.job_id);
        // Recorded before building: a build cut short by a timeout may
        // still have tagged it.
        leftovers.record_image(reference.clone());
        return build_from_dockerfile(docker, spec, dockerfile, reference, reporter).await;
    }
    let image = spec.builder.image.clone().unwrap_or_default();
    match docker.inspect_image(&image).await {
        Ok(_) => {
            let line = format!("using the builder image {image} present on the daemon");
            reporter.system(StepName::Builder, line).await;
            Ok(image)
        }
        Err(e) if is_not_found(&e) => pull(docker, spec, image, reporter).await,
        Err(e) => Err(e.into()),
    }
}

/// Builds the builder image from `dockerfile`, with the checkout as its
/// context, tagged `reference`.
async fn build_from_dockerfile(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    dockerfile: &str,
    reference: String,
    reporter: &Reporter,
) -> Result<String, BuilderError> {
    let context = ContextSpec {
        checkout: spec.checkout.to_owned(),
        context: ".".to_owned(),
        dockerfile: dockerfile.to_owned(),
        dockerfile_field: BUILDER_DOCKERFILE_FIELD,
        mtime: spec.mtime,
    };
    context::resolve(&context)?;
    let line = format!("building the builder image {reference} from {dockerfile}");
    reporter.system(StepName::Builder, line).await;
    // Base images are pulled with the same credentials as the runtime
    // build's: a `basic` login without a server is for the job's registry.
    let image_registry = registry_host(&spec.job.image.repository);
    let credentials =
        registry_auth::all_credentials(spec.job.registry_auth.as_ref(), &image_registry)?;
    let build = ImageBuild {
        dockerfile: dockerfile.to_owned(),
        reference,
        labels: builder_labels(spec),
        registry_credentials: credentials,
        limits: spec.limits.clone(),
        ..Default::default()
    };
    build_image(docker, build, context, StepName::Builder, reporter)
        .await
        .map_err(BuilderError::Build)
}

/// Pulls `image` with the job's credentials for its registry.
async fn pull(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    image: String,
    reporter: &Reporter,
) -> Result<String, BuilderError> {
    let registry = registry_host(&image);
    let credentials = registry_auth::credentials_for(spec.job, &registry)?;
    let line = format!("pulling the builder image {image}");
    reporter.system(StepName::Builder, line).await;
    let options = CreateImageOptions {
        from_image: Some(image.clone()),
        // Without a tag the daemon would pull every tag of the repository.
        tag: needs_default_tag(&image).then(|| "latest".to_owned()),
        ..Default::default()
    };
    let mut output = docker.create_image(Some(options), None, credentials);
    while let Some(item) = output.next().await {
        let info = item.map_err(|e| pull_error(e, &image))?;
        if let Some(line) = pull_line(info) {
            reporter.system(StepName::Builder, line).await;
        }
    }
    Ok(image)
}

/// The log line of one pull progress message, if it is worth one:
/// per-layer byte counts repeat many times a second and are left out; the
/// rest (layer done, digest, status) is kept, named by its layer. (The
/// daemon sends an empty progressDetail with those too.)
fn pull_line(info: CreateImageInfo) -> Option<String> {
    let counting = info
        .progress_detail
        .is_some_and(|detail| detail.current.is_some());
    let status = info.status.filter(|_| !counting)?;
    Some(match info.id {
        Some(layer) => format!("{layer}: {status}"),
        None => status,
    })
}

/// A failed pull, with the daemon's own words where it gave them.
fn pull_error(e: bollard::errors::Error, image: &str) -> BuilderError {
    let message = match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    BuilderError::Pull {
        image: image.to_owned(),
        message,
    }
}

/// Whether `image` names neither a tag nor a digest.
fn needs_default_tag(image: &str) -> bool {
    match buildbot_protocol::reference::parse_reference(image) {
        Ok(reference) => reference.tag.is_none() && reference.digest.is_none(),
        // Validation accepted it; the daemon will say what is wrong.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_progress_keeps_outcomes_and_drops_byte_counts() {
        use bollard::models::ProgressDetail;
        let message = |id: Option<&str>, status: &str, current: Option<i64>| CreateImageInfo {
            id: id.map(str::to_owned),
            status: Some(status.to_owned()),
            progress_detail: Some(ProgressDetail {
                current,
                total: current.map(|_| 100),
            }),
            ..Default::default()
        };
        let downloading = message(Some("0a1b"), "Downloading", Some(42));
        assert_eq!(pull_line(downloading), None);
        let complete = message(Some("0a1b"), "Pull complete", None);
        assert_eq!(pull_line(complete).as_deref(), Some("0a1b: Pull complete"));
        let digest = CreateImageInfo {
            status: Some("Digest: sha256:abc".into()),
            ..Default::default()
        };
        assert_eq!(pull_line(digest).as_deref(), Some("Digest: sha256:abc"));
    }

    #[test]
    fn untagged_images_get_the_latest_tag_only() {
        assert!(needs_default_tag("debian"));
        assert!(needs_default_tag("registry.example.com:5000/team/hugo"));
        assert!(!needs_default_tag("debian:bookworm-slim"));
        assert!(!needs_default_tag(&format!(
            "debian@sha256:{}",
            "a".repeat(64)
        )));
    }
}
