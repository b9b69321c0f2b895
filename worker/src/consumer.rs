//! The AMQP consumer: declares the job queue, takes deliveries, hands valid
//! jobs to the pipeline, and acks each delivery only after the job's result
//! is confirmed by the broker. Invalid jobs are answered with a `rejected`
//! result and dead-lettered. It never talks to Docker.

use crate::config::WorkerConfig;
use crate::control::{RunningJobs, Stop};
use crate::events::{self, AttemptId, LogBatching};
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::redact::Redactor;
use crate::reply::{ReplySink, ReplyTarget};
use buildbot_protocol::amqp::{
    ARG_DEAD_LETTER_EXCHANGE, ARG_DELIVERY_LIMIT, ARG_QUEUE_TYPE, CONTROL_EXCHANGE,
    EVENTS_EXCHANGE, HEADER_DELIVERY_COUNT,
};
use buildbot_protocol::signature::{verify_job, VerifyingKey};
use buildbot_protocol::{
    decode_job_with_limit, ControlMessage, Job, JobError, JobResult, JobStatus, StepName,
};
use deadpool_lapin::{Pool, Runtime};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The broker could not be reached.
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(String),
    /// The broker closed the consumer or the connection was lost while
    /// consuming. Unfinished jobs stay unacked and are redelivered.
    #[error("lost the job consumer: {0}")]
    Lost(String),
    /// A queue name too long for AMQP once `.dead` is appended.
    #[error(
        "queue name {0:?} is too long: with `.dead` appended it exceeds AMQP's 255-byte limit"
    )]
    NameTooLong(String),
    /// A queue or exchange exists with other arguments than this worker's
    /// (for example another `--delivery-limit`). Retrying cannot help.
    #[error("RabbitMQ refused {what}: {message}; start the worker with the settings the existing queue was declared with, or delete the queue")]
    Mismatch {
        /// The operation.
        what: String,
        /// The broker's words.
        message: String,
    },
    /// Declaring queues or starting the consumer failed.
    #[error("RabbitMQ refused {what}: {message}")]
    Broker {
        /// The operation.
        what: String,
        /// The broker's words.
        message: String,
    },
}

/// Where the consumer reports on itself: metrics and readiness.
#[derive(Clone)]
pub struct Observers {
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
    /// Set while the consumer is attached to the job queue.
    pub readiness: Arc<Readiness>,
}

/// What every job task needs, shared.
struct JobContext {
    pool: Pool,
    pipeline: Pipeline,
    max_job_bytes: usize,
    batching: LogBatching,
    jobs: RunningJobs,
    metrics: Arc<Metrics>,
    trusted_keys: Vec<VerifyingKey>,
}

