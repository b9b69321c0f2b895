//! Removing what the builder (and the test step) creates on the daemon:
//! the container, and an image built from the repository. A run records them as they appear
//! ([`Leftovers`]) and removes them whatever its outcome; at start-up,
//! [`remove_leftovers`] sweeps what an earlier run of the same worker left
//! when it was killed, found by the worker-id label.

use super::labels::WORKER_LABEL;
use super::{is_not_found, BuilderError};
use crate::events::Reporter;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;
use buildbot_protocol::StepName;
use std::collections::HashMap;

/// What a run created on the daemon and must remove. Removal is awaited
/// on the normal path; if the run's future is dropped (timeout,
/// cancellation), `Drop` hands it to a task.
pub(crate) struct Leftovers {
    docker: Docker,
    /// The step whose log reports what could not be removed.
    step: StepName,
    container: Option<String>,
    /// A builder image built from the repository (never a pulled one:
    /// that is the job's input, like a base image).
    image: Option<String>,
}

impl Leftovers {
    /// Nothing to remove yet; `step` reports what cannot be removed.
    pub(crate) fn new(docker: Docker, step: StepName) -> Self {
        Self {
            docker,
            step,
            container: None,
            image: None,
        }
    }

    /// The run's container, to be removed.
    pub(crate) fn record_container(&mut self, id: String) {
        self.container = Some(id);
    }

    /// A builder image built from the repository, to be removed.
    pub(super) fn record_image(&mut self, reference: String) {
        self.image = Some(reference);
    }

    /// Removes what was recorded, reporting what could not be removed.
    pub(crate) async fn remove(&mut self, reporter: &Reporter) {
        let (container, image) = (self.container.take(), self.image.take());
        for problem in remove(&self.docker, container, image).await {
            reporter.system(self.step, problem).await;
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
                problems.push(format!("removing the container {container}: {e}"));
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
