//! Push step: the built image to its registry under every tag of the job,
//! without ever pushing another job's image under a tag.
//!
//! Workers may share one Docker Engine, where tags are global: pushing
//! `app:latest` by name pushes whatever `app:latest` points at when the
//! push starts, which may be another job's image by then. So:
//!
//! 1. the engine pushes the image once, tagged by its id under a tag only
//!    this job uses, `buildbot-<job_id>` ([`engine`]); that uploads the
//!    layers and yields the manifest;
//! 2. every tag of the job is then pointed at that manifest through the
//!    registry's HTTP API: the manifest's exact bytes are read back and put
//!    under each tag ([`Registry`]), so no local tag is involved;
//! 3. each tag is resolved again to check the registry holds the manifest.
//!
//! The private tag stays in the registry (the distribution API has no
//! portable way to delete a tag alone); its `buildbot-` prefix lets
//! retention policies expire it. The first tag of the job could not serve
//! instead: two jobs may share it (`latest`, a rebuilt release tag), and
//! nothing on a shared engine would keep a third job from moving it.
//!
//! Tags shared by concurrent jobs (`latest`) end up with whichever job put
//! last, as with `docker push`: a tag found pointing elsewhere after this
//! job's put succeeded is reported, not failed.

mod engine;

use crate::events::Reporter;
use crate::pipeline::docker::DockerError;
use crate::pipeline::registry::{transport, Manifest, Registry, RegistryError};
use crate::pipeline::registry_auth::{self, RegistryAuthError};
use bollard::Docker;
use buildbot_protocol::{registry_host, Job, StepName};

/// The prefix of the tag private to a job, under which the engine pushes.
const PRIVATE_TAG_PREFIX: &str = "buildbot-";

/// Why the push step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The job's registry credentials are unusable.
    #[error(transparent)]
    Credentials(#[from] RegistryAuthError),
    /// The engine's push failed.
    #[error(transparent)]
    Engine(#[from] DockerError),
    /// A registry request failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The private tag holds another manifest than the engine pushed.
    #[error("the registry holds {found} under {reference}, but the Docker Engine pushed {pushed}")]
    PushedElsewhere {
        reference: String,
        pushed: String,
        found: String,
    },
    /// The registry stored other content than the manifest put under a tag.
    #[error("the registry stored {stored} under {reference} instead of {expected}")]
    StoredOther {
        reference: String,
        expected: String,
        stored: String,
    },
}

/// Pushes `image_id` under every tag of `job`; returns the manifest digest.
pub(crate) async fn run(
    docker: &Docker,
    job: &Job,
    image_id: &str,
    reporter: &Reporter,
) -> Result<String, String> {
    push(docker, job, image_id, reporter)
        .await
        .map_err(|e| e.to_string())
}

async fn push(
    docker: &Docker,
    job: &Job,
    image_id: &str,
    reporter: &Reporter,
) -> Result<String, PushError> {
    let repository = &job.image.repository;
    let host = registry_host(repository);
    let credentials = registry_auth::credentials_for(job, &host)?;
    if credentials.is_none() && job.registry_auth.is_some() {
        let line = format!("registry_auth holds no credentials for {host}; pushing anonymously");
        reporter.system(StepName::Push, line).await;
    }
    let private_tag = private_tag(job);
    let pushed = engine::push(
        docker,
        image_id,
        repository,
        &private_tag,
        credentials.clone(),
        reporter,
    )
    .await?;
    let scheme = transport::scheme_for(docker, &host).await;
    let registry = Registry::new(repository, scheme, credentials.as_ref())?;
    let manifest = pushed_manifest(&registry, &private_tag, &pushed).await?;
    let line = format!(
        "pushed {} as {}",
        registry.name(&private_tag),
        manifest.digest
    );
    reporter.system(StepName::Push, line).await;
    for tag in &job.image.tags {
        tag_manifest(&registry, tag, &manifest, reporter).await?;
    }
    for tag in &job.image.tags {
        verify_tag(&registry, tag, &manifest.digest, reporter).await?;
    }
    Ok(manifest.digest)
}

/// `buildbot-<job_id>`: no other job pushes it. A job id is a UUID, so the
/// tag fits the tag grammar.
fn private_tag(job: &Job) -> String {
    format!("{PRIVATE_TAG_PREFIX}{}", job.job_id)
}

/// The manifest the engine pushed under the private tag, checked to be the
/// one whose digest the engine reported.
async fn pushed_manifest(
    registry: &Registry,
    private_tag: &str,
    pushed: &str,
) -> Result<Manifest, PushError> {
    let manifest = registry.manifest(private_tag).await?;
    if manifest.digest != pushed {
        return Err(PushError::PushedElsewhere {
            reference: registry.name(private_tag),
            pushed: pushed.to_owned(),
            found: manifest.digest,
        });
    }
    Ok(manifest)
}

/// Puts `manifest` under `tag`, failing when the registry says it stored
/// something else.
async fn tag_manifest(
    registry: &Registry,
    tag: &str,
    manifest: &Manifest,
    reporter: &Reporter,
) -> Result<(), PushError> {
    let stored = registry.put(tag, manifest).await?;
    if let Some(stored) = stored.filter(|stored| *stored != manifest.digest) {
        return Err(PushError::StoredOther {
            reference: registry.name(tag),
            expected: manifest.digest.clone(),
            stored,
        });
    }
    let line = format!("tagged {} -> {}", registry.name(tag), manifest.digest);
    reporter.system(StepName::Push, line).await;
    Ok(())
}

/// Checks that `tag` resolves. A tag resolving to another digest was put
/// again after this job's put succeeded (another job sharing the tag, or
/// a person): the later push wins, as with `docker push`, so that is said
/// and not failed.
async fn verify_tag(
    registry: &Registry,
    tag: &str,
    digest: &str,
    reporter: &Reporter,
) -> Result<(), PushError> {
    let now = registry.digest_of(tag).await?;
    if now != digest {
        let line = format!(
            "{} now points to {now}: pushed again since this job set it to {digest}",
            registry.name(tag)
        );
        reporter.system(StepName::Push, line).await;
    }
    Ok(())
}
