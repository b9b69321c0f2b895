//! Control messages: cancels published to the control fanout exchange,
//! which keeps them in the cancel stream. Every worker reads the whole
//! stream when it connects (so a cancel sent while no worker ran is still
//! honoured), then follows it live: every worker hears every cancel and
//! stops the job if it runs it, or skips it when it is delivered later.

use super::admission::{unix_now, AdmittedNonces};
use super::connection::broker;
use super::outbox::publish_confirmed;
use super::running::RunningJobs;
use super::settle::{settle, Settle};
use super::topology::refused;
use super::ConsumerError;
use crate::events::reply::Outgoing;
use buildbot_protocol::amqp::topology::{self, Exchange};
use buildbot_protocol::amqp::{ARG_STREAM_OFFSET, CANCEL_STREAM, CONTENT_TYPE_JSON};
use buildbot_protocol::signature::VerifyingKey;
use buildbot_protocol::ControlMessage;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use std::time::Duration;
use uuid::Uuid;

/// Stream messages in flight to this worker at once (a stream consumer
/// must have a prefetch).
const STREAM_PREFETCH: u16 = 256;

/// How long reading the stream up to this worker's checkpoint may take
/// before the worker takes jobs anyway (and says so).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// The cancel stream, read from its start up to a checkpoint this worker
/// publishes, so that every cancel sent before now is known before any job
/// is taken. Returns the consumer, which then follows the stream live.
pub(super) async fn catch_up(
    connection: &Connection,
    listeners: &Listeners<'_>,
) -> Result<lapin::Consumer, ConsumerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("a control channel"))?;
    topology::declare_cancel_stream(&channel)
        .await
        .map_err(refused)?;
    channel
        .basic_qos(STREAM_PREFETCH, BasicQosOptions::default())
        .await
        .map_err(broker("the cancel stream's prefetch"))?;
    let mut stream = consume_from_start(&channel).await?;
    let token = Uuid::new_v4();
    publish_checkpoint(&channel, token).await?;
    let read = tokio::time::timeout(CATCH_UP_LIMIT, async {
        let mut cancels = 0_usize;
        while let Some(delivery) = stream.next().await {
            let delivery = delivery.map_err(|e| ConsumerError::Lost(e.to_string()))?;
            match on_delivery(&delivery, listeners).await {
                Some(ControlMessage::Checkpoint { token: seen }) if seen == token => {
                    return Ok(cancels)
                }
                Some(ControlMessage::Cancel { .. }) => cancels += 1,
                _ => {}
            }
        }
        Err(ConsumerError::Lost(
            "the broker cancelled the cancel stream consumer".into(),
        ))
    })
    .await;
    match read {
        Ok(Ok(cancels)) => tracing::info!(cancels, "read the cancel stream"),
        Ok(Err(e)) => return Err(e),
        Err(_) => tracing::warn!(
            limit = ?CATCH_UP_LIMIT,
            "the cancel stream was not read to its end in time; taking jobs anyway"
        ),
    }
    Ok(stream)
}

async fn consume_from_start(channel: &Channel) -> Result<lapin::Consumer, ConsumerError> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from(ARG_STREAM_OFFSET),
        AMQPValue::LongString(LongString::from("first")),
    );
    channel
        .basic_consume(
            ShortString::from(CANCEL_STREAM),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        // A stream is read from its replica on the node connected to.
        // Right after a node is lost, the one reached may have none
        // running yet and refuses with PRECONDITION_FAILED: unlike a
        // declare's, that is no settings mismatch, and the next node (or
        // a moment) helps, so it is never fatal.
        .map_err(|e| ConsumerError::Broker {
            what: "the cancel stream consumer".to_owned(),
            message: e.to_string(),
        })
}

/// Appends this start's checkpoint to the stream (through the control
/// exchange, like every cancel, so it lands after every earlier one).
async fn publish_checkpoint(channel: &Channel, token: Uuid) -> Result<(), ConsumerError> {
    publish_on(channel, &ControlMessage::Checkpoint { token }).await
}

/// Publishes `message` to every worker (and the stream), on a channel of
/// its own, and waits for the broker's confirm.
pub(super) async fn publish(
    connection: &Connection,
    message: &ControlMessage,
) -> Result<(), ConsumerError> {
    publish_confirmed(connection, &[outgoing(message)?]).await
}

async fn publish_on(channel: &Channel, message: &ControlMessage) -> Result<(), ConsumerError> {
    outgoing(message)?
        .publish(channel)
        .await
        .map_err(broker("a control message"))?
        .await
        .map_err(broker("a control message's confirm"))?;
    Ok(())
}

/// `message` as published to every worker through the control exchange.
pub(super) fn outgoing(message: &ControlMessage) -> Result<Outgoing, ConsumerError> {
    let payload = serde_json::to_vec(message)
        .map_err(|e| ConsumerError::Connect(format!("cannot encode a control message: {e}")))?;
    Ok(Outgoing {
        exchange: Exchange::control().name,
        routing_key: String::new(),
        mandatory: false,
        payload: payload.into(),
        properties: BasicProperties::default().with_content_type(CONTENT_TYPE_JSON.into()),
    })
}

/// What applying a stream message needs: the jobs a cancel stops, the
/// nonces an admission adds to, and the keys a cancel must be signed with
/// (none: any cancel is applied).
pub(super) struct Listeners<'a> {
    pub(super) jobs: &'a RunningJobs,
    pub(super) nonces: &'a AdmittedNonces,
    pub(super) trusted_keys: &'a [VerifyingKey],
}

/// Applies one stream message and acks it (a stream ack only returns
/// credit); returns what it was.
pub(super) async fn on_delivery(
    delivery: &Delivery,
    listeners: &Listeners<'_>,
) -> Option<ControlMessage> {
    let message = on_message(&delivery.data, listeners);
    if let Err(e) = settle(delivery, Settle::Ack).await {
        tracing::warn!(error = %e, "cannot ack a cancel stream message");
    }
    message
}

fn on_message(data: &[u8], listeners: &Listeners<'_>) -> Option<ControlMessage> {
    let message = match serde_json::from_slice::<ControlMessage>(data) {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!(error = %e, bytes = data.len(), "ignoring an unreadable control message");
            return None;
        }
    };
    match &message {
        ControlMessage::Cancel { job_id, .. } => {
            if !listeners.trusted_keys.is_empty() {
                if let Err(e) = message.verify_cancel(listeners.trusted_keys) {
                    tracing::warn!(%job_id, error = %e, "ignoring a cancel no trusted key signed");
                    return None;
                }
            }
            if listeners.jobs.cancel(&job_id.to_string()) {
                tracing::info!(%job_id, "cancel received for a job running here");
            } else {
                tracing::debug!(%job_id, "cancel received");
            }
        }
        ControlMessage::Admitted {
            nonce,
            expires_at,
            finished,
        } => {
            let nonces = listeners.nonces;
            nonces.remember(nonce, *expires_at, *finished, unix_now());
        }
        ControlMessage::Finished { job_id } => listeners.jobs.finished(&job_id.to_string()),
        ControlMessage::Released { job_id, attempt } => {
            listeners.jobs.released(&job_id.to_string(), *attempt);
        }
        ControlMessage::Checkpoint { .. } => {}
    }
    Some(message)
}