/// Consumes jobs until `shutdown` is cancelled, reconnecting with backoff
/// when the broker connection is lost. Returns only at shutdown, or with
/// an error that a retry cannot fix.
pub async fn run_until_shutdown(
    config: &WorkerConfig,
    pipeline: Pipeline,
    shutdown: CancellationToken,
    observers: Observers,
) -> Result<(), ConsumerError> {
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let outcome = run(config, pipeline.clone(), shutdown.clone(), &observers).await;
        observers.readiness.set_consuming(false);
        match outcome {
            Ok(()) => return Ok(()),
            Err(e @ (ConsumerError::NameTooLong(_) | ConsumerError::Mismatch { .. })) => {
                return Err(e)
            }
            Err(e) => {
                if started.elapsed() > HEALTHY_RUN {
                    backoff = Backoff::default();
                }
                let delay = backoff.next_delay();
                observers.metrics.reconnecting();
                tracing::warn!(error = %e, retry_in = ?delay, "RabbitMQ unavailable; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// A connection that lasted this long was healthy: the next loss starts
/// the backoff from its beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Exponential reconnect delay: 0.5 s doubling up to 30 s.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        delay
    }
}

/// Consumes jobs on one connection until `shutdown` is cancelled (then
/// stops taking jobs and drains the running ones) or the connection is
/// lost (then the running jobs are stopped unacked, for redelivery).
pub async fn run(
    config: &WorkerConfig,
    pipeline: Pipeline,
    shutdown: CancellationToken,
    observers: &Observers,
) -> Result<(), ConsumerError> {
    // The dead-letter queue's name is the longest one derived from it.
    if config.dead_letter_queue().len() > 255 {
        return Err(ConsumerError::NameTooLong(config.queue.clone()));
    }
    let pool = connection_pool(config)?;
    let connection = pool
        .get()
        .await
        .map_err(|e| ConsumerError::Connect(e.to_string()))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("a channel"))?;
    declare_topology(&channel, config).await?;
    let mut cancels = consume_control(&channel).await?;
    channel
        .basic_qos(config.concurrency, BasicQosOptions::default())
        .await
        .map_err(broker("the prefetch setting"))?;
    // An empty tag lets the broker choose one when the id is too long.
    let consumer_tag = ShortString::try_new(pipeline.worker_id()).unwrap_or_default();
    let mut deliveries = channel
        .basic_consume(
            ShortString::from(config.queue.as_str()),
            consumer_tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the consumer"))?;
    tracing::info!(queue = %config.queue, concurrency = config.concurrency, "consuming jobs");
    observers.readiness.set_consuming(true);

    let context = Arc::new(JobContext {
        pool,
        pipeline,
        max_job_bytes: config.max_job_bytes,
        batching: config.log_batching(),
        jobs: RunningJobs::default(),
        metrics: Arc::clone(&observers.metrics),
        trusted_keys: config.trusted_keys.clone(),
    });
    let mut running = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            delivery = deliveries.next() => match delivery {
                Some(Ok(delivery)) => {
                    running.spawn(handle_delivery(delivery, Arc::clone(&context)));
                }
                Some(Err(e)) => break Err(ConsumerError::Lost(e.to_string())),
                None => break Err(ConsumerError::Lost("the broker cancelled the consumer".into())),
            },
            control = cancels.next() => match control {
                Some(Ok(message)) => on_control(&message.data, &context.jobs),
                Some(Err(e)) => break Err(ConsumerError::Lost(e.to_string())),
                None => break Err(ConsumerError::Lost("the broker cancelled the control consumer".into())),
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    observers.readiness.set_consuming(false);
    match &outcome {
        Ok(()) => {
            let cancel = BasicCancelOptions::default();
            let _ = channel.basic_cancel(deliveries.tag(), cancel).await;
            drain(&mut running, &context.jobs, config.drain_timeout()).await;
            // An ack is a frame queued for the socket: closing the channel
            // (which waits for the broker's close-ok) makes sure the acks
            // of the drained jobs were sent before the process exits.
            let _ = channel
                .close(200, ShortString::from("worker stopping"))
                .await;
            let _ = connection
                .close(200, ShortString::from("worker stopping"))
                .await;
        }
        Err(e) => {
            // Their deliveries can no longer be acked: the broker redelivers
            // them, so finishing here would only report a job twice.
            tracing::warn!(error = %e, jobs = context.jobs.len(), "connection lost; stopping running jobs");
            context.jobs.stop_all(Stop::Requeue);
            while running.join_next().await.is_some() {}
        }
    }
    outcome
}

/// Lets the running jobs finish within `limit`, then stops the rest and
/// requeues them.
async fn drain(running: &mut JoinSet<()>, jobs: &RunningJobs, limit: Duration) {
    if running.is_empty() {
        return;
    }
    tracing::info!(
        jobs = jobs.len(),
        ?limit,
        "shutting down: finishing running jobs"
    );
    let finished = tokio::time::timeout(limit, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            jobs = jobs.len(),
            "drain timeout: stopping and requeueing running jobs"
        );
        jobs.stop_all(Stop::Requeue);
        while running.join_next().await.is_some() {}
    }
}

/// A private, exclusive queue bound to the control exchange: every worker
/// receives every cancel.
async fn consume_control(channel: &Channel) -> Result<lapin::Consumer, ConsumerError> {
    declare_exchange(channel, CONTROL_EXCHANGE, ExchangeKind::Fanout)
        .await
        .map_err(broker("the control exchange"))?;
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(ShortString::from(""), options, FieldTable::default())
        .await
        .map_err(broker("the control queue"))?;
    channel
        .queue_bind(
            queue.name().clone(),
            ShortString::from(CONTROL_EXCHANGE),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the control binding"))?;
    // Control messages are advisory and have no one to retry them: no acks.
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    channel
        .basic_consume(
            queue.name().clone(),
            ShortString::from(""),
            options,
            FieldTable::default(),
        )
        .await
        .map_err(broker("the control consumer"))
}

fn on_control(data: &[u8], jobs: &RunningJobs) {
    match serde_json::from_slice::<ControlMessage>(data) {
        Ok(ControlMessage::Cancel { job_id }) => {
            let running = jobs.cancel(&job_id.to_string());
            tracing::info!(%job_id, running_here = running, "cancel received");
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable control message"),
    }
}

/// How long opening (or checking) a broker connection may take: a broker
/// that accepts TCP but never answers must not hang the worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn connection_pool(config: &WorkerConfig) -> Result<Pool, ConsumerError> {
    let mut pool = deadpool_lapin::PoolConfig::default();
    pool.timeouts.create = Some(CONNECT_TIMEOUT);
    pool.timeouts.recycle = Some(CONNECT_TIMEOUT);
    pool.timeouts.wait = Some(CONNECT_TIMEOUT);
    let pool_config = deadpool_lapin::Config {
        url: Some(with_small_frames(&config.broker.amqp_url)),
        pool: Some(pool),
    };
    pool_config
        .create_pool(lapin::ConnectionProperties::default, Runtime::Tokio1)
        .map_err(|e| ConsumerError::Connect(e.to_string()))
}

/// Frame size the worker asks for unless its URL names one.
const FRAME_MAX: u32 = 16 * 1024;

/// `url` asking for [`FRAME_MAX`]-byte frames unless it sets `frame_max`:
/// lapin sizes two I/O buffers per connection from the frame size, and the
/// broker's 128 KiB default keeps about 8 MiB resident per connection
/// (BENCHMARKS.md: idle 19.7 MiB with it, 12.2 MiB with 16 KiB frames, at
/// no cost in latency or log throughput).
fn with_small_frames(url: &str) -> String {
    if url.contains("frame_max=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}frame_max={FRAME_MAX}")
}

fn broker(what: &'static str) -> impl Fn(lapin::Error) -> ConsumerError {
    move |e| {
        let what = what.to_owned();
        let message = e.to_string();
        if is_precondition_failed(&e) {
            ConsumerError::Mismatch { what, message }
        } else {
            ConsumerError::Broker { what, message }
        }
    }
}

/// The broker's answer to declaring something that exists with other
/// arguments.
fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// Declares a durable exchange (idempotent).
async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            ShortString::from(name),
            kind,
            options,
            FieldTable::default(),
        )
        .await
}

/// The job queue (quorum, delivery limit, dead-letter exchange), the
/// dead-letter exchange and queue, and the events exchange. Idempotent.
async fn declare_topology(channel: &Channel, config: &WorkerConfig) -> Result<(), ConsumerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlx = config.dead_letter_exchange();
    let dead = config.dead_letter_queue();
    declare_exchange(channel, &dlx, ExchangeKind::Fanout)
        .await
        .map_err(broker("the dead-letter exchange"))?;
    declare_exchange(channel, EVENTS_EXCHANGE, ExchangeKind::Topic)
        .await
        .map_err(broker("the events exchange"))?;
    channel
        .queue_declare(ShortString::from(dead.as_str()), durable, quorum_args())
        .await
        .map_err(broker("the dead-letter queue"))?;
    channel
        .queue_bind(
            ShortString::from(dead.as_str()),
            ShortString::from(dlx.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the dead-letter binding"))?;
    let mut args = quorum_args();
    args.insert(
        ShortString::from(ARG_DELIVERY_LIMIT),
        AMQPValue::LongUInt(config.delivery_limit),
    );
    args.insert(
        ShortString::from(ARG_DEAD_LETTER_EXCHANGE),
        AMQPValue::LongString(LongString::from(dlx.as_str())),
    );
    channel
        .queue_declare(ShortString::from(config.queue.as_str()), durable, args)
        .await
        .map_err(broker("the job queue"))?;
    Ok(())
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from(ARG_QUEUE_TYPE),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

/// Where a delivery's events go and whom they name.
struct Envelope {
    job_id: String,
    attempt: u32,
    reply_to: Option<String>,
}

impl Envelope {
    fn of(properties: &BasicProperties) -> Self {
        let job_id = properties
            .correlation_id()
            .as_ref()
            .or(properties.message_id().as_ref())
            .map(ToString::to_string)
            .unwrap_or_default();
        Self {
            job_id,
            attempt: attempt_of(properties),
            reply_to: properties.reply_to().as_ref().map(ToString::to_string),
        }
    }
}

/// 1 for a first delivery; quorum queues count earlier deliveries in
/// `x-delivery-count`.
fn attempt_of(properties: &BasicProperties) -> u32 {
    let earlier = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(HEADER_DELIVERY_COUNT))
        .and_then(amqp_integer)
        .unwrap_or(0);
    u32::try_from(earlier.saturating_add(1)).unwrap_or(u32::MAX)
}

fn amqp_integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

async fn handle_delivery(delivery: Delivery, context: Arc<JobContext>) {
    let envelope = Envelope::of(&delivery.properties);
    let span = tracing::info_span!("job", job_id = %envelope.job_id, attempt = envelope.attempt, service_id = tracing::field::Empty);
    async move {
        match decode(&delivery.data, &envelope, &context) {
            Ok(job) => {
                tracing::Span::current().record("service_id", job.service_id.as_str());
                run_job(delivery, envelope, job, &context).await;
            }
            Err(problems) => reject(delivery, envelope, problems, &context).await,
        }
    }
    .instrument(span)
    .await;
}

/// The job, or every problem that makes it unacceptable.
fn decode(data: &[u8], envelope: &Envelope, context: &JobContext) -> Result<Job, Vec<String>> {
    let job = decode_job_with_limit(data, context.max_job_bytes).map_err(|e| e.problems())?;
    if !context.trusted_keys.is_empty() {
        // decode_job_with_limit accepted it: it is a JSON object.
        let message: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| vec![format!("job: {e}")])?;
        verify_job(&message, &context.trusted_keys).map_err(|e| vec![e.to_string()])?;
    }
    if envelope.reply_to.is_none() {
        return Err(vec![
            "reply_to: missing; set the message's reply_to to the caller's reply queue".into(),
        ]);
    }
    Ok(job)
}

async fn run_job(delivery: Delivery, envelope: Envelope, job: Job, context: &JobContext) {
    let Some(reply_to) = envelope.reply_to else {
        return;
    };
    let job_id = job.job_id.to_string();
    let handle = context.jobs.register(&job_id);
    let _in_flight = context.metrics.job_running();
    let target = ReplyTarget {
        reply_to,
        correlation_id: job_id.clone(),
        service_id: Some(job.service_id.clone()),
    };
    let sink = match open_sink(context, target).await {
        Ok(sink) => sink,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the reply channel; requeueing the job");
            requeue(&delivery).await;
            return;
        }
    };
    let attempt = AttemptId {
        job_id: job_id.clone(),
        attempt: envelope.attempt,
    };
    tracing::info!(repo = %job.repo.url, revision = %job.repo.revision, "job started");
    let (reporter, finisher) =
        events::start(sink, attempt, Redactor::for_job(&job), context.batching);
    // A cancel that arrived before the job did stops it before it starts.
    if context.jobs.is_cancelled(&job_id) {
        context.jobs.cancel(&job_id);
    }
    let result = tokio::select! {
        result = context.pipeline.run(&job, &reporter, handle.cancelled()) => result,
        Stop::Requeue = handle.stopped() => {
            reporter.system(StepName::Validate, "the worker is stopping; the job goes back to the queue").await;
            drop(finisher);
            requeue(&delivery).await;
            return;
        }
    };
    let status = result.status;
    context.metrics.job_finished(&result);
    match finisher.finish(result).await {
        Ok(last_seq) => {
            tracing::info!(?status, last_seq, "job finished");
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "ack failed; the broker will redeliver the job");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "result not confirmed; requeueing the job");
            requeue(&delivery).await;
        }
    }
}

