//! What the workers keep on the Docker Engine under the image cache's
//! names (`buildbot-runtime:<job_id>`, `buildbot-builder:<key>`), and the
//! clean-up of what the benchmark's own jobs left there.

use anyhow::Context;
use bollard::query_parameters::RemoveImageOptions;
use bollard::Docker;

/// The engine the workers use (`DOCKER_HOST` or the local socket).
pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_defaults().context("no Docker Engine address")?;
    docker
        .negotiate_version()
        .await
        .context("the Docker Engine does not answer")
}

/// The name a worker keeps the runtime image of `job_id` under.
pub fn runtime_name(job_id: &uuid::Uuid) -> String {
    format!("buildbot-runtime:{job_id}")
}

/// Removes the names in `names` (and the images they were the last name
/// of), so a benchmark run leaves the engine as it found it. Best effort:
/// a name the worker already evicted is not there any more.
pub async fn remove(docker: &Docker, names: impl IntoIterator<Item = &String>) {
    for name in names {
        let options = Some(RemoveImageOptions::default());
        if let Err(error) = docker.remove_image(name, options, None).await {
            if !is_not_found(&error) {
                eprintln!("warning: removing {name}: {error}");
            }
        }
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
