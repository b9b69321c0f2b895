//! The pipeline: runs one validated job's steps (clone, builder when the
//! job sets `build.builder` or the checkout follows the original's
//! `build.sh` convention, build, test when the job or its Dockerfile has
//! one, push) in a private workspace and
//! describes the outcome as a [`JobResult`].
//!
//! This module is the spine: the order of the steps, each run between its
//! `started` and end events with its duration recorded ([`run_step`]), and
//! the job's timeout and cancellation. `steps/` has one module per
//! [`StepName`]; [`docker`] and [`registry_auth`] are what they share.
//! Adding a step: a `StepName` variant, a module under `steps/`, a line in
//! [`Pipeline::steps`].
//!
//! It knows nothing of AMQP: it reports through a [`Reporter`] and returns
//! the result; the caller publishes it and acks.

mod conventions;
pub(crate) mod docker;
mod images;
mod registry;
pub(crate) mod registry_auth;
mod steps;
pub(crate) mod workspaces;

pub(crate) use images::{ImagePolicy, LocalImages};

pub(crate) use steps::builder::remove_leftovers;
pub(crate) use steps::builder::{
    parse_cpus, parse_memory, parse_network, parse_size, ContainerLimits, Memory, Network,
};
pub(crate) use steps::clone::set_network_timeouts as set_git_timeouts;
pub(crate) use steps::clone::{CloneSettings, HostKeyDefault, DEFAULT_MAX_CLONE_BYTES};

use crate::events::Reporter;
use bollard::Docker;
use buildbot_protocol::{ImageResult, Job, JobError, JobResult, JobStatus, StepName, StepState};
use conventions::ConventionError;
use images::describe::describe;
use images::PrivateName;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use steps::build::{self, context, runtime_context};
use steps::builder::{self, BuilderError, BuilderPlan, BuilderRun, WHOLE_WORKDIR_DIR};
use steps::test::{self, TestCommand, TestError};
use steps::{clone, push};
use tempfile::TempDir;

/// Runs jobs against one Docker Engine.
#[derive(Clone)]
pub(crate) struct Pipeline {
    docker: Docker,
    worker_id: String,
    /// Parent of the per-job workspaces; the system temp dir when None.
    workspace_root: Option<PathBuf>,
    /// What a job's containers may use.
    limits: ContainerLimits,
    /// How much of what a job controls the worker takes on.
    size_limits: SizeLimits,
    /// The worker's host key default and clone byte cap.
    clone: CloneSettings,
    /// Which images on the engine jobs may use.
    images: ImagePolicy,
    /// Where the worker opens BuildKit sessions, or why it does not.
    session: Result<build::SessionAddress, String>,
}

/// How a pipeline runs jobs.
pub(crate) struct JobSettings {
    /// What a job's containers may use.
    pub(crate) limits: ContainerLimits,
    /// How much of what a job controls the worker takes on.
    pub(crate) size_limits: SizeLimits,
    /// The worker's host key default and clone byte cap.
    pub(crate) clone: CloneSettings,
    /// Which images on the engine jobs may use.
    pub(crate) images: ImagePolicy,
    /// Build on BuildKit where the engine has it (else the legacy builder
    /// only).
    pub(crate) buildkit: bool,
}

/// How much of what a job controls (its checkout's tree, its builder's
/// artifact) the worker takes on before failing the job: one worker
/// serves many tenants, and a hostile job must only fail itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeLimits {
    /// Directory levels of a build context or uploaded source.
    pub(crate) context_depth: usize,
    /// Directory entries read for a build context or uploaded source.
    pub(crate) context_entries: u64,
    /// Bytes of file content in a builder's artifact.
    pub(crate) artifact_bytes: u64,
    /// Entries in a builder's artifact.
    pub(crate) artifact_entries: u64,
    /// Directory levels in a builder's artifact.
    pub(crate) artifact_depth: usize,
}

