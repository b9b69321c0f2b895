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
    if delivery.redelivered && finished_elsewhere(context, &job_id, attempt).await {
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
            give_back(context, &delivery, job.job_id, attempt).await;
            return;
        }
    };
    let attempt_id = AttemptId {
        job_id: job_id.clone(),
        attempt,
    };
    tracing::info!(repo = %job.repo.url, revision = %job.repo.revision, "job started");
    let (reporter, finisher) = events::start(
        sink,
        attempt_id,
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
        give_back(context, &delivery, job.job_id, attempt).await;
        return;
    };
    context.metrics.job_finished(&result);
    match finisher.finish(result).await {
        Ok(published) => {
            let error = published.error.as_ref().map(|e| e.message.as_str());
            tracing::info!(status = ?published.status, last_seq = published.last_seq, error, "job finished");
            // The ack first: the job's prefetch slot is free for the next
            // delivery a round trip sooner. Should the broker lose the ack
            // (its node going down), the redelivery waits for the marker
            // published next (REDELIVERY_GRACE), from the outbox if this
            // connection is gone too.
            if let Err(e) = settle(&delivery, Settle::Ack).await {
                tracing::warn!(error = %e, "ack failed; the broker will redeliver the job");
            }
            if let Some(admission) = &admission {
                admit(context, admission, true).await;
            }
            announce_finished(context, job.job_id).await;
        }
        Err(events::SinkError::Unconfirmed { reason, resend }) => {
            // The delivery died with the connection: its redelivery is
            // dropped as finished, once the marker is out.
            tracing::warn!(%reason, events = resend.len(), "connection lost before the result was confirmed; it is sent again, as the same events, on the next connection");
            context.outbox.push(resend);
            hold(context, &ControlMessage::Finished { job_id: job.job_id });
        }
        Err(e) => {
            tracing::warn!(error = %e, "result not confirmed; requeueing the job");
            give_back(context, &delivery, job.job_id, attempt).await;
        }
    }
}

/// How long a redelivered job waits for word from its previous attempt
/// before it runs again. A result published just as a broker node died
/// is followed by its finished marker only once its worker reconnected
/// (a second or two), while the job's redelivery may reach another worker
/// at once. A worker that gives a job back says so (`released`), which
/// ends the wait; a job whose worker died waits this long.
const REDELIVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `job_id`, delivered again as attempt `attempt`, already
/// finished: known here, or announced by another worker before the
/// previous attempt is known to have been given back or
/// [`REDELIVERY_GRACE`] passed.
async fn finished_elsewhere(context: &JobContext, job_id: &str, attempt: u32) -> bool {
    let deadline = tokio::time::Instant::now() + REDELIVERY_GRACE;
    loop {
        if context.jobs.is_finished(job_id) {
            return true;
        }
        let previous = attempt.saturating_sub(1);
        if context.jobs.is_released(job_id, previous) || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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

/// Gives attempt `attempt` of `job_id` back without a result: says so to
/// every worker (now, or on the next connection), so its redelivery runs
/// at once, then requeues it.
async fn give_back(context: &JobContext, delivery: &Delivery, job_id: uuid::Uuid, attempt: u32) {
    announce(context, &ControlMessage::Released { job_id, attempt }).await;
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
/// on every worker: should the broker lose the ack, the redelivery is
/// dropped, not run a second time. A marker that cannot be published now
/// goes out first thing on the next connection.
async fn announce_finished(context: &JobContext, job_id: uuid::Uuid) {
    context.jobs.finished(&job_id.to_string());
    announce(context, &ControlMessage::Finished { job_id }).await;
}

/// Publishes a control `message` to every worker now, or, when this
/// connection cannot, first thing on the next one.
async fn announce(context: &JobContext, message: &ControlMessage) {
    if let Err(e) = publish_control(&context.pool, message).await {
        tracing::warn!(error = %e, "could not publish a control message; it goes out on the next connection");
        hold(context, message);
    }
}

/// Queues a control `message` for the next connection.
fn hold(context: &JobContext, message: &ControlMessage) {
    match control::outgoing(message) {
        Ok(outgoing) => context.outbox.push([outgoing]),
        Err(e) => tracing::warn!(error = %e, "cannot hold a control message"),
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
