//! The builder image: the job's `build.builder.image`, resolved with the
//! job's registry credentials as [`crate::pipeline::images`] says, or an
//! image built from the repository's `build.builder.dockerfile` (its base
//! images resolved the same way), kept and reused while its inputs are the
//! same ([`cache`]).

use super::cache::{self, BuilderInputs};
use super::labels::{builder_labels, cache_labels};
use super::leftovers::Leftovers;
use super::{BuilderError, BuilderRun};
use crate::events::Reporter;
use crate::pipeline::images::ImageUse;
use crate::pipeline::registry_auth;
use crate::pipeline::steps::build::context::{self, ContextSpec, BUILDER_DOCKERFILE_FIELD};
use crate::pipeline::steps::build::{build_image, ImageBuild};
use bollard::query_parameters::TagImageOptions;
use bollard::Docker;
use buildbot_protocol::{registry_host, StepName};
use std::collections::HashMap;

/// The job field naming a builder image to run.
const BUILDER_IMAGE_FIELD: &str = "build.builder.image";

/// Repository of builder images built from a job's Dockerfile; the tag is
/// the cache key, or the job id when uncacheable.
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
        return from_dockerfile(docker, spec, dockerfile, leftovers, reporter).await;
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

/// The builder image built from `dockerfile`, with the checkout as its
/// context: the cached one when its key matches (see [`cache`]), else
/// built now, kept under its key (or, uncacheable, tagged with the job id
/// and removed with the run's leftovers).
async fn from_dockerfile(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    dockerfile: &str,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<String, BuilderError> {
    let context = ContextSpec {
        checkout: spec.checkout.to_owned(),
        context: ".".to_owned(),
        dockerfile: dockerfile.to_owned(),
        dockerfile_field: BUILDER_DOCKERFILE_FIELD,
        mtime: spec.mtime,
        limits: spec.size_limits.into(),
    };
    context::resolve(&context).await?;
    let text = context::read_dockerfile(&context)?;
    let base_images = image_use(docker, spec, reporter)
        .dockerfile_images(BUILDER_DOCKERFILE_FIELD, &text, &HashMap::new())
        .await?;
    let key = cache_key(docker, spec, dockerfile, &text, &base_images, reporter).await;
    let forced = spec.job.build.no_cache || spec.job.build.pull;
    let (reference, labels) = match key {
        Some(key) => {
            let reference = format!("{BUILDER_IMAGE_REPOSITORY}:{key}");
            if !forced && docker.inspect_image(&reference).await.is_ok() {
                touch(docker, &key).await;
                let line = format!("using the cached builder image {reference} (the same {dockerfile}, base images and copied files)");
                reporter.system(StepName::Builder, line).await;
                return Ok(reference);
            }
            (reference, cache_labels(&key))
        }
        None => {
            let reference = format!("{BUILDER_IMAGE_REPOSITORY}:{}", spec.job.job_id);
            // Recorded before building: a build cut short by a timeout
            // may still have tagged it.
            leftovers.record_image(reference.clone());
            (reference, builder_labels(spec))
        }
    };
    let line = format!("building the builder image {reference} from {dockerfile}");
    reporter.system(StepName::Builder, line).await;
    // Base images are pulled with the same credentials as the runtime
    // build's: a `basic` login without a server is for the job's registry.
    let image_registry = registry_host(&spec.job.image.repository);
    let credentials =
        registry_auth::all_credentials(spec.job.registry_auth.as_ref(), &image_registry)?;
    let build = ImageBuild {
        engine: spec.engine.clone(),
        dockerfile: dockerfile.to_owned(),
        reference: reference.clone(),
        labels,
        registry_credentials: credentials,
        limits: spec.limits.clone(),
        no_cache: spec.job.build.no_cache,
        pull: spec.job.build.pull,
        ..Default::default()
    };
    build_image(docker, build, context, StepName::Builder, reporter)
        .await
        .map_err(BuilderError::Build)?;
    Ok(reference)
}

/// The cache key of the builder `dockerfile` (text `text`, starting from
/// `base_images`) of this run, or None (said in the job's log) when it
/// cannot be cached.
async fn cache_key(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    dockerfile: &str,
    text: &str,
    base_images: &[String],
    reporter: &Reporter,
) -> Option<String> {
    let mut base_image_ids = Vec::new();
    for image in base_images {
        // Missing only on a user's own engine, where the build pulls it:
        // the next run has its id.
        base_image_ids.push(docker.inspect_image(image).await.ok()?.id?);
    }
    let (checkout, dockerfile, text) = (
        spec.checkout.to_owned(),
        dockerfile.to_owned(),
        text.to_owned(),
    );
    let computed = tokio::task::spawn_blocking(move || {
        cache::key(&BuilderInputs {
            checkout: &checkout,
            dockerfile: &dockerfile,
            dockerfile_text: &text,
            base_image_ids: &base_image_ids,
        })
    })
    .await;
    let reason = match computed {
        Ok(Ok(Some(key))) => return Some(key),
        Ok(Ok(None)) => "it ADDs a URL or copies from outside the checkout".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    let line = format!("the builder image is built for this job only, not cached: {reason}");
    reporter.system(StepName::Builder, line).await;
    None
}

/// Tags the cached builder image `key` again: the engine records when, so
/// the least recently used go first when the image cache is trimmed.
async fn touch(docker: &Docker, key: &str) {
    let options = TagImageOptions {
        repo: Some(BUILDER_IMAGE_REPOSITORY.to_owned()),
        tag: Some(key.to_owned()),
    };
    let reference = format!("{BUILDER_IMAGE_REPOSITORY}:{key}");
    if let Err(e) = docker.tag_image(&reference, Some(options)).await {
        tracing::warn!(%reference, error = %e, "could not mark the cached builder image as used");
    }
}
