//! End-to-end tests of builder containers ("build in a separate
//! container") through the real rig: a builder image much bigger than the
//! runtime image generates a static site, only the site ships, and nothing
//! labelled with the job's id is left on the daemon afterwards, whatever
//! the outcome.

use bollard::auth::DockerCredentials;
use bollard::models::ContainerInspectResponse;
use bollard::Docker;
use buildbot_protocol::{Builder, EventBody, Job, JobStatus, LogStream, StepName, StepState};
use buildbot_tests::daemon::{self, JobWatch, Seen, ROLE_LABEL};
use buildbot_tests::e2e::{assert_failed, assert_well_formed, steps, Setup, LOCAL_IMAGES};
use buildbot_tests::orchestrator::Attempt;
use buildbot_tests::TestRepo;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// The example app of the README (`tests/apps/static-site`), file by file:
/// a builder image 20 MB bigger than the base image whose generator turns
/// `content/` into pages titled from `SITE_TITLE` (which only
/// `build.builder.env` sets), and a runtime image of the base image and
/// the site.
const SITE_FILES: [(&str, &str); 5] = [
    (
        "Dockerfile.build",
        include_str!("../../apps/static-site/Dockerfile.build"),
    ),
    (
        "sitegen.sh",
        include_str!("../../apps/static-site/sitegen.sh"),
    ),
    (
        "Dockerfile",
        include_str!("../../apps/static-site/Dockerfile"),
    ),
    (
        "content/index.txt",
        include_str!("../../apps/static-site/content/index.txt"),
    ),
    (
        "content/about.txt",
        include_str!("../../apps/static-site/content/about.txt"),
    ),
];

/// Where the builder's toolchain is; the runtime image must not have it.
const TOOLCHAIN: &str = "/opt/sitegen/toolchain.bin";

/// How long a builder container may outlive a job stopped by its timeout:
/// its removal runs in the background once the job's future is dropped.
const REMOVED_WITHIN: Duration = Duration::from_secs(20);

fn site_repo(setup: &Setup) -> TestRepo {
    let files: Vec<(&str, &[u8])> = SITE_FILES
        .iter()
        .map(|(path, text)| (*path, text.as_bytes()))
        .collect();
    setup.rig.create_repo("site", &files)
}

/// A builder running `command` in a builder image built from the repo's
/// `Dockerfile.build`, with the artifact at `/out`.
fn dockerfile_builder(command: &[&str]) -> Builder {
    Builder {
        image: None,
        dockerfile: Some("Dockerfile.build".into()),
        command: command.iter().map(|a| a.to_string()).collect(),
        workdir: "/src".into(),
        env: BTreeMap::new(),
        secret_env: Default::default(),
        artifacts: "/out".into(),
        artifacts_dest: "artifact".into(),
    }
}

/// A builder running `command` in `image`, with the artifact at `out`
/// under the workdir.
fn image_builder(image: &str, command: &[&str]) -> Builder {
    Builder {
        image: Some(image.into()),
        dockerfile: None,
        artifacts: "out".into(),
        ..dockerfile_builder(command)
    }
}

/// A builder image only the daemon has (a new name for the base image), so
/// the `builder.image` path needs no registry. The test removes it, after
/// checking that the worker did not.
async fn local_builder_image(docker: &Docker, setup: &Setup) -> String {
    let tag = format!("builder-{}", Uuid::new_v4().simple());
    daemon::tag(docker, &setup.rig.base_image, LOCAL_IMAGES, &tag).await;
    format!("{LOCAL_IMAGES}:{tag}")
}

/// Only images built from the repository are a job's to remove: `image`,
/// a `builder.image`, must still be there. The test's own, it goes now.
async fn assert_kept_then_remove(docker: &Docker, image: &str) {
    assert!(
        daemon::has_image(docker, image).await,
        "{image} was removed"
    );
    daemon::remove_image(docker, image).await;
}

