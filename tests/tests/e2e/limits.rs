//! End-to-end tests of the worker's limits on a job's containers
//! (`--job-pids`, `--job-memory`, `--builder-network`): one tenant's fork
//! bomb, memory hog or network access stays in its own container, the job
//! fails with a clear error, and the worker goes on with the next job.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;
use buildbot_protocol::{BuildEngine, Builder, Job, JobStatus, StepName};
use buildbot_tests::daemon::{self, JobWatch, Seen};
use buildbot_tests::e2e::{assert_failed, assert_well_formed, Setup};
use buildbot_tests::orchestrator::Attempt;
use buildbot_tests::TestRepo;
use std::collections::BTreeMap;
use std::time::Duration;

/// Thousands of background processes; bounded: it stops by itself.
const FORK_BOMB: &str = "i=0; while [ $i -lt 5000 ]; do sleep 30 & i=$((i+1)); done; wait";

/// Keeps 300 MB in a shell variable (busybox has no other allocator).
const MEMORY_HOG: &str = "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived";

/// A builder that succeeds: the artifact is one file.
const WELL_BEHAVED: &str = "mkdir -p out && echo built > out/built.txt";

/// A builder running `script` with `sh -c` in the rig's base image (on
/// the daemon already, never removed by the worker), the artifact `out`.
fn builder(setup: &Setup, script: &str) -> Builder {
    Builder {
        image: Some(setup.rig.base_image.clone()),
        dockerfile: None,
        command: vec!["sh".into(), "-c".into(), script.into()],
        workdir: "/src".into(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        artifacts: "out".into(),
        artifacts_dest: "artifact".into(),
    }
}

/// A repository whose runtime Dockerfile runs `run` (a shell line) in a
/// `RUN` step.
fn repo_running(setup: &Setup, run: &str) -> TestRepo {
    let dockerfile = format!("FROM {}\nRUN {run}\n", setup.rig.base_image);
    setup
        .rig
        .create_repo("limits", &[("Dockerfile", dockerfile.as_bytes())])
}

/// A job building `repo` locally (not pushed), with `builder` if any.
fn job(setup: &Setup, repo: &TestRepo, builder: Option<Builder>) -> Job {
    let mut job = setup.rig.job(repo, &setup.rig.registry);
    job.image.push = false;
    // Its layers are its own: another test removing its image cannot
    // pull a cached layer from under this build.
    job.build.no_cache = true;
    job.build.builder = builder;
    job
}

/// Runs `job`, watching its containers; checks that none is left.
async fn run_watched(setup: &Setup, docker: &Docker, job: &Job) -> (Attempt, Seen) {
    let watch = JobWatch::start(docker.clone(), job.job_id);
    let attempt = setup.run(job).await;
    let seen = watch.stop().await;
    assert_well_formed(&attempt, job);
    daemon::assert_nothing_left(docker, job.job_id, Duration::ZERO).await;
    (attempt, seen)
}

/// The builder container's host config, as seen while the job ran.
fn builder_host_config(seen: &Seen) -> HostConfig {
    let configs: Vec<_> = seen
        .containers
        .values()
        .filter_map(|c| c.host_config.clone())
        .collect();
    assert_eq!(
        configs.len(),
        1,
        "one builder container expected: {seen:#?}"
    );
    configs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_fails_its_job_and_the_worker_takes_the_next() {
    let setup = Setup::start_with(&["--job-pids", "64"]).await;
    let docker = daemon::connect().await;
    let repo = repo_running(&setup, "true");
    let bomb = job(&setup, &repo, Some(builder(&setup, FORK_BOMB)));
    let (attempt, seen) = run_watched(&setup, &docker, &bomb).await;

    assert_failed(&attempt, StepName::Builder, "build.builder.command exited");
    let error = attempt.result().error.clone().expect("an error");
    assert!(error.message.contains("can't fork"), "{error:#?}");
    let host = builder_host_config(&seen);
    assert_eq!(host.pids_limit, Some(64), "{host:#?}");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]), "{host:#?}");
    let security = host.security_opt.unwrap_or_default();
    assert!(security.contains(&"no-new-privileges".to_owned()));

    // The same worker builds the next job.
    let next = job(&setup, &repo, Some(builder(&setup, WELL_BEHAVED)));
    let (attempt, _) = run_watched(&setup, &docker, &next).await;
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_with_a_clear_error() {
    let setup = Setup::start_with(&["--job-memory", "64m"]).await;
    let docker = daemon::connect().await;
    let repo = repo_running(&setup, MEMORY_HOG);
    let hog = job(&setup, &repo, Some(builder(&setup, MEMORY_HOG)));
    let (attempt, seen) = run_watched(&setup, &docker, &hog).await;

    assert_failed(
        &attempt,
        StepName::Builder,
        "build.builder.command was killed: out of memory (limit 64 MiB)",
    );
    let error = attempt.result().error.clone().expect("an error");
    assert_eq!(error.exit_code, Some(137), "{error:#?}");
    let host = builder_host_config(&seen);
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.memory_swap, host.memory, "no swap on top");

    // The runtime build's RUN step is bounded too on the legacy builder
    // (it reports the code only); BuildKit's are not (README, "Limits").
    let mut run_only = job(&setup, &repo, None);
    run_only.build.engine = Some(BuildEngine::Legacy);
    let (attempt, _) = run_watched(&setup, &docker, &run_only).await;
    assert_failed(&attempt, StepName::Build, "137");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_buildkit_off_every_build_is_bounded_and_buildkit_jobs_are_refused() {
    let setup = Setup::start_with(&["--job-memory", "64m", "--buildkit", "off"]).await;
    let docker = daemon::connect().await;
    let repo = repo_running(&setup, MEMORY_HOG);
    let (attempt, _) = run_watched(&setup, &docker, &job(&setup, &repo, None)).await;
    assert_failed(&attempt, StepName::Build, "137");
    assert!(
        attempt
            .log_text()
            .contains("building with the legacy builder: this worker builds on the legacy builder only (--buildkit off)"),
        "{}",
        attempt.log_text()
    );

    let mut wants_buildkit = job(&setup, &repo, None);
    wants_buildkit.build.engine = Some(BuildEngine::Buildkit);
    let (attempt, _) = run_watched(&setup, &docker, &wants_buildkit).await;
    assert_failed(
        &attempt,
        StepName::Build,
        "build.engine is buildkit, but this worker builds on the legacy builder only (--buildkit off)",
    );
}