async fn open_sink(context: &JobContext, target: ReplyTarget) -> Result<ReplySink, String> {
    let connection = context.pool.get().await.map_err(|e| e.to_string())?;
    ReplySink::open(&connection, target, Arc::clone(&context.metrics))
        .await
        .map_err(|e| e.to_string())
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(e) = delivery.nack(options).await {
        tracing::warn!(error = %e, "nack failed; the broker will redeliver the job");
    }
}

/// Answers an invalid job with a `rejected` result (when there is a reply
/// queue) and dead-letters it: retrying cannot make it valid.
async fn reject(
    delivery: Delivery,
    envelope: Envelope,
    problems: Vec<String>,
    context: &JobContext,
) {
    tracing::warn!(problems = %problems.join("; "), "job rejected");
    if let Some(reply_to) = envelope.reply_to {
        let result = rejected_result(&problems, context.pipeline.worker_id());
        context.metrics.job_finished(&result);
        if let Err(e) = publish_result(
            context,
            reply_to,
            &envelope.job_id,
            envelope.attempt,
            result,
        )
        .await
        {
            tracing::warn!(error = %e, "could not publish the rejected result");
        }
    }
    let options = BasicRejectOptions { requeue: false };
    if let Err(e) = delivery.reject(options).await {
        tracing::warn!(error = %e, "reject failed");
    }
}

