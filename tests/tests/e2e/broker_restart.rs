//! RabbitMQ restarting under a running job. It stops the broker every
//! other test talks to, so it is ignored by `cargo test` and run alone, as
//! the last step of `scripts/test`:
//! `cargo test -p buildbot-tests --features e2e --test e2e -- --ignored broker_restart`.

use buildbot_protocol::{Event, EventBody, JobStatus};
use buildbot_tests::e2e::Fleet;
use buildbot_tests::orchestrator::{log_contains, Orchestrator};
use std::time::Duration;

/// Runs `rabbitmqctl COMMAND`, stopped after 3 minutes: a broker that
/// never finishes booting (as one short of file handles did) fails the
/// test here rather than hanging it.
fn rabbitmqctl(command: &str) {
    let status = std::process::Command::new("timeout")
        .args(["180", "rabbitmqctl", "-q", "--timeout", "60", command])
        .status()
        .unwrap_or_else(|e| panic!("rabbitmqctl {command}: {e}"));
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}

/// Status of `GET http://{addr}/readyz`, or None when it does not answer.
fn readyz(addr: &str) -> Option<u16> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let response = agent.get(format!("http://{addr}/readyz")).call().ok()?;
    Some(response.status().as_u16())
}

async fn wait_for_readyz(addr: &str, status: u16, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while readyz(addr) != Some(status) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz is not {status} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connects once the broker accepts connections again.
async fn reconnect(url: &str) -> Orchestrator {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Orchestrator::connect(url).await {
            Ok(orchestrator) => return orchestrator,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts RabbitMQ under every other test: scripts/test runs it alone, last"]
async fn a_broker_restart_mid_job_costs_a_retry_not_the_worker_or_a_double_success() {
    let fleet = Fleet::new().await;
    let rig = &fleet.rig;
    let mut worker = fleet.worker(&["--http-addr", "127.0.0.1:0"]).await;
    let addr = worker
        .http_addr(Duration::from_secs(10))
        .await
        .expect("the HTTP endpoint");
    wait_for_readyz(&addr, 200, Duration::from_secs(10)).await;

    let dockerfile = format!(
        "FROM {}\nRUN echo build-$((1+1)) && sleep 4 && echo build-$((2+1))\n",
        rig.base_image
    );
    let repo = rig.create_repo("restart", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = rig.job(&repo, &rig.registry);
    job.build.no_cache = true;
    let mut replies = fleet.submit(&job).await;
    replies
        .until(Duration::from_secs(120), |e| log_contains(e, "build-2"))
        .await
        .expect("the build runs");
    // The orchestrator's connection dies with the broker; a new one reads on.
    drop(replies);

    rabbitmqctl("stop_app");
    wait_for_readyz(&addr, 503, Duration::from_secs(30)).await;
    rabbitmqctl("start_app");
    assert!(
        worker.is_running(),
        "the worker survives the broker's absence"
    );
    wait_for_readyz(&addr, 200, Duration::from_secs(90)).await;

    // The reply queue and its persistent events survived the restart.
    let orchestrator = reconnect(&rig.amqp_url).await;
    let reply_to = format!("test.reply.{}", job.job_id);
    let mut replies = orchestrator
        .reply_queue(&reply_to)
        .await
        .expect("reply queue");
    let attempt = replies
        .until(
            Duration::from_secs(180),
            |e| matches!(&e.body, EventBody::Result(r) if r.status == JobStatus::Succeeded),
        )
        .await
        .expect("the redelivered job succeeds");
    let mut events: Vec<Event> = attempt;
    while let Some(event) = replies
        .next_within(Duration::from_secs(5))
        .await
        .expect("read")
    {
        events.push(event);
    }
    let successes: Vec<u32> = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Result(r) if r.status == JobStatus::Succeeded))
        .map(|e| e.attempt)
        .collect();
    assert_eq!(successes.len(), 1, "exactly one success: {events:#?}");
    assert!(
        successes[0] >= 2,
        "the success is a redelivery: {successes:?}"
    );
    assert!(worker.is_running());
}
