//! Reliability through the real rig: crashes, poison messages, timeouts,
//! cancellation and graceful shutdown. Each test has a queue of its own and
//! starts the real `buildbot worker` binaries it needs.

use bollard::Docker;
use buildbot_protocol::{
    Builder, EventBody, Job, JobResult, JobStatus, RepoAuth, StepName, StepState,
};
use buildbot_tests::daemon;
use buildbot_tests::e2e::{assert_rejected, Fleet, RESULT_WITHIN};
use buildbot_tests::orchestrator::{log_contains, ReplyQueue};
use std::time::Duration;
use uuid::Uuid;

/// A job whose build prints `build-2` and the build container's id,
/// sleeps `seconds`, then prints `build-3`. The arithmetic keeps the
/// markers out of the echoed command line.
pub(crate) fn slow_job(fleet: &Fleet, seconds: u32) -> Job {
    let dockerfile = format!(
        "FROM {}\nRUN echo build-$((1+1)) in-$(hostname)- && sleep {seconds} && echo build-$((2+1))\n",
        fleet.rig.base_image
    );
    let repo = fleet
        .rig
        .create_repo("slow", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    job.build.no_cache = true;
    job
}

/// Messages in `<queue>.parked`: dead-lettered jobs the workers answered
/// and set aside without credentials.
pub(crate) async fn parked(fleet: &Fleet) -> u32 {
    let parked = format!("{}.parked", fleet.queue);
    fleet.orchestrator.message_count(&parked).await.unwrap_or(0)
}

/// Waits until `<queue>.parked` holds `count` messages.
pub(crate) async fn wait_for_parked(fleet: &Fleet, count: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while parked(fleet).await < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} jobs parked",
            parked(fleet).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the build is running (`build-2` logged) and returns the id
/// of the container running the RUN step.
async fn build_container(replies: &mut ReplyQueue, attempt: u32) -> String {
    let events = replies
        .until(RESULT_WITHIN, |e| {
            e.attempt == attempt && log_contains(e, "build-2")
        })
        .await
        .expect("the build starts");
    let Some(EventBody::Log(log)) = events.last().map(|e| &e.body) else {
        unreachable!("until returns the matching event last");
    };
    let id = log
        .text
        .split("in-")
        .nth(1)
        .and_then(|rest| rest.split('-').next())
        .expect("the RUN step prints its hostname");
    id.to_owned()
}

fn result_of(events: &[buildbot_protocol::Event]) -> (u32, &JobResult) {
    match events.last() {
        Some(event) => match &event.body {
            EventBody::Result(result) => (event.attempt, result),
            _ => panic!("no result in {events:#?}"),
        },
        None => panic!("no events"),
    }
}

/// Waits until the daemon no longer has container `id`.
async fn assert_container_removed(id: &str) {
    let docker = Docker::connect_with_local_defaults().expect("the Docker socket");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match docker.inspect_container(id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "container {id} still exists: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_is_redelivered_and_succeeds_exactly_once() {
    let fleet = Fleet::new().await;
    let job = slow_job(&fleet, 3);
    let mut first = fleet.worker(&[]).await;
    let mut replies = fleet.submit(&job).await;
    build_container(&mut replies, 1).await;
    first.kill().await.expect("SIGKILL the worker");

    let _second = fleet.worker(&[]).await;
    let events = replies
        .until(RESULT_WITHIN, |e| matches!(e.body, EventBody::Result(_)))
        .await
        .expect("a result");
    let (attempt, result) = result_of(&events);
    assert_eq!(attempt, 2, "the redelivery is attempt 2");
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    let second: Vec<u64> = events
        .iter()
        .filter(|e| e.attempt == 2)
        .map(|e| e.seq)
        .collect();
    assert_eq!(second, (1..=second.len() as u64).collect::<Vec<_>>());
    assert_eq!(result.last_seq, second.len() as u64);
    let late = replies
        .next_within(Duration::from_secs(3))
        .await
        .expect("read");
    assert!(late.is_none(), "nothing after the result: {late:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_workers_ends_with_one_failed_result_and_a_masked_parked_copy() {
    let fleet = Fleet::new().await;
    let job = slow_job(&fleet, 30);
    // Two deliveries: both of its workers die mid-build, then the broker
    // dead-letters it instead of delivering it a third time.
    let limit = ["--delivery-limit", "2"];
    let mut worker = fleet.worker(&limit).await;
    let mut replies = fleet.submit(&job).await;
    build_container(&mut replies, 1).await;
    worker.kill().await.expect("SIGKILL the first worker");
    let mut worker = fleet.worker(&limit).await;
    build_container(&mut replies, 2).await;
    worker.kill().await.expect("SIGKILL the second worker");

    // A worker takes it from the dead-letter queue and tells the caller.
    let _survivor = fleet.worker(&limit).await;
    let events = replies
        .until(RESULT_WITHIN, |e| matches!(e.body, EventBody::Result(_)))
        .await
        .expect("a final result");
    let (attempt, result) = result_of(&events);
    assert_eq!(attempt, 3, "the result follows the second delivery");
    assert_eq!(result.status, JobStatus::Failed, "{result:#?}");
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.step, StepName::Queue);
    assert!(
        error.message.contains("dead-lettered after 2 deliveries"),
        "{error:#?}"
    );
    let late = replies
        .next_within(Duration::from_secs(3))
        .await
        .expect("read");
    assert!(late.is_none(), "exactly one final result: {late:#?}");

    // Parked for inspection, with no credential left in any queue.
    wait_for_parked(&fleet, 1).await;
    let dead = format!("{}.dead", fleet.queue);
    assert_eq!(
        fleet.orchestrator.message_count(&dead).await.unwrap_or(0),
        0
    );
    let parked_queue = format!("{}.parked", fleet.queue);
    let body = fleet
        .orchestrator
        .take_message(&parked_queue)
        .await
        .expect("read the parked queue")
        .expect("the parked copy");
    let text = String::from_utf8(body).expect("JSON text");
    assert!(text.contains(&job.job_id.to_string()), "{text}");
    assert!(text.contains(&job.repo.url), "{text}");
    let RepoAuth::SshKey { private_key, .. } = &job.repo.auth else {
        panic!("the rig's jobs use an SSH key");
    };
    assert!(
        !text.contains(private_key.expose()),
        "the key is parked: {text}"
    );
    assert!(text.contains("********"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_rejected_dead_lettered_and_the_worker_goes_on() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&["--max-job-bytes", "4096"]).await;
    let repo = fleet
        .rig
        .create_repo("app", &[("Dockerfile", b"FROM buildbot-base:busybox\n")]);
    let good = fleet.rig.job(&repo, &fleet.rig.registry);

    let mut wrong_version = serde_json::to_value(&good).expect("a job is JSON");
    wrong_version["version"] = 2.into();
    let mut oversized = serde_json::to_value(&good).expect("a job is JSON");
    oversized["build"]["build_args"]["PADDING"] = "x".repeat(5000).into();
    let poison: [(&[u8], &str); 3] = [
        (b"{\"version\": 1, \"job_id\": ", "job: not valid JSON"),
        (
            &serde_json::to_vec(&wrong_version).expect("JSON"),
            "version",
        ),
        (
            &serde_json::to_vec(&oversized).expect("JSON"),
            "exceeds the 4096-byte limit",
        ),
    ];
    for (body, expected) in poison {
        let job_id = Uuid::new_v4().to_string();
        let mut replies = fleet.publish(&job_id, body).await;
        let attempt = replies
            .until_result(RESULT_WITHIN)
            .await
            .expect("a rejected result");
        assert_rejected(&attempt, expected);
    }
    // Without a reply queue a bad job cannot be answered, only set aside.
    fleet
        .orchestrator
        .publish_job(&fleet.queue, b"not json", "no-reply", None)
        .await
        .expect("publish");
    // Each rejected message is parked, without a second result.
    wait_for_parked(&fleet, 4).await;

    let attempt = fleet
        .submit(&good)
        .await
        .until_result(RESULT_WITHIN)
        .await
        .expect("the good job's result");
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_timeout_is_stopped_and_its_container_removed() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&[]).await;
    let mut job = slow_job(&fleet, 120);
    job.timeout_secs = 5;
    let mut replies = fleet.submit(&job).await;
    let container = build_container(&mut replies, 1).await;
    let attempt = replies
        .until_result(Duration::from_secs(30))
        .await
        .expect("a timed_out result well before the build's 120 s");
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::TimedOut, "{result:#?}");
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.step, StepName::Build);
    assert!(error.message.contains("timeout of 5 s"), "{error:#?}");
    // The interrupted step ends, and counts.
    assert!(
        result.durations_ms.contains_key(&StepName::Build),
        "{result:#?}"
    );
    assert!(
        attempt.events.iter().any(|e| matches!(&e.body,
            EventBody::Step(s) if s.name == StepName::Build && s.state == StepState::Failed)),
        "the build step gets its end event"
    );
    assert_container_removed(&container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_message_stops_the_build_within_seconds() {
    let fleet = Fleet::new().await;
    let _worker = fleet.worker(&[]).await;
    let job = slow_job(&fleet, 120);
    let mut replies = fleet.submit(&job).await;
    let container = build_container(&mut replies, 1).await;
    let result = fleet.cancel_running(job.job_id, &mut replies).await;
    assert_eq!(result.error.as_ref().map(|e| e.step), Some(StepName::Build));
    assert_container_removed(&container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_job_finish() {
    let fleet = Fleet::new().await;
    let mut worker = fleet.worker(&["--drain-timeout-secs", "120"]).await;
    let job = slow_job(&fleet, 3);
    let mut replies = fleet.submit(&job).await;
    build_container(&mut replies, 1).await;
    let exit = worker
        .terminate(Duration::from_secs(120))
        .await
        .expect("SIGTERM");
    let attempt = replies
        .until_result(Duration::from_secs(10))
        .await
        .expect("the drained job's result");
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    let exit = exit.expect("the worker exits after the job");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        fleet.orchestrator.message_count(&fleet.queue).await.ok(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_a_job_that_outlasts_the_drain_timeout() {
    let fleet = Fleet::new().await;
    let mut worker = fleet.worker(&["--drain-timeout-secs", "1"]).await;
    let job = slow_job(&fleet, 120);
    let mut replies = fleet.submit(&job).await;
    let container = build_container(&mut replies, 1).await;
    let exit = worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("SIGTERM")
        .expect("the worker exits soon after the drain timeout");
    assert!(exit.success(), "{exit:?}");
    let mut notice = false;
    while let Some(event) = replies
        .next_within(Duration::from_secs(2))
        .await
        .expect("read")
    {
        assert!(
            !matches!(event.body, EventBody::Result(_)),
            "an unfinished job has no result: {event:#?}"
        );
        notice |= log_contains(&event, "the job goes back to the queue");
    }
    assert!(notice, "the caller is told before the requeue");
    assert_eq!(
        fleet.orchestrator.message_count(&fleet.queue).await.ok(),
        Some(1),
        "the job is back in the queue"
    );
    assert_container_removed(&container).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_removes_the_builder_its_crash_left() {
    let fleet = Fleet::new().await;
    let worker_id = format!("leftover-{}", Uuid::new_v4().simple());
    let args = ["--worker-id", worker_id.as_str()];
    let repo = fleet.rig.create_repo(
        "leftover",
        &[("Dockerfile", b"FROM buildbot-base:busybox\n")],
    );
    let mut job = fleet.rig.job(&repo, &fleet.rig.registry);
    job.build.builder = Some(Builder {
        image: Some(fleet.rig.base_image.clone()),
        dockerfile: None,
        command: ["sh", "-c", "echo builder-$((1+1)) && sleep 120"]
            .map(String::from)
            .to_vec(),
        workdir: "/src".into(),
        env: Default::default(),
        secret_env: Default::default(),
        artifacts: "out".into(),
        artifacts_dest: "artifact".into(),
    });
    let mut worker = fleet.worker(&args).await;
    let mut replies = fleet.submit(&job).await;
    replies
        .until(RESULT_WITHIN, |e| log_contains(e, "builder-2"))
        .await
        .expect("the builder runs");
    worker.kill().await.expect("SIGKILL the worker");
    let docker = daemon::connect().await;
    assert!(
        !daemon::job_containers(&docker, job.job_id).await.is_empty(),
        "the killed worker left its builder container"
    );

    let _restarted = fleet.worker(&args).await;
    daemon::assert_nothing_left(&docker, job.job_id, Duration::from_secs(20)).await;
}
