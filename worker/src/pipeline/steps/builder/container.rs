//! The builder container: created (stopped, labelled) from the builder
//! image, given the checkout through the Docker API, then started with its
//! output streamed as log events until it exits ([`follow`], which the
//! test step shares). Removing it is [`leftovers`](super::leftovers)' job.

use super::labels::builder_labels;
use super::tail::Tail;
use super::{BuilderError, BuilderRun};
use crate::events::Reporter;
use crate::pipeline::steps::build::context;
use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{LogsOptions, UploadToContainerOptions};
use bollard::Docker;
use buildbot_protocol::{LogStream, StepName};
use futures_util::StreamExt;
use std::time::Duration;

/// Creates the (stopped) container; returns its id. The command replaces
/// the image's entrypoint: `build.builder.command` is exactly the argv
/// that runs. The worker's limits bound its memory, processes, CPU,
/// network and capabilities: the command is the tenant's code.
pub(super) async fn create(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    image: &str,
) -> Result<String, BuilderError> {
    // `secret_env` joins the process's environment only: the container
    // is never committed, and is removed when the step ends.
    let secret_env = spec.builder.secret_env.iter();
    let env = spec
        .builder
        .env
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .chain(secret_env.map(|(name, value)| format!("{name}={}", value.expose())))
        .collect();
    let config = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(spec.builder.command.clone()),
        working_dir: Some(spec.builder.workdir.clone()),
        env: Some(env),
        labels: Some(builder_labels(spec)),
        host_config: Some(spec.limits.host_config()),
        ..Default::default()
    };
    let created = docker.create_container(None, config).await?;
    Ok(created.id)
}

/// Uploads the checkout into the workdir (the daemon created it with the
/// container).
pub(super) async fn upload_source(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
) -> Result<(), BuilderError> {
    let options = UploadToContainerOptions {
        path: spec.builder.workdir.clone(),
        ..Default::default()
    };
    let limits = spec.size_limits.into();
    let tar = context::stream_source_tar(spec.checkout.to_owned(), spec.mtime, limits);
    docker
        .upload_to_container(container, Some(options), bollard::body_try_stream(tar))
        .await
        .map_err(|e| BuilderError::Upload(e.to_string()))
}

/// Starts the container, streams its output until it exits, and fails
/// with the exit code and the last output lines unless it is 0 (saying so
/// when the memory limit killed it).
pub(super) async fn run_command(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    reporter: &Reporter,
) -> Result<(), BuilderError> {
    docker
        .start_container(container, None)
        .await
        .map_err(start_error)?;
    let Exited { code, tail } = follow(docker, container, StepName::Builder, reporter).await?;
    if code == 0 {
        return Ok(());
    }
    if oom_killed(docker, container, code).await {
        let limit = spec.limits.memory;
        return Err(BuilderError::OutOfMemory { limit, code, tail });
    }
    Err(BuilderError::CommandFailed { code, tail })
}

/// How a container's command ended.
pub(crate) struct Exited {
    /// Its exit code.
    pub(crate) code: i64,
    /// Its last output lines.
    pub(crate) tail: String,
}

/// Streams a started container's output as `step`'s log events until it
/// exits; returns its exit code and last output lines.
pub(crate) async fn follow(
    docker: &Docker,
    container: &str,
    step: StepName,
    reporter: &Reporter,
) -> Result<Exited, bollard::errors::Error> {
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
        reporter.log(step, stream, text).await;
    }
    let code = exit_code(docker, container).await?;
    Ok(Exited {
        code,
        tail: tail.text(),
    })
}

/// How long the OOM flag of a container whose command was SIGKILLed (exit
/// code 137) is waited for. The engine learns of an OOM kill from an event
/// of its own, which may come after the exit: under load, a memory hog's
/// container was seen with code 137 and the flag still unset at its exit.
const OOM_FLAG_WAIT: Duration = Duration::from_secs(2);

/// Whether the kernel's OOM killer killed a process of the container whose
/// command exited with `code`. Only asked after a failure: a build whose
/// child was killed but that recovered succeeded. An unanswered inspect
/// just leaves the plain exit code.
pub(crate) async fn oom_killed(docker: &Docker, container: &str, code: i64) -> bool {
    let deadline = tokio::time::Instant::now() + OOM_FLAG_WAIT;
    loop {
        let Ok(inspect) = docker.inspect_container(container, None).await else {
            return false;
        };
        if inspect.state.and_then(|s| s.oom_killed).unwrap_or(false) {
            return true;
        }
        if code != 137 || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exited container's exit code.
async fn exit_code(docker: &Docker, container: &str) -> Result<i64, bollard::errors::Error> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(e),
        None => Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: format!("waiting for container {container} returned nothing"),
        }),
    }
}

/// A refused start: the daemon answers 400/500 with the OCI runtime's
/// words when the command's executable is missing or not executable.
fn start_error(e: bollard::errors::Error) -> BuilderError {
    let bollard::errors::Error::DockerResponseServerError { message, .. } = &e else {
        return e.into();
    };
    let lower = message.to_lowercase();
    let code = if lower.contains("not found") || lower.contains("no such file") {
        Some(127)
    } else if lower.contains("permission denied") {
        Some(126)
    } else {
        return e.into();
    };
    BuilderError::CommandNotStarted {
        message: message.clone(),
        code,
    }
}
