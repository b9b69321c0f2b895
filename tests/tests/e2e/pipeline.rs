//! End-to-end tests of the worker pipeline through the real rig: a job is
//! published to RabbitMQ, the `buildbot` binary clones over SSH, builds on
//! the Docker Engine, pushes to a registry, and the events are read back
//! from the reply queue.

use buildbot_protocol::{
    BuildEngine, EventBody, JobStatus, RegistryAuth, RepoAuth, Secret, StepName, StepState,
};
use buildbot_tests::e2e::{assert_failed, assert_well_formed, steps, Setup};
use buildbot_tests::{SshKey, TestRepo};
use std::time::Duration;

const DOCKERFILE: &str = "FROM buildbot-base:busybox\n\
RUN echo building the test app\n\
COPY . /app\n\
CMD [\"cat\", \"/app/hello.txt\"]\n";

/// The test app: a Dockerfile, a file it copies, and one `.dockerignore`
/// keeps out.
fn app_repo(setup: &Setup) -> TestRepo {
    setup.rig.create_repo(
        "app",
        &[
            ("Dockerfile", DOCKERFILE.as_bytes()),
            ("hello.txt", b"hello from the test app\n"),
            (".dockerignore", b"secret.txt\n"),
            ("secret.txt", b"must not reach the image\n"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_is_built_pushed_and_reported_in_order() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup);
    let registry = setup.rig.registry.clone();
    let job = setup.rig.job(&repo, &registry);
    let attempt = setup.run(&job).await;

    assert_well_formed(&attempt, &job);
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    assert_eq!(result.revision.as_deref(), Some(repo.commit.as_str()));
    assert_eq!(result.service_id.as_deref(), Some("e2e-app"));
    for step in [StepName::Clone, StepName::Build, StepName::Push] {
        assert!(result.durations_ms.contains_key(&step), "{result:#?}");
    }
    use StepName::*;
    use StepState::*;
    assert_eq!(
        steps(&attempt),
        [
            (Clone, Started),
            (Clone, Succeeded),
            (Build, Started),
            (Build, Succeeded),
            (Push, Started),
            (Push, Succeeded)
        ]
    );
    assert!(attempt.log_text().contains("building the test app"));

    let image = result.image.as_ref().expect("a pushed image");
    assert_eq!(image.tags, job.image.tags);
    assert!(image.digest.starts_with("sha256:"));
    let path = job
        .image
        .repository
        .trim_start_matches(&format!("{registry}/"));
    for tag in &job.image.tags {
        let digest = setup.rig.manifest_digest(&registry, path, tag, None);
        assert_eq!(digest.as_deref(), Some(image.digest.as_str()), "tag {tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_name_is_resolved_and_auth_registry_gets_every_tag() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup);
    let registry = setup.rig.auth_registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    job.repo.revision = "main".into();
    job.registry_auth = Some(setup.auth_registry_basic());
    let attempt = setup.run(&job).await;

    assert_well_formed(&attempt, &job);
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    assert_eq!(result.revision.as_deref(), Some(repo.commit.as_str()));
    let image = result.image.as_ref().expect("a pushed image");
    let path = job
        .image
        .repository
        .trim_start_matches(&format!("{registry}/"));
    let credentials = Some((
        setup.rig.auth_registry_user.as_str(),
        setup.rig.auth_registry_password.as_str(),
    ));
    for tag in &job.image.tags {
        let digest = setup.rig.manifest_digest(&registry, path, tag, credentials);
        assert_eq!(digest.as_deref(), Some(image.digest.as_str()), "tag {tag}");
    }
    let log = attempt.log_text();
    assert!(
        !log.contains(&setup.rig.auth_registry_password),
        "the registry password leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_dockerfile_reports_the_daemons_error() {
    let setup = Setup::start().await;
    let dockerfile = "FROM buildbot-base:busybox\nRUN echo about to fail && exit 3\n";
    let repo = setup
        .rig
        .create_repo("failing", &[("Dockerfile", dockerfile.as_bytes())]);
    let registry = setup.rig.registry.clone();
    let words = [
        (BuildEngine::Legacy, "returned a non-zero code: 3"),
        // BuildKit's error names the instruction that failed.
        (
            BuildEngine::Buildkit,
            "[2/2] RUN echo about to fail && exit 3 failed:",
        ),
    ];
    for (engine, message) in words {
        let mut job = setup.rig.job(&repo, &registry);
        job.build.engine = Some(engine);
        let attempt = setup.run(&job).await;

        assert_well_formed(&attempt, &job);
        assert_failed(&attempt, StepName::Build, message);
        let error = attempt.result().error.as_ref().expect("an error");
        assert_eq!(error.exit_code, Some(3), "{engine:?}: {error:?}");
        assert!(attempt.log_text().contains("about to fail"));
        assert!(attempt.result().image.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_output_is_streamed_while_the_build_runs() {
    let setup = Setup::start().await;
    let dockerfile = "FROM buildbot-base:busybox\n\
        RUN echo early-$((40+2)) && sleep 3 && echo late-$((50+3))\n";
    let repo = setup
        .rig
        .create_repo("streaming", &[("Dockerfile", dockerfile.as_bytes())]);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    job.build.no_cache = true;
    let attempt = setup.run(&job).await;

    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    let sent_at = |needle: &str| {
        attempt
            .events
            .iter()
            .find(|e| matches!(&e.body, EventBody::Log(log) if log.text.contains(needle)))
            .map(|e| (e.seq, e.timestamp))
            .unwrap_or_else(|| panic!("{needle} not in the log"))
    };
    // The command line itself is echoed in the log too: look for what
    // only its output contains.
    let (first_seq, first_at) = sent_at("early-42");
    let (second_seq, second_at) = sent_at("late-53");
    // Published after the whole build, both lines would share one event.
    assert!(first_seq < second_seq, "both lines arrived in one event");
    assert!(
        second_at - first_at >= chrono::Duration::seconds(2),
        "early-42 was not published while the build slept: {first_at} vs {second_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precise_failures_and_the_worker_keeps_serving() {
    let workspaces = tempfile::tempdir().expect("a workspace root");
    let root = workspaces.path().to_str().expect("a UTF-8 temp path");
    let setup = Setup::start_with(&["--workspace-dir", root]).await;
    let repo = app_repo(&setup);
    let registry = setup.rig.registry.clone();

    let mut wrong_key = setup.rig.job(&repo, &registry);
    wrong_key.repo.auth = RepoAuth::SshKey {
        private_key: Secret::new(setup.rig.ssh_key_base64(SshKey::Unauthorized)),
        passphrase: None,
    };
    let attempt = setup.run(&wrong_key).await;
    assert_well_formed(&attempt, &wrong_key);
    assert_failed(&attempt, StepName::Clone, "refused the SSH key");

    let mut unknown_revision = setup.rig.job(&repo, &registry);
    unknown_revision.repo.revision = "0123456789abcdef0123456789abcdef01234567".into();
    let attempt = setup.run(&unknown_revision).await;
    assert_failed(
        &attempt,
        StepName::Clone,
        "0123456789abcdef0123456789abcdef01234567",
    );

    let mut wrong_host_key = setup.rig.job(&repo, &registry);
    wrong_host_key.repo.known_hosts = Some(setup.rig.wrong_known_hosts_line());
    let attempt = setup.run(&wrong_host_key).await;
    assert_failed(&attempt, StepName::Clone, "host key");

    let auth_registry = setup.rig.auth_registry.clone();
    let mut wrong_password = setup.rig.job(&repo, &auth_registry);
    wrong_password.registry_auth = Some(RegistryAuth::Basic {
        server: None,
        username: setup.rig.auth_registry_user.clone(),
        password: Secret::new("not-the-password"),
    });
    let attempt = setup.run(&wrong_password).await;
    assert_failed(&attempt, StepName::Push, "unauthorized");

    let good = setup.rig.job(&repo, &registry);
    let attempt = setup.run(&good).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);

    // The worker's own directory under the root is all there is, empty.
    let left: Vec<_> = std::fs::read_dir(workspaces.path())
        .expect("read the workspace root")
        .flat_map(|worker| std::fs::read_dir(worker.expect("an entry").path()).expect("a dir"))
        .collect();
    assert!(left.is_empty(), "workspaces left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_job_is_rejected_with_every_problem_and_dead_lettered() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    job.repo.revision = String::new();
    job.image.tags = vec!["ok".into(), "not a tag".into()];
    job.build.dockerfile = "../../etc/passwd".into();
    let attempt = setup.run(&job).await;

    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Rejected, "{result:#?}");
    let error = result
        .error
        .as_ref()
        .expect("rejections name their problems");
    assert_eq!(error.step, StepName::Validate);
    let problems = error.problems.join("\n");
    for expected in ["repo.revision", "image.tags[1]", "build.dockerfile"] {
        assert!(
            problems.contains(expected),
            "{expected} missing in {problems}"
        );
    }
    assert_eq!(
        attempt.events.len(),
        1,
        "a rejected job has only its result"
    );

    // Dead-lettered, then parked (credentials masked) by a worker.
    let parked = format!("{}.parked", setup.queue);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while setup.orchestrator.message_count(&parked).await.unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job not dead-lettered and parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let good = setup.rig.job(&repo, &registry);
    assert_eq!(setup.run(&good).await.result().status, JobStatus::Succeeded);
}
