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

/// One message as published, kept until the broker confirms it, so that
/// a connection lost before the confirm can be followed by the same
/// message on the next one.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    /// Returned by the broker when no queue takes it.
    pub(crate) mandatory: bool,
    /// Shared by an event's reply-queue message and its dashboards' copy.
    pub(crate) payload: Arc<[u8]>,
    pub(crate) properties: BasicProperties,
}

impl Outgoing {
    /// Publishes the message on `channel`; the confirm comes with the
    /// future returned.
    pub(crate) async fn publish(&self, channel: &Channel) -> lapin::Result<PublisherConfirm> {
        channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(self.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: self.mandatory,
                    ..Default::default()
                },
                &self.payload,
                self.properties.clone(),
            )
            .await
    }
}

impl std::fmt::Debug for Outgoing {
    // The payload is an event's text: its size says enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

/// A published event awaiting its confirm.
struct Pending {
    seq: u64,
    confirm: PublisherConfirm,
    message: Outgoing,
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
    /// Published and not yet confirmed, oldest first. Each keeps its
    /// message (at most [`MAX_UNCONFIRMED`] of them) until the confirm.
    unconfirmed: VecDeque<Pending>,
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

    /// Waits for the oldest confirm. A lost connection leaves the event
    /// among the unconfirmed, for [`EventSink::take_unconfirmed`].
    async fn await_oldest(&mut self) -> Result<(), SinkError> {
        let Some(pending) = self.unconfirmed.front_mut() else {
            return Ok(());
        };
        let seq = pending.seq;
        let confirmation = (&mut pending.confirm).await.map_err(transport)?;
        self.unconfirmed.pop_front();
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
        let payload: Arc<[u8]> = serde_json::to_vec(event)
            .map_err(|e| SinkError::Transport(format!("cannot encode event: {e}")))?
            .into();
        let properties = self.properties(event);
        let mut messages = Vec::with_capacity(2);
        if let Some(reply_to) = &self.reply_to {
            messages.push(Outgoing {
                exchange: String::new(),
                routing_key: reply_to.clone(),
                mandatory: true,
                payload: Arc::clone(&payload),
                properties: properties.clone(),
            });
        }
        // The dashboards' copy: not mandatory, nobody may be listening.
        let routing_key = self
            .routing_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}{}", event.body.kind()))
            .filter(|key| ShortString::try_new(key.as_str()).is_ok());
        if let Some(routing_key) = routing_key {
            messages.push(Outgoing {
                exchange: EVENTS_EXCHANGE.to_owned(),
                routing_key,
                mandatory: false,
                payload,
                properties,
            });
        }
        for message in messages {
            let confirm = message.publish(&self.channel).await.map_err(transport)?;
            self.unconfirmed.push_back(Pending {
                seq: event.seq,
                confirm,
                message,
            });
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

    fn take_unconfirmed(&mut self) -> Vec<Outgoing> {
        self.unconfirmed.drain(..).map(|p| p.message).collect()
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
