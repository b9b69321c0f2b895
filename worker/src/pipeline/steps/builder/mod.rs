//! Builder step ("build in a separate container"): produces the artifact
//! the runtime image is built from, in a container of its own.
//!
//! Owns everything between the clone and the runtime build when a job sets
//! `build.builder`: getting the builder image (pulled with the job's
//! registry credentials when the daemon lacks it, or built from the
//! repository's Dockerfile), creating the container labelled with the job
//! id, uploading the checkout into it through the Docker API, running the
//! command with its output streamed as log events of step `builder`, and
//! copying the artifact back out (placed by [`crate::pipeline::steps::builder::artifact`]).
//!
//! Only the Docker API is used, never a host bind mount, so this works the
//! same when the worker itself runs in a container with only the Docker
//! socket. The container, and an image built from the repository, are
//! removed whatever the outcome, also when the step's future is dropped by
//! the job's timeout or a cancellation. The container's environment is
//! exactly `build.builder.env`: no credential ever reaches it.

mod artifact;

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use crate::pipeline::registry_auth::{self, RegistryAuthError};
use crate::pipeline::steps::build::context::{
    self, ContextError, ContextSpec, BUILDER_DOCKERFILE_FIELD,
};
use crate::pipeline::steps::build::{build_image, ImageBuild};
use artifact::{ArtifactError, Unpacked};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, CreateImageInfo};
use bollard::query_parameters::{
    CreateImageOptions, DownloadFromContainerOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, UploadToContainerOptions,
};
use bollard::Docker;
use buildbot_protocol::{registry_host, Builder, Job, LogStream, StepName};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Label carrying the job id on every builder container and builder image,
/// so whatever a job left behind can be found (and tests can check that
/// nothing is).
pub(crate) const JOB_ID_LABEL: &str = "buildbot.job_id";
/// Label naming what a labelled object is for.
pub(crate) const ROLE_LABEL: &str = "buildbot.role";
/// Label carrying the worker id on every builder container and image, so
/// a worker restarted with the same `--worker-id` removes what it left
/// behind when it crashed.
pub(crate) const WORKER_LABEL: &str = "buildbot.worker";
/// [`ROLE_LABEL`]'s value on builder containers and images.
pub(crate) const BUILDER_ROLE: &str = "builder";
/// Repository of builder images built from a job's Dockerfile; the tag is
/// the job id.
const BUILDER_IMAGE_REPOSITORY: &str = "buildbot-builder";
/// Output lines of a failed command quoted in the job's error.
const TAIL_LINES: usize = 20;
/// At most this many bytes of them (the end is kept).
const TAIL_BYTES: usize = 4096;

