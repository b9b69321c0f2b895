//! The AMQP event sink: publishes a job's events to its reply queue with
//! publisher confirms, so the consumer acks a job only after its result is
//! safely with the broker; and, unless the worker switched it off, a copy
//! of each to the events topic exchange for dashboards (routing key
//! `<service_id>.<job_id>.<kind>`).

use crate::events::{EventSink, SinkError};
use crate::observe::metrics::Metrics;
use buildbot_protocol::amqp::{
    CONTENT_TYPE_JSON, DELIVERY_MODE_PERSISTENT, EVENTS_EXCHANGE, HEADER_ATTEMPT, HEADER_KIND,
    HEADER_SEQ,
};
use buildbot_protocol::{Event, EventBody};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel, Connection};
use std::collections::VecDeque;
use std::sync::Arc;

/// Confirms awaited lazily before the oldest is awaited: enough to keep the
/// channel busy, bounded so a stalled broker applies back-pressure.
const MAX_UNCONFIRMED: usize = 256;

/// Whether every event is also copied to the events exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventsExchange {
    /// Copied: any broker user allowed to bind a queue to the exchange
    /// reads every job's events.
    On,
    /// Reply queues only; the exchange is neither declared nor used.
    Off,
}

/// Where a job's events go.
pub(crate) struct ReplyTarget {
    /// The caller's reply queue; none for a message that named none (its
    /// rejection then goes to the events exchange only, if that is on).
    pub(crate) reply_to: Option<String>,
    /// The job id, as `correlation_id` of every event.
    pub(crate) correlation_id: String,
    /// The job's `service_id`, first word of the events exchange routing
    /// key; `unknown` for a job rejected before it was read.
    pub(crate) service_id: Option<String>,
}

/// Publishes events to one reply queue through the default exchange.
pub(crate) struct ReplySink {
    channel: Channel,
    reply_to: Option<String>,
    correlation_id: String,
    /// `<service_id>.<job_id>.` of the events exchange routing keys; none
    /// when the exchange is off.
    routing_prefix: Option<String>,
    metrics: Arc<Metrics>,
    unconfirmed: VecDeque<(u64, PublisherConfirm)>,
    warned_unroutable: bool,
}

impl ReplySink {
    /// Opens a confirm-mode channel on `connection` for events to `target`,
    /// and to the events exchange when `exchange` is on (it must exist
    /// then: the consumer declares it).
    pub(crate) async fn open(
        connection: &Connection,
        target: ReplyTarget,
        exchange: EventsExchange,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let channel = connection.create_channel().await.map_err(transport)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(transport)?;
        let routing_prefix = (exchange == EventsExchange::On).then(|| routing_prefix(&target));
        Ok(Self {
            channel,
            reply_to: target.reply_to,
            routing_prefix,
            correlation_id: target.correlation_id,
            metrics,
            unconfirmed: VecDeque::new(),
            warned_unroutable: false,
        })
    }

    fn properties(&self, event: &Event) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_KIND.into(),
            AMQPValue::LongString(LongString::from(event.body.kind())),
        );
        headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongUInt(event.attempt));
        let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
        headers.insert(HEADER_SEQ.into(), AMQPValue::LongLongInt(seq));
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_timestamp(u64::try_from(event.timestamp.timestamp()).unwrap_or(0))
            .with_headers(headers);
        // Ids come from the caller and may exceed AMQP's 255-byte short
        // string; such an id is left out rather than truncated or fatal.
        if let Ok(id) = ShortString::try_new(self.correlation_id.as_str()) {
            properties = properties.with_correlation_id(id);
        }
        let message_id = format!("{}/{}/{}", event.job_id, event.attempt, event.seq);
        if let Ok(id) = ShortString::try_new(message_id) {
            properties = properties.with_message_id(id);
        }
        properties
    }

    async fn await_oldest(&mut self) -> Result<(), SinkError> {
        let Some((seq, confirm)) = self.unconfirmed.pop_front() else {
            return Ok(());
        };
        let confirmation = confirm.await.map_err(transport)?;
        if confirmation.is_nack() {
            return Err(SinkError::Refused { seq });
        }
        if let Some(returned) = confirmation.take_message() {
            if !self.warned_unroutable {
                // The caller has not declared its reply queue (or it
                // expired): the build goes on, its events have nowhere to go.
                self.warned_unroutable = true;
                tracing::warn!(
                    reply_to = self.reply_to.as_deref().unwrap_or_default(),
                    job_id = %self.correlation_id,
                    seq,
                    bytes = returned.data.len(),
                    "reply queue does not exist; the broker returned the event, and drops this job's events"
                );
            }
        }
        Ok(())
    }
}

impl EventSink for ReplySink {
    async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| SinkError::Transport(format!("cannot encode event: {e}")))?;
        let properties = self.properties(event);
        if let Some(reply_to) = &self.reply_to {
            let reply = self
                .channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(reply_to.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    properties.clone(),
                )
                .await
                .map_err(transport)?;
            self.unconfirmed.push_back((event.seq, reply));
        }
        // The dashboards' copy: not mandatory, nobody may be listening.
        let routing_key = self
            .routing_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}{}", event.body.kind()));
        if let Some(Ok(routing_key)) = routing_key.map(ShortString::try_new) {
            let copy = self
                .channel
                .basic_publish(
                    ShortString::from(EVENTS_EXCHANGE),
                    routing_key,
                    BasicPublishOptions::default(),
                    &payload,
                    properties,
                )
                .await
                .map_err(transport)?;
            self.unconfirmed.push_back((event.seq, copy));
        }
        if let EventBody::Log(log) = &event.body {
            self.metrics.log_published(log.text.len());
        }
        while self.unconfirmed.len() > MAX_UNCONFIRMED {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        while !self.unconfirmed.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }
}

impl Drop for ReplySink {
    fn drop(&mut self) {
        // Closing is best effort: a channel of a lost connection is gone anyway.
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, ShortString::from("job done")).await;
            });
        }
    }
}

/// `<service_id>.<job_id>.`, the start of `target`'s events exchange
/// routing keys.
fn routing_prefix(target: &ReplyTarget) -> String {
    // A `.` inside the service id would split it into two topic words.
    let service = target
        .service_id
        .as_deref()
        .unwrap_or("unknown")
        .replace('.', "_");
    let job = target.correlation_id.replace('.', "_");
    format!("{service}.{job}.")
}

fn transport(e: lapin::Error) -> SinkError {
    SinkError::Transport(e.to_string())
}
