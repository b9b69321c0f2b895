//! What the worker declares on the broker: the job queue (quorum, delivery
//! limit, dead-letter exchange), the dead-letter exchange and queue, and the
//! events exchange, as the protocol's topology describes them (the client
//! declares the same, so the two never disagree). Declaring is idempotent;
//! a queue that exists with other arguments is a
//! [`ConsumerError::Mismatch`].

use super::connection::broker;
use super::{ConsumerError, Settings};
use buildbot_protocol::amqp::topology::{self, DeclareError};
use lapin::Channel;

/// Declares the job queue and everything around it.
pub(super) async fn declare(channel: &Channel, settings: &Settings) -> Result<(), ConsumerError> {
    topology::declare_job_topology(channel, &settings.queue, settings.delivery_limit)
        .await
        .map_err(refused)
}

/// A refused declaration as the consumer's error, told apart by kind.
pub(super) fn refused(e: DeclareError) -> ConsumerError {
    broker(e.what)(e.source)
}
