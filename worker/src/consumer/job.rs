//! One delivery, start to end: decoded, run through the pipeline with its
//! events going to the reply queue, then acked once the result is
//! confirmed; or answered `rejected` and dead-lettered; or requeued when
//! the worker stops or the reply channel cannot be opened.

use super::admission::{unix_now, Admission, Refusal};
use super::delivery::{decode, Accepted, Envelope};
use super::running::{JobHandle, Stop};
use super::settle::{settle, Settle};
use super::JobContext;
use super::{control, ConsumerError};
use crate::events::redact::Redactor;
use crate::events::reply::{EventsExchange, ReplySink, ReplyTarget};
use crate::events::Reporter;
use crate::events::{self, AttemptId};
use buildbot_protocol::{read_envelope, ControlMessage, Job, JobEnvelope, JobResult, StepName};
use lapin::message::Delivery;
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
    if delivery.redelivered && finished_elsewhere(context, &job_id).await {
        let reason =
            "a redelivery of a job whose result was already published (the broker lost its ack)";
        tracing::info!(%reason, "dropped a redelivered job without running it again");
        context.metrics.job_ignored();
        if let Err(e) = settle(&delivery, Settle::Ack).await {
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
            if let Err(e) = settle(&delivery, Settle::Ack).await {
                tracing::warn!(error = %e, "ack failed; the broker will redeliver the job");
            }
        }
        Err(events::SinkError::Unconfirmed { reason, resend }) => {
            // The delivery died with the connection: its redelivery is
            // dropped as finished, once the marker is out.
            tracing::warn!(%reason, events = resend.len(), "connection lost before the result was confirmed; it is sent again, as the same events, on the next connection");
            context.jobs.finished(&job_id);
            context.outbox.push(resend);
            hold_finished_marker(context, job.job_id);
        }
        Err(e) => {
            tracing::warn!(error = %e, "result not confirmed; requeueing the job");
            requeue(&delivery).await;
        }
    }
}

/// How long a redelivered job waits for word that it finished elsewhere
/// before it runs again. A result published just as a broker node died
/// is followed by its finished marker only once its worker reconnected
/// (a second or two), while the job's redelivery may reach another worker
/// at once. A job whose worker died costs this much more.
const REDELIVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `job_id`, delivered again, already finished: known here, or
/// announced by another worker within [`REDELIVERY_GRACE`].
async fn finished_elsewhere(context: &JobContext, job_id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + REDELIVERY_GRACE;
    while !context.jobs.is_finished(job_id) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    true
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
    if let Err(e) = settle(delivery, Settle::Requeue).await {
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
    if let Err(e) = settle(&delivery, Settle::Reject).await {
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
/// redelivery is dropped, not run a second time. A marker that cannot be
/// published now goes out first thing on the next connection.
async fn announce_finished(context: &JobContext, job_id: uuid::Uuid) {
    context.jobs.finished(&job_id.to_string());
    let message = ControlMessage::Finished { job_id };
    if let Err(e) = publish_control(&context.pool, &message).await {
        tracing::warn!(error = %e, "could not announce the finished job; it is announced on the next connection");
        hold_finished_marker(context, job_id);
    }
}

/// Queues `job_id`'s finished marker for the next connection.
fn hold_finished_marker(context: &JobContext, job_id: uuid::Uuid) {
    match control::outgoing(&ControlMessage::Finished { job_id }) {
        Ok(marker) => context.outbox.push([marker]),
        Err(e) => tracing::warn!(error = %e, "cannot hold the finished marker"),
    }
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
    if let Err(e) = settle(&delivery, Settle::Ack).await {
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
