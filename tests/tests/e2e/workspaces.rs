//! A worker's disk over its life: checkouts live under
//! `<workspace-dir>/<worker-id>/`, a restarted worker empties what a
//! SIGKILL left there, and a cancelled slow clone leaves nothing behind
//! (the git thread holds the workspace until its last write).

use crate::reliability::slow_job;
use buildbot_protocol::{EventBody, Job, JobStatus, StepEvent, StepName, StepState};
use buildbot_tests::e2e::{steps, Fleet, RESULT_WITHIN};
use buildbot_tests::orchestrator::{log_contains, ReplyQueue};
use buildbot_tests::worker::WorkerProcess;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|read| {
            read.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `dir` is empty, or panics after `limit`.
async fn until_empty(dir: &Path, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !entries(dir).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still holds {:?}",
            dir.display(),
            entries(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A temp workspace root and a worker id of the test's own: the worker's
/// checkouts go to [`WorkerDir::mine`].
struct WorkerDir {
    root: tempfile::TempDir,
    root_arg: String,
    worker_id: String,
}

impl WorkerDir {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let root_arg = root.path().to_string_lossy().into_owned();
        let worker_id = format!("ws-{}", uuid::Uuid::new_v4().simple());
        Self {
            root,
            root_arg,
            worker_id,
        }
    }

    /// `--worker-id` and `--workspace-dir` for a worker using it.
    fn args(&self) -> [&str; 4] {
        [
            "--worker-id",
            &self.worker_id,
            "--workspace-dir",
            &self.root_arg,
        ]
    }

    /// The worker's own workspace directory.
    fn mine(&self) -> std::path::PathBuf {
        self.root.path().join(&self.worker_id)
    }
}

/// Forwards 127.0.0.1:<returned port> to `target`, the answers at about
/// `bytes_per_second`: a slow git remote.
async fn throttled_proxy(target: u16, bytes_per_second: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(forward(client, target, bytes_per_second));
        }
    });
    port
}