/// Why the builder step failed. Messages name the job's fields.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuilderError {
    /// The daemon could not be reached or answered with an API error.
    #[error("Docker Engine: {0}")]
    Api(String),
    /// The runtime context or the builder's Dockerfile is unusable.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// `registry_auth` could not be read.
    #[error(transparent)]
    RegistryAuth(#[from] RegistryAuthError),
    /// Building the builder image from the repository failed.
    #[error("building the builder image from build.builder.dockerfile failed: {0}")]
    Build(#[source] DockerError),
    /// The builder image is not on the daemon and could not be pulled.
    #[error("build.builder.image: pulling {image} failed: {message}")]
    Pull {
        /// The reference pulled.
        image: String,
        /// What the daemon said.
        message: String,
    },
    /// The source could not be copied into the container.
    #[error("copying the checkout into the builder container failed: {0}")]
    Upload(String),
    /// The command exited with a non-zero code.
    #[error("build.builder.command exited with code {code}{}", quoted(.tail))]
    CommandFailed {
        /// The command's exit code.
        code: i64,
        /// Its last output lines.
        tail: String,
    },
    /// The artifact path does not exist in the container.
    #[error("build.builder.artifacts: {path} does not exist in the builder container after the command ran")]
    ArtifactMissing {
        /// The absolute path looked up.
        path: String,
    },
    /// Copying the artifact out of the container failed.
    #[error(
        "copying build.builder.artifacts ({path}) out of the builder container failed: {message}"
    )]
    Download {
        /// The absolute path copied.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The artifact could not be placed into the build context.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl BuilderError {
    /// The command's exit code, when it was the command that failed.
    pub(crate) fn exit_code(&self) -> Option<i64> {
        match self {
            BuilderError::CommandFailed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<bollard::errors::Error> for BuilderError {
    fn from(e: bollard::errors::Error) -> Self {
        BuilderError::Api(e.to_string())
    }
}

/// The last output lines as the end of an error message.
fn quoted(tail: &str) -> String {
    if tail.is_empty() {
        "; it wrote no output".to_owned()
    } else {
        format!("; its last output lines:\n{tail}")
    }
}

/// One job's builder run: what [`run`] needs from the job and the
/// pipeline.
pub(crate) struct BuilderRun<'a> {
    /// The job: its id is labelled on everything the run creates, its
    /// `registry_auth` pulls or builds the builder image.
    pub(crate) job: &'a Job,
    /// The job's `build.builder`.
    pub(crate) builder: &'a Builder,
    /// The worker running it, labelled for the clean-up after a crash.
    pub(crate) worker_id: &'a str,
    /// The checkout (uploaded as the source).
    pub(crate) checkout: &'a Path,
    /// Modification time of the uploaded files (the commit's).
    pub(crate) mtime: u64,
    /// The runtime build's context directory, checked to be inside the
    /// checkout: the artifact is placed under it.
    pub(crate) context_dir: &'a Path,
    /// A private directory of the job for the downloaded artifact archive.
    pub(crate) scratch: &'a Path,
}

/// Runs the builder: image, container, upload, command, artifact. Whatever
/// happens, the container and a built builder image are removed before
/// this returns (or, if the future is dropped, right after).
pub(crate) async fn run(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let mut leftovers = Leftovers::new(docker.clone());
    let outcome = run_in(docker, spec, &mut leftovers, reporter).await;
    leftovers.remove(reporter).await;
    outcome
}

async fn run_in(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let image = builder_image(docker, spec, leftovers, reporter).await?;
    let container = create_container(docker, spec, &image).await?;
    leftovers.container = Some(container.clone());
    upload_source(docker, spec, &container).await?;
    run_command(docker, &container, reporter).await?;
    let path = artifact_path(&spec.builder.workdir, &spec.builder.artifacts);
    let unpacked = copy_artifact(docker, spec, &container, &path).await?;
    let dest = &spec.builder.artifacts_dest;
    if unpacked.replaced {
        let line = format!("replaced {dest} of the checkout with the artifact");
        reporter.system(StepName::Builder, line).await;
    }
    let line = format!(
        "copied {path} to {dest} in the build context ({} files, {} bytes)",
        unpacked.files, unpacked.bytes
    );
    reporter.system(StepName::Builder, line).await;
    Ok(unpacked)
}

/// The image to run: the job's `builder.image` (pulled when missing) or
/// one built from `builder.dockerfile`. Returns a reference or id.
async fn builder_image(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<String, BuilderError> {
    if let Some(dockerfile) = &spec.builder.dockerfile {
        let reference = format!("{BUILDER_IMAGE_REPOSITORY}:{}", spec.job.job_id);
        // Recorded before building: a build cut short by a timeout may
        // still have tagged it.
        leftovers.image = Some(reference.clone());
        return build_builder_image(docker, spec, dockerfile, reference, reporter).await;
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

async fn build_builder_image(
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
        labels: labels(spec),
        registry_credentials: credentials,
        ..Default::default()
    };
    let stream = context::stream_tar(context);
    build_image(docker, build, stream, StepName::Builder, reporter)
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
    let credentials = registry_auth::credentials_for(spec.job.registry_auth.as_ref(), &registry)?;
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

fn labels(spec: &BuilderRun<'_>) -> HashMap<String, String> {
    HashMap::from([
        (JOB_ID_LABEL.to_owned(), spec.job.job_id.to_string()),
        (ROLE_LABEL.to_owned(), BUILDER_ROLE.to_owned()),
        (WORKER_LABEL.to_owned(), spec.worker_id.to_owned()),
    ])
}

/// Creates the (stopped) container. The command replaces the image's
/// entrypoint: `build.builder.command` is exactly the argv that runs.
async fn create_container(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    image: &str,
) -> Result<String, BuilderError> {
    let env = spec
        .builder
        .env
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let config = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(spec.builder.command.clone()),
        working_dir: Some(spec.builder.workdir.clone()),
        env: Some(env),
        labels: Some(labels(spec)),
        ..Default::default()
    };
    let created = docker.create_container(None, config).await?;
    Ok(created.id)
}

/// Uploads the checkout into the workdir (the daemon created it with the
/// container).
async fn upload_source(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
) -> Result<(), BuilderError> {
    let options = UploadToContainerOptions {
        path: spec.builder.workdir.clone(),
        ..Default::default()
    };
    let tar = context::stream_source_tar(spec.checkout.to_owned(), spec.mtime);
    docker
        .upload_to_container(container, Some(options), bollard::body_try_stream(tar))
        .await
        .map_err(|e| BuilderError::Upload(e.to_string()))
}

/// Starts the container, streams its output until it exits, and fails
/// with the exit code and the last output lines unless it is 0.
async fn run_command(
    docker: &Docker,
    container: &str,
    reporter: &Reporter,
) -> Result<(), BuilderError> {
    docker.start_container(container, None).await?;
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    // Following from the start: output written before this request is
    // included, and the stream ends when the container exits.
    let mut output = docker.logs(container, Some(options));
    let mut tail = Tail::default();
    while let Some(item) = output.next().await {
        let (stream, bytes) = match item? {
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (LogStream::Stdout, message)
            }
            LogOutput::StdIn { .. } => continue,
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        tail.push(stream, &text);
        reporter.log(StepName::Builder, stream, text).await;
    }
    match exit_code(docker, container).await? {
        0 => Ok(()),
        code => Err(BuilderError::CommandFailed {
            code,
            tail: tail.text(),
        }),
    }
}

async fn exit_code(docker: &Docker, container: &str) -> Result<i64, BuilderError> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(e.into()),
        None => Err(BuilderError::Api(
            "waiting for the builder container returned nothing".into(),
        )),
    }
}

/// The artifact's absolute path in the container, lexically clean:
/// `artifacts` when absolute, else under `workdir`.
fn artifact_path(workdir: &str, artifacts: &str) -> String {
    let joined = Path::new(workdir).join(artifacts);
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in joined.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let clean: PathBuf = std::iter::once(Path::new("/").as_os_str())
        .chain(parts)
        .collect();
    clean.to_string_lossy().into_owned()
}

/// Downloads the artifact's archive into the scratch dir, then unpacks it
/// into the context on a blocking thread.
async fn copy_artifact(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    path: &str,
) -> Result<Unpacked, BuilderError> {
    let archive_path = spec.scratch.join("artifact.tar");
    download(docker, container, path, &archive_path).await?;
    let context_dir = spec.context_dir.to_owned();
    let dest = spec.builder.artifacts_dest.clone();
    let archive = archive_path.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&archive).map_err(ArtifactError::Archive)?;
        artifact::unpack(std::io::BufReader::new(file), &context_dir, &dest)
    })
    .await
    .map_err(|e| BuilderError::Api(format!("artifact task failed: {e}")))??;
    // The workspace goes too, soon; no need to keep a copy until then.
    let _ = tokio::fs::remove_file(&archive_path).await;
    Ok(unpacked)
}

