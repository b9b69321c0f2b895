//! Which images a job may use from the Docker Engine, and under which
//! names the image it builds stays there.
//!
//! A worker's engine is shared by every tenant's jobs, and an image on it
//! is there because some job pulled or built it. So on a shared engine
//! ([`ImagePolicy::Shared`]) every image a job takes from outside its
//! build (its Dockerfiles' `FROM` and `COPY --from`, `build.builder.image`,
//! `build.cache_from`) is first resolved at its registry with the job's
//! own credentials: the registry decides access, and the engine's copy is
//! used only when it is the digest the registry names (else it is
//! pulled). Images only the engine has (the operator's base images) are
//! used as they are when the worker lists them (`--local-image`). The
//! image a job builds is tagged only under a name private to the job.
//!
//! `buildbot build` runs on its user's own engine ([`ImagePolicy::Owner`]):
//! images there are used as they are and the built image keeps the job's
//! tags, as `docker build -t` would.

pub(crate) mod cache;
pub(crate) mod describe;
pub(crate) mod dockerfile;

use crate::events::Reporter;
use crate::pipeline::registry::{transport, Registry, RegistryError};
use crate::pipeline::registry_auth::{self, RegistryAuthError};
use bollard::auth::DockerCredentials;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::{CreateImageOptions, RemoveImageOptions};
use bollard::Docker;
use buildbot_protocol::{registry_host, Job, StepName};
use futures_util::StreamExt;
use std::collections::HashMap;

/// How a pipeline treats the images on its engine.
#[derive(Debug, Clone)]
pub(crate) enum ImagePolicy {
    /// The engine is the user's own.
    Owner,
    /// The engine is shared by tenants; `local_images` may be used as
    /// the engine has them; what the worker keeps ([`cache`]) is trimmed
    /// to `cache_bytes` after each job.
    Shared {
        local_images: LocalImages,
        cache_bytes: u64,
    },
}

impl ImagePolicy {
    /// Whether the built image is tagged with the job's own tags on the
    /// engine (only on the user's own engine).
    pub(crate) fn tags_locally(&self) -> bool {
        matches!(self, ImagePolicy::Owner)
    }

    fn is_shared(&self) -> bool {
        matches!(self, ImagePolicy::Shared { .. })
    }

    /// The image cache's budget, on a shared engine.
    pub(crate) fn cache_bytes(&self) -> Option<u64> {
        match self {
            ImagePolicy::Owner => None,
            ImagePolicy::Shared { cache_bytes, .. } => Some(*cache_bytes),
        }
    }
}

/// Images a shared worker uses as its engine has them, without asking a
/// registry: `name` (any tag of it), `name:tag` or `name@digest`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalImages(Vec<String>);

impl LocalImages {
    /// The list `--local-image` gives.
    pub(crate) fn new(images: Vec<String>) -> Self {
        Self(images)
    }

    /// Whether `image` is on the list: the same reference, or a tag of a
    /// listed name without tag. `busybox` is `busybox:latest`, as for the
    /// engine.
    fn contains(&self, image: &str) -> bool {
        let (name, tag) = split_tag(image);
        self.0.iter().any(|listed| {
            let (listed_name, listed_tag) = split_tag(listed);
            listed_name == name && (listed_tag.is_none() || listed_tag == tag.or(Some("latest")))
        })
    }
}

/// `name` and its `:tag` or `@digest`, if any (a `:` in the registry
/// host's port is not a tag).
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, Some(digest));
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

/// Why a job may not use an image.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageAccessError {
    #[error(transparent)]
    Credentials(#[from] RegistryAuthError),
    /// A Dockerfile does not parse, so its images cannot be listed.
    #[error("{field}: {message}")]
    Dockerfile {
        field: &'static str,
        message: String,
    },
    /// The registry does not give the image to the job's credentials (or
    /// has no such image). The engine's copy is not used either.
    #[error("{field}: {image} cannot be resolved at its registry with the job's registry_auth ({source}); this worker's Docker Engine is shared, so an image only the engine has is used only when the worker lists it with --local-image")]
    Refused {
        field: &'static str,
        image: String,
        #[source]
        source: RegistryError,
    },
    /// Pulling the image failed; the engine's own words.
    #[error("{field}: pulling {image} failed: {message}")]
    Pull {
        field: &'static str,
        image: String,
        message: String,
    },
}

/// One job's use of images in one step: the engine, how it is shared,
/// and where the outcome is reported.
pub(crate) struct ImageUse<'a> {
    pub(crate) docker: &'a Docker,
    pub(crate) policy: &'a ImagePolicy,
    pub(crate) job: &'a Job,
    pub(crate) step: StepName,
    pub(crate) reporter: &'a Reporter,
}

