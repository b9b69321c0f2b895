//! The end-to-end setup the tests share: a queue of its own with an
//! orchestrator connection and workers on demand ([`Fleet`]) or one worker
//! ([`Setup`]) (jobs come from [`Rig::job`]), and assertions on what an
//! attempt reported.

use crate::orchestrator::{Attempt, Orchestrator, ReplyQueue};
use crate::worker::WorkerProcess;
use crate::Rig;
use buildbot_protocol::{
    EventBody, Job, JobResult, JobStatus, RegistryAuth, Secret, StepName, StepState,
};
use std::time::Duration;
use uuid::Uuid;

/// A build of the tiny test apps takes a few seconds; generous for CI.
pub const RESULT_WITHIN: Duration = Duration::from_secs(180);

/// A queue of its own and an orchestrator connection; workers on demand.
pub struct Fleet {
    /// The rig's services.
    pub rig: Rig,
    /// The queue the workers consume.
    pub queue: String,
    /// The orchestrator's connection.
    pub orchestrator: Orchestrator,
    /// The `--amqp-url` workers get: the rig's RabbitMQ unless
    /// [`Fleet::on_brokers`] says otherwise.
    pub worker_amqp_url: String,
    /// The URL the orchestrator connected to.
    orchestrator_url: String,
}

/// A repository whose tags tests create on the engine only (builder
/// images, say), listed as a worker's `--local-image`.
pub const LOCAL_IMAGES: &str = "buildbot-e2e-local";

impl Fleet {
    /// A fresh queue name and a connection to the rig's RabbitMQ.
    pub async fn new() -> Self {
        let rig = Rig::load();
        let url = rig.amqp_url.clone();
        Self::on_brokers(rig, &url, &url).await
    }

    /// A fresh queue name, workers given `worker_amqp_url` (one URL or a
    /// comma-separated list) and an orchestrator connected to
    /// `orchestrator_url`: a broker other than the rig's.
    pub async fn on_brokers(rig: Rig, worker_amqp_url: &str, orchestrator_url: &str) -> Self {
        let orchestrator = Orchestrator::connect(orchestrator_url)
            .await
            .expect("connect to RabbitMQ");
        Self {
            queue: format!("test.jobs.{}", Uuid::new_v4().simple()),
            rig,
            orchestrator,
            worker_amqp_url: worker_amqp_url.to_owned(),
            orchestrator_url: orchestrator_url.to_owned(),
        }
    }

    /// Starts a worker with extra `args` on the fleet's queue and waits
    /// until it consumes.
    pub async fn worker(&self, args: &[&str]) -> WorkerProcess {
        self.worker_with_env(args, &[]).await
    }

    /// [`Fleet::worker`] with extra environment variables. The worker may
    /// use the rig's base image and the tests' [`LOCAL_IMAGES`] as the
    /// engine has them (`--local-image`): nothing here can be pulled.
    pub async fn worker_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let local = format!("{},{LOCAL_IMAGES}", self.rig.base_image);
        let env: Vec<(&str, &str)> = std::iter::once(("BUILDBOT_LOCAL_IMAGES", local.as_str()))
            .chain(env.iter().copied())
            .collect();
        let worker = WorkerProcess::start_with_env(&self.worker_amqp_url, &self.queue, args, &env)
            .expect("start a worker");
        self.orchestrator
            .wait_for_consumer(&self.queue, Duration::from_secs(30))
            .await
            .expect("the worker consumes its queue");
        worker
    }

    /// Publishes `body` (any bytes) as job `job_id` and returns its reply
    /// queue, declared first.
    pub async fn publish(&self, job_id: &str, body: &[u8]) -> ReplyQueue {
        let reply_to = format!("test.reply.{job_id}");
        let replies = self
            .orchestrator
            .reply_queue(&reply_to)
            .await
            .expect("declare the reply queue");
        self.orchestrator
            .publish_job(&self.queue, body, job_id, Some(&reply_to))
            .await
            .expect("publish the job");
        replies
    }

    /// Publishes `job` and returns its reply queue.
    pub async fn submit(&self, job: &Job) -> ReplyQueue {
        let body = serde_json::to_vec(job).expect("encode the job");
        self.publish(&job.job_id.to_string(), &body).await
    }

    /// Cancels the running job `job_id` and reads `replies` to its
    /// result, which must say `cancelled` within seconds; returns it.
    pub async fn cancel_running(&self, job_id: Uuid, replies: &mut ReplyQueue) -> JobResult {
        self.orchestrator
            .cancel(job_id)
            .await
            .expect("publish the cancel");
        let attempt = replies
            .until_result(Duration::from_secs(20))
            .await
            .expect("a cancelled result within seconds");
        let result = attempt.result().clone();
        assert_eq!(result.status, JobStatus::Cancelled, "{result:#?}");
        result
    }
}

