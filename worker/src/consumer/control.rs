//! Control messages: cancels published to the control fanout exchange.
//! Every worker binds a private queue to it, so every worker hears every
//! cancel and stops the job if it runs it.

use super::connection::broker;
use super::running::RunningJobs;
use super::topology::declare_exchange;
use super::ConsumerError;
use buildbot_protocol::amqp::CONTROL_EXCHANGE;
use buildbot_protocol::ControlMessage;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// A private, exclusive queue bound to the control exchange: every worker
/// receives every cancel.
pub(super) async fn consume(channel: &Channel) -> Result<lapin::Consumer, ConsumerError> {
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

pub(super) fn on_message(data: &[u8], jobs: &RunningJobs) {
    match serde_json::from_slice::<ControlMessage>(data) {
        Ok(ControlMessage::Cancel { job_id }) => {
            let running = jobs.cancel(&job_id.to_string());
            tracing::info!(%job_id, running_here = running, "cancel received");
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable control message"),
    }
}
