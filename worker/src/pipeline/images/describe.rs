//! What a job's result says about the image it built: its size, and the
//! base image its final stage starts from (the original buildbot reported
//! both as `image_size` and `image_from`).

use super::dockerfile;
use bollard::Docker;
use buildbot_protocol::{parse_reference, Job};
use std::collections::HashMap;

/// The built image's size and base image, as far as the engine can tell.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Description {
    /// Bytes, as `docker image inspect` reports them.
    pub(crate) size: Option<u64>,
    /// The final stage's `FROM`, as `name@sha256:…` where the engine knows
    /// its digest.
    pub(crate) base_image: Option<String>,
}

/// Describes image `image_id`, built by `job` from the Dockerfile `text`.
/// Best effort: what cannot be found out is left out of the result.
pub(crate) async fn describe(
    docker: &Docker,
    image_id: &str,
    text: &str,
    job: &Job,
) -> Description {
    let size = docker
        .inspect_image(image_id)
        .await
        .ok()
        .and_then(|image| image.size)
        .and_then(|size| u64::try_from(size).ok());
    let build_args: HashMap<String, String> = job.build.build_args.clone().into_iter().collect();
    let base = dockerfile::final_base(text, &build_args, job.build.target.as_deref())
        .ok()
        .flatten();
    let base_image = match base {
        Some(base) => Some(pinned(docker, &base).await.unwrap_or(base)),
        None => None,
    };
    Description { size, base_image }
}

/// `base` as `name@digest`, when the engine has it and knows a digest
/// for its repository.
async fn pinned(docker: &Docker, base: &str) -> Option<String> {
    let reference = parse_reference(base).ok()?;
    if reference.digest.is_some() {
        return None;
    }
    let digests = docker.inspect_image(base).await.ok()?.repo_digests?;
    let name = reference.repository.to_string();
    digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(repo, _)| repo == name))
        .or_else(|| digests.first())
        .cloned()
}
