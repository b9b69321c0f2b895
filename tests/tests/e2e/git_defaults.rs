//! The clone step's worker-level defaults through the real rig: SSH host
//! keys fail closed (a job without `repo.known_hosts` needs the worker's
//! `--known-hosts` file, or the explicit `--accept-any-host-key`), a bad
//! `--known-hosts` file stops the worker at start, `--max-clone-bytes`
//! stops a large clone, an unadvertised SHA is fetched without pulling
//! every ref's whole history, and a remote that accepts the connection
//! and never answers fails the clone at the read timeout.

use buildbot_protocol::{Job, JobStatus, StepName};
use buildbot_tests::e2e::{assert_failed, Setup, RESULT_WITHIN};
use buildbot_tests::worker::worker_binary;
use buildbot_tests::{Rig, TestRepo};
use std::path::PathBuf;
use std::process::Stdio;
use tempfile::TempDir;
use tokio::process::Command;

const DOCKERFILE: &[u8] = b"FROM buildbot-base:busybox\nCOPY . /app\n";

fn small_repo(setup: &Setup) -> TestRepo {
    setup.rig.create_repo(
        "gitdefaults",
        &[("Dockerfile", DOCKERFILE), ("hello.txt", b"hello\n")],
    )
}

/// The rig's job for `repo` without its host key pin, built but not pushed.
fn unpinned_job(setup: &Setup, repo: &TestRepo) -> Job {
    let mut job = setup.rig.job(repo, &setup.rig.registry);
    job.repo.known_hosts = None;
    job.image.push = false;
    job
}

/// A `known_hosts` file holding `line`, in a directory kept by the caller.
fn known_hosts_file(line: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, format!("{line}\n")).expect("write known_hosts");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_known_hosts_is_refused_on_a_worker_without_a_pin() {
    let setup = Setup::start().await;
    let job = unpinned_job(&setup, &small_repo(&setup));
    let attempt = setup.run(&job).await;
    assert_failed(
        &attempt,
        StepName::Clone,
        "refusing to trust the SSH host key",
    );
    let message = &attempt.result().error.as_ref().expect("an error").message;
    for option in ["repo.known_hosts", "--known-hosts", "--accept-any-host-key"] {
        assert!(message.contains(option), "{option} not named: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_known_hosts_file_pins_jobs_without_their_own() {
    let (_dir, path) = known_hosts_file(&Rig::load().known_hosts_line());
    let setup = Setup::start_with(&["--known-hosts", path.to_str().expect("utf-8")]).await;
    let repo = small_repo(&setup);
    let job = unpinned_job(&setup, &repo);
    let attempt = setup.run(&job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    assert!(!attempt.log_text().contains("not verified"));

    // The job's own pin wins over the worker's.
    let mut wrong = unpinned_job(&setup, &repo);
    wrong.repo.known_hosts = Some(setup.rig.wrong_known_hosts_line());
    let attempt = setup.run(&wrong).await;
    assert_failed(&attempt, StepName::Clone, "does not match repo.known_hosts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_in_the_workers_file_is_named_as_the_workers() {
    let (_dir, path) = known_hosts_file(&Rig::load().wrong_known_hosts_line());
    let setup = Setup::start_with(&["--known-hosts", path.to_str().expect("utf-8")]).await;
    let job = unpinned_job(&setup, &small_repo(&setup));
    let attempt = setup.run(&job).await;
    assert_failed(
        &attempt,
        StepName::Clone,
        "does not match the worker's --known-hosts file",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_any_host_key_is_an_explicit_opt_in_and_says_so() {
    let setup = Setup::start_with(&["--accept-any-host-key"]).await;
    let job = unpinned_job(&setup, &small_repo(&setup));
    let attempt = setup.run(&job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    let log = attempt.log_text();
    assert!(log.contains("the SSH host key is not verified"), "{log}");
    let worker_log = setup.worker().log();
    assert!(
        worker_log.contains("WARN") && worker_log.contains("--accept-any-host-key"),
        "{worker_log}"
    );

    // A job that pins its host key is still checked.
    let mut pinned = unpinned_job(&setup, &small_repo(&setup));
    pinned.repo.known_hosts = Some(setup.rig.wrong_known_hosts_line());
    let attempt = setup.run(&pinned).await;
    assert_failed(&attempt, StepName::Clone, "does not match repo.known_hosts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_known_hosts_file_stops_the_worker_at_start() {
    let (_dir, path) = known_hosts_file("github.com ssh-ed25519 not-base64");
    let run = Command::new(worker_binary())
        .args(["worker", "--queue", "test.jobs.never-consumed"])
        .args(["--known-hosts", path.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RESULT_WITHIN, run)
        .await
        .expect("the worker stopped in time")
        .expect("the worker ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not valid known_hosts text: line 1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_over_max_clone_bytes_fails_clearly() {
    let setup = Setup::start_with(&["--max-clone-bytes", "20000"]).await;
    // Bytes that do not compress: the pack is about as large as the file.
    let mut x: u32 = 2_463_534_242;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    let repo = setup.rig.create_repo(
        "gitdefaults-big",
        &[("Dockerfile", DOCKERFILE), ("noise.bin", &noise)],
    );
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.image.push = false;
    let attempt = setup.run(&job).await;
    assert_failed(&attempt, StepName::Clone, "--max-clone-bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadvertised_sha_is_fetched_without_every_refs_history() {
    let setup = Setup::start().await;
    let repo = small_repo(&setup);
    let old = repo.commit.clone();
    repo.commit_files(&[("hello.txt", b"newer\n")]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.image.push = false;
    job.repo.revision = old.clone();
    let attempt = setup.run(&job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    assert_eq!(attempt.result().revision.as_deref(), Some(old.as_str()));
    assert!(
        !attempt
            .log_text()
            .contains("fetching all branches and tags"),
        "{}",
        attempt.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_accepts_and_never_answers_fails_at_the_read_timeout() {
    // Accepts connections and never sends a byte (the listener lives as
    // long as the test; accepted sockets are held open).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let setup = Setup::start_with(&["--git-read-timeout-secs", "2"]).await;
    let repo = small_repo(&setup);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.repo.url = format!("ssh://git@127.0.0.1:{port}/srv/app.git");
    let key = setup.rig.known_hosts_line();
    let key = key.split_once(' ').map(|(_, key)| key).expect("a key");
    job.repo.known_hosts = Some(format!("[127.0.0.1]:{port} {key}"));
    // Far beyond the read timeout: a job stopped by this would be
    // `timed_out`, not failed by the clone.
    job.timeout_secs = 120;
    let attempt = setup.run(&job).await;
    assert_failed(
        &attempt,
        StepName::Clone,
        "timed out: the server sent nothing within the read timeout (--git-read-timeout-secs)",
    );
    held.abort();
}
