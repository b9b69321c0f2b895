//! Build step: the runtime image, built by the Docker Engine from the
//! job's build context (the checkout, or the builder's output placed in
//! it), with the job's build settings and the OCI labels.
//!
//! - [`context`]: the context tar, `.dockerignore` applied, no symlink
//!   followed out of the checkout.
//! - [`dockerignore`]: Docker's ignore-file rules.
//! - [`labels`]: the labels every image carries.
//! - [`version_file`]: `build.version_file`, written into the checkout.
//! - [`buildkit`] and [`legacy`]: the Engine's two builders; which one a
//!   job uses is [`engine`]'s choice.

mod buildkit;
pub(crate) mod context;
mod dockerignore;
mod labels;
mod legacy;
pub(crate) mod version_file;

pub(crate) use buildkit::SessionAddress;

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use crate::pipeline::images::{ImageAccessError, ImagePolicy, ImageUse};
use crate::pipeline::registry_auth;
use crate::pipeline::steps::builder::ContainerLimits;
use crate::pipeline::steps::clone::Checkout;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use buildbot_protocol::{registry_host, BuildEngine, Job, Secret, StepName};
use context::{ContextSpec, WalkLimits, DOCKERFILE_FIELD};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Where and how the runtime image is built.
pub(crate) struct BuildOn<'a> {
    pub(crate) docker: &'a Docker,
    /// The Engine's builder chosen for the job.
    pub(crate) engine: &'a Engine,
    /// What the legacy builder's `RUN` steps may use.
    pub(crate) limits: &'a ContainerLimits,
    /// Which images on the engine the job may use.
    pub(crate) images: &'a ImagePolicy,
}

/// Builds the runtime image as `on` says; returns the image id. It is
/// tagged [`private_reference`] on the engine, and with every tag of the
/// job too when the engine is the user's own.
pub(crate) async fn run(
    on: &BuildOn<'_>,
    job: &Job,
    spec: ContextSpec,
    commit: &str,
    reporter: &Reporter,
) -> Result<String, BuildError> {
    let BuildOn {
        docker,
        engine,
        limits,
        images,
    } = *on;
    let builder = engine.builder()?;
    if let Some(note) = &engine.note {
        reporter.system(StepName::Build, note.clone()).await;
    }
    context::resolve(&spec).await.map_err(BuildError::prepare)?;
    use_inputs(docker, job, &spec, images, reporter)
        .await
        .map_err(BuildError::prepare)?;
    let registry = registry_host(&job.image.repository);
    let credentials = registry_auth::all_credentials(job.registry_auth.as_ref(), &registry)
        .map_err(BuildError::prepare)?;
    let build = image_build(job, commit, credentials, builder, limits);
    let image_id = build_image(docker, build, spec, StepName::Build, reporter).await?;
    if images.tags_locally() {
        tag_image(docker, &image_id, &job.image.repository, &job.image.tags).await?;
    }
    reporter
        .system(StepName::Build, format!("built image {image_id}"))
        .await;
    Ok(image_id)
}

/// Why the build step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// Before the daemon built anything: the context, the input images,
    /// the credentials, the builder.
    #[error("{0}")]
    Prepare(String),
    /// The daemon's build, or tagging its image.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

impl BuildError {
    fn prepare(e: impl std::fmt::Display) -> Self {
        BuildError::Prepare(e.to_string())
    }

    /// The exit code of the build step's command that failed, where the
    /// builder said it.
    pub(crate) fn exit_code(&self) -> Option<i64> {
        match self {
            BuildError::Docker(DockerError::Instruction { exit_code, .. }) => *exit_code,
            BuildError::Docker(DockerError::Build(text)) => buildkit::exit_code_in(text),
            _ => None,
        }
    }
}

/// The Engine's builder a job's images are built with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum DaemonBuilder {
    /// The legacy builder.
    #[default]
    Legacy,
    /// BuildKit, with the worker's session opened at this address.
    BuildKit(SessionAddress),
}

/// The builder chosen for a job, or why the job cannot be built; and a
/// line for the build log when the choice is not the one the job would
/// expect.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    choice: Result<DaemonBuilder, String>,
    note: Option<String>,
}

impl Engine {
    /// The builder, or the reason the job cannot be built.
    pub(crate) fn builder(&self) -> Result<DaemonBuilder, BuildError> {
        self.choice.clone().map_err(BuildError::Prepare)
    }
}

