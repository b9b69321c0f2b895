//! End-to-end tests of the original buildbot's conventions through the
//! real rig: a `build.sh` marked `#build_inside_docker_image=` runs as the
//! builder and its whole workdir becomes the build's checkout; a test
//! (the job's `test` or the Dockerfile's
//! `#test_in_container_entrypoint=`) runs in the built image before the
//! push, and a failing, hanging or cancelled one pushes nothing and
//! leaves no container; the result reports the image's size and base.

use bollard::Docker;
use buildbot_protocol::{EventBody, Job, JobStatus, LogStream, StepName, StepState, Test};
use buildbot_tests::daemon::{self, JobWatch, Seen, ROLE_LABEL};
use buildbot_tests::e2e::{assert_failed, assert_well_formed, steps, Fleet, Setup, RESULT_WITHIN};
use buildbot_tests::orchestrator::{log_contains, Attempt};
use buildbot_tests::TestRepo;
use std::time::Duration;

/// How long a test container may outlive a job stopped by a cancel: its
/// removal runs in the background once the job's future is dropped.
const REMOVED_WITHIN: Duration = Duration::from_secs(20);

/// A repository in the original's style: `build.sh` marked to run in the
/// rig's base image generates a page into the checkout (reading the
/// `VERSION` file the job asks for); the Dockerfile copies the whole
/// checkout but what `.dockerignore` leaves out, and tests the page.
fn original_style_repo(setup: &Setup, marker: &str, test_marker: &str) -> TestRepo {
    let build_sh = format!(
        "#!/bin/sh\n{marker}\nset -e\nmkdir -p site\n\
         echo \"<h1>built by build.sh, version $(cat VERSION)</h1>\" > site/index.html\n\
         echo generated site/index.html\n"
    );
    let dockerfile = format!(
        "FROM {}\nCOPY . /www/\n{test_marker}\n",
        setup.rig.base_image
    );
    let files: [(&str, &[u8]); 3] = [
        ("build.sh", build_sh.as_bytes()),
        ("Dockerfile", dockerfile.as_bytes()),
        (".dockerignore", b"build.sh\nDockerfile\n"),
    ];
    setup.rig.create_repo("original", &files)
}

/// A plain repository whose image is the base image and one file.
fn plain_repo(setup: &Setup) -> TestRepo {
    let dockerfile = format!("FROM {}\nCOPY hello.txt /hello.txt\n", setup.rig.base_image);
    let files: [(&str, &[u8]); 2] = [
        ("Dockerfile", dockerfile.as_bytes()),
        ("hello.txt", b"hello\n"),
    ];
    setup.rig.create_repo("tested", &files)
}

/// Runs `job` while watching the daemon for what carries its id; checks
/// that nothing does any more once the result is in.
async fn run_watched(setup: &Setup, docker: &Docker, job: &Job) -> (Attempt, Seen) {
    let watch = JobWatch::start(docker.clone(), job.job_id);
    let attempt = setup.run(job).await;
    let seen = watch.stop().await;
    assert_well_formed(&attempt, job);
    daemon::assert_nothing_left(docker, job.job_id, Duration::ZERO).await;
    (attempt, seen)
}

/// The registry and path of `job`'s repository.
fn registry_path(job: &Job) -> (&str, &str) {
    job.image
        .repository
        .split_once('/')
        .expect("the repository names its registry")
}

/// The text `step` logged on `stream`.
fn output(attempt: &Attempt, step: StepName, stream: LogStream) -> String {
    attempt
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Log(log) if log.step == step && log.stream == stream => {
                Some(log.text.as_str())
            }
            _ => None,
        })
        .collect()
}

