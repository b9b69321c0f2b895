//! The AMQP consumer: declares the job queue, takes deliveries, hands valid
//! jobs to the pipeline, and acks each delivery only after the job's result
//! is confirmed by the broker. Invalid jobs are answered with a `rejected`
//! result and dead-lettered. It never talks to Docker.

use crate::config::WorkerConfig;
use crate::events::{self, AttemptId, LogBatching};
use crate::pipeline::Pipeline;
use crate::redact::Redactor;
use crate::reply::ReplySink;
use buildbot_protocol::amqp::{
    ARG_DEAD_LETTER_EXCHANGE, ARG_DELIVERY_LIMIT, ARG_QUEUE_TYPE, HEADER_DELIVERY_COUNT,
};
use buildbot_protocol::{decode_job_with_limit, Job, JobError, JobResult, JobStatus, StepName};
use deadpool_lapin::{Pool, Runtime};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;
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
    /// Declaring queues or starting the consumer failed.
    #[error("RabbitMQ refused {what}: {message}")]
    Broker {
        /// The operation.
        what: String,
        /// The broker's words.
        message: String,
    },
}

/// What every job task needs, shared.
struct JobContext {
    pool: Pool,
    pipeline: Pipeline,
    max_job_bytes: usize,
    batching: LogBatching,
}

/// Consumes jobs until `shutdown` completes, then stops taking new jobs and
/// waits for the running ones to finish.
pub async fn run(
    config: &WorkerConfig,
    pipeline: Pipeline,
    shutdown: impl Future<Output = ()>,
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
    channel
        .basic_qos(config.concurrency, BasicQosOptions::default())
        .await
        .map_err(broker("the prefetch setting"))?;
    // An empty tag lets the broker choose one when the id is too long.
    let consumer_tag = ShortString::try_new(pipeline.worker_id()).unwrap_or_default();
    let mut deliveries = channel
        .basic_consume(
            ShortString::from(config.queue.as_str()),
            consumer_tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the consumer"))?;
    tracing::info!(queue = %config.queue, concurrency = config.concurrency, "consuming jobs");

    let context = Arc::new(JobContext {
        pool,
        pipeline,
        max_job_bytes: config.max_job_bytes,
        batching: config.log_batching(),
    });
    let mut running = JoinSet::new();
    let mut outcome = Ok(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            delivery = deliveries.next() => match delivery {
                Some(Ok(delivery)) => {
                    running.spawn(handle_delivery(delivery, Arc::clone(&context)));
                }
                Some(Err(e)) => {
                    outcome = Err(ConsumerError::Lost(e.to_string()));
                    break;
                }
                None => {
                    outcome = Err(ConsumerError::Lost("the broker cancelled the consumer".into()));
                    break;
                }
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = &mut shutdown => {
                tracing::info!("shutting down: no new jobs, finishing running ones");
                let cancel = BasicCancelOptions::default();
                let _ = channel.basic_cancel(deliveries.tag(), cancel).await;
                break;
            }
        }
    }
    while running.join_next().await.is_some() {}
    outcome
}

fn connection_pool(config: &WorkerConfig) -> Result<Pool, ConsumerError> {
    let pool_config = deadpool_lapin::Config {
        url: Some(config.amqp_url.clone()),
        ..Default::default()
    };
    pool_config
        .create_pool(lapin::ConnectionProperties::default, Runtime::Tokio1)
        .map_err(|e| ConsumerError::Connect(e.to_string()))
}

fn broker(what: &'static str) -> impl Fn(lapin::Error) -> ConsumerError {
    move |e| ConsumerError::Broker {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The job queue (quorum, delivery limit, dead-letter exchange) and the
/// dead-letter exchange and queue. Idempotent.
async fn declare_topology(channel: &Channel, config: &WorkerConfig) -> Result<(), ConsumerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlx = config.dead_letter_exchange();
    let dead = config.dead_letter_queue();
    channel
        .exchange_declare(
            ShortString::from(dlx.as_str()),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker("the dead-letter exchange"))?;
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
        match decode(&delivery.data, &envelope, context.max_job_bytes) {
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
fn decode(data: &[u8], envelope: &Envelope, max_bytes: usize) -> Result<Job, Vec<String>> {
    let job = decode_job_with_limit(data, max_bytes).map_err(|e| e.problems())?;
    if envelope.reply_to.is_none() {
        return Err(vec![
            "reply_to: missing; set the message's reply_to to the caller's reply queue".into(),
        ]);
    }
    if job.build.builder.is_some() {
        // Valid protocol, but this worker cannot run it yet: saying so
        // beats building the wrong image.
        return Err(vec![
            "build.builder: builder containers are not supported by this worker version".into(),
        ]);
    }
    Ok(job)
}

async fn run_job(delivery: Delivery, envelope: Envelope, job: Job, context: &JobContext) {
    let Some(reply_to) = envelope.reply_to else {
        return;
    };
    let job_id = job.job_id.to_string();
    let sink = match open_sink(context, reply_to, job_id.clone()).await {
        Ok(sink) => sink,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the reply channel; requeueing the job");
            requeue(&delivery).await;
            return;
        }
    };
    let attempt = AttemptId {
        job_id,
        attempt: envelope.attempt,
    };
    tracing::info!(repo = %job.repo.url, revision = %job.repo.revision, "job started");
    let (reporter, finisher) =
        events::start(sink, attempt, Redactor::for_job(&job), context.batching);
    let result = context.pipeline.run(&job, &reporter).await;
    let status = result.status;
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

async fn open_sink(
    context: &JobContext,
    reply_to: String,
    job_id: String,
) -> Result<ReplySink, String> {
    let connection = context.pool.get().await.map_err(|e| e.to_string())?;
    ReplySink::open(&connection, reply_to, job_id)
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
    let sink = open_sink(context, reply_to, job_id.to_owned()).await?;
    let attempt = AttemptId {
        job_id: job_id.to_owned(),
        attempt,
    };
    let (_reporter, finisher) = events::start(sink, attempt, Redactor::default(), context.batching);
    finisher.finish(result).await.map_err(|e| e.to_string())
}