impl ImageUse<'_> {
    /// Makes `image` (named by the job's `field`) usable by the job on the
    /// engine: on a shared engine as the module doc says; on the user's
    /// own, the engine's copy, or a pull when it has none.
    pub(crate) async fn image(
        &self,
        field: &'static str,
        image: &str,
    ) -> Result<(), ImageAccessError> {
        let host = registry_host(image);
        let credentials = registry_auth::credentials_for(self.job, &host)?;
        let ImagePolicy::Shared { local_images, .. } = self.policy else {
            if self.docker.inspect_image(image).await.is_ok() {
                self.say(format!("using {image}, present on the engine"))
                    .await;
                return Ok(());
            }
            self.say(format!("pulling {image}")).await;
            return self.pull(field, image, credentials).await;
        };
        if local_images.contains(image) {
            let line =
                format!("using {image} as the engine has it (a --local-image of this worker)");
            self.say(line).await;
            return Ok(());
        }
        let scheme = transport::scheme_for(self.docker, &host).await;
        let refused = |source| ImageAccessError::Refused {
            field,
            image: image.to_owned(),
            source,
        };
        let registry = Registry::new(image, scheme, credentials.as_ref()).map_err(refused)?;
        let digest = registry.digest_of_image(image).await.map_err(refused)?;
        if has_digest(self.docker, image, &digest).await {
            self.say(format!("{image} is {digest}, as on the engine"))
                .await;
            return Ok(());
        }
        self.say(format!("pulling {image} ({digest})")).await;
        self.pull(field, image, credentials).await
    }

    /// The images the Dockerfile `text` takes from outside the build,
    /// each made usable by [`ImageUse::image`] on a shared engine (on the
    /// user's own engine the build pulls what is missing itself).
    pub(crate) async fn dockerfile_images(
        &self,
        field: &'static str,
        text: &str,
        build_args: &HashMap<String, String>,
    ) -> Result<Vec<String>, ImageAccessError> {
        let parsed = dockerfile::external_images(text, build_args);
        if !self.policy.is_shared() {
            // The engine has the last word on the user's own Dockerfile.
            return Ok(parsed.unwrap_or_default());
        }
        let images = parsed.map_err(|e| ImageAccessError::Dockerfile {
            field,
            message: e.to_string(),
        })?;
        for image in &images {
            self.image(field, image).await?;
        }
        Ok(images)
    }

    /// Pulls `image` with `credentials`, reporting its outcome.
    async fn pull(
        &self,
        field: &'static str,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), ImageAccessError> {
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            // Without a tag the engine would pull every tag of the repository.
            tag: needs_default_tag(image).then(|| "latest".to_owned()),
            ..Default::default()
        };
        let mut output = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = output.next().await {
            let info = item.map_err(|e| ImageAccessError::Pull {
                field,
                image: image.to_owned(),
                message: engine_words(e),
            })?;
            if let Some(line) = pull_line(info) {
                self.say(line).await;
            }
        }
        Ok(())
    }

    async fn say(&self, line: String) {
        self.reporter.system(self.step, line).await;
    }
}

/// A name private to one job on the engine (its built image's
/// `repository:buildbot-<job_id>`), removed when dropped so it never
/// outlives the job; the image itself stays for the layer cache.
pub(crate) struct PrivateName {
    docker: Docker,
    reference: String,
}

impl PrivateName {
    /// `reference`, to be removed when the job ends.
    pub(crate) fn new(docker: &Docker, reference: String) -> Self {
        Self {
            docker: docker.clone(),
            reference,
        }
    }
}

impl Drop for PrivateName {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (docker, reference) = (self.docker.clone(), std::mem::take(&mut self.reference));
        let options = RemoveImageOptions {
            noprune: true,
            ..Default::default()
        };
        runtime.spawn(async move {
            match docker.remove_image(&reference, Some(options), None).await {
                // The push removes it first on its own path.
                Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => tracing::warn!(%reference, error = %e, "could not remove the job's private tag from the Docker Engine"),
            }
        });
    }
}

/// Whether the engine's `image` is the manifest `digest` names.
async fn has_digest(docker: &Docker, image: &str, digest: &str) -> bool {
    let Ok(inspected) = docker.inspect_image(image).await else {
        return false;
    };
    let suffix = format!("@{digest}");
    inspected
        .repo_digests
        .unwrap_or_default()
        .iter()
        .any(|d| d.ends_with(&suffix))
}

/// The log line of one pull progress message, if it is worth one:
/// per-layer byte counts repeat many times a second and are left out; the
/// rest (layer done, digest, status) is kept, named by its layer. (The
/// engine sends an empty progressDetail with those too.)
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

/// The engine's own words for a failed pull, where it gave them.
fn engine_words(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

fn needs_default_tag(image: &str) -> bool {
    match buildbot_protocol::reference::parse_reference(image) {
        Ok(reference) => reference.tag.is_none() && reference.digest.is_none(),
        // Validation accepted it; the engine will say what is wrong.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_images_match_a_name_any_tag_or_an_exact_reference() {
        let list = LocalImages::new(vec![
            "buildbot-base".into(),
            "localhost:5000/base:1".into(),
            "busybox:latest".into(),
        ]);
        assert!(list.contains("buildbot-base:busybox"));
        assert!(list.contains("buildbot-base"));
        assert!(list.contains("localhost:5000/base:1"));
        assert!(!list.contains("localhost:5000/base:2"));
        assert!(!list.contains("localhost:5000/base"));
        assert!(list.contains("busybox"));
        assert!(!list.contains("busybox:1"));
        assert!(!list.contains("buildbot-base-evil:1"));
        assert!(!list.contains("localhost:5000/base@sha256:00"));
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