fn ran(attempt: &Attempt, step: StepName) -> bool {
    steps(attempt).iter().any(|(s, _)| *s == step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_style_repository_is_built_in_its_marked_builder_and_tested() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let marker = format!("#build_inside_docker_image={}", setup.rig.base_image);
    let test_marker = "#test_in_container_entrypoint=test -s /www/site/index.html";
    let repo = original_style_repo(&setup, &marker, test_marker);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.version_file = Some("VERSION".into());
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;

    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    use StepName::*;
    use StepState::*;
    assert_eq!(
        steps(&attempt),
        [
            (Clone, Started),
            (Clone, Succeeded),
            (Builder, Started),
            (Builder, Succeeded),
            (Build, Started),
            (Build, Succeeded),
            (Test, Started),
            (Test, Succeeded),
            (Push, Started),
            (Push, Succeeded)
        ]
    );
    let log = attempt.log_text();
    assert!(
        log.contains(&format!(
            "build.sh carries #build_inside_docker_image: running ./build.sh in {}",
            setup.rig.base_image
        )),
        "{log}"
    );
    assert!(output(&attempt, Builder, LogStream::Stdout).contains("generated site/index.html"));
    // The builder got the checkout through the API, not a bind mount.
    let builder = seen
        .containers
        .values()
        .find(|c| role(c) == Some("builder"))
        .expect("a builder container");
    assert!(builder.mounts.as_deref().unwrap_or_default().is_empty());

    let image = result.image.as_ref().expect("a pushed image");
    let pushed = format!("{}@{}", job.image.repository, image.digest);
    daemon::pull(&docker, &pushed, None)
        .await
        .expect("pull the pushed image");
    let (code, page) =
        daemon::run_in_image(&docker, &pushed, &["cat", "/www/site/index.html"]).await;
    assert_eq!(code, 0, "{page}");
    let version = &job.image.tags[0];
    assert!(
        page.contains(&format!("built by build.sh, version {version}")),
        "{page}"
    );
    // `.dockerignore` applies to the builder's workdir as to a checkout.
    let (code, _) = daemon::run_in_image(&docker, &pushed, &["test", "-e", "/www/build.sh"]).await;
    assert_eq!(code, 1, "build.sh reached the image");

    // The result's size is the engine's, and its base is the FROM.
    let size = daemon::image_size(&docker, &pushed).await;
    assert_eq!(image.size, u64::try_from(size).ok(), "{image:#?}");
    let base = image.base_image.as_deref().expect("a base image");
    let base_name = setup.rig.base_image.split(':').next().unwrap_or_default();
    assert!(base.starts_with(base_name), "{base}");
    daemon::remove_image(&docker, &pushed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_marker_or_with_conventions_off_no_builder_runs() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    // No marker: build.sh is just a file.
    let unmarked = original_style_repo(&setup, "# no marker here", "");
    let job = setup.rig.job(&unmarked, &setup.rig.registry);
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    assert!(!ran(&attempt, StepName::Builder), "{:?}", steps(&attempt));
    assert!(seen.containers.values().all(|c| role(c) != Some("builder")));

    // Marked, and a failing test marked too, but detection switched off.
    let marker = format!("#build_inside_docker_image={}", setup.rig.base_image);
    let marked = original_style_repo(&setup, &marker, "#test_in_container_entrypoint=false");
    let mut job = setup.rig.job(&marked, &setup.rig.registry);
    job.build.conventions = false;
    let (attempt, _) = run_watched(&setup, &docker, &job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    assert!(!ran(&attempt, StepName::Builder), "{:?}", steps(&attempt));
    assert!(!ran(&attempt, StepName::Test), "{:?}", steps(&attempt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_test_runs_without_network_before_the_push() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let repo = plain_repo(&setup);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    let mut test = Test::new(["sh", "-c", "cat /hello.txt && echo tested $MODE"]);
    test.env.insert("MODE".into(), "strict".into());
    job.test = Some(test);
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    let said = output(&attempt, StepName::Test, LogStream::Stdout);
    assert!(said.contains("hello\ntested strict"), "{said}");
    assert!(attempt.result().durations_ms.contains_key(&StepName::Test));
    let container = seen
        .containers
        .values()
        .find(|c| role(c) == Some("test"))
        .expect("a test container");
    let network = container
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref());
    assert_eq!(network, Some("none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_pushes_nothing_and_reports_its_exit_code() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let repo = plain_repo(&setup);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.test = Some(Test::new(["sh", "-c", "echo 'not ok 1' >&2; exit 3"]));
    let (attempt, _) = run_watched(&setup, &docker, &job).await;
    assert_failed(&attempt, StepName::Test, "test.command exited with code 3");
    let error = attempt.result().error.as_ref().expect("an error");
    assert_eq!(error.exit_code, Some(3), "{error:#?}");
    assert!(error.message.contains("not ok 1"), "{}", error.message);
    assert!(!ran(&attempt, StepName::Push));
    let (registry, path) = registry_path(&job);
    for tag in &job.image.tags {
        assert_eq!(setup.rig.manifest_digest(registry, path, tag, None), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_past_its_timeout_fails_and_leaves_nothing() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let repo = plain_repo(&setup);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    let mut test = Test::new(["sleep", "120"]);
    test.timeout_secs = 2;
    job.test = Some(test);
    let (attempt, _) = run_watched(&setup, &docker, &job).await;
    assert_failed(&attempt, StepName::Test, "within its timeout of 2 s");
    assert!(!ran(&attempt, StepName::Push));
    let (registry, path) = registry_path(&job);
    assert_eq!(
        setup.rig.manifest_digest(registry, path, "latest", None),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_test_stops_it_and_removes_its_container() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&[]).await;
    let docker = daemon::connect().await;
    let dockerfile = format!("FROM {}\n", fleet.rig.base_image);
    let repo = fleet
        .rig
        .create_repo("cancelled", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    job.test = Some(Test::new(["sh", "-c", "echo test-running; sleep 120"]));
    let mut replies = fleet.submit(&job).await;
    replies
        .until(RESULT_WITHIN, |e| log_contains(e, "test-running"))
        .await
        .expect("the test starts");
    assert_eq!(daemon::job_containers(&docker, job.job_id).await.len(), 1);
    let result = fleet.cancel_running(job.job_id, &mut replies).await;
    assert_eq!(result.error.as_ref().map(|e| e.step), Some(StepName::Test));
    daemon::assert_nothing_left(&docker, job.job_id, REMOVED_WITHIN).await;
}

/// A watched container's role label.
fn role(container: &bollard::models::ContainerInspectResponse) -> Option<&str> {
    container
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(ROLE_LABEL)
        .map(String::as_str)
}
