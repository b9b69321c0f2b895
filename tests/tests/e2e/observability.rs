//! What operators and dashboards see: the worker's `/metrics`, `/healthz`
//! and `/readyz`, and the copy of every event on the events exchange
//! (and nothing there with `--events-exchange off`).

use buildbot_protocol::{EventBody, JobStatus, StepName};
use buildbot_tests::e2e::{assert_rejected, Fleet, Setup, RESULT_WITHIN};
use buildbot_tests::orchestrator::ReplyQueue;
use std::time::Duration;
use uuid::Uuid;

const HTTP: [&str; 2] = ["--http-addr", "127.0.0.1:0"];

/// Status and body of `GET http://{addr}{path}`.
fn get(addr: &str, path: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
    (status, body)
}

/// The value of the metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_the_events_exchange_after_a_job() {
    let setup = Setup::start_with(&HTTP).await;
    let addr = setup
        .worker()
        .http_addr(Duration::from_secs(10))
        .await
        .expect("the HTTP endpoint");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");

    let repo = setup.rig.create_repo(
        "observed",
        &[(
            "Dockerfile",
            b"FROM buildbot-base:busybox\nRUN echo observed\n",
        )],
    );
    let job = setup.rig.job(&repo, &setup.rig.registry);
    let mut dashboard = setup
        .orchestrator
        .watch_events(&format!("{}.{}.#", job.service_id, job.job_id))
        .await
        .expect("bind to the events exchange");
    let attempt = setup.run(&job).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);

    let watched = dashboard
        .until_result(RESULT_WITHIN)
        .await
        .expect("the dashboard sees the result");
    let seqs = |events: &[buildbot_protocol::Event]| -> Vec<(u64, &'static str)> {
        events.iter().map(|e| (e.seq, e.body.kind())).collect()
    };
    assert_eq!(seqs(&watched.events), seqs(&attempt.events));

    // The job leaves the in-flight gauge when its delivery is acked, a
    // moment after the caller read the result.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, text) = loop {
        let (status, text) = get(&addr, "/metrics");
        let idle = metric(&text, "buildbot_jobs_in_flight") == Some(0.0);
        if idle || std::time::Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "buildbot_jobs_total{status=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "buildbot_jobs_in_flight"),
        Some(0.0),
        "{text}"
    );
    for step in [StepName::Clone, StepName::Build, StepName::Push] {
        let name = format!(
            "buildbot_step_duration_seconds_count{{step=\"{}\"}}",
            step.as_str()
        );
        assert_eq!(metric(&text, &name), Some(1.0), "{name} in {text}");
    }
    let logged: usize = attempt
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Log(log) => Some(log.text.len()),
            _ => None,
        })
        .sum();
    assert_eq!(
        metric(&text, "buildbot_log_published_bytes_total"),
        Some(logged as f64),
        "{text}"
    );
}