fn rejected_result(problems: &[String], worker: &str) -> JobResult {
    JobResult {
        status: JobStatus::Rejected,
        error: Some(JobError {
            step: StepName::Validate,
            message: format!("invalid job: {}", problems.join("; ")),
            exit_code: None,
            problems: problems.to_vec(),
        }),
        revision: None,
        image: None,
        durations_ms: Default::default(),
        worker: worker.to_owned(),
        service_id: None,
        last_seq: 0,
    }
}

async fn publish_result(
    context: &JobContext,
    reply_to: String,
    job_id: &str,
    attempt: u32,
    result: JobResult,
) -> Result<u64, String> {
    let target = ReplyTarget {
        reply_to,
        correlation_id: job_id.to_owned(),
        service_id: None,
    };
    let sink = open_sink(context, target).await?;
    let attempt = AttemptId {
        job_id: job_id.to_owned(),
        attempt,
    };
    let (_reporter, finisher) = events::start(sink, attempt, Redactor::default(), context.batching);
    finisher.finish(result).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_asked_for_unless_the_url_sets_them() {
        assert_eq!(
            with_small_frames("amqp://h/%2f"),
            "amqp://h/%2f?frame_max=16384"
        );
        assert_eq!(
            with_small_frames("amqp://h/%2f?heartbeat=10"),
            "amqp://h/%2f?heartbeat=10&frame_max=16384"
        );
        assert_eq!(
            with_small_frames("amqp://h/%2f?frame_max=131072"),
            "amqp://h/%2f?frame_max=131072"
        );
    }
}