impl SizeLimits {
    /// Default of `--max-context-depth`: far beyond any real tree, and
    /// below what PATH_MAX lets a checkout hold (2,048 one-letter levels),
    /// so a hostile tree meets this clear error rather than an I/O one.
    pub(crate) const CONTEXT_DEPTH: usize = 1024;
    /// Default of `--max-context-entries`.
    pub(crate) const CONTEXT_ENTRIES: u64 = 1_000_000;
    /// Default of `--max-artifact-bytes`: 2 GiB.
    pub(crate) const ARTIFACT_BYTES: u64 = 2 << 30;
    /// Default of `--max-artifact-entries`.
    pub(crate) const ARTIFACT_ENTRIES: u64 = 100_000;
    /// Default of `--max-artifact-depth`.
    pub(crate) const ARTIFACT_DEPTH: usize = 256;
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits {
            context_depth: Self::CONTEXT_DEPTH,
            context_entries: Self::CONTEXT_ENTRIES,
            artifact_bytes: Self::ARTIFACT_BYTES,
            artifact_entries: Self::ARTIFACT_ENTRIES,
            artifact_depth: Self::ARTIFACT_DEPTH,
        }
    }
}

/// A step that did not succeed.
#[derive(Debug)]
struct StepFailure {
    step: StepName,
    message: String,
    /// Exit code of the step's command, where it ran one.
    exit_code: Option<i64>,
}

/// A step's error: its message, and what else the result reports.
trait StepError: Display {
    /// Exit code of the command that failed, where there was one.
    fn exit_code(&self) -> Option<i64> {
        None
    }
}

impl StepError for String {}

impl StepError for build::BuildError {
    fn exit_code(&self) -> Option<i64> {
        build::BuildError::exit_code(self)
    }
}

impl StepError for TestError {
    fn exit_code(&self) -> Option<i64> {
        TestError::exit_code(self)
    }
}

impl StepError for BuilderError {
    fn exit_code(&self) -> Option<i64> {
        BuilderError::exit_code(self)
    }
}

/// What the steps found out, kept outside the step future so a timeout
/// that drops the future still knows how far the job got.
#[derive(Default)]
struct Progress {
    /// The step that started last; kept after it ends, so an interruption
    /// between steps still names where the job got to.
    current: Option<StepName>,
    /// The step running now and when it started.
    running: Option<(StepName, Instant)>,
    durations_ms: BTreeMap<StepName, u64>,
    revision: Option<String>,
}

impl Progress {
    fn start(&mut self, step: StepName) {
        self.current = Some(step);
        self.running = Some((step, Instant::now()));
    }

    /// Records the running step's duration and ends it.
    fn end(&mut self) {
        if let Some((step, started)) = self.running.take() {
            let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.durations_ms.insert(step, elapsed);
        }
    }
}

impl Pipeline {
    /// A pipeline building on `docker`, reporting results as `worker_id`,
    /// running jobs as `settings` say.
    pub(crate) fn new(
        docker: Docker,
        worker_id: String,
        workspace_root: Option<PathBuf>,
        settings: JobSettings,
    ) -> Self {
        let session = if settings.buildkit {
            // The daemon bollard connects to: `DOCKER_HOST`, read once.
            build::SessionAddress::parse(std::env::var("DOCKER_HOST").ok().as_deref())
        } else {
            Err("this worker builds on the legacy builder only (--buildkit off)".to_owned())
        };
        Self {
            docker,
            worker_id,
            workspace_root,
            limits: settings.limits,
            size_limits: settings.size_limits,
            clone: settings.clone,
            images: settings.images,
            session,
        }
    }

