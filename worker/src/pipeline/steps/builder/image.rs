//! The builder image: the job's `build.builder.image`, resolved with the
//! job's registry credentials as [`crate::pipeline::images`] says, or an
//! image built from the repository's `build.builder.dockerfile` (its base
//! images resolved the same way; labelled, and removed with the run's
//! other leftovers).

use super::labels::builder_labels;
use super::leftovers::Leftovers;
use super::{BuilderError, BuilderRun};
use crate::events::Reporter;
use crate::pipeline::images::ImageUse;
use crate::pipeline::registry_auth;
use crate::pipeline::steps::build::context::{self, ContextSpec, BUILDER_DOCKERFILE_FIELD};
use crate::pipeline::steps::build::{build_image, ImageBuild};
use bollard::Docker;
use buildbot_protocol::{registry_host, StepName};
use std::collections::HashMap;

/// The job field naming a builder image to run.
const BUILDER_IMAGE_FIELD: &str = "build.builder.image";

/// Repository of builder images built from a job's Dockerfile; the tag is
/// the job id.
const BUILDER_IMAGE_REPOSITORY: &str = "buildbot-builder";

/// The image to run: the job's `builder.image` (resolved as the engine's
/// [`ImagePolicy`] allows) or one built from `builder.dockerfile`. Returns
/// a reference or id.
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
    image_use(docker, spec, reporter)
        .image(BUILDER_IMAGE_FIELD, &image)
        .await?;
    Ok(image)
}

fn image_use<'a>(
    docker: &'a Docker,
    spec: &'a BuilderRun<'_>,
    reporter: &'a Reporter,
) -> ImageUse<'a> {
    ImageUse {
        docker,
        policy: spec.images,
        job: spec.job,
        step: StepName::Builder,
        reporter,
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
    let text = context::read_dockerfile(&context)?;
    image_use(docker, spec, reporter)
        .dockerfile_images(BUILDER_DOCKERFILE_FIELD, &text, &HashMap::new())
        .await?;
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