async fn forward(client: TcpStream, target: u16, bytes_per_second: usize) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let chunk = (bytes_per_second / 10).max(1);
    let mut buffer = vec![0; chunk];
    loop {
        match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_empties_the_workspace_a_sigkill_left() {
    let fleet = Fleet::new().await;
    let dir = WorkerDir::new();
    let (args, mine) = (dir.args(), dir.mine());
    let job = slow_job(&fleet, 4);
    let mut first = fleet.worker(&args).await;
    let mut replies = fleet.submit(&job).await;
    replies
        .until(RESULT_WITHIN, |e| log_contains(e, "build-2"))
        .await
        .expect("the build runs");
    let left = entries(&mine);
    assert_eq!(left.len(), 1, "one job's workspace: {left:?}");
    first.kill().await.expect("SIGKILL the worker");
    assert_eq!(entries(&mine), left, "a SIGKILL leaves it");

    let restarted = fleet.worker(&args).await;
    swept(&restarted).await;
    assert!(
        !mine.join(&left[0]).exists(),
        "the restart removed {}",
        left[0]
    );
    let events = replies
        .until(RESULT_WITHIN, |e| matches!(e.body, EventBody::Result(_)))
        .await
        .expect("the redelivered job's result");
    let Some(EventBody::Result(result)) = events.last().map(|e| &e.body) else {
        panic!("a result");
    };
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    until_empty(&mine, Duration::from_secs(5)).await;
}

/// A job whose clone takes about 16 s: 4 MiB that do not compress,
/// through a remote giving 256 KiB/s.
async fn slow_clone_job(fleet: &Fleet) -> Job {
    let noise: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let repo = fleet.rig.create_repo(
        "big",
        &[("Dockerfile", b"FROM scratch\n"), ("noise.bin", &noise)],
    );
    let port = throttled_proxy(fleet.rig.git_ssh_port, 256 << 10).await;
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    let direct = format!(":{}/", fleet.rig.git_ssh_port);
    job.repo.url = repo.ssh_url.replacen(&direct, &format!(":{port}/"), 1);
    let pinned = fleet.rig.known_hosts_line();
    let key = pinned.split_once(' ').map(|(_, key)| key).expect("a key");
    job.repo.known_hosts = Some(format!("[{}]:{port} {key}", fleet.rig.git_ssh_host));
    job
}

/// Waits until the clone step started, and 2 s more: into the transfer.
async fn into_the_clone(replies: &mut ReplyQueue) {
    let clone_started = EventBody::Step(StepEvent {
        name: StepName::Clone,
        state: StepState::Started,
    });
    replies
        .until(RESULT_WITHIN, |e| e.body == clone_started)
        .await
        .expect("the clone starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Waits until `worker` logged its start-up sweep. (The broker may still
/// count a killed worker's consumer for a moment, so a restart's sweep is
/// waited for, not assumed.)
async fn swept(worker: &WorkerProcess) {
    let swept = "removed workspaces an earlier run of this worker left";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !worker.log().contains(swept) {
        assert!(tokio::time::Instant::now() < deadline, "{}", worker.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_empties_the_workspace_a_sigkill_mid_clone_left() {
    let fleet = Fleet::new().await;
    let dir = WorkerDir::new();
    let (args, mine) = (dir.args(), dir.mine());
    let mut first = fleet.worker(&args).await;
    let job = slow_clone_job(&fleet).await;
    let mut replies = fleet.submit(&job).await;
    into_the_clone(&mut replies).await;
    let left = entries(&mine);
    assert_eq!(left.len(), 1, "one job's workspace: {left:?}");
    first.kill().await.expect("SIGKILL the worker");

    let restarted = fleet.worker(&args).await;
    swept(&restarted).await;
    assert!(
        !mine.join(&left[0]).exists(),
        "the restart removed {}",
        left[0]
    );
    // The redelivered job clones again; cancelled, it leaves nothing.
    fleet.orchestrator.cancel(job.job_id).await.expect("cancel");
    replies
        .until(RESULT_WITHIN, |e| matches!(e.body, EventBody::Result(_)))
        .await
        .expect("the result");
    until_empty(&mine, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_slow_clone_leaves_nothing_and_ends_its_step() {
    let fleet = Fleet::new().await;
    let dir = WorkerDir::new();
    let _worker = fleet.worker(&dir.args()).await;
    let mine = dir.mine();
    let job = slow_clone_job(&fleet).await;
    let mut replies = fleet.submit(&job).await;
    into_the_clone(&mut replies).await;
    assert_eq!(entries(&mine).len(), 1, "the job's workspace");
    fleet.orchestrator.cancel(job.job_id).await.expect("cancel");
    let events = replies
        .until(RESULT_WITHIN, |e| matches!(e.body, EventBody::Result(_)))
        .await
        .expect("the result");
    let Some(EventBody::Result(result)) = events.last().map(|e| &e.body) else {
        panic!("a result");
    };
    assert_eq!(result.status, JobStatus::Cancelled, "{result:#?}");
    let attempt = buildbot_tests::orchestrator::Attempt { events };
    let seen = steps(&attempt);
    assert!(
        seen.contains(&(StepName::Clone, StepState::Failed)),
        "{seen:?}"
    );
    // The git thread stops at its next callback and then lets go of the
    // workspace: nothing is written back after that.
    until_empty(&mine, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(entries(&mine).is_empty(), "{:?}", entries(&mine));
}

/// Bytes of the images workers keep as cache (the worker's own measure:
/// the engine's per-image sizes).
async fn kept_bytes(docker: &bollard::Docker) -> u64 {
    let filters = std::collections::HashMap::from([(
        "reference".to_owned(),
        vec![
            "buildbot-runtime:*".to_owned(),
            "buildbot-builder:*".to_owned(),
        ],
    )]);
    let options = bollard::query_parameters::ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let images = docker
        .list_images(Some(options))
        .await
        .expect("list images");
    images
        .iter()
        .map(|i| u64::try_from(i.size).unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the budget is the engine's: it would count and evict what concurrent tests keep; scripts/test runs it alone"]
async fn a_hundred_jobs_stay_within_the_image_cache_budget() {
    const JOBS: usize = 100;
    const LAYER: usize = 5_000_000;
    const BUDGET: u64 = 100 << 20;
    let fleet = Fleet::new().await;
    let docker = buildbot_tests::daemon::connect().await;
    // Another owner's image on the same engine: never the worker's to remove.
    let other = format!("buildbot-e2e-other-{}", uuid::Uuid::new_v4().simple());
    buildbot_tests::daemon::tag(&docker, &fleet.rig.base_image, &other, "keep").await;
    // Whatever earlier tests kept counts against the budget too: a worker
    // with a budget of 0 empties the cache when it starts.
    let mut emptying = fleet.worker(&["--image-cache-bytes", "0"]).await;
    emptying.kill().await.expect("stop it");
    let _worker = fleet
        .worker(&["--image-cache-bytes", "100m", "--concurrency", "2"])
        .await;
    let dockerfile = format!(
        "FROM {}\nARG N\nRUN head -c {LAYER} /dev/urandom > /layer && echo $N\n",
        fleet.rig.base_image
    );
    let repo = fleet
        .rig
        .create_repo("budget", &[("Dockerfile", dockerfile.as_bytes())]);
    let one_job = LAYER as u64
        + buildbot_tests::daemon::image_size(&docker, &fleet.rig.base_image).await as u64;
    let mut most = 0;
    for batch in (0..JOBS).collect::<Vec<_>>().chunks(2) {
        let mut replies = Vec::new();
        for n in batch {
            let mut job = fleet.rig.job(&repo, &fleet.rig.registry).with_push(false);
            job.build.build_args.insert("N".into(), n.to_string());
            replies.push(fleet.submit(&job).await);
        }
        for mut reply in replies {
            let attempt = reply.until_result(RESULT_WITHIN).await.expect("a result");
            assert_eq!(attempt.result().status, JobStatus::Succeeded);
        }
        let kept = kept_bytes(&docker).await;
        most = most.max(kept);
        assert!(
            kept <= BUDGET + 2 * one_job,
            "after {} jobs the cache holds {kept} bytes, over {BUDGET} + two jobs",
            batch[batch.len() - 1] + 1
        );
    }
    eprintln!(
        "{JOBS} jobs of a {LAYER}-byte layer each, budget {BUDGET}: at most {most} bytes kept"
    );
    assert!(
        most > BUDGET / 2,
        "the cache was used: {most} bytes at most"
    );
    assert!(buildbot_tests::daemon::has_image(&docker, &format!("{other}:keep")).await);
    buildbot_tests::daemon::remove_image(&docker, &format!("{other}:keep")).await;
}