/// A container on the default bridge serving `/ok` over HTTP for a while:
/// a peer a job's container may or may not reach. It ends and removes
/// itself after 5 minutes, should the test not get to remove it.
async fn start_peer(docker: &Docker) -> (String, String) {
    // httpd as PID 1 would ignore the signals of `timeout`: it runs in the
    // background and the shell's end stops the container.
    let script = "echo ok > /tmp/ok && httpd -p 8080 -h /tmp && sleep 300";
    let config = ContainerCreateBody {
        image: Some(setup_base_image()),
        entrypoint: Some(vec!["sh".into(), "-c".into(), script.into()]),
        labels: Some([("buildbot.test".into(), "peer".into())].into()),
        host_config: Some(HostConfig {
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(None, config)
        .await
        .expect("create the peer")
        .id;
    docker
        .start_container(&id, None)
        .await
        .expect("start the peer");
    let inspected = docker
        .inspect_container(&id, None)
        .await
        .expect("inspect the peer");
    let address = inspected
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get("bridge").and_then(|b| b.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
        .expect("the peer's bridge address");
    (id, address)
}

/// The rig's base image, also known before a [`Setup`] exists.
fn setup_base_image() -> String {
    buildbot_tests::Rig::load().base_image
}

async fn remove_peer(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        // Already going: auto-removal started with the kill.
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => {}
        Err(e) => panic!("remove the peer {id}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_builder_network_none_a_job_reaches_nothing_the_default_can() {
    let docker = daemon::connect().await;
    let (peer, address) = start_peer(&docker).await;
    // busybox's wget crashes in the base image; nc speaks HTTP well enough.
    let get = format!("printf 'GET /ok HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {address} 8080");
    // The builder lives a second at least, so the 50 ms watch sees its
    // container even when the fetch fails at once (CI saw it missed).
    let fetch = format!("sleep 1 && mkdir -p out && {get} > out/ok && grep -q '^ok' out/ok");
    let run = format!("{get} | grep -q '^ok'");

    let open = Setup::start().await;
    let repo = repo_running(&open, &run);
    let reached = job(&open, &repo, Some(builder(&open, &fetch)));
    let (attempt, _) = run_watched(&open, &docker, &reached).await;
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    drop(open);

    let closed = Setup::start_with(&["--builder-network", "none"]).await;
    let from_builder = job(&closed, &repo, Some(builder(&closed, &fetch)));
    let (attempt, seen) = run_watched(&closed, &docker, &from_builder).await;
    assert_failed(&attempt, StepName::Builder, "build.builder.command exited");
    let host = builder_host_config(&seen);
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    // BuildKit's RUN steps too, and the legacy builder's.
    for engine in [BuildEngine::Buildkit, BuildEngine::Legacy] {
        let mut from_run = job(&closed, &repo, None);
        from_run.build.engine = Some(engine);
        let (attempt, _) = run_watched(&closed, &docker, &from_run).await;
        assert_failed(&attempt, StepName::Build, "");
        let error = attempt.result().error.as_ref().expect("an error");
        assert_eq!(error.exit_code, Some(1), "{engine:?}: {error:?}");
    }
    remove_peer(&docker, &peer).await;
}
