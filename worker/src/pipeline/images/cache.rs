//! The worker's image cache on the engine, and its disk budget.
//!
//! What a worker keeps on the engine carries a name of its own: the
//! runtime image a job built (`buildbot-runtime:<job_id>`: its layers are
//! the next build's cache) and cached builder images
//! (`buildbot-builder:<key>`). After each job, while their total passes
//! `--image-cache-bytes`, the least recently used go (by the engine's
//! last-tag time: a cache hit tags again), with the untagged parent layers
//! only they held. Only those names are ever removed, never forced: an
//! image that also has another name (a running job's private name, a
//! person's tag) or that a container uses is skipped until a later trim.
//!
//! The sizes are the engine's per-image sizes, which count a layer shared
//! by two images twice: the total is an upper bound.

use bollard::models::ImageSummary;
use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;
use std::collections::HashMap;

/// Repository of kept runtime images; the tag is the job id.
const RUNTIME_REPOSITORY: &str = "buildbot-runtime";
/// Repository of cached builder images (see the builder step's cache).
const BUILDER_REPOSITORY: &str = "buildbot-builder";

/// What a trim found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trim {
    /// Bytes of the kept images after the trim.
    pub(crate) kept_bytes: u64,
    /// Images removed.
    pub(crate) evicted: u64,
}

/// Keeps `image_id`, built by job `job_id`, as a cache entry.
pub(crate) async fn keep_runtime(docker: &Docker, image_id: &str, job_id: &str) {
    let options = TagImageOptions {
        repo: Some(RUNTIME_REPOSITORY.to_owned()),
        tag: Some(job_id.to_owned()),
    };
    if let Err(e) = docker.tag_image(image_id, Some(options)).await {
        tracing::warn!(%image_id, error = %e, "could not keep the built image in the image cache");
    }
}

/// One kept image: its cache names, size and when it was last used.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Its cache names: two jobs whose builds came out identical (all
    /// layers cached, within the same second) share one image.
    names: Vec<String>,
    bytes: u64,
    /// Whether it has names other than its cache name (then in use).
    named_elsewhere: bool,
    /// Unix seconds of the last tag (or creation).
    last_used: i64,
}

/// Removes the least recently used kept images while their total passes
/// `budget` bytes.
pub(crate) async fn trim(docker: &Docker, budget: u64) -> Result<Trim, bollard::errors::Error> {
    let mut entries = Vec::new();
    for image in kept_images(docker).await? {
        if let Some(entry) = entry_of(docker, &image).await {
            entries.push(entry);
        }
    }
    let mut trim = Trim {
        kept_bytes: entries.iter().map(|e| e.bytes).sum(),
        evicted: 0,
    };
    for entry in eviction_order(entries, budget) {
        if trim.kept_bytes <= budget {
            break;
        }
        if remove(docker, &entry.names).await {
            trim.kept_bytes = trim.kept_bytes.saturating_sub(entry.bytes);
            trim.evicted += 1;
        }
    }
    Ok(trim)
}

/// The candidates for eviction, least recently used first; none while the
/// total is within `budget`. Images with another name are not candidates.
fn eviction_order(mut entries: Vec<Entry>, budget: u64) -> Vec<Entry> {
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    if total <= budget {
        return Vec::new();
    }
    entries.retain(|e| !e.named_elsewhere);
    entries.sort_by_key(|e| e.last_used);
    entries
}

async fn kept_images(docker: &Docker) -> Result<Vec<ImageSummary>, bollard::errors::Error> {
    let filters = HashMap::from([(
        "reference".to_owned(),
        vec![
            format!("{RUNTIME_REPOSITORY}:*"),
            format!("{BUILDER_REPOSITORY}:*"),
        ],
    )]);
    docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
}

/// The entry of a listed image, with its last-tag time; None when it went
/// meanwhile.
async fn entry_of(docker: &Docker, image: &ImageSummary) -> Option<Entry> {
    let is_cache_name = |tag: &String| {
        tag.starts_with(&format!("{RUNTIME_REPOSITORY}:"))
            || tag.starts_with(&format!("{BUILDER_REPOSITORY}:"))
    };
    let names: Vec<String> = image
        .repo_tags
        .iter()
        .filter(|t| is_cache_name(t))
        .cloned()
        .collect();
    if names.is_empty() {
        return None;
    }
    let inspected = docker.inspect_image(&image.id).await.ok()?;
    let last_used = inspected
        .metadata
        .and_then(|m| m.last_tag_time)
        .and_then(|time| chrono::DateTime::parse_from_rfc3339(&time).ok())
        .map_or(image.created, |time| time.timestamp());
    Some(Entry {
        names,
        bytes: u64::try_from(image.size).unwrap_or(0),
        named_elsewhere: image.repo_tags.iter().any(|t| !is_cache_name(t)),
        last_used,
    })
}

/// Removes the cache names `names` (the last one takes the image with its
/// untagged parents); false when the engine refused one (in use), which
/// leaves the image for a later trim.
async fn remove(docker: &Docker, names: &[String]) -> bool {
    for name in names {
        let removed = docker
            .remove_image(name, Some(RemoveImageOptions::default()), None)
            .await;
        if let Err(e) = removed {
            tracing::debug!(%name, error = %e, "image cache: not removed now");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, bytes: u64, last_used: i64, named_elsewhere: bool) -> Entry {
        Entry {
            names: vec![name.into()],
            bytes,
            named_elsewhere,
            last_used,
        }
    }

    #[test]
    fn least_recently_used_first_and_only_past_the_budget() {
        let entries = vec![
            entry("buildbot-runtime:b", 10, 20, false),
            entry("buildbot-runtime:a", 10, 10, false),
            entry("buildbot-builder:k", 10, 30, false),
            entry("buildbot-runtime:running", 10, 5, true),
        ];
        assert!(eviction_order(entries.clone(), 40).is_empty());
        let order: Vec<_> = eviction_order(entries, 25)
            .into_iter()
            .flat_map(|e| e.names)
            .collect();
        assert_eq!(
            order,
            [
                "buildbot-runtime:a",
                "buildbot-runtime:b",
                "buildbot-builder:k"
            ]
        );
    }
}
