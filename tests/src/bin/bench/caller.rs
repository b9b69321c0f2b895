//! The orchestrator's side of the benchmark: builds jobs for the rig's
//! repositories, publishes them through the protocol's Rust client and
//! stamps every event with the moment it arrived, which is what the
//! latency and end-to-end figures are made of.

use anyhow::{bail, Context};
use buildbot_protocol::client::{Client, Events};
use buildbot_protocol::{
    Event, EventBody, Job, JobResult, JobStatus, LogStream, RepoAuth, StepName,
};
use buildbot_tests::{Rig, SshKey, TestRepo};
use chrono::{DateTime, Utc};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// No benchmark job takes this long; a job that does is a failure.
const RESULT_WITHIN: Duration = Duration::from_secs(300);

/// A healthy broker answers a connect, declare or publish within
/// milliseconds; one that does not is reported instead of waited for
/// (lapin itself waits forever on a broker that accepts the TCP connection
/// but never answers).
const BROKER_WITHIN: Duration = Duration::from_secs(30);

/// `operation`, or an error naming `what` when the broker does not answer.
async fn broker<T, E>(
    what: &str,
    operation: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(BROKER_WITHIN, operation).await {
        Ok(result) => result.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: RabbitMQ did not answer within {BROKER_WITHIN:?}"),
    }
}

/// An event and when it reached the caller.
pub struct Arrival {
    /// The event.
    pub event: Event,
    /// Arrival on the monotonic clock, for durations.
    pub at: Instant,
    /// Arrival on the wall clock, to compare with times printed inside
    /// build containers and with the worker's event timestamps (one machine,
    /// one clock).
    pub wall: DateTime<Utc>,
}

/// One job followed from its publication to its result.
pub struct Followed {
    /// When publishing started (the broker's confirm is part of the job).
    pub published: Instant,
    /// The same moment on the wall clock.
    pub published_wall: DateTime<Utc>,
    /// Every event in arrival order, the result last.
    pub events: Vec<Arrival>,
}

impl Followed {
    /// The result event's body.
    pub fn result(&self) -> anyhow::Result<&JobResult> {
        match self.events.last().map(|a| &a.event.body) {
            Some(EventBody::Result(result)) => Ok(result),
            _ => bail!("the job ended without a result"),
        }
    }

    /// Publication to result.
    pub fn elapsed(&self) -> Duration {
        self.events
            .last()
            .map(|a| a.at - self.published)
            .unwrap_or_default()
    }

    /// Publication to the first event.
    pub fn first_event(&self) -> Option<&Arrival> {
        self.events.first()
    }

    /// Every line the build wrote to stdout, with the event that carried it.
    pub fn build_lines(&self) -> impl Iterator<Item = (&Arrival, &str)> {
        self.build_texts()
            .flat_map(|(arrival, text)| text.lines().map(move |line| (arrival, line)))
    }

    /// The build step's stdout, event by event, as it arrived.
    pub fn build_texts(&self) -> impl Iterator<Item = (&Arrival, &str)> {
        self.events
            .iter()
            .filter_map(|arrival| match &arrival.event.body {
                EventBody::Log(log)
                    if log.step == StepName::Build && log.stream == LogStream::Stdout =>
                {
                    Some((arrival, log.text.as_str()))
                }
                _ => None,
            })
    }