/// Every test's job queue and dead-letter queue are quorum queues, each a
/// Raft group on the broker: left behind by hundreds of test runs they
/// make RabbitMQ slow to the point of not answering. So they go when the
/// test is done. Workers declared after the fleet are dropped (killed)
/// before it.
impl Drop for Fleet {
    fn drop(&mut self) {
        let url = self.orchestrator_url.clone();
        let queues = [
            self.queue.clone(),
            format!("{}.dead", self.queue),
            format!("{}.parked", self.queue),
        ];
        // Drop cannot await, and the test's runtime may be shutting down:
        // a thread with a runtime of its own does the deleting.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Bounded: a broker stuck mid-boot (as one short of file
            // handles was) must fail the test, not hang it.
            let limit = Duration::from_secs(60);
            let delete = async {
                let orchestrator = Orchestrator::connect(&url).await?;
                for queue in &queues {
                    orchestrator.delete_queue(queue).await?;
                }
                anyhow::Ok(())
            };
            runtime.block_on(async {
                tokio::time::timeout(limit, delete)
                    .await
                    .map_err(|_| anyhow::anyhow!("RabbitMQ did not delete them within {limit:?}"))?
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("could not delete the test's queues: {e:#}");
        }
    }
}

/// A fleet of one worker.
pub struct Setup {
    // Before `fleet`: the worker is killed before its queue is deleted.
    worker: WorkerProcess,
    fleet: Fleet,
}

/// The fleet's rig, queue and orchestrator, as `setup.rig` and so on.
impl std::ops::Deref for Setup {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl Setup {
    /// A worker with default settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A worker started with extra command-line `args`.
    pub async fn start_with(args: &[&str]) -> Self {
        let fleet = Fleet::new().await;
        let worker = fleet.worker(args).await;
        Self { worker, fleet }
    }

    /// Publishes `job` and returns every event of its first attempt.
    pub async fn run(&self, job: &Job) -> Attempt {
        let body = serde_json::to_vec(job).expect("encode the job");
        self.run_message(&job.job_id.to_string(), &body).await
    }

    /// Publishes `body` (any bytes) as job `job_id` and returns every event
    /// of its first attempt.
    pub async fn run_message(&self, job_id: &str, body: &[u8]) -> Attempt {
        self.publish(job_id, body)
            .await
            .until_result(RESULT_WITHIN)
            .await
            .expect("the job's result")
    }

    /// The worker process.
    pub fn worker(&self) -> &WorkerProcess {
        &self.worker
    }

    /// The auth registry's test login as a job's `registry_auth`.
    pub fn auth_registry_basic(&self) -> RegistryAuth {
        RegistryAuth::Basic {
            server: None,
            username: self.rig.auth_registry_user.clone(),
            password: Secret::new(self.rig.auth_registry_password.clone()),
        }
    }
}

/// Steps in the order their events arrived, as (step, state).
pub fn steps(attempt: &Attempt) -> Vec<(StepName, StepState)> {
    attempt
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Step(s) => Some((s.name, s.state)),
            _ => None,
        })
        .collect()
}

/// Every event belongs to attempt 1 of `job`, `seq` runs 1..=n with no
/// gap, and exactly one result comes last with `last_seq` = n.
pub fn assert_well_formed(attempt: &Attempt, job: &Job) {
    let n = attempt.events.len() as u64;
    for (i, event) in attempt.events.iter().enumerate() {
        assert_eq!(
            event.seq,
            i as u64 + 1,
            "seq has a gap: {:#?}",
            attempt.events
        );
        assert_eq!(event.attempt, 1);
        assert_eq!(event.job_id, job.job_id.to_string());
    }
    let results = attempt
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Result(_)))
        .count();
    assert_eq!(results, 1, "exactly one result");
    assert_eq!(attempt.result().last_seq, n);
}

/// The attempt failed in `step` with an error message containing
/// `message_part`, and the step's `failed` event was sent.
pub fn assert_failed(attempt: &Attempt, step: StepName, message_part: &str) {
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Failed, "{result:#?}");
    let error = result.error.as_ref().expect("a failure has an error");
    assert_eq!(error.step, step, "{error:#?}");
    assert!(
        error.message.contains(message_part),
        "error message {:?} should contain {message_part:?}",
        error.message
    );
    assert!(steps(attempt).contains(&(step, StepState::Failed)));
}

/// The attempt is a `rejected` result alone, naming `reason` among its
/// problems: nothing ran.
pub fn assert_rejected(attempt: &Attempt, reason: &str) {
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Rejected, "{result:#?}");
    let error = result.error.as_ref().expect("the problem");
    assert_eq!(error.step, StepName::Validate);
    assert!(
        error.problems.iter().any(|p| p.contains(reason)),
        "{reason:?} not in {:?}",
        error.problems
    );
    assert_eq!(
        attempt.events.len(),
        1,
        "nothing ran: {:#?}",
        attempt.events
    );
}
