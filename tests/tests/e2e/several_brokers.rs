//! Workers given several broker URLs: one whose first node is down
//! connects to the next, and a three-node cluster losing the node that
//! leads the job queue mid-load loses and doubles no job. The cluster test
//! starts three Erlang nodes of its own, so it is ignored by `cargo test`
//! and run alone by `scripts/test`:
//! `cargo test -p buildbot-tests --features e2e --test e2e -- --ignored several_brokers`.

use buildbot_protocol::amqp::brokers::BrokerUrl;
use buildbot_protocol::{Event, EventBody, Job, JobStatus};
use buildbot_tests::cluster::Cluster;
use buildbot_tests::e2e::{Fleet, RESULT_WITHIN};
use buildbot_tests::orchestrator::ReplyQueue;
use buildbot_tests::worker::WorkerProcess;
use buildbot_tests::Rig;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const HTTP: [&str; 2] = ["--http-addr", "127.0.0.1:0"];

/// A port on 127.0.0.1 nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// The body of the worker's `GET /metrics`.
fn metrics(worker_addr: &str) -> String {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    agent
        .get(format!("http://{worker_addr}/metrics"))
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
}

/// The worker's `buildbot_amqp_connected` line for `node`, if any.
fn connected(text: &str, node: &str) -> Option<u8> {
    let prefix = format!("buildbot_amqp_connected{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// A job that builds `FROM` the rig's base image alone: the fastest there is.
fn tiny_job(fleet: &Fleet) -> Job {
    let dockerfile = format!("FROM {}\n", fleet.rig.base_image);
    let repo = fleet
        .rig
        .create_repo("tiny", &[("Dockerfile", dockerfile.as_bytes())]);
    fleet.rig.job(&repo, &fleet.rig.registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_first_broker_is_down_uses_the_next() {
    let rig = Rig::load();
    let down = |port: u16| format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let (first, third) = (closed_port(), closed_port());
    let urls = format!("{},{},{}", down(first), rig.amqp_url, down(third));
    let rig_node = BrokerUrl::parse(&rig.amqp_url)
        .expect("the rig's URL")
        .node()
        .to_owned();
    let fleet = Fleet::on_brokers(rig.clone(), &urls, &rig.amqp_url).await;
    let worker = fleet.worker(&HTTP).await;
    let addr = worker
        .http_addr(Duration::from_secs(10))
        .await
        .expect("the HTTP endpoint");

    let text = metrics(&addr);
    assert_eq!(connected(&text, &rig_node), Some(1), "{text}");
    let down_node = format!("127.0.0.1:{first}");
    assert_eq!(connected(&text, &down_node), Some(0), "{text}");
    assert!(!text.contains("guest:"), "credentials in /metrics: {text}");

    let job = tiny_job(&fleet);
    let attempt = fleet
        .submit(&job)
        .await
        .until_result(RESULT_WITHIN)
        .await
        .expect("the job's result");
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    let log = worker.log();
    assert!(log.contains(&down_node), "the refused node is named: {log}");
    assert!(!log.contains("guest:guest"), "a password in the log: {log}");
}

/// Jobs the cluster test runs, and how many finish before the kill.
const JOBS: usize = 30;
const KILL_AFTER: usize = 10;

/// One event as the test saw it arrive.
struct Seen {
    at: Instant,
    is_result: bool,
}

/// Reads `replies` until the result, then 5 s more (a second result
/// would come then), telling `seen` of each event; each event with the
/// time it arrived.
async fn read_job(
    mut replies: ReplyQueue,
    seen: mpsc::UnboundedSender<Seen>,
) -> Vec<(Instant, Event)> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut quiet_after_result = None;
    while Instant::now() < deadline {
        let limit = quiet_after_result.unwrap_or(Duration::from_secs(1));
        match replies.next_within(limit).await {
            Ok(Some(event)) => {
                let is_result = matches!(event.body, EventBody::Result(_));
                let at = Instant::now();
                let _ = seen.send(Seen { at, is_result });
                if is_result {
                    quiet_after_result = Some(Duration::from_secs(5));
                }
                events.push((at, event));
            }
            Ok(None) if quiet_after_result.is_some() => break,
            Ok(None) => {}
            Err(e) => panic!("reading a reply queue: {e:#}"),
        }
    }
    events
}

/// The longest gap between consecutive `times`, and the one spanning
/// `instant`, with the time from `instant` to the first one after it.
struct Gaps {
    longest: Duration,
    across: Duration,
    to_next: Duration,
}

fn gaps(times: &[Instant], instant: Instant) -> Gaps {
    let mut result = Gaps {
        longest: Duration::ZERO,
        across: Duration::ZERO,
        to_next: Duration::ZERO,
    };
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        result.longest = result.longest.max(gap);
        if pair[0] <= instant && instant < pair[1] {
            result.across = gap;
            result.to_next = pair[1] - instant;
        }
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts three RabbitMQ nodes of its own: scripts/test runs it alone"]
async fn several_brokers_a_cluster_losing_its_queue_leader_mid_load_loses_and_doubles_no_job() {
    let began = Instant::now();
    // Declared first, dropped (nodes killed, dirs removed) last.
    let mut cluster = Cluster::start().expect("three clustered RabbitMQ nodes");
    eprintln!("cluster of three nodes up in {:?}", began.elapsed());
    // Workers try the nodes in order, so both use the first, and the job
    // queue is declared there. The orchestrator uses the third: its
    // reply queues are classic queues, living on the node they are
    // declared on.
    let fleet = Fleet::on_brokers(Rig::load(), &cluster.urls(), &cluster.nodes[2].url()).await;
    let args = ["--concurrency", "2", HTTP[0], HTTP[1]];
    let workers: Vec<WorkerProcess> = vec![fleet.worker(&args).await, fleet.worker(&args).await];

    let (leader, members) = cluster
        .queue_leader(2, &fleet.queue)
        .expect("the queue's leader");
    for node in &cluster.nodes {
        assert!(
            members.contains(&node.name),
            "the job queue replicates to every node: {members:?}"
        );
    }
    assert_ne!(
        leader, 2,
        "the orchestrator's node must not be the one killed"
    );

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    let loaded = Instant::now();
    for _ in 0..JOBS {
        let job = tiny_job(&fleet);
        let replies = fleet.submit(&job).await;
        readers.spawn(read_job(replies, seen_tx.clone()));
    }
    drop(seen_tx);

    let mut times = Vec::new();
    let (mut results, mut killed_at) = (0, None);
    while let Some(event) = seen.recv().await {
        times.push(event.at);
        results += usize::from(event.is_result);
        if results == KILL_AFTER && killed_at.is_none() {
            cluster.kill(leader).expect("kill the queue's leader");
            killed_at = Some(Instant::now());
        }
    }
    let killed_at = killed_at.expect("the leader was killed mid-load");

    let mut redelivered = 0;
    while let Some(events) = readers.join_next().await {
        let events = events.expect("a reader");
        let outcomes: Vec<(Instant, u32, JobStatus)> = events
            .iter()
            .filter_map(|(at, e)| match &e.body {
                EventBody::Result(r) => Some((*at, e.attempt, r.status)),
                _ => None,
            })
            .collect();
        assert!(!outcomes.is_empty(), "a result: {events:#?}");
        for (_, _, status) in &outcomes {
            assert_eq!(*status, JobStatus::Succeeded, "{events:#?}");
        }
        // Two ways a job might be reported twice, both closed by the
        // worker: a result confirmed just before the kill whose finished
        // marker and ack went down with the leader (the marker goes out on
        // the next connection, and a redelivery waits a moment for it),
        // and a result whose confirm died with the node (sent again on the
        // next connection as the same events, which the client reads once).
        assert_eq!(
            outcomes.len(),
            1,
            "a job reported twice (killed at {killed_at:?}): {outcomes:?}"
        );
        redelivered += usize::from(outcomes.iter().any(|(_, attempt, _)| *attempt > 1));
    }
    let stall = gaps(&times, killed_at);
    eprintln!(
        "several brokers: {JOBS} jobs on 2 workers in {:.1?}; killed the job queue's leader \
         ({}) after {KILL_AFTER} results; stall: {:.2?} from the kill to the next job event, \
         {:.2?} between the job events around it (longest gap of the run {:.2?}); \
         {redelivered} jobs run again after the kill, none reported twice",
        times
            .last()
            .map_or(Duration::ZERO, |t| t.duration_since(loaded)),
        cluster.nodes[leader].name,
        stall.to_next,
        stall.across,
        stall.longest,
    );

    for worker in &workers {
        let addr = worker
            .http_addr(Duration::from_secs(1))
            .await
            .expect("the HTTP endpoint");
        let killed = cluster.nodes[leader].address();
        // A worker idle on the killed node learns of it at its next read:
        // give it a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = metrics(&addr);
        while connected(&text, &killed) != Some(0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            text = metrics(&addr);
        }
        assert_eq!(connected(&text, &killed), Some(0), "{text}");
        let now: Vec<_> = cluster
            .nodes
            .iter()
            .filter(|node| connected(&text, &node.address()) == Some(1))
            .collect();
        assert_eq!(now.len(), 1, "connected to one surviving node: {text}");
    }
    drop(workers);
    drop(fleet);
    eprintln!("several brokers test took {:.1?}", began.elapsed());
}
