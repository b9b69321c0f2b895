//! End-to-end tests of the push step: jobs on workers sharing one Docker
//! Engine that push the same tag (`latest`) at once never push another
//! job's image under a tag and do not fail for it, and every tag of a job
//! pushed with credentials holds the job's manifest.

use buildbot_protocol::{Job, JobResult, JobStatus};
use buildbot_tests::e2e::{assert_well_formed, Fleet, Setup, RESULT_WITHIN};
use buildbot_tests::orchestrator::Attempt;
use buildbot_tests::{daemon, Rig, TestRepo};
use uuid::Uuid;

/// Jobs racing for `latest`, and the workers × job slots running them.
const RACING_JOBS: usize = 12;
const WORKERS: usize = 2;
const CONCURRENCY: &str = "2";

/// An app whose image differs from every other's: `id` is baked into a
/// layer, so each job pushes its own manifest.
fn unique_app(rig: &Rig, id: &str) -> TestRepo {
    let dockerfile =
        format!("FROM buildbot-base:busybox\nRUN echo {id} > /id\nCMD [\"cat\", \"/id\"]\n");
    rig.create_repo("push-race", &[("Dockerfile", dockerfile.as_bytes())])
}

/// The registry path of `job`'s repository (without `registry/`).
fn path_of<'a>(job: &'a Job, registry: &str) -> &'a str {
    job.image
        .repository
        .trim_start_matches(&format!("{registry}/"))
}

/// The succeeded result's manifest digest.
fn pushed_digest(result: &JobResult) -> &str {
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    &result.image.as_ref().expect("a pushed image").digest
}

/// The engine push's private tag was named in the log with the digest,
/// every tag of the job was set to it, and the private tag is no longer
/// on the engine.
async fn assert_pushed_through_a_private_tag(attempt: &Attempt, job: &Job, digest: &str) {
    let private = format!("{}:buildbot-{}", job.image.repository, job.job_id);
    let log = attempt.log_text();
    assert!(
        log.contains(&format!("pushed {private} as {digest}")),
        "{log}"
    );
    for tag in &job.image.tags {
        let tagged = format!("tagged {}:{tag} -> {digest}", job.image.repository);
        assert!(log.contains(&tagged), "{tagged} not in {log}");
    }
    let docker = daemon::connect().await;
    assert!(
        !daemon::has_image(&docker, &private).await,
        "{private} was left on the engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_racing_for_latest_on_one_engine_each_push_their_own_image() {
    let fleet = Fleet::new().await;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(fleet.worker(&["--concurrency", CONCURRENCY]).await);
    }
    let registry = fleet.rig.registry.clone();
    // One repository for all: `latest` is the same local and remote tag.
    let repository = format!("{registry}/e2e/race-{}", Uuid::new_v4().simple());
    let mut submitted = Vec::new();
    for i in 0..RACING_JOBS {
        let repo = unique_app(&fleet.rig, &format!("job-{i}-{}", Uuid::new_v4()));
        let mut job = fleet.rig.job(&repo, &registry);
        job.image.repository = repository.clone();
        job.image.tags = vec![format!("job-{i}-{}", &repo.commit[..12]), "latest".into()];
        let replies = fleet.submit(&job).await;
        submitted.push((job, replies));
    }

    let mut finished = Vec::new();
    for (job, mut replies) in submitted {
        let attempt = replies
            .until_result(RESULT_WITHIN)
            .await
            .expect("the job's result");
        finished.push((job, attempt));
    }
    let failures: Vec<_> = finished
        .iter()
        .filter(|(_, attempt)| attempt.result().status != JobStatus::Succeeded)
        .map(|(job, attempt)| (&job.image.tags[0], &attempt.result().error))
        .collect();
    assert!(failures.is_empty(), "jobs failed: {failures:#?}");

    let mut digests = Vec::new();
    for (job, attempt) in &finished {
        assert_well_formed(attempt, job);
        let digest = pushed_digest(attempt.result()).to_owned();
        let unique = &job.image.tags[0];
        let path = path_of(job, &registry);
        let in_registry = fleet.rig.manifest_digest(&registry, path, unique, None);
        assert_eq!(in_registry.as_deref(), Some(digest.as_str()), "{unique}");
        assert_pushed_through_a_private_tag(attempt, job, &digest).await;
        digests.push(digest);
    }

    let mut distinct = digests.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), RACING_JOBS, "every job built its own image");
    let path = repository.trim_start_matches(&format!("{registry}/"));
    let latest = fleet
        .rig
        .manifest_digest(&registry, path, "latest", None)
        .expect("latest was pushed");
    assert!(digests.contains(&latest), "latest is {latest}, no job's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_on_the_auth_registry_holds_the_jobs_manifest() {
    let setup = Setup::start().await;
    let repo = unique_app(&setup.rig, &Uuid::new_v4().to_string());
    let registry = setup.rig.auth_registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    job.image.tags = vec![
        repo.commit[..12].to_owned(),
        "v1.2.3".into(),
        "latest".into(),
    ];
    job.registry_auth = Some(setup.auth_registry_basic());
    let attempt = setup.run(&job).await;

    assert_well_formed(&attempt, &job);
    let digest = pushed_digest(attempt.result());
    let credentials = Some((
        setup.rig.auth_registry_user.as_str(),
        setup.rig.auth_registry_password.as_str(),
    ));
    let path = path_of(&job, &registry);
    for tag in &job.image.tags {
        let in_registry = setup.rig.manifest_digest(&registry, path, tag, credentials);
        assert_eq!(in_registry.as_deref(), Some(digest), "tag {tag}");
    }
    assert_eq!(
        setup.rig.registry_status(&registry, path, "latest", None),
        401,
        "the registry requires the login the tags were set with"
    );
    assert_pushed_through_a_private_tag(&attempt, &job, digest).await;
    assert!(!attempt
        .log_text()
        .contains(&setup.rig.auth_registry_password));
}
