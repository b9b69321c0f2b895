//! One delivery, start to end: decoded, run through the pipeline with its
//! events going to the reply queue, then acked once the result is
//! confirmed; or answered `rejected` and dead-lettered; or requeued when
//! the worker stops or the reply channel cannot be opened.

use super::admission::{unix_now, Admission, Refusal};
use super::delivery::{decode, Accepted, Envelope};
use super::running::{JobHandle, Stop};
use super::JobContext;
use super::{control, ConsumerError};
use crate::events::redact::Redactor;
use crate::events::reply::{EventsExchange, ReplySink, ReplyTarget};
use crate::events::Reporter;
use crate::events::{self, AttemptId};
use buildbot_protocol::{read_envelope, ControlMessage, Job, JobEnvelope, JobResult, StepName};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use std::sync::Arc;
use tracing::Instrument;
use zeroize::Zeroizing;

pub(super) async fn handle_delivery(mut delivery: Delivery, context: Arc<JobContext>) {
    let envelope = Envelope::of(&delivery.properties, delivery.redelivered);
    // The body holds every credential of the job in clear, and the delivery
    // is kept until the ack: taken out, and zeroed as soon as it is read.
    let body = Zeroizing::new(std::mem::take(&mut delivery.data));
    let span = tracing::info_span!("job", job_id = %envelope.job_id, attempt = envelope.attempt, service_id = tracing::field::Empty);
    async move {
        match decode(&body, &envelope, &context) {
            Ok(accepted) => {
                drop(body);
                tracing::Span::current().record("service_id", accepted.job.service_id.as_str());
                run_job(delivery, envelope.attempt, accepted, &context).await;
                trim_image_cache(&context).await;
            }
            Err(Refusal::Rejected(problems)) => {
                // What the body says of itself, when it can be read, so that
                // the rejection is routed as `<service>.<job_id>.result`.
                let named = read_envelope(&body);
                drop(body);
                reject(delivery, envelope, named, problems, &context).await;
            }
            Err(Refusal::Ignored(reason)) => {
                drop(body);
                ignore(delivery, &reason, &context).await;
            }
        }
    }
    .instrument(span)
    .await;
}

