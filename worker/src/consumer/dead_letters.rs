//! Dead-lettered jobs. The broker moves a job to `<queue>.dead` when a
//! worker rejected it as invalid (its `rejected` result is already out), or
//! when it was delivered `--delivery-limit` times without finishing (every
//! worker running it died, lost its connection or hit the drain timeout):
//! then nobody has told the caller. Every worker consumes the dead-letter
//! queue: it publishes that job's final `failed` result, on the reply queue
//! and (when it is on) the events exchange, parks a copy with every credential masked (and
//! an expiry) in `<queue>.parked`, and only then acks. So every job ends
//! with exactly one result its caller can see, and no credential stays in
//! RabbitMQ after its job ended.

use super::connection::broker;
use super::delivery::Envelope;
use super::job::publish_result;
use super::settle::{settle, Settle};
use super::{ConsumerError, JobContext, Settings};
use crate::events::reply::ReplyTarget;
use buildbot_protocol::amqp::topology::{self, dead_letter_queue, parked_queue};
use buildbot_protocol::amqp::{
    CONTENT_TYPE_JSON, DELIVERY_MODE_PERSISTENT, HEADER_FIRST_DEATH_REASON,
};
use buildbot_protocol::parked::parked_body;
use buildbot_protocol::{JobError, JobResult, JobStatus, StepName};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Header on a parked copy: why it was dead-lettered.
const HEADER_DEAD_REASON: &str = "x-buildbot-dead-reason";

/// Declares the parked queue and consumes the dead-letter queue.
pub(super) async fn consume(
    channel: &Channel,
    settings: &Settings,
) -> Result<lapin::Consumer, ConsumerError> {
    topology::declare_parked_queue(channel, &settings.queue)
        .await
        .map_err(super::topology::refused)?;
    channel
        .basic_consume(
            ShortString::from(dead_letter_queue(&settings.queue)),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the dead-letter consumer"))
}

/// Why the broker dead-lettered a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Death {
    /// A worker rejected it as invalid and already published `rejected`.
    Rejected,
    /// Delivered the limit's number of times without finishing.
    DeliveryLimit,
    /// Any other reason the broker gives (`expired`, `maxlen`, ...).
    Other(String),
}

impl Death {
    fn of(properties: &BasicProperties) -> Self {
        let reason = properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(HEADER_FIRST_DEATH_REASON))
            .and_then(|value| match value {
                AMQPValue::LongString(text) => Some(text.to_string()),
                AMQPValue::ShortString(text) => Some(text.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        match reason.as_str() {
            "rejected" => Death::Rejected,
            "delivery_limit" => Death::DeliveryLimit,
            _ => Death::Other(reason),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Death::Rejected => "rejected",
            Death::DeliveryLimit => "delivery_limit",
            Death::Other(reason) => reason,
        }
    }
}

/// Handles one dead-lettered message: its final result unless it already
/// had one, its parked copy, then the ack. Anything that fails puts it
/// back, for this or another worker to try again.
pub(super) async fn handle(mut delivery: Delivery, context: Arc<JobContext>) {
    let death = Death::of(&delivery.properties);
    let job_id = Envelope::of(&delivery.properties, delivery.redelivered).job_id;
    // The body holds the job's credentials in clear: zeroed once parked.
    let body = Zeroizing::new(std::mem::take(&mut delivery.data));
    let outcome = async {
        if death != Death::Rejected {
            final_result(&delivery, &death, &job_id, &context).await?;
        }
        park(&delivery, &body, &death, &context).await
    }
    .await;
    drop(body);
    match outcome {
        Ok(()) => {
            tracing::warn!(%job_id, reason = death.as_str(), "dead-lettered job parked without credentials");
            if let Err(e) = settle(&delivery, Settle::Ack).await {
                tracing::warn!(error = %e, "cannot ack a dead-lettered job; it comes back");
            }
        }
        Err(e) => {
            tracing::warn!(%job_id, error = %e, "cannot finish a dead-lettered job; it goes back to the dead-letter queue");
            let _ = settle(&delivery, Settle::Requeue).await;
        }
    }
}

/// Publishes the `failed` result of a job no worker finished, as the
/// attempt after its last delivery.
async fn final_result(
    delivery: &Delivery,
    death: &Death,
    job_id: &str,
    context: &JobContext,
) -> Result<(), String> {
    let deliveries = context.settings.delivery_limit;
    let message = match death {
        Death::DeliveryLimit => format!(
            "dead-lettered after {deliveries} deliveries: every worker that took the job \
             stopped before finishing it (crash, lost connection or drain timeout); \
             a copy without credentials is parked in {}",
            parked_queue(&context.settings.queue)
        ),
        other => format!(
            "dead-lettered by the broker ({}): the job was not run; a copy without \
             credentials is parked in {}",
            other.as_str(),
            parked_queue(&context.settings.queue)
        ),
    };
    let result = JobResult::new(JobStatus::Failed, context.pipeline.worker_id())
        .with_error(JobError::new(StepName::Queue, message));
    context.metrics.job_finished(&result);
    let target = ReplyTarget {
        reply_to: delivery
            .properties
            .reply_to()
            .as_ref()
            .map(ToString::to_string),
        correlation_id: job_id.to_owned(),
        service_id: None,
    };
    publish_result(context, target, deliveries.saturating_add(1), result).await
}

/// Publishes the masked copy of `body` to the parked queue, confirmed.
async fn park(
    delivery: &Delivery,
    body: &[u8],
    death: &Death,
    context: &JobContext,
) -> Result<(), String> {
    let connection = context.pool.get().await.map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let confirmation = channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(parked_queue(&context.settings.queue)),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &parked_body(body),
            parked_properties(&delivery.properties, death, context),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let _ = channel.close(200, ShortString::from("parked")).await;
    if confirmation.is_ack() && confirmation.take_message().is_none() {
        Ok(())
    } else {
        Err("the broker did not take the parked copy".into())
    }
}

/// The ids of the original, the reason, and the expiry.
fn parked_properties(
    original: &BasicProperties,
    death: &Death,
    context: &JobContext,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(HEADER_DEAD_REASON),
        AMQPValue::LongString(LongString::from(death.as_str())),
    );
    let expiration = context.settings.parked_ttl.as_millis().to_string();
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
        .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
        .with_expiration(ShortString::from(expiration))
        .with_headers(headers);
    if let Some(id) = original.correlation_id() {
        properties = properties.with_correlation_id(id.clone());
    }
    if let Some(id) = original.message_id() {
        properties = properties.with_message_id(id.clone());
    }
    properties
}
