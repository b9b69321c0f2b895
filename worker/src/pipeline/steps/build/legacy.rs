//! Builds on the Engine's legacy builder (`/build` without BuildKit),
//! which the Docker CLI calls deprecated: for engines without BuildKit, and
//! jobs that ask for it (`build.engine: legacy`).

use super::{context, ImageBuild};
use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use bollard::models::{BuildInfoAux, ImageId};
use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use buildbot_protocol::{LogStream, StepName};
use bytes::Bytes;
use context::ContextSpec;
use futures_util::{Stream, StreamExt};

/// Builds an image from the context `spec` names; returns the image id.
///
/// Built once more when the legacy builder meets a cached layer that
/// another job removed mid-build (jobs share the daemon's layer cache, and
/// removing an image takes its unused parents along): the same build run
/// again does not meet it.
pub(super) async fn build_image(
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
        // The legacy builder's `RUN` containers: memory without swap, CPU
        // quota, network. Its API has no pids limit, capability or
        // security option: those stay the daemon's defaults (see README).
        memory: build.limits.build_memory(),
        memswap: build.limits.build_memory(),
        cpuquota: build.limits.build_cpu_quota(),
        cpuperiod: build.limits.build_cpu_period(),
        networkmode: Some(build.limits.network.mode().to_owned()),
        ..build.query()
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
        if let Some(BuildInfoAux::Default(ImageId { id: Some(id) })) = info.aux {
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