async fn run_job(delivery: Delivery, attempt: u32, accepted: Accepted, context: &JobContext) {
    let Accepted {
        job,
        reply_to,
        admission,
    } = accepted;
    if let Some(admission) = &admission {
        admit(context, admission, false).await;
    }
    let job_id = job.job_id.to_string();
    if delivery.redelivered && context.jobs.is_finished(&job_id) {
        let reason =
            "a redelivery of a job whose result was already published (the broker lost its ack)";
        tracing::info!(%reason, "dropped a redelivered job without running it again");
        context.metrics.job_ignored();
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "ack failed; the broker will deliver the message again");
        }
        return;
    }
    let handle = context.jobs.register(&job_id);
    let _in_flight = context.metrics.job_running();
    let target = ReplyTarget {
        reply_to: Some(reply_to),
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
        attempt,
    };
    tracing::info!(repo = %job.repo.url, revision = %job.repo.revision, "job started");
    let (reporter, finisher) = events::start(
        sink,
        attempt,
        Redactor::for_job(&job),
        context.settings.batching,
    );
    // A cancel that arrived before the job did: nothing runs.
    let result = if context.jobs.is_cancelled(&job_id) {
        context.pipeline.cancelled_before_start(&job)
    } else if let Some(result) = run_unless_requeued(context, &job, &reporter, &handle).await {
        result
    } else {
        reporter
            .system(
                StepName::Validate,
                "the worker is stopping; the job goes back to the queue",
            )
            .await;
        // Published and confirmed before the requeue, so the caller reads
        // it before the next attempt's events.
        if let Err(e) = finisher.abandon().await {
            tracing::warn!(error = %e, "the requeue notice was not confirmed");
        }
        requeue(&delivery).await;
        return;
    };
    context.metrics.job_finished(&result);
    match finisher.finish(result).await {
        Ok(published) => {
            let error = published.error.as_ref().map(|e| e.message.as_str());
            tracing::info!(status = ?published.status, last_seq = published.last_seq, error, "job finished");
            if let Some(admission) = &admission {
                admit(context, admission, true).await;
            }
            announce_finished(context, job.job_id).await;
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

/// Runs the job's pipeline; `None` when the worker must give the job back
/// instead (drain timeout, lost connection).
async fn run_unless_requeued(
    context: &JobContext,
    job: &Job,
    reporter: &Reporter,
    handle: &JobHandle,
) -> Option<JobResult> {
    tokio::select! {
        result = context.pipeline.run(job, reporter, handle.cancelled()) => Some(result),
        Stop::Requeue = handle.stopped() => None,
    }
}

async fn open_sink(context: &JobContext, target: ReplyTarget) -> Result<ReplySink, String> {
    let connection = context.pool.get().await.map_err(|e| e.to_string())?;
    let exchange = context.settings.events_exchange;
    ReplySink::open(&connection, target, exchange, Arc::clone(&context.metrics))
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

/// Answers an invalid job with a `rejected` result (on its reply queue
/// when it names one, and on the events exchange when that is on) and
/// dead-letters it: retrying cannot make it valid. `named` is what its
/// body says of itself.
async fn reject(
    delivery: Delivery,
    envelope: Envelope,
    named: JobEnvelope,
    problems: Vec<String>,
    context: &JobContext,
) {
    tracing::warn!(problems = %problems.join("; "), "job rejected");
    let job_id = if envelope.job_id.is_empty() {
        named.job_id.map(|id| id.to_string()).unwrap_or_default()
    } else {
        envelope.job_id
    };
    let mut result = JobResult::rejected(context.pipeline.worker_id(), problems);
    if let Some(service_id) = &named.service_id {
        result = result.with_service_id(service_id.clone());
    }
    context.metrics.job_finished(&result);
    let target = ReplyTarget {
        reply_to: envelope.reply_to,
        correlation_id: job_id,
        service_id: named.service_id,
    };
    if let Err(e) = publish_result(context, target, envelope.attempt, result).await {
        tracing::warn!(error = %e, "could not publish the rejected result");
    }
    let options = BasicRejectOptions { requeue: false };
    if let Err(e) = delivery.reject(options).await {
        tracing::warn!(error = %e, "reject failed");
    }
}

/// Trims the images the worker keeps to its budget, once a job is done
/// with its own.
pub(super) async fn trim_image_cache(context: &JobContext) {
    if let Some(trim) = context.pipeline.trim_image_cache().await {
        context
            .metrics
            .image_cache_trimmed(trim.kept_bytes, trim.evicted);
        if trim.evicted > 0 {
            tracing::info!(
                evicted = trim.evicted,
                kept_bytes = trim.kept_bytes,
                "trimmed the image cache"
            );
        }
    }
}

/// Remembers that `job_id` finished, here and, through the cancel stream,
/// on every worker, before the ack: should the broker lose the ack, the
/// redelivery is dropped, not run a second time. A failed publish is
/// logged: this worker still drops the redelivery.
async fn announce_finished(context: &JobContext, job_id: uuid::Uuid) {
    context.jobs.finished(&job_id.to_string());
    let message = ControlMessage::Finished { job_id };
    if let Err(e) = publish_control(&context.pool, &message).await {
        tracing::warn!(error = %e, "could not announce the finished job yet; retrying on the next connection");
        // The broker node just went down, most likely: its redelivery
        // reaches another worker only once the queue has a new leader, a
        // few seconds, so the announcement goes on trying meanwhile.
        tokio::spawn(retry_announce(context.pool.clone(), message));
    }
}

/// How long a finished job's announcement is retried after a failure.
const ANNOUNCE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

async fn retry_announce(pool: deadpool_lapin::Pool, message: ControlMessage) {
    let deadline = tokio::time::Instant::now() + ANNOUNCE_RETRY_FOR;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if publish_control(&pool, &message).await.is_ok() {
            tracing::info!("announced the finished job on a new connection");
            return;
        }
    }
    tracing::warn!(
        "could not announce the finished job; another worker may run a redelivery of it"
    );
}

async fn publish_control(
    pool: &deadpool_lapin::Pool,
    message: &ControlMessage,
) -> Result<(), ConsumerError> {
    match pool.get().await {
        Ok(connection) => control::publish(&connection, message).await,
        Err(e) => Err(ConsumerError::Connect(e.to_string())),
    }
}

/// Remembers a signed job's nonce here and tells every worker through the
/// cancel stream, so a replay is refused wherever it is delivered. A
/// failed publish is logged: this worker still refuses the replay.
async fn admit(context: &JobContext, admission: &Admission, finished: bool) {
    let (nonce, expires_at) = (&admission.nonce, admission.expires_at);
    context
        .nonces
        .remember(nonce, expires_at, finished, unix_now());
    let message = ControlMessage::Admitted {
        nonce: nonce.clone(),
        expires_at,
        finished,
    };
    if let Err(e) = publish_control(&context.pool, &message).await {
        tracing::warn!(error = %e, "could not publish the signed job's nonce; other workers may run a replay of it");
    }
}

/// Drops a message that must get no reply (see [`super::admission`]),
/// saying why in the worker's log.
async fn ignore(delivery: Delivery, reason: &str, context: &JobContext) {
    tracing::warn!(%reason, "dropped a job message without replying: not signed for this worker");
    context.metrics.job_ignored();
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the broker will deliver the message again");
    }
}

/// Publishes `result` alone, as attempt `attempt`, to `target`; returns
/// once the broker confirmed it, or at once when it has nowhere to go.
pub(super) async fn publish_result(
    context: &JobContext,
    target: ReplyTarget,
    attempt: u32,
    result: JobResult,
) -> Result<(), String> {
    if target.reply_to.is_none() && context.settings.events_exchange == EventsExchange::Off {
        tracing::warn!(status = ?result.status, "the message names no reply_to and the events exchange is off: its result is only in this log");
        return Ok(());
    }
    let attempt = AttemptId {
        job_id: target.correlation_id.clone(),
        attempt,
    };
    let sink = open_sink(context, target).await?;
    let (_reporter, finisher) = events::start(
        sink,
        attempt,
        Redactor::default(),
        context.settings.batching,
    );
    finisher
        .finish(result)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
