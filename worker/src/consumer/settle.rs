//! Acks, nacks and rejects, bounded in time. On a live connection each
//! takes milliseconds; on one that just died lapin may never answer, and a
//! job task waiting for it would keep the consumer from reconnecting (it
//! reconnects once every task of the lost connection has ended). A
//! delivery left unsettled is redelivered by the broker anyway.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use std::time::Duration;

/// How long settling one delivery may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// What becomes of a delivery.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    /// Done with: the broker forgets it.
    Ack,
    /// Back to the queue, for this or another consumer.
    Requeue,
    /// Dead-lettered (or dropped, with no dead-letter exchange).
    Reject,
}

/// Settles `delivery` as `how`; an error says why it may not have been.
pub(super) async fn settle(delivery: &Delivery, how: Settle) -> Result<(), String> {
    let sent = async {
        match how {
            Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                let options = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(options).await
            }
            Settle::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
        }
    };
    match tokio::time::timeout(SETTLE_LIMIT, sent).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {SETTLE_LIMIT:?}")),
    }
}