async fn download(
    docker: &Docker,
    container: &str,
    path: &str,
    to: &Path,
) -> Result<(), BuilderError> {
    let download_error = |message: String| BuilderError::Download {
        path: path.to_owned(),
        message,
    };
    let options = DownloadFromContainerOptions {
        path: path.to_owned(),
    };
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| download_error(e.to_string()))?;
    let mut archive = docker.download_from_container(container, Some(options));
    while let Some(chunk) = archive.next().await {
        let chunk = chunk.map_err(|e| match e {
            e if is_not_found(&e) => BuilderError::ArtifactMissing {
                path: path.to_owned(),
            },
            e => download_error(e.to_string()),
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| download_error(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| download_error(e.to_string()))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The last lines of the command's output, for the error of a failed run:
/// stdout and stderr lines in the order they completed.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    /// Per stream, the last line while it has no newline yet: a chunk of
    /// one stream must not be glued to a half line of the other.
    partial_stdout: String,
    partial_stderr: String,
}

impl Tail {
    fn push(&mut self, stream: LogStream, text: &str) {
        let partial = match stream {
            LogStream::Stderr => &mut self.partial_stderr,
            _ => &mut self.partial_stdout,
        };
        partial.push_str(text);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            self.lines
                .push_back(line.trim_end_matches(['\n', '\r']).to_owned());
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
        // A huge line without a newline: only its end can be quoted.
        if partial.len() > TAIL_BYTES {
            let cut = ceil_char_boundary(partial, partial.len() - TAIL_BYTES);
            partial.drain(..cut);
        }
    }

    /// The lines, oldest first, at most [`TAIL_BYTES`] (the end kept).
    fn text(&self) -> String {
        let mut lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        for partial in [&self.partial_stdout, &self.partial_stderr] {
            if !partial.is_empty() {
                lines.push(partial);
            }
        }
        let text = lines.join("\n");
        let cut = ceil_char_boundary(&text, text.len().saturating_sub(TAIL_BYTES));
        text[cut..].to_owned()
    }
}

/// The first char boundary at or after `index`.
fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// What a run created on the daemon and must remove. Removal is awaited
/// on the normal path; if the run's future is dropped (timeout,
/// cancellation), `Drop` hands it to a task.
struct Leftovers {
    docker: Docker,
    container: Option<String>,
    /// A builder image built from the repository (never a pulled one:
    /// that is the job's input, like a base image).
    image: Option<String>,
}

impl Leftovers {
    fn new(docker: Docker) -> Self {
        Self {
            docker,
            container: None,
            image: None,
        }
    }

    async fn remove(&mut self, reporter: &Reporter) {
        let (container, image) = (self.container.take(), self.image.take());
        for problem in remove(&self.docker, container, image).await {
            reporter.system(StepName::Builder, problem).await;
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (container, image) = (self.container.take(), self.image.take());
        if container.is_none() && image.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                ?container,
                ?image,
                "no runtime left to remove the builder's leftovers"
            );
            return;
        };
        let docker = self.docker.clone();
        runtime.spawn(async move {
            for problem in remove(&docker, container, image).await {
                tracing::warn!("{problem}");
            }
        });
    }
}

/// Removes the builder containers and images a previous run of worker
/// `worker_id` left behind (it was killed before it could); returns how
/// many were removed. Run at start-up, before any job of this worker.
pub(crate) async fn remove_leftovers(
    docker: &Docker,
    worker_id: &str,
) -> Result<usize, BuilderError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{WORKER_LABEL}={worker_id}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await?;
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for container in containers.into_iter().filter_map(|c| c.id) {
        removed += usize::from(remove(docker, Some(container), None).await.is_empty());
    }
    for image in images {
        removed += usize::from(remove(docker, None, Some(image.id)).await.is_empty());
    }
    Ok(removed)
}

