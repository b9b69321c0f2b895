//! The AMQP event sink: publishes a job's events to its reply queue with
//! publisher confirms, so the consumer acks a job only after its result is
//! safely with the broker.

use crate::events::{EventSink, SinkError};
use buildbot_protocol::amqp::{CONTENT_TYPE_JSON, HEADER_ATTEMPT, HEADER_KIND, HEADER_SEQ};
use buildbot_protocol::Event;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel, Connection};
use std::collections::VecDeque;

/// Confirms awaited lazily before the oldest is awaited: enough to keep the
/// channel busy, bounded so a stalled broker applies back-pressure.
const MAX_UNCONFIRMED: usize = 256;

/// AMQP delivery mode of messages that survive a broker restart.
const PERSISTENT: u8 = 2;

/// Publishes events to one reply queue through the default exchange.
pub struct ReplySink {
    channel: Channel,
    reply_to: String,
    correlation_id: String,
    unconfirmed: VecDeque<(u64, PublisherConfirm)>,
    warned_unroutable: bool,
}

impl ReplySink {
    /// Opens a confirm-mode channel on `connection` for events of the job
    /// `correlation_id`, to be published to `reply_to`.
    pub async fn open(
        connection: &Connection,
        reply_to: String,
        correlation_id: String,
    ) -> Result<Self, SinkError> {
        let channel = connection.create_channel().await.map_err(transport)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(transport)?;
        Ok(Self {
            channel,
            reply_to,
            correlation_id,
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
            .with_delivery_mode(PERSISTENT)
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
        if confirmation.take_message().is_some() && !self.warned_unroutable {
            // The caller has not declared its reply queue (or it expired):
            // the build goes on, its events have nowhere to go.
            self.warned_unroutable = true;
            tracing::warn!(reply_to = %self.reply_to, "reply queue does not exist; events are dropped by the broker");
        }
        Ok(())
    }
}

impl EventSink for ReplySink {
    async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| SinkError::Transport(format!("cannot encode event: {e}")))?;
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.reply_to.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                self.properties(event),
            )
            .await
            .map_err(transport)?;
        self.unconfirmed.push_back((event.seq, confirm));
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

fn transport(e: lapin::Error) -> SinkError {
    SinkError::Transport(e.to_string())
}