/// Runs `job` while watching the daemon for what carries its id; checks
/// that nothing does any more once the result is in.
async fn run_watched(setup: &Setup, docker: &Docker, job: &Job) -> (Attempt, Seen) {
    let watch = JobWatch::start(docker.clone(), job.job_id);
    let attempt = setup.run(job).await;
    let seen = watch.stop().await;
    assert_well_formed(&attempt, job);
    // Removal is part of the step on every path but a dropped future.
    daemon::assert_nothing_left(docker, job.job_id, Duration::ZERO).await;
    (attempt, seen)
}

/// The one container seen that ran `builder`'s command. (Building a
/// builder image runs labelled intermediate containers too.)
fn the_builder_container<'a>(seen: &'a Seen, builder: &Builder) -> &'a ContainerInspectResponse {
    let ran: Vec<_> = seen
        .containers
        .values()
        .filter(|c| {
            c.config
                .as_ref()
                .and_then(|config| config.entrypoint.as_ref())
                == Some(&builder.command)
        })
        .collect();
    assert_eq!(ran.len(), 1, "one builder container expected: {seen:#?}");
    ran[0]
}

/// The builder image the job built from its Dockerfile or took from the
/// cache, as its log names it: kept on the engine under its cache key,
/// labelled as the cache's.
async fn the_cached_builder_image(docker: &Docker, attempt: &Attempt) -> (String, i64) {
    let log = attempt.log_text();
    let reference = log
        .split_whitespace()
        .find(|word| word.starts_with("buildbot-builder:"))
        .unwrap_or_else(|| panic!("no builder image named in the log: {log}"))
        .to_owned();
    let image = docker
        .inspect_image(&reference)
        .await
        .unwrap_or_else(|e| panic!("{reference} is kept: {e}"));
    let labels = image
        .config
        .and_then(|config| config.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get(ROLE_LABEL).map(String::as_str),
        Some("builder-cache"),
        "{labels:?}"
    );
    (reference, image.size.unwrap_or_default())
}

