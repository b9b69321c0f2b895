//! The Docker Engine as the tests see it: what a job created and left
//! behind (containers and images labelled with its id, watched while it
//! runs), image sizes, commands run in an image, and images moved to and
//! from the rig's registries.

use anyhow::Context as _;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ImageSummary};
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, ListImagesOptions, LogsOptions, PushImageOptions,
    RemoveContainerOptions, RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The label the worker puts the job id in, on builder containers and
/// builder images (the contract these tests check).
pub const JOB_ID_LABEL: &str = "buildbot.job_id";
/// The label naming the role of a labelled container or image.
pub const ROLE_LABEL: &str = "buildbot.role";

/// How often [`JobWatch`] looks.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Connects to the local daemon.
pub async fn connect() -> Docker {
    Docker::connect_with_defaults()
        .expect("a Docker client")
        .negotiate_version()
        .await
        .expect("the Docker Engine answers")
}

fn job_filter(job_id: Uuid) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{JOB_ID_LABEL}={job_id}")])])
}

/// Every container, running or not, labelled with `job_id`.
pub async fn job_containers(docker: &Docker, job_id: Uuid) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(job_filter(job_id)),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .expect("list containers");
    containers.into_iter().filter_map(|c| c.id).collect()
}

/// Every image labelled with `job_id`.
pub async fn job_images(docker: &Docker, job_id: Uuid) -> Vec<ImageSummary> {
    let options = ListImagesOptions {
        all: true,
        filters: Some(job_filter(job_id)),
        ..Default::default()
    };
    docker
        .list_images(Some(options))
        .await
        .expect("list images")
}

/// Waits up to `limit` until no container and no image labelled with
/// `job_id` exists; fails naming what is left.
pub async fn assert_nothing_left(docker: &Docker, job_id: Uuid, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let containers = job_containers(docker, job_id).await;
        let images = job_images(docker, job_id).await;
        if containers.is_empty() && images.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} left containers {containers:?} and images {:?}",
            images.iter().map(|i| &i.id).collect::<Vec<_>>()
        );
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// What a [`JobWatch`] saw labelled with the job id while it ran.
#[derive(Debug, Default)]
pub struct Seen {
    /// Containers, as inspected when first seen.
    pub containers: HashMap<String, ContainerInspectResponse>,
    /// Images by id, with every tag seen on them.
    pub images: HashMap<String, ImageSummary>,
}

/// Polls the daemon for containers and images labelled with a job's id
/// until stopped: they exist only while the job runs.
pub struct JobWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl JobWatch {
    /// Starts watching for `job_id`'s containers and images.
    pub fn start(docker: Docker, job_id: Uuid) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        // The engine's `create` events too: a container that lives less
        // than one poll (a command failing at once on a loaded machine)
        // is inspected as soon as it exists.
        let (created, mut creations) = tokio::sync::mpsc::unbounded_channel();
        let events = tokio::spawn(container_creations(docker.clone(), job_id, created));
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            while !stopped.load(Ordering::Relaxed) {
                while let Ok((id, inspected)) = creations.try_recv() {
                    seen.containers.entry(id).or_insert(inspected);
                }
                look(&docker, job_id, &mut seen).await;
                tokio::time::sleep(WATCH_EVERY).await;
            }
            events.abort();
            while let Ok((id, inspected)) = creations.try_recv() {
                seen.containers.entry(id).or_insert(inspected);
            }
            seen
        });
        Self { stop, task }
    }

    /// Stops watching; what was seen.
    pub async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the watch task")
    }
}

/// Inspects each container of `job_id` the engine reports created, and
/// sends it to `created`.
async fn container_creations(
    docker: Docker,
    job_id: Uuid,
    created: tokio::sync::mpsc::UnboundedSender<(String, ContainerInspectResponse)>,
) {
    let mut filters = job_filter(job_id);
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    filters.insert("event".to_owned(), vec!["create".to_owned()]);
    let options = bollard::query_parameters::EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let mut events = docker.events(Some(options));
    while let Some(Ok(event)) = events.next().await {
        let Some(id) = event.actor.and_then(|a| a.id) else {
            continue;
        };
        if let Ok(inspected) = docker.inspect_container(&id, None).await {
            let _ = created.send((id, inspected));
        }
    }
}