    /// The text of every log event of `step` (any stream), in order.
    pub fn log_of(&self, step: StepName) -> String {
        self.events
            .iter()
            .filter_map(|arrival| match &arrival.event.body {
                EventBody::Log(log) if log.step == step => Some(log.text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Milliseconds the worker reported for `step`.
    pub fn step_ms(&self, step: StepName) -> Option<u64> {
        self.result().ok()?.durations_ms.get(&step).copied()
    }
}

/// A caller connected to RabbitMQ with one reply queue for all its jobs
/// (events carry the job id; an orchestrator may share a reply queue).
pub struct Caller {
    client: Client,
    replies: Events,
    reply_to: String,
    amqp_url: String,
    /// Job queues the workers declared for the benchmark, deleted at the end.
    job_queues: Vec<String>,
}

impl Caller {
    /// Connects and declares the reply queue.
    pub async fn connect(amqp_url: &str) -> anyhow::Result<Self> {
        let client = broker("connecting to RabbitMQ", Client::connect(amqp_url)).await?;
        let reply_to = format!("bench.reply.{}", Uuid::new_v4().simple());
        let replies = broker("declaring the reply queue", client.reply_queue(&reply_to)).await?;
        Ok(Self {
            client,
            replies,
            reply_to,
            amqp_url: amqp_url.to_owned(),
            job_queues: Vec::new(),
        })
    }

    /// A fresh job queue name, remembered for [`Caller::clean_up`].
    pub fn new_queue(&mut self, purpose: &str) -> String {
        let queue = format!("bench.jobs.{purpose}.{}", Uuid::new_v4().simple());
        self.job_queues.push(queue.clone());
        queue
    }

    /// Waits until `queue` has `consumers` consumers (workers declare their
    /// queue when they start).
    pub async fn wait_for_consumers(&self, queue: &str, consumers: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counts = broker("counting consumers", self.client.queue_counts(queue)).await;
            if counts.is_ok_and(|c| c.consumers >= consumers) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{queue} does not have {consumers} consumer(s) after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `job` to `queue` and follows it to its result, which must
    /// be a success.
    pub async fn run(&mut self, queue: &str, job: &Job) -> anyhow::Result<Followed> {
        let body = serde_json::to_vec(job)?;
        let job_id = job.job_id.to_string();
        let published_wall = Utc::now();
        let published = Instant::now();
        let publish = self
            .client
            .publish(queue, &body, &job_id, Some(&self.reply_to));
        broker("publishing a job", publish).await?;
        let mut events = Vec::new();
        loop {
            let arrival = self.next_event().await?;
            if arrival.event.job_id != job_id {
                continue;
            }
            let is_result = matches!(arrival.event.body, EventBody::Result(_));
            events.push(arrival);
            if is_result {
                break;
            }
        }
        let followed = Followed {
            published,
            published_wall,
            events,
        };
        ensure_succeeded(job, followed.result()?)?;
        Ok(followed)
    }

    /// Publishes every job at once and waits for all results, which must be
    /// successes; returns the time from the first publication to the last
    /// result.
    pub async fn run_batch(&mut self, queue: &str, jobs: &[Job]) -> anyhow::Result<Duration> {
        let (elapsed, failures) = self.run_batch_counting(queue, jobs).await?;
        match failures.first() {
            Some(failure) => bail!("{failure}"),
            None => Ok(elapsed),
        }
    }

    /// [`Caller::run_batch`], returning what each failed job said instead
    /// of stopping: in a long run, how many jobs fail is a figure.
    pub async fn run_batch_counting(
        &mut self,
        queue: &str,
        jobs: &[Job],
    ) -> anyhow::Result<(Duration, Vec<String>)> {
        let started = Instant::now();
        for job in jobs {
            let body = serde_json::to_vec(job)?;
            let job_id = job.job_id.to_string();
            let publish = self
                .client
                .publish(queue, &body, &job_id, Some(&self.reply_to));
            broker("publishing a job", publish).await?;
        }
        let mut waiting: HashSet<String> = jobs.iter().map(|j| j.job_id.to_string()).collect();
        let mut failures = Vec::new();
        while !waiting.is_empty() {
            let arrival = self.next_event().await?;
            let EventBody::Result(result) = &arrival.event.body else {
                continue;
            };
            if !waiting.remove(&arrival.event.job_id) {
                continue;
            }
            let job = jobs
                .iter()
                .find(|j| j.job_id.to_string() == arrival.event.job_id);
            if let Some(Err(failure)) = job.map(|job| ensure_succeeded(job, result)) {
                failures.push(format!("{failure:#}"));
            }
        }
        Ok((started.elapsed(), failures))
    }

    async fn next_event(&mut self) -> anyhow::Result<Arrival> {
        let next = tokio::time::timeout(RESULT_WITHIN, self.replies.next())
            .await
            .with_context(|| format!("no event within {RESULT_WITHIN:?}"))?;
        let event = next.context("the reply queue consumer ended")??;
        Ok(Arrival {
            event,
            at: Instant::now(),
            wall: Utc::now(),
        })
    }

    /// Deletes the job queues (with the dead-letter queue and exchange each
    /// worker declared for it) and the reply queue, so benchmark runs leave
    /// nothing on the broker. Best effort: failures are reported, not fatal.
    pub async fn clean_up(self) {
        let clean_up = async {
            let connection =
                Connection::connect(&self.amqp_url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            for queue in &self.job_queues {
                for name in [queue.clone(), format!("{queue}.dead")] {
                    channel
                        .queue_delete(name.into(), QueueDeleteOptions::default())
                        .await?;
                }
                channel
                    .exchange_delete(
                        format!("{queue}.dlx").into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await?;
            }
            channel
                .queue_delete(self.reply_to.clone().into(), QueueDeleteOptions::default())
                .await?;
            connection.close(200, "benchmark done".into()).await?;
            anyhow::Ok(())
        };
        let result = tokio::time::timeout(BROKER_WITHIN, clean_up)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("RabbitMQ did not answer")));
        if let Err(error) = result {
            eprintln!("warning: cleaning up the benchmark's queues: {error:#}");
        }
    }
}

fn ensure_succeeded(job: &Job, result: &JobResult) -> anyhow::Result<()> {
    if result.status != JobStatus::Succeeded {
        let message = result
            .error
            .as_ref()
            .map(|e| format!("{:?}: {}", e.step, e.message))
            .unwrap_or_default();
        bail!(
            "job {} for {} ended {:?}: {message}",
            job.job_id,
            job.repo.url,
            result.status
        );
    }
    Ok(())
}

/// A job building `revision` of `repo` into `repository`, tagged with the
/// short revision and `latest`, pushed, with the rig's authorized key and
/// pinned host key (what a real orchestrator would send).
pub fn job(rig: &Rig, repo: &TestRepo, revision: &str, repository: &str) -> Job {
    Job::new(
        "bench",
        repo.ssh_url.clone(),
        revision,
        repository,
        tags_for(revision),
    )
    .with_repo_auth(RepoAuth::ssh_key(rig.ssh_key_base64(SshKey::Authorized)))
    .with_known_hosts(rig.known_hosts_line())
}

/// The tags every benchmark image gets: the short revision and `latest`.
pub fn tags_for(revision: &str) -> Vec<String> {
    vec![
        revision[..12.min(revision.len())].to_owned(),
        "latest".into(),
    ]
}
