//! Builds on the Engine's BuildKit (`/build` with `version=2`): the job's
//! build secrets and registry logins served by the worker's own
//! [`session`], the progress decoded into plain log lines ([`progress`]).
//!
//! `RUN` steps run in the daemon's BuildKit, under the daemon's own
//! cgroup: the Engine API has no per-build memory or CPU limit for them
//! (README, "Limits"); `--builder-network none` still cuts their network.

mod progress;
mod session;

pub(crate) use progress::exit_code_in;
pub(crate) use session::SessionAddress;

use super::ImageBuild;
use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use bollard::models::{BuildInfo, BuildInfoAux};
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use bollard::Docker;
use buildbot_protocol::{LogStream, StepName};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use progress::Progress;
use session::SessionServices;

/// The build arg that makes BuildKit write its cache metadata into the
/// image config (what `docker build --cache-to type=inline` sets).
const INLINE_CACHE_ARG: &str = "BUILDKIT_INLINE_CACHE";

/// Said once when the daemon's BuildKit drops a step's output: the worker
/// never sees those lines.
const CLIPPED_NOTE: &str = "the Docker Engine's BuildKit dropped part of this step's output (its log limit, e.g. 200 KiB/s on Docker 20.10); build.engine legacy streams every line";

/// Builds `build` from `context` on BuildKit, reporting its progress as
/// output of `step`; returns the image id.
pub(super) async fn build_once(
    docker: &Docker,
    address: &SessionAddress,
    build: ImageBuild,
    context: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    step: StepName,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    let mut options = options(&build);
    let services = SessionServices {
        secrets: build.secrets,
        credentials: build.registry_credentials,
    };
    let session = session::open(address, services)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    options.session = Some(session.id().to_owned());
    let body = bollard::body_try_stream(context);
    let mut output = docker.build_image(options, None, Some(body));
    let masking = reporter.clone();
    let mut progress = Progress::new(move || masking.stream_masker());
    let mut image_id = None;
    let mut clipped_said = false;
    while let Some(item) = output.next().await {
        let info = item.map_err(|e| failure(e, &progress))?;
        if let Some(id) = report(info, &mut progress, step, reporter).await {
            image_id = Some(id);
        }
        if progress.clipped() && !clipped_said {
            clipped_said = true;
            reporter.system(step, CLIPPED_NOTE).await;
        }
    }
    drop(session);
    image_id.ok_or(DockerError::NoImageId)
}

/// The `/build` query on BuildKit (the session is added once open).
fn options(build: &ImageBuild) -> BuildImageOptions {
    let mut options = build.query();
    if build.cache_inline {
        let args = options.buildargs.get_or_insert_with(Default::default);
        args.insert(INLINE_CACHE_ARG.to_owned(), "1".to_owned());
    }
    // BuildKit knows `none` and its own default network, not the
    // Engine's network names.
    let network = build.limits.network.mode();
    BuildImageOptions {
        networkmode: (network == "none").then(|| network.to_owned()),
        version: BuilderVersion::BuilderBuildKit,
        ..options
    }
}

/// Reports one message of the build's output; returns the image id when
/// this message carries it.
async fn report(
    info: BuildInfo,
    progress: &mut Progress,
    step: StepName,
    reporter: &Reporter,
) -> Option<String> {
    if let Some(text) = info.stream {
        reporter.log(step, LogStream::Stdout, text).await;
    }
    match info.aux {
        Some(BuildInfoAux::BuildKit(status)) => {
            let lines = progress.lines(status);
            if !lines.is_empty() {
                reporter.log(step, LogStream::Stdout, lines).await;
            }
            None
        }
        Some(BuildInfoAux::Default(image)) => image.id,
        None => None,
    }
}

/// The build's error, naming the step that failed when BuildKit said
/// which, with its command's exit code.
fn failure(e: bollard::errors::Error, progress: &Progress) -> DockerError {
    match (e, progress.failure()) {
        (bollard::errors::Error::DockerStreamError { .. }, Some(failed)) => {
            DockerError::Instruction {
                instruction: failed.instruction.clone(),
                message: failed.error.clone(),
                exit_code: failed.exit_code(),
            }
        }
        (bollard::errors::Error::DockerStreamError { error }, None) => DockerError::Build(error),
        (other, _) => other.into(),
    }
}
