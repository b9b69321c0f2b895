//! A worker with trusted keys runs only jobs signed by one of them, for
//! its queue and the message's reply queue, within their validity and
//! once: written as the attacks of the security review. What is not
//! signed for the caller gets no reply at all (its `reply_to` is the
//! sender's choice); cancels must be signed too.

use buildbot_protocol::signature::{public_key_base64, sign_job, SigningKey};
use buildbot_protocol::StepState;
use buildbot_protocol::{Job, JobStatus, SignedEnvelope, StepName};
use buildbot_tests::e2e::{assert_rejected, steps, Fleet, Setup};
use buildbot_tests::worker::WorkerProcess;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trusted() -> String {
    public_key_base64(&key(1).verifying_key())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The reply queue [`Fleet::publish`] gives job `job`.
fn reply_queue_of(job: &Job) -> String {
    format!("test.reply.{}", job.job_id)
}

/// `job` with an envelope for `fleet`'s queue and its reply queue, issued
/// at `issued_at` for `valid_for` seconds, signed with `with`.
fn signed(fleet: &Fleet, job: &Job, with: &SigningKey, issued_at: u64, valid_for: u64) -> Vec<u8> {
    let envelope = SignedEnvelope::new(issued_at, valid_for, &fleet.queue, reply_queue_of(job));
    let job = job.clone().with_envelope(envelope);
    let value = serde_json::to_value(&job).expect("a job is JSON");
    serde_json::to_vec(&sign_job(&value, with).expect("sign")).expect("JSON")
}

fn app_job(fleet: &Fleet, dockerfile: &str) -> Job {
    let repo = fleet
        .rig
        .create_repo("signed", &[("Dockerfile", dockerfile.as_bytes())]);
    fleet.rig.job(&repo, &fleet.rig.registry)
}

/// Waits until `worker`'s log holds `needle` `times` times.
async fn logged(worker: &WorkerProcess, needle: &str, times: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while worker.log().matches(needle).count() < times {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not log {needle:?} {times} times: {}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `body` as `job` to `reply_to`, and checks that the worker
/// drops it saying `reason`, with nothing in the reply queue.
async fn dropped_silently(
    fleet: &Fleet,
    worker: &WorkerProcess,
    job: &Job,
    body: &[u8],
    reply_to: &str,
    reason: &str,
) {
    let dropped = "dropped a job message without replying";
    let before = worker.log().matches(dropped).count();
    let mut replies = fleet
        .orchestrator
        .reply_queue(reply_to)
        .await
        .expect("declare the reply queue");
    fleet
        .orchestrator
        .publish_job(&fleet.queue, body, &job.job_id.to_string(), Some(reply_to))
        .await
        .expect("publish");
    logged(worker, dropped, before + 1).await;
    assert!(worker.log().contains(reason), "{}", worker.log());
    let reply = replies
        .next_within(Duration::from_secs(2))
        .await
        .expect("the reply queue");
    assert!(reply.is_none(), "a reply went to {reply_to}: {reply:#?}");
    let _ = fleet.orchestrator.delete_queue(reply_to).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_jobs_signed_by_a_trusted_key_run_and_the_rest_get_no_reply() {
    let setup = Setup::start_with(&["--trusted-key", &trusted()]).await;
    let dockerfile = format!("FROM {}\n", setup.rig.base_image);

    let job = app_job(&setup, &dockerfile);
    let body = signed(&setup, &job, &key(1), now(), 600);
    let attempt = setup.run_message(&job.job_id.to_string(), &body).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);

    let worker = setup.worker();
    let unsigned = app_job(&setup, &dockerfile);
    let body = serde_json::to_vec(&unsigned).expect("JSON");
    let reply_to = reply_queue_of(&unsigned);
    dropped_silently(
        &setup,
        worker,
        &unsigned,
        &body,
        &reply_to,
        "signature: missing",
    )
    .await;

    let other = app_job(&setup, &dockerfile);
    let body = signed(&setup, &other, &key(2), now(), 600);
    let reply_to = reply_queue_of(&other);
    dropped_silently(&setup, worker, &other, &body, &reply_to, "does not verify").await;

    let tampered = app_job(&setup, &dockerfile);
    let mut value: serde_json::Value =
        serde_json::from_slice(&signed(&setup, &tampered, &key(1), now(), 600)).expect("JSON");
    value["image"]["tags"][0] = "evil".into();
    let body = serde_json::to_vec(&value).expect("JSON");
    let reply_to = reply_queue_of(&tampered);
    dropped_silently(
        &setup,
        worker,
        &tampered,
        &body,
        &reply_to,
        "does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_signed_job_cannot_be_replayed_on_any_worker() {
    let fleet = Fleet::new().await;
    let first = fleet.worker(&["--trusted-key", &trusted()]).await;
    let job = app_job(&fleet, &format!("FROM {}\n", fleet.rig.base_image));
    let body = signed(&fleet, &job, &key(1), now(), 600);
    let attempt = fleet
        .publish(&job.job_id.to_string(), &body)
        .await
        .until_result(buildbot_tests::e2e::RESULT_WITHIN)
        .await
        .expect("the job's result");
    assert_eq!(attempt.result().status, JobStatus::Succeeded);

    // The same bytes with the attacker's reply queue, then with the
    // caller's own: neither runs, neither gets a reply.
    let attacker = format!("test.reply.attacker-{}", job.job_id);
    dropped_silently(&fleet, &first, &job, &body, &attacker, "envelope.reply_to").await;
    let caller = reply_queue_of(&job);
    dropped_silently(&fleet, &first, &job, &body, &caller, "a replay").await;

    // A worker started later learns the nonce from the cancel stream.
    // (The killed one's consumer must be gone first, or the replay may
    // reach it: waited for.)
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fleet.orchestrator.consumer_count(&fleet.queue).await.ok() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed worker still consumes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let later = fleet.worker(&["--trusted-key", &trusted()]).await;
    dropped_silently(&fleet, &later, &job, &body, &caller, "a replay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_signed_job_is_rejected_to_its_caller() {
    let setup = Setup::start_with(&["--trusted-key", &trusted()]).await;
    let job = app_job(&setup, &format!("FROM {}\n", setup.rig.base_image));
    let body = signed(&setup, &job, &key(1), now() - 700, 600);
    let attempt = setup.run_message(&job.job_id.to_string(), &body).await;
    assert_rejected(&attempt, "envelope.expires_at: the job expired at");

    let long = app_job(&setup, &format!("FROM {}\n", setup.rig.base_image));
    let body = signed(&setup, &long, &key(1), now(), 86_400);
    let attempt = setup.run_message(&long.job_id.to_string(), &body).await;
    assert_rejected(&attempt, "this worker accepts at most 3600 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_worker_obeys_only_signed_cancels() {
    let setup = Setup::start_with(&["--trusted-key", &trusted()]).await;
    let slow = format!("FROM {}\nRUN sleep 30\n", setup.rig.base_image);
    let job = app_job(&setup, &slow);
    let body = signed(&setup, &job, &key(1), now(), 600);
    let mut replies = setup.publish(&job.job_id.to_string(), &body).await;
    replies
        .until(Duration::from_secs(60), |event| {
            event.body
                == buildbot_protocol::EventBody::Step(buildbot_protocol::StepEvent {
                    name: StepName::Build,
                    state: StepState::Started,
                })
        })
        .await
        .expect("the build starts");

    setup.orchestrator.cancel(job.job_id).await.expect("cancel");
    logged(setup.worker(), "ignoring a cancel no trusted key signed", 1).await;
    setup
        .orchestrator
        .cancel_signed(job.job_id, &key(2))
        .await
        .expect("cancel");
    logged(setup.worker(), "ignoring a cancel no trusted key signed", 2).await;
    setup
        .orchestrator
        .cancel_signed(job.job_id, &key(1))
        .await
        .expect("cancel");
    let attempt = replies
        .until_result(Duration::from_secs(60))
        .await
        .expect("the result");
    assert_eq!(attempt.result().status, JobStatus::Cancelled);
    assert!(steps(&attempt).contains(&(StepName::Build, StepState::Failed)));
}
