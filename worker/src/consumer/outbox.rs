//! Messages a lost connection kept from the broker, published first thing
//! on the next connection, before any job is taken: a job's last events
//! (its result among them) whose confirms died with a broker node, sent
//! again as they were (same `seq`, same message id, so a copy that did
//! arrive reads as the same event), and the finished marker that keeps
//! every worker from running the job's redelivery.
//!
//! It outlives connections; the job task that lost its connection cannot
//! open the next one, since the consumer reconnects only once every job
//! task of the lost connection has ended.

use super::connection::broker;
use super::ConsumerError;
use crate::events::reply::Outgoing;
use lapin::options::ConfirmSelectOptions;
use lapin::types::ShortString;
use lapin::Connection;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Messages waiting for a connection, oldest first.
#[derive(Clone, Default)]
pub(super) struct Outbox(Arc<Mutex<VecDeque<Outgoing>>>);

impl Outbox {
    /// Queues `messages`, in order, for the next connection.
    pub(super) fn push(&self, messages: impl IntoIterator<Item = Outgoing>) {
        self.lock().extend(messages);
    }

    /// Publishes every queued message on `connection`, in order, and waits
    /// for the broker's confirms; returns how many. On failure every
    /// message goes back, for the next connection: one that did arrive
    /// arrives again, as the same message.
    pub(super) async fn publish(&self, connection: &Connection) -> Result<usize, ConsumerError> {
        let messages: Vec<Outgoing> = self.lock().drain(..).collect();
        if messages.is_empty() {
            return Ok(0);
        }
        match publish_confirmed(connection, &messages).await {
            Ok(()) => Ok(messages.len()),
            Err(e) => {
                let mut queued = self.lock();
                for message in messages.into_iter().rev() {
                    queued.push_front(message);
                }
                Err(e)
            }
        }
    }

    /// Says so when the worker stops with messages no connection took:
    /// their jobs may be reported again, or their callers miss a result.
    pub(super) fn warn_unsent(&self) {
        let unsent = self.lock().len();
        if unsent > 0 {
            tracing::warn!(messages = unsent, "stopping with messages for RabbitMQ that no connection took (results or finished markers of jobs whose connection was lost)");
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        // A panic while holding the lock leaves a valid queue.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Publishes `messages` in order on a channel of their own and waits for
/// the broker's confirm of each.
pub(super) async fn publish_confirmed(
    connection: &Connection,
    messages: &[Outgoing],
) -> Result<(), ConsumerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("a channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker("publisher confirms"))?;
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = message
            .publish(&channel)
            .await
            .map_err(broker("a message"))?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm.await.map_err(broker("a message's confirm"))?;
        if confirmation.is_nack() {
            return Err(ConsumerError::Lost("the broker refused a message".into()));
        }
    }
    let _ = channel.close(200, ShortString::from("done")).await;
    Ok(())
}