    /// The id results are reported under.
    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Runs every step of `job` within its timeout, or until `cancelled`
    /// completes. Never fails: every failure is described in the returned
    /// result (`last_seq` is left for the publisher to fill in). Stopping
    /// drops the steps' futures, which stops their work on the daemon.
    pub(crate) async fn run(
        &self,
        job: &Job,
        reporter: &Reporter,
        cancelled: impl Future<Output = ()>,
    ) -> JobResult {
        let progress = Mutex::new(Progress::default());
        let limit = Duration::from_secs(job.timeout_secs);
        let steps = self.steps(job, reporter, &progress);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(limit, steps) => {
                outcome.map_err(|_elapsed| JobStatus::TimedOut)
            }
            () = cancelled => Err(JobStatus::Cancelled),
        };
        let mut progress = progress.into_inner().unwrap_or_else(|p| p.into_inner());
        // A step stopped by the timeout or a cancel still gets its end
        // event and its duration.
        if let Some((step, _)) = progress.running {
            progress.end();
            reporter.step(step, StepState::Failed).await;
        }
        let (status, error, image) = match outcome {
            Ok(Ok(image)) => (JobStatus::Succeeded, None, image),
            Ok(Err(failure)) => (JobStatus::Failed, Some(failure), None),
            Err(stopped) => (stopped, Some(interrupted(job, stopped, &progress)), None),
        };
        JobResult {
            status,
            error: error.map(|f| JobError {
                step: f.step,
                message: f.message,
                exit_code: f.exit_code,
                problems: Vec::new(),
            }),
            revision: progress.revision,
            image,
            durations_ms: progress.durations_ms,
            worker: self.worker_id.clone(),
            service_id: Some(job.service_id.clone()),
            last_seq: 0,
        }
    }

    /// Trims what the worker keeps on a shared engine to its budget (see
    /// [`images::cache`]); None on the user's own engine.
    pub(crate) async fn trim_image_cache(&self) -> Option<images::cache::Trim> {
        let budget = self.images.cache_bytes()?;
        match images::cache::trim(&self.docker, budget).await {
            Ok(trim) => Some(trim),
            Err(e) => {
                tracing::warn!(error = %e, "could not trim the image cache");
                None
            }
        }
    }

    /// The result of a job cancelled before it was delivered: no step
    /// ran.
    pub(crate) fn cancelled_before_start(&self, job: &Job) -> JobResult {
        let error = JobError::new(
            StepName::Queue,
            "the job was cancelled before it started; nothing ran",
        );
        JobResult::new(JobStatus::Cancelled, self.worker_id.clone())
            .with_error(error)
            .with_service_id(job.service_id.clone())
    }

    async fn steps(
        &self,
        job: &Job,
        reporter: &Reporter,
        progress: &Mutex<Progress>,
    ) -> Result<Option<ImageResult>, StepFailure> {
        let workspace = self.workspace().map_err(|e| StepFailure {
            step: StepName::Clone,
            message: format!("cannot create the job's workspace: {e}"),
            exit_code: None,
        })?;
        // Shared with the git thread, which may outlive a cancelled step.
        let workspace = Arc::new(workspace);
        let checkout_dir = workspace.path().join("src");
        let checkout = run_step(StepName::Clone, reporter, progress, async {
            let workspace = Arc::clone(&workspace);
            let checkout = clone::run(job, &checkout_dir, workspace, &self.clone, reporter).await?;
            write_version_file(job, &checkout_dir, reporter).await?;
            Ok::<_, String>(checkout)
        })
        .await?;
        lock(progress).revision = Some(checkout.commit.clone());

        let mut spec = runtime_context(job, &checkout_dir, &checkout, self.size_limits.into());
        let engine = build::engine(&self.docker, job, &self.session).await;
        if let Some(plan) = BuilderPlan::choose(job, &checkout_dir).transpose() {
            let replaced = run_step(StepName::Builder, reporter, progress, async {
                let plan = plan?;
                self.builder(job, &plan, &spec, &workspace, &engine, reporter)
                    .await
            })
            .await?;
            if replaced {
                let project = workspace.path().join(WHOLE_WORKDIR_DIR);
                spec = runtime_context(job, &project, &checkout, self.size_limits.into());
            }
        }
        // Read before the build takes the spec: the test and the result
        // need the Dockerfile too.
        let dockerfile = context::read_dockerfile(&spec).unwrap_or_default();
        // Whatever happens from here, the image's private name goes with
        // the job (a build cut short may still have tagged it).
        let _private_name = PrivateName::new(&self.docker, build::private_reference(job));
        let image_id = run_step(StepName::Build, reporter, progress, async {
            let on = build::BuildOn {
                docker: &self.docker,
                engine: &engine,
                limits: &self.limits,
                images: &self.images,
            };
            build::run(&on, job, spec, &checkout.commit, reporter).await
        })
        .await?;
        if self.images.cache_bytes().is_some() {
            images::cache::keep_runtime(&self.docker, &image_id, &job.job_id.to_string()).await;
        }
        if let Some(command) = test_command(job, &dockerfile).transpose() {
            run_step(StepName::Test, reporter, progress, async {
                let run = test::TestRun {
                    image_id: &image_id,
                    command: &command?,
                    job_id: &job.job_id.to_string(),
                    worker_id: &self.worker_id,
                    limits: &self.limits,
                };
                test::run(&self.docker, &run, reporter).await
            })
            .await?;
        }
        if !job.image.push {
            return Ok(None);
        }
        let digest = run_step(StepName::Push, reporter, progress, async {
            push::run(&self.docker, job, &image_id, reporter).await
        })
        .await?;
        let described = describe(&self.docker, &image_id, &dockerfile, job).await;
        Ok(Some(ImageResult {
            repository: job.image.repository.clone(),
            digest,
            tags: job.image.tags.clone(),
            size: described.size,
            base_image: described.base_image,
        }))
        // `workspace` is dropped here or on any early return: the checkout
        // is removed whatever the outcome.
    }

    /// Runs the builder `plan` says; returns whether its artifact replaced
    /// the checkout the runtime build reads.
    async fn builder(
        &self,
        job: &Job,
        plan: &BuilderPlan,
        spec: &context::ContextSpec,
        workspace: &TempDir,
        engine: &build::Engine,
        reporter: &Reporter,
    ) -> Result<bool, BuilderError> {
        if let Some(detected) = &plan.detected {
            let line = format!(
                "build.sh carries #build_inside_docker_image: running ./build.sh in {} \
                 (set build.conventions to false to build without it)",
                detected.image
            );
            reporter.system(StepName::Builder, line).await;
        }
        let replaces = plan.replaces_checkout();
        // A whole workdir lands beside the checkout, not in its context.
        let context_dir = if replaces {
            workspace.path().to_owned()
        } else {
            context::resolve(spec).await?
        };
        let builder = plan.runnable();
        let run = BuilderRun {
            job,
            builder: &builder,
            worker_id: &self.worker_id,
            checkout: &spec.checkout,
            mtime: spec.mtime,
            context_dir: &context_dir,
            limits: &self.limits,
            size_limits: self.size_limits,
            images: &self.images,
            // A builder image is built like the runtime image; when the
            // job cannot be built at all, the build step says why.
            engine: engine.builder().unwrap_or_default(),
        };
        builder::run(&self.docker, &run, reporter).await?;
        Ok(replaces)
    }

    fn workspace(&self) -> std::io::Result<TempDir> {
        let builder = tempfile::Builder::new().prefix("buildbot-job-").to_owned();
        match &self.workspace_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
    }
}

