//! Build step: the runtime image, built by the Docker Engine from the
//! job's build context (the checkout, or the builder's output placed in
//! it), with the job's build settings and the OCI labels.
//!
//! - [`context`]: the context tar, `.dockerignore` applied, no symlink
//!   followed out of the checkout.
//! - [`dockerignore`]: Docker's ignore-file rules.
//! - [`labels`]: the labels every image carries.

pub(crate) mod context;
mod dockerignore;
mod labels;

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use crate::pipeline::images::{ImageAccessError, ImagePolicy, ImageUse};
use crate::pipeline::registry_auth;
use crate::pipeline::steps::builder::ContainerLimits;
use crate::pipeline::steps::clone::Checkout;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use buildbot_protocol::{registry_host, Job, LogStream, StepName};
use bytes::Bytes;
use context::{ContextSpec, WalkLimits, DOCKERFILE_FIELD};
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::path::Path;

/// Builds the runtime image; returns the image id. It is tagged
/// [`private_reference`] on the engine, and with every tag of the job too
/// when the engine is the user's own.
pub(crate) async fn run(
    docker: &Docker,
    job: &Job,
    spec: ContextSpec,
    commit: &str,
    limits: &ContainerLimits,
    images: &ImagePolicy,
    reporter: &Reporter,
) -> Result<String, String> {
    context::resolve(&spec).await.map_err(|e| e.to_string())?;
    use_inputs(docker, job, &spec, images, reporter)
        .await
        .map_err(|e| e.to_string())?;
    let registry = registry_host(&job.image.repository);
    let credentials = registry_auth::all_credentials(job.registry_auth.as_ref(), &registry)
        .map_err(|e| e.to_string())?;
    let build = image_build(job, commit, credentials, limits);
    let image_id = build_image(docker, build, spec, StepName::Build, reporter)
        .await
        .map_err(|e| e.to_string())?;
    if images.tags_locally() {
        tag_image(docker, &image_id, &job.image.repository, &job.image.tags)
            .await
            .map_err(|e| e.to_string())?;
    }
    reporter
        .system(StepName::Build, format!("built image {image_id}"))
        .await;
    Ok(image_id)
}

/// The name the built image has on the engine while its job runs:
/// `repository:buildbot-<job_id>`, used by no other job.
pub(crate) fn private_reference(job: &Job) -> String {
    format!("{}:buildbot-{}", job.image.repository, job.job_id)
}

/// Makes the images the build takes from outside usable, as `images`
/// allows: the Dockerfile's `FROM` and `COPY --from`, and `cache_from`.
async fn use_inputs(
    docker: &Docker,
    job: &Job,
    spec: &ContextSpec,
    images: &ImagePolicy,
    reporter: &Reporter,
) -> Result<(), InputError> {
    let image_use = ImageUse {
        docker,
        policy: images,
        job,
        step: StepName::Build,
        reporter,
    };
    let text = context::read_dockerfile(spec)?;
    let build_args = job.build.build_args.clone().into_iter().collect();
    image_use
        .dockerfile_images(DOCKERFILE_FIELD, &text, &build_args)
        .await?;
    for image in &job.build.cache_from {
        image_use.image("build.cache_from", image).await?;
    }
    Ok(())
}

