//! What the worker declares on the broker: the job queue (quorum, delivery
//! limit, dead-letter exchange), the dead-letter exchange and queue, and the
//! events exchange when the worker copies events to it, as the protocol's
//! topology describes them (the client
//! declares the same, so the two never disagree). Declaring is idempotent;
//! a queue that exists with other arguments is a
//! [`ConsumerError::Mismatch`].

use super::connection::broker;
use super::{ConsumerError, Settings};
use crate::events::reply::EventsExchange;
use buildbot_protocol::amqp::topology::{self, DeclareError, Exchange};
use lapin::Channel;

/// Declares the job queue and everything around it.
pub(super) async fn declare(channel: &Channel, settings: &Settings) -> Result<(), ConsumerError> {
    topology::declare_job_topology(channel, &settings.queue, settings.delivery_limit)
        .await
        .map_err(refused)?;
    // Off, the exchange is left alone: a broker account without rights
    // on it is enough.
    if settings.events_exchange == EventsExchange::On {
        Exchange::events()
            .declare(channel)
            .await
            .map_err(broker("the events exchange"))?;
    }
    Ok(())
}

/// A refused declaration as the consumer's error, told apart by kind.
pub(super) fn refused(e: DeclareError) -> ConsumerError {
    broker(e.what)(e.source)
}