/// Removes the container (killing it if it still runs) and then the image;
/// returns what could not be removed.
async fn remove(docker: &Docker, container: Option<String>, image: Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(container) = container {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(e) = docker.remove_container(&container, Some(options)).await {
            if !is_not_found(&e) {
                problems.push(format!("removing the builder container {container}: {e}"));
            }
        }
    }
    if let Some(image) = image {
        // Not forced: if the image also has another name, only this one
        // goes; untagged parent layers go with it.
        let options = RemoveImageOptions::default();
        if let Err(e) = docker.remove_image(&image, Some(options), None).await {
            if !is_not_found(&e) {
                problems.push(format!("removing the builder image {image}: {e}"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_path_is_absolute_and_clean() {
        assert_eq!(artifact_path("/src", "public"), "/src/public");
        assert_eq!(artifact_path("/src", "./out/../dist/"), "/src/dist");
        assert_eq!(artifact_path("/src", "/out"), "/out");
        assert_eq!(artifact_path("/src/", "."), "/src");
        assert_eq!(artifact_path("/work/../src", "/out/./site"), "/out/site");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..30 {
            tail.push(LogStream::Stdout, &format!("line {i}\n"));
        }
        tail.push(LogStream::Stdout, "no newline ");
        tail.push(LogStream::Stderr, "error: half a line, ");
        tail.push(LogStream::Stdout, "yet");
        tail.push(LogStream::Stderr, "then the rest\n");
        let text = tail.text();
        assert!(text.starts_with("line 11\n"), "{text}");
        assert!(
            text.ends_with("line 29\nerror: half a line, then the rest\nno newline yet"),
            "{text}"
        );
        assert_eq!(text.lines().count(), TAIL_LINES + 1);
    }

    #[test]
    fn tail_is_bounded_in_bytes_at_a_char_boundary() {
        let mut tail = Tail::default();
        tail.push(LogStream::Stdout, &"é".repeat(10_000));
        tail.push(LogStream::Stdout, "\nend\n");
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES, "{}", text.len());
        assert!(text.ends_with("\nend"));
    }

    #[test]
    fn command_failure_carries_its_code_and_quotes_the_tail() {
        let failed = BuilderError::CommandFailed {
            code: 7,
            tail: "compiling\nerror: no such file".into(),
        };
        assert_eq!(failed.exit_code(), Some(7));
        assert_eq!(
            failed.to_string(),
            "build.builder.command exited with code 7; its last output lines:\ncompiling\nerror: no such file"
        );
        let silent = BuilderError::CommandFailed {
            code: 1,
            tail: String::new(),
        };
        assert_eq!(
            silent.to_string(),
            "build.builder.command exited with code 1; it wrote no output"
        );
        let missing = BuilderError::ArtifactMissing {
            path: "/out".into(),
        };
        assert_eq!(missing.exit_code(), None);
    }

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