/// Writes `build.version_file`, when the job sets it, into the checkout.
async fn write_version_file(job: &Job, checkout: &Path, reporter: &Reporter) -> Result<(), String> {
    let (Some(path), Some(tag)) = (&job.build.version_file, job.image.tags.first()) else {
        return Ok(());
    };
    build::version_file::write(checkout, path, tag).map_err(|e| e.to_string())?;
    reporter
        .system(
            StepName::Clone,
            format!("wrote {tag} to {path} (build.version_file)"),
        )
        .await;
    Ok(())
}

/// The test the job runs, if any: its `test`, else (unless
/// `build.conventions` is false) the Dockerfile's marker.
fn test_command(job: &Job, dockerfile: &str) -> Result<Option<TestCommand>, ConventionError> {
    let marker = if job.test.is_none() && job.build.conventions {
        conventions::parse_test_entrypoint(dockerfile, &job.build.dockerfile)?
    } else {
        None
    };
    Ok(TestCommand::choose(job.test.as_ref(), marker))
}

/// Runs one step between its `started` and `succeeded`/`failed` events and
/// records its duration.
async fn run_step<T, E: StepError>(
    step: StepName,
    reporter: &Reporter,
    progress: &Mutex<Progress>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, StepFailure> {
    lock(progress).start(step);
    reporter.step(step, StepState::Started).await;
    let outcome = work.await;
    lock(progress).end();
    match outcome {
        Ok(value) => {
            reporter.step(step, StepState::Succeeded).await;
            Ok(value)
        }
        Err(e) => {
            reporter.step(step, StepState::Failed).await;
            Err(StepFailure {
                step,
                message: e.to_string(),
                exit_code: e.exit_code(),
            })
        }
    }
}

/// The error of a job stopped from outside its steps, naming the step it
/// was in.
fn interrupted(job: &Job, stopped: JobStatus, progress: &Progress) -> StepFailure {
    let message = match stopped {
        JobStatus::TimedOut => format!("the job exceeded its timeout of {} s", job.timeout_secs),
        _ => "the job was cancelled".to_owned(),
    };
    StepFailure {
        step: progress.current.unwrap_or(StepName::Clone),
        message,
        exit_code: None,
    }
}

/// The progress record; a panic elsewhere cannot leave it inconsistent
/// (every write is a single assignment), so a poisoned lock is used as is.
fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}
