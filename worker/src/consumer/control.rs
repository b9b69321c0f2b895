//! Control messages: cancels published to the control fanout exchange.
//! Every worker binds a private queue to it, so every worker hears every
//! cancel and stops the job if it runs it.

use super::connection::broker;
use super::running::RunningJobs;
use super::topology::refused;
use super::ConsumerError;
use buildbot_protocol::amqp::topology::{self, Exchange};
use buildbot_protocol::ControlMessage;
use lapin::options::BasicConsumeOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::Channel;

/// A private, exclusive queue bound to the control exchange: every worker
/// receives every cancel.
pub(super) async fn consume(channel: &Channel) -> Result<lapin::Consumer, ConsumerError> {
    let queue =
        topology::declare_private_queue(channel, &Exchange::control(), ShortString::from(""))
            .await
            .map_err(refused)?;
    // Control messages are advisory and have no one to retry them: no acks.
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    channel
        .basic_consume(queue, ShortString::from(""), options, FieldTable::default())
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