/// Why the build's input images cannot be used.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error(transparent)]
    Dockerfile(#[from] context::ContextError),
    #[error(transparent)]
    Image(#[from] ImageAccessError),
}

/// The runtime image's build context in the checkout, walked within
/// `limits`.
pub(crate) fn runtime_context(
    job: &Job,
    checkout_dir: &Path,
    checkout: &Checkout,
    limits: WalkLimits,
) -> ContextSpec {
    ContextSpec {
        checkout: checkout_dir.to_owned(),
        context: job.build.context.clone(),
        dockerfile: job.build.dockerfile.clone(),
        dockerfile_field: DOCKERFILE_FIELD,
        mtime: u64::try_from(checkout.commit_time).unwrap_or(0),
        limits,
    }
}

/// The daemon-side description of the job's build, OCI labels included.
fn image_build(
    job: &Job,
    commit: &str,
    registry_credentials: HashMap<String, bollard::auth::DockerCredentials>,
    limits: &ContainerLimits,
) -> ImageBuild {
    let labels = labels::image_labels(job, commit);
    ImageBuild {
        dockerfile: job.build.dockerfile.clone(),
        reference: private_reference(job),
        build_args: job.build.build_args.clone().into_iter().collect(),
        labels,
        target: job.build.target.clone(),
        no_cache: job.build.no_cache,
        pull: job.build.pull,
        cache_from: job.build.cache_from.clone(),
        registry_credentials,
        limits: limits.clone(),
    }
}

/// What to build; paths are those inside the context tar.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageBuild {
    /// Dockerfile path relative to the context.
    pub(crate) dockerfile: String,
    /// Reference the image is tagged with while building (`repo:tag`).
    pub(crate) reference: String,
    /// `--build-arg` values.
    pub(crate) build_args: HashMap<String, String>,
    /// Image labels, the OCI ones included.
    pub(crate) labels: HashMap<String, String>,
    /// Multi-stage target.
    pub(crate) target: Option<String>,
    /// Disable the layer cache.
    pub(crate) no_cache: bool,
    /// Always pull base images.
    pub(crate) pull: bool,
    /// Cache source images.
    pub(crate) cache_from: Vec<String>,
    /// Credentials for base-image pulls, by registry host.
    pub(crate) registry_credentials: HashMap<String, DockerCredentials>,
    /// What the `RUN` steps' containers may use; the worker's defaults
    /// unless set, so no build runs unlimited.
    pub(crate) limits: ContainerLimits,
}

/// Builds an image from the context `spec` names, streamed as a tar;
/// returns the image id. The daemon's output is reported as it arrives, as
/// output of `step` (the runtime image's build, or a builder image's).
///
/// Built once more when the legacy builder meets a cached layer that
/// another job removed mid-build (jobs share the daemon's layer cache, and
/// removing an image takes its unused parents along): the same build run
/// again does not meet it.
pub(crate) async fn build_image(
    docker: &Docker,
    build: ImageBuild,
    spec: ContextSpec,
    step: StepName,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let stream = context::stream_tar(spec.clone());
    match build_once(docker, build.clone(), stream, step, reporter).await {
        Err(e) if is_cache_race(&e) => {
            let line = "another job removed a cached layer this build was reusing; building again";
            reporter.system(step, line).await;
            build_once(docker, build, context::stream_tar(spec), step, reporter).await
        }
        other => other,
    }
}

/// The legacy builder's words when a cached image it reuses vanished.
fn is_cache_race(e: &DockerError) -> bool {
    let text = e.to_string();
    [
        "unknown parent image ID",
        "failed to get digest",
        "No such image: sha256:",
        // The cache probe lists a layer's children, then looks each up:
        // an image cache trim can remove one in between.
        "unable to find image \"sha256:",
    ]
    .iter()
    .any(|words| text.contains(words))
}

async fn build_once(
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
        // The legacy builder's `RUN` containers: memory without swap, CPU
        // quota, network. Its API has no pids limit, capability or
        // security option: those stay the daemon's defaults (see README).
        memory: build.limits.build_memory(),
        memswap: build.limits.build_memory(),
        cpuquota: build.limits.build_cpu_quota(),
        cpuperiod: build.limits.build_cpu_period(),
        networkmode: Some(build.limits.network.mode().to_owned()),
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
async fn tag_image(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_cached_layer_is_told_apart_from_a_failed_build() {
        let vanished = [
            "unknown parent image ID sha256:0a1b",
            "failed to get digest sha256:0a1b: image not known",
            "No such image: sha256:0a1b",
            "Build: unable to find image \"sha256:0a1b\"",
        ];
        for words in vanished {
            assert!(is_cache_race(&DockerError::Build(words.into())), "{words}");
        }
        let failed =
            DockerError::Build("The command '/bin/sh -c make' returned a non-zero code: 2".into());
        assert!(!is_cache_race(&failed));
    }
}
