//! What the workers keep on the Docker Engine, as the engine reports it:
//! the images under the image cache's names (`buildbot-runtime:<job_id>`,
//! `buildbot-builder:<key>`), their count and sizes, and the clean-up of
//! what the benchmark's own jobs left there.

use crate::report::mib;
use anyhow::Context;
use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
use bollard::Docker;
use std::collections::{HashMap, HashSet};

/// The repositories of the image cache (see the worker's
/// `pipeline/images/cache.rs`).
const CACHE_REFERENCES: [&str; 2] = ["buildbot-runtime:*", "buildbot-builder:*"];

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

/// The images kept under the cache's names at one moment.
pub struct Kept {
    /// How many.
    pub count: usize,
    /// The sum of the engine's per-image sizes: the worker's own measure
    /// for its budget. A layer shared by several images counts once per
    /// image, so this is an upper bound of the disk they hold.
    pub bytes: u64,
    /// Of them, how many have a name in `ours`.
    pub ours: usize,
}

impl Kept {
    /// `N images, X MiB (M of them from …)`.
    pub fn describe(&self, whose: &str) -> String {
        format!(
            "{} images, {} ({} of them from {whose})",
            self.count,
            mib(self.bytes),
            self.ours
        )
    }
}

/// The kept images on the engine, every worker's: the engine is shared,
/// and a worker's budget counts (and trims) all of them.
pub async fn kept(docker: &Docker, ours: &HashSet<String>) -> anyhow::Result<Kept> {
    let filters = HashMap::from([(
        "reference".to_owned(),
        CACHE_REFERENCES.map(str::to_owned).to_vec(),
    )]);
    let options = ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let images = docker
        .list_images(Some(options))
        .await
        .context("listing the kept images")?;
    Ok(Kept {
        count: images.len(),
        bytes: images
            .iter()
            .map(|image| u64::try_from(image.size).unwrap_or(0))
            .sum(),
        ours: images
            .iter()
            .filter(|image| image.repo_tags.iter().any(|tag| ours.contains(tag)))
            .count(),
    })
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