/// Chooses the builder for `job` on `docker`: `build.engine` when set,
/// else BuildKit when the Engine has it and the worker can open a session
/// at `session` (the legacy builder otherwise, said in the log).
pub(crate) async fn engine(
    docker: &Docker,
    job: &Job,
    session: &Result<SessionAddress, String>,
) -> Engine {
    let wanted = job.build.engine;
    if wanted == Some(BuildEngine::Legacy) {
        return Engine {
            choice: Ok(DaemonBuilder::Legacy),
            note: None,
        };
    }
    let why_not = match session {
        Err(why) => why.clone(),
        Ok(address) => match buildkit_missing(docker).await {
            None => {
                return Engine {
                    choice: Ok(DaemonBuilder::BuildKit(address.clone())),
                    note: None,
                }
            }
            Some(why) => why,
        },
    };
    let needs = needs_buildkit(job);
    match (wanted, needs) {
        (Some(_), _) => Engine {
            choice: Err(format!("build.engine is buildkit, but {why_not}")),
            note: None,
        },
        (None, Some(field)) => Engine {
            choice: Err(format!("{field} needs BuildKit, but {why_not}")),
            note: None,
        },
        (None, None) => Engine {
            choice: Ok(DaemonBuilder::Legacy),
            note: Some(format!(
                "building with the legacy builder: {why_not} (build.engine is unset)"
            )),
        },
    }
}

/// The first field of `job` that only BuildKit can honour.
fn needs_buildkit(job: &Job) -> Option<&'static str> {
    if !job.build.secrets.is_empty() {
        Some("build.secrets")
    } else if job.build.cache_inline {
        Some("build.cache_inline")
    } else {
        None
    }
}

/// Why the Engine cannot build with BuildKit, or None when it can:
/// BuildKit came with API 1.39 (Docker 18.09), on Linux daemons.
async fn buildkit_missing(docker: &Docker) -> Option<String> {
    let version = match docker.version().await {
        Ok(version) => version,
        Err(e) => return Some(format!("the Docker Engine's version is unknown ({e})")),
    };
    let api = version.api_version.unwrap_or_default();
    let os = version.os.unwrap_or_default();
    let (major, minor) = api.split_once('.').unwrap_or(("0", "0"));
    let recent = (major.parse().unwrap_or(0), minor.parse().unwrap_or(0)) >= (1u32, 39u32);
    if !recent {
        Some(format!("the Docker Engine (API {api}) has no BuildKit"))
    } else if os != "linux" {
        Some(format!(
            "the Docker Engine runs on {os}, where it has no BuildKit"
        ))
    } else {
        None
    }
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
    engine: DaemonBuilder,
    limits: &ContainerLimits,
) -> ImageBuild {
    let labels = labels::image_labels(job, commit);
    ImageBuild {
        engine,
        secrets: job.build.secrets.clone(),
        cache_inline: job.build.cache_inline,
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
    /// The Engine's builder that builds it.
    pub(crate) engine: DaemonBuilder,
    /// Build secrets by id (BuildKit only).
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Write BuildKit's inline cache metadata into the image.
    pub(crate) cache_inline: bool,
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
    /// unless set, so no legacy build runs unlimited (BuildKit takes only
    /// the network, see [`buildkit`]).
    pub(crate) limits: ContainerLimits,
}

impl ImageBuild {
    /// The `/build` query both builders take: what to build and tag, and
    /// how; each builder adds its own.
    fn query(&self) -> BuildImageOptions {
        BuildImageOptions {
            dockerfile: self.dockerfile.clone(),
            t: Some(self.reference.clone()),
            buildargs: Some(self.build_args.clone()),
            labels: Some(self.labels.clone()),
            target: self.target.clone().unwrap_or_default(),
            nocache: self.no_cache,
            pull: self.pull.then(|| "1".to_owned()),
            cachefrom: Some(self.cache_from.clone()),
            rm: true,
            forcerm: true,
            ..Default::default()
        }
    }
}

/// Builds an image from the context `spec` names, streamed as a tar, on
/// the builder `build.engine` names; returns the image id. The daemon's
/// output is reported as it arrives, as output of `step` (the runtime
/// image's build, or a builder image's).
pub(crate) async fn build_image(
    docker: &Docker,
    build: ImageBuild,
    spec: ContextSpec,
    step: StepName,
    reporter: &Reporter,
) -> Result<String, DockerError> {
    match build.engine.clone() {
        DaemonBuilder::Legacy => legacy::build_image(docker, build, spec, step, reporter).await,
        DaemonBuilder::BuildKit(address) => {
            let context = context::stream_tar(spec);
            buildkit::build_once(docker, &address, build, context, step, reporter).await
        }
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