async fn look(docker: &Docker, job_id: Uuid, seen: &mut Seen) {
    for id in job_containers(docker, job_id).await {
        if seen.containers.contains_key(&id) {
            continue;
        }
        // It may be gone between listing and inspecting.
        if let Ok(inspected) = docker.inspect_container(&id, None).await {
            seen.containers.insert(id, inspected);
        }
    }
    for image in job_images(docker, job_id).await {
        // An image is listed untagged before it is tagged and while it is
        // being removed: keep every tag it had.
        match seen.images.entry(image.id.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(image);
            }
            Entry::Occupied(mut slot) => {
                let tags = &mut slot.get_mut().repo_tags;
                for tag in image.repo_tags {
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
            }
        }
    }
}

/// Size in bytes of `reference` as the daemon reports it.
pub async fn image_size(docker: &Docker, reference: &str) -> i64 {
    docker
        .inspect_image(reference)
        .await
        .unwrap_or_else(|e| panic!("inspect {reference}: {e}"))
        .size
        .unwrap_or_else(|| panic!("no size for {reference}"))
}

/// Whether the daemon has `reference`.
pub async fn has_image(docker: &Docker, reference: &str) -> bool {
    docker.inspect_image(reference).await.is_ok()
}

/// Runs `argv` (replacing the entrypoint) in a container from `image`;
/// returns its exit code and stdout. The container is removed.
pub async fn run_in_image(docker: &Docker, image: &str, argv: &[&str]) -> (i64, String) {
    let config = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(argv.iter().map(|a| a.to_string()).collect()),
        labels: Some(HashMap::from([("buildbot.test".into(), "inspect".into())])),
        ..Default::default()
    };
    let id = docker
        .create_container(None, config)
        .await
        .unwrap_or_else(|e| panic!("create a container from {image}: {e}"))
        .id;
    let outcome = run_to_end(docker, &id).await;
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(&id, Some(options)).await;
    outcome.unwrap_or_else(|e| panic!("run {argv:?} in {image}: {e:#}"))
}

async fn run_to_end(docker: &Docker, id: &str) -> anyhow::Result<(i64, String)> {
    docker.start_container(id, None).await?;
    let code = match docker.wait_container(id, None).next().await {
        Some(Ok(response)) => response.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(e.into()),
        None => anyhow::bail!("wait returned nothing"),
    };
    let options = LogsOptions {
        stdout: true,
        ..Default::default()
    };
    let mut logs = docker.logs(id, Some(options));
    let mut stdout = String::new();
    while let Some(item) = logs.next().await {
        if let LogOutput::StdOut { message } = item? {
            stdout.push_str(&String::from_utf8_lossy(&message));
        }
    }
    Ok((code, stdout))
}

/// Tags `image` as `repository:tag`.
pub async fn tag(docker: &Docker, image: &str, repository: &str, tag: &str) {
    let options = TagImageOptions {
        repo: Some(repository.to_owned()),
        tag: Some(tag.to_owned()),
    };
    docker
        .tag_image(image, Some(options))
        .await
        .unwrap_or_else(|e| panic!("tag {image} as {repository}:{tag}: {e}"));
}

/// Removes the name `reference` (the image goes when it was its last).
///
/// Tests run in parallel on one engine, and identical builds share an
/// image id: a container another test runs from that image makes the
/// engine refuse (409) until it is removed, so that is waited out.
pub async fn remove_image(docker: &Docker, reference: &str) {
    const ATTEMPTS: u32 = 20;
    for attempt in 1.. {
        let outcome = docker
            .remove_image(reference, Some(RemoveImageOptions::default()), None)
            .await;
        match outcome {
            Ok(_) => return,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) if attempt < ATTEMPTS => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => panic!("remove {reference}: {e}"),
        }
    }
}

/// Pushes `repository:tag` with `credentials`.
pub async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) -> anyhow::Result<()> {
    let options = PushImageOptions {
        tag: Some(tag.to_owned()),
        ..Default::default()
    };
    let mut output = docker.push_image(repository, Some(options), credentials);
    while let Some(item) = output.next().await {
        item.with_context(|| format!("push {repository}:{tag}"))?;
    }
    Ok(())
}

/// Pulls `reference` (with a tag or digest) with `credentials`.
pub async fn pull(
    docker: &Docker,
    reference: &str,
    credentials: Option<DockerCredentials>,
) -> anyhow::Result<()> {
    let options = CreateImageOptions {
        from_image: Some(reference.to_owned()),
        ..Default::default()
    };
    let mut output = docker.create_image(Some(options), None, credentials);
    while let Some(item) = output.next().await {
        item.with_context(|| format!("pull {reference}"))?;
    }
    Ok(())
}