/// A private queue bound to the events exchange for everything about
/// `job_id` (`*.<job_id>.#`).
async fn watch_job(setup: &Setup, job_id: &str) -> ReplyQueue {
    setup
        .orchestrator
        .watch_events(&format!("*.{job_id}.#"))
        .await
        .expect("bind to the events exchange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_events_exchange_off_events_reach_only_their_reply_queue() {
    let setup = Setup::start_with(&["--events-exchange", "off"]).await;
    let repo = setup.rig.create_repo(
        "unwatched",
        &[(
            "Dockerfile",
            b"FROM buildbot-base:busybox\nRUN echo private\n",
        )],
    );
    let job = setup.rig.job(&repo, &setup.rig.registry);
    let rejected_id = Uuid::new_v4().to_string();
    let dead_id = Uuid::new_v4().to_string();
    // Bound before anything is published: a copy would not be missed.
    let mut watches = Vec::new();
    for job_id in [job.job_id.to_string(), rejected_id.clone(), dead_id.clone()] {
        watches.push((watch_job(&setup, &job_id).await, job_id));
    }

    // A job's events, a rejection, and a dead-letter final result (a
    // message put into `<queue>.dead` directly, as the broker would).
    let attempt = setup.run(&job).await;
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    assert!(attempt.log_text().contains("private"), "{attempt:#?}");
    let rejection = setup
        .run_message(&rejected_id, br#"{"version": 1, "service_id": "svc"}"#)
        .await;
    assert_rejected(&rejection, "repo");
    let reply_to = format!("test.reply.{dead_id}");
    let mut dead_replies = setup
        .orchestrator
        .reply_queue(&reply_to)
        .await
        .expect("declare the reply queue");
    setup
        .orchestrator
        .publish_job(
            &format!("{}.dead", setup.queue),
            b"{}",
            &dead_id,
            Some(&reply_to),
        )
        .await
        .expect("dead-letter a message");
    let dead = dead_replies
        .until_result(RESULT_WITHIN)
        .await
        .expect("the dead-letter result");
    assert_eq!(dead.result().status, JobStatus::Failed);
    assert_eq!(
        dead.result().error.as_ref().map(|e| e.step),
        Some(StepName::Queue)
    );

    // Every result is in; a copy would have been routed with it.
    for (mut watch, job_id) in watches {
        let copy = watch
            .next_within(Duration::from_secs(1))
            .await
            .expect("read the watch queue");
        assert!(
            copy.is_none(),
            "job {job_id} on the events exchange: {copy:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_docker_engine_jobs_fail_clearly_and_the_worker_is_not_ready() {
    let fleet = Fleet::new().await;
    // A daemon that died and left its socket behind: the path exists,
    // nothing answers on it.
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket"));
    let docker_host = format!("unix://{}", socket.display());
    let worker = fleet
        .worker_with_env(&HTTP, &[("DOCKER_HOST", docker_host.as_str())])
        .await;
    let addr = worker
        .http_addr(Duration::from_secs(10))
        .await
        .expect("the HTTP endpoint");
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Docker Engine"), "{body}");
    assert_eq!(get(&addr, "/healthz").0, 200);

    let repo = fleet
        .rig
        .create_repo("no-docker", &[("Dockerfile", b"FROM scratch\n")]);
    let job = fleet.rig.job(&repo, &fleet.rig.registry);
    let mut replies = fleet.submit(&job).await;
    let attempt = replies.until_result(RESULT_WITHIN).await.expect("a result");
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Failed, "{result:#?}");
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.step, StepName::Build);
    assert!(error.message.contains("Docker Engine"), "{error:#?}");
    assert_eq!(
        fleet.orchestrator.consumer_count(&fleet.queue).await.ok(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_short_of_disk_takes_no_job_and_says_why() {
    let fleet = Fleet::new().await;
    // No disk has a million GiB free: this worker never consumes.
    let short = buildbot_tests::worker::WorkerProcess::start(
        &fleet.rig.amqp_url,
        &fleet.queue,
        &["--min-free-disk", "1000000g", "--http-addr", "127.0.0.1:0"],
    )
    .expect("start a worker");
    let addr = short
        .http_addr(Duration::from_secs(30))
        .await
        .expect("the HTTP endpoint");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = get(&addr, "/readyz");
        if body.contains("not taking jobs") || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("MiB free, below --min-free-disk (1024000000 MiB)"),
        "{body}"
    );

    let repo = fleet.rig.create_repo(
        "disk",
        &[(
            "Dockerfile",
            format!("FROM {}\n", fleet.rig.base_image).as_bytes(),
        )],
    );
    let job = fleet.rig.job(&repo, &fleet.rig.registry);
    let mut replies = fleet.submit(&job).await;
    let nothing = replies
        .next_within(Duration::from_secs(3))
        .await
        .expect("the reply queue");
    assert!(
        nothing.is_none(),
        "the short worker took the job: {nothing:#?}"
    );
    assert_eq!(
        fleet.orchestrator.message_count(&fleet.queue).await.ok(),
        Some(1)
    );

    // A worker with room takes it; nothing was lost meanwhile.
    let _roomy = fleet.worker(&[]).await;
    let attempt = replies.until_result(RESULT_WITHIN).await.expect("a result");
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    assert!(!short.log().contains("consuming jobs"), "{}", short.log());
}