/// The text the builder step logged on `stream`.
fn builder_output(attempt: &Attempt, stream: LogStream) -> String {
    attempt
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Log(log) if log.step == StepName::Builder && log.stream == stream => {
                Some(log.text.as_str())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_site_is_built_in_a_builder_and_only_the_site_ships() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let repo = site_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    // The sleep keeps the builder around long enough to be watched.
    let mut builder = dockerfile_builder(&[
        "sh",
        "-c",
        "/opt/sitegen/sitegen.sh content /out && sleep 2",
    ]);
    builder
        .env
        .insert("SITE_TITLE".into(), "Builder test".into());
    job.build.builder = Some(builder.clone());
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
            (Push, Started),
            (Push, Succeeded)
        ]
    );
    assert!(result.durations_ms.contains_key(&Builder), "{result:#?}");
    let output = builder_output(&attempt, LogStream::Stdout);
    assert!(output.contains("generated about.html"), "{output}");
    assert!(output.contains("generated index.html"), "{output}");

    // While it ran: one builder container and one builder image, both
    // labelled with the job id, the source uploaded rather than mounted,
    // and an environment holding build.builder.env.
    let container = the_builder_container(&seen, &builder);
    let config = container.config.as_ref().expect("its config");
    let labels = config.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(ROLE_LABEL).map(String::as_str), Some("builder"));
    let env = config.env.clone().unwrap_or_default();
    assert!(
        env.contains(&"SITE_TITLE=Builder test".to_owned()),
        "{env:?}"
    );
    assert!(
        container.mounts.as_deref().unwrap_or_default().is_empty(),
        "{:?}",
        container.mounts
    );
    let (_, builder_size) = the_cached_builder_image(&docker, &attempt).await;

    // The pushed image, pulled back by digest, holds the site and not the
    // toolchain.
    // A shared engine keeps no tag under the job's chosen name.
    let image = result.image.as_ref().expect("a pushed image");
    for tag in &job.image.tags {
        let local = format!("{}:{tag}", job.image.repository);
        assert!(
            !daemon::has_image(&docker, &local).await,
            "{local} was tagged on the engine"
        );
    }
    let pushed = format!("{}@{}", job.image.repository, image.digest);
    daemon::pull(&docker, &pushed, None)
        .await
        .expect("pull the pushed image");
    let (code, page) = daemon::run_in_image(&docker, &pushed, &["cat", "/www/index.html"]).await;
    assert_eq!(code, 0, "{page}");
    assert!(page.contains("<title>Builder test</title>"), "{page}");
    assert!(page.contains("<p>Welcome to the test site."), "{page}");
    let (code, _) = daemon::run_in_image(&docker, &pushed, &["test", "-e", TOOLCHAIN]).await;
    assert_eq!(code, 1, "{TOOLCHAIN} reached the runtime image");
    let (code, _) =
        daemon::run_in_image(&docker, &pushed, &["test", "-e", "/www/about.html"]).await;
    assert_eq!(code, 0, "about.html is missing");

    // Measurably smaller: the builder carried 20 MB the runtime image
    // does not.
    let runtime_size = daemon::image_size(&docker, &pushed).await;
    assert!(
        builder_size > runtime_size + 15_000_000,
        "builder image {builder_size} bytes, runtime image {runtime_size} bytes"
    );
    daemon::remove_image(&docker, &pushed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_builder_command_reports_its_exit_code_and_last_lines() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let repo = site_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    // stdout and stderr are separate pipes: without the pause, the
    // daemon may read the error line before the steps written earlier.
    let script = "for i in $(seq 1 30); do echo step $i; done; sleep 1; \
                  echo 'sitegen: content/missing.txt: no such file' >&2; exit 7";
    let builder = dockerfile_builder(&["sh", "-c", script]);
    job.build.builder = Some(builder.clone());
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;

    assert_failed(&attempt, StepName::Builder, "exited with code 7");
    let error = attempt.result().error.as_ref().expect("an error");
    assert_eq!(error.exit_code, Some(7), "{error:#?}");
    assert!(
        error
            .message
            .contains("step 30\nsitegen: content/missing.txt: no such file"),
        "{}",
        error.message
    );
    // The last lines, not the whole output.
    assert!(!error.message.contains("step 1\n"), "{}", error.message);
    assert!(builder_output(&attempt, LogStream::Stderr).contains("no such file"));
    assert!(attempt.result().image.is_none());
    assert!(!steps(&attempt)
        .iter()
        .any(|(step, _)| *step == StepName::Build));
    // The builder image was built (or taken from the cache) and ran; the
    // container went, the image stays for the next job.
    the_cached_builder_image(&docker, &attempt).await;
    the_builder_container(&seen, &builder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_builder_dockerfile_is_built_once_and_reused() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let registry = setup.rig.registry.clone();
    // A builder of its own (a unique marker in its Dockerfile), so no other
    // test's run has cached it.
    let marker = Uuid::new_v4().simple().to_string();
    let builder_dockerfile = format!(
        "FROM {}\nRUN echo {marker} > /marker && mkdir -p /opt\nCOPY tool.sh /opt/tool.sh\n",
        setup.rig.base_image
    );
    let files = |tool: &str, app: &str| {
        vec![
            ("Dockerfile.build".to_owned(), builder_dockerfile.clone()),
            ("tool.sh".to_owned(), tool.to_owned()),
            ("app.txt".to_owned(), app.to_owned()),
            (
                "Dockerfile".to_owned(),
                format!("FROM {}\nCOPY artifact/ /out/\n", setup.rig.base_image),
            ),
        ]
    };
    let run = |files: Vec<(String, String)>| {
        let setup = &setup;
        let docker = &docker;
        let registry = registry.clone();
        async move {
            let files: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(path, text)| (path.as_str(), text.as_bytes()))
                .collect();
            let repo = setup.rig.create_repo("builder-cache", &files);
            let mut job = setup.rig.job(&repo, &registry);
            job.build.builder = Some(dockerfile_builder(&[
                "sh",
                "-c",
                "mkdir -p /out && cp /marker app.txt /out/",
            ]));
            let (attempt, _) = run_watched(setup, docker, &job).await;
            let result = attempt.result();
            assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
            attempt
        }
    };

    let first = run(files("echo v1", "one")).await;
    assert!(first.log_text().contains(&format!("RUN echo {marker}")));
    let (built, _) = the_cached_builder_image(&docker, &first).await;
    // Another commit of the app, the builder's inputs unchanged: reused,
    // its Dockerfile not run again.
    let second = run(files("echo v1", "two")).await;
    let log = second.log_text();
    assert!(
        log.contains(&format!("using the cached builder image {built}")),
        "{log}"
    );
    assert!(!log.contains(&format!("RUN echo {marker}")), "{log}");
    // A file the builder copies changed: another image.
    let third = run(files("echo v2", "two")).await;
    assert!(third.log_text().contains("building the builder image"));
    let (rebuilt, _) = the_cached_builder_image(&docker, &third).await;
    assert_ne!(rebuilt, built);
    daemon::remove_image(&docker, &built).await;
    daemon::remove_image(&docker, &rebuilt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_command_that_does_not_exist_is_the_job_s_error_with_code_127() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let image = local_builder_image(&docker, &setup).await;
    let repo = site_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    let builder = image_builder(&image, &["no-such-sitegen", "--out", "public"]);
    job.build.builder = Some(builder.clone());
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;

    assert_failed(
        &attempt,
        StepName::Builder,
        "build.builder.command could not be started: ",
    );
    let error = attempt.result().error.as_ref().expect("an error");
    assert!(error.message.contains("no-such-sitegen"), "{error:#?}");
    assert!(!error.message.starts_with("Docker Engine"), "{error:#?}");
    assert_eq!(error.exit_code, Some(127), "{error:#?}");
    the_builder_container(&seen, &builder);
    assert_kept_then_remove(&docker, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_artifact_path_is_a_clear_error_and_the_builder_image_is_kept() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let image = local_builder_image(&docker, &setup).await;
    let repo = site_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    let mut builder = image_builder(&image, &["sh", "-c", "echo produced nothing"]);
    builder.artifacts = "public/site".into();
    job.build.builder = Some(builder.clone());
    let (attempt, seen) = run_watched(&setup, &docker, &job).await;

    assert_failed(
        &attempt,
        StepName::Builder,
        "build.builder.artifacts: /src/public/site does not exist in the builder container",
    );
    assert_eq!(attempt.result().error.as_ref().unwrap().exit_code, None);
    assert!(builder_output(&attempt, LogStream::Stdout).contains("produced nothing"));
    the_builder_container(&seen, &builder);
    assert_kept_then_remove(&docker, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_image_on_the_daemon_gets_the_source_and_yields_a_file_artifact() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let image = local_builder_image(&docker, &setup).await;
    let repo = setup.rig.create_repo(
        "single-file",
        &[
            (
                "Dockerfile",
                b"FROM buildbot-base:busybox\nCOPY dist/app.txt /app.txt\n",
            ),
            ("src/app.txt", b"made from the source\n"),
            // The runtime context already has this path: the artifact
            // replaces it.
            ("dist/app.txt", b"stale, from the checkout\n"),
        ],
    );
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    let mut builder = image_builder(
        &image,
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/out && tr a-z A-Z < src/app.txt > /tmp/out/app.txt",
        ],
    );
    builder.workdir = "/work/app".into();
    builder.artifacts = "/tmp/out/app.txt".into();
    builder.artifacts_dest = "dist/app.txt".into();
    job.build.builder = Some(builder);
    let (attempt, _) = run_watched(&setup, &docker, &job).await;

    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    let log = attempt.log_text();
    assert!(
        log.contains("replaced dist/app.txt of the checkout"),
        "{log}"
    );
    let digest = &result.image.as_ref().expect("a pushed image").digest;
    let pushed = format!("{}@{digest}", job.image.repository);
    daemon::pull(&docker, &pushed, None)
        .await
        .expect("pull the pushed image");
    let (code, text) = daemon::run_in_image(&docker, &pushed, &["cat", "/app.txt"]).await;
    assert_eq!((code, text.as_str()), (0, "MADE FROM THE SOURCE\n"));
    daemon::remove_image(&docker, &pushed).await;
    assert_kept_then_remove(&docker, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_image_is_pulled_with_the_jobs_registry_credentials() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let auth_registry = setup.rig.auth_registry.clone();
    let credentials = DockerCredentials {
        username: Some(setup.rig.auth_registry_user.clone()),
        password: Some(setup.rig.auth_registry_password.clone()),
        serveraddress: Some(auth_registry.clone()),
        ..Default::default()
    };
    // A builder image that exists only in the auth registry.
    let repository = format!("{auth_registry}/e2e/builder-{}", Uuid::new_v4().simple());
    let image = format!("{repository}:v1");
    daemon::tag(&docker, &setup.rig.base_image, &repository, "v1").await;
    daemon::push(&docker, &repository, "v1", Some(credentials))
        .await
        .expect("push the builder image");

    // The engine still has it (as after another tenant's job): a job
    // without the registry's credentials may not use that copy.
    let repo = site_repo(&setup);
    let builder = image_builder(
        &image,
        &["sh", "-c", "mkdir -p out && cp content/*.txt out/ && env"],
    );
    let mut anonymous = setup.rig.job(&repo, &auth_registry);
    anonymous.build.builder = Some(builder.clone());
    let (attempt, _) = run_watched(&setup, &docker, &anonymous).await;
    assert_failed(
        &attempt,
        StepName::Builder,
        &format!("build.builder.image: {image} cannot be resolved at its registry with the job's registry_auth"),
    );
    daemon::remove_image(&docker, &image).await;

    let mut job = setup.rig.job(&repo, &auth_registry);
    job.build.builder = Some(builder);
    job.registry_auth = Some(setup.auth_registry_basic());
    let (attempt, _) = run_watched(&setup, &docker, &job).await;
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    let output = builder_output(&attempt, LogStream::Stdout);
    // `env` printed the builder's whole environment: no credential in it.
    assert!(output.contains("PWD=/src"), "{output}");
    assert!(!output.contains(&setup.rig.auth_registry_password));
    let log = attempt.log_text();
    assert!(log.contains(&format!("pulling {image} (sha256:")), "{log}");
    // The pull's outcome is logged. (Its layers are the base image's,
    // already on the daemon: no byte counts to leave out here.)
    assert!(log.contains("Digest: sha256:"), "{log}");
    assert!(log.contains("Status: Downloaded newer image"), "{log}");
    daemon::remove_image(&docker, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_builder_is_removed() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let image = local_builder_image(&docker, &setup).await;
    let repo = site_repo(&setup);
    let registry = setup.rig.registry.clone();
    let mut job = setup.rig.job(&repo, &registry);
    job.timeout_secs = 8;
    let builder = image_builder(&image, &["sh", "-c", "echo started; sleep 300"]);
    job.build.builder = Some(builder.clone());
    let watch = JobWatch::start(docker.clone(), job.job_id);
    let attempt = setup.run(&job).await;
    let seen = watch.stop().await;

    let result = attempt.result();
    assert_eq!(result.status, JobStatus::TimedOut, "{result:#?}");
    assert_eq!(
        result.error.as_ref().map(|e| e.step),
        Some(StepName::Builder)
    );
    assert!(builder_output(&attempt, LogStream::Stdout).contains("started"));
    the_builder_container(&seen, &builder);
    daemon::assert_nothing_left(&docker, job.job_id, REMOVED_WITHIN).await;
    daemon::remove_image(&docker, &image).await;
}
