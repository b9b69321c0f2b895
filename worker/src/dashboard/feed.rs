//! The dashboard's AMQP side: a private queue bound to the events
//! exchange (by default `#`: every job), read into the view; and the job queues'
//! depths for the overview. Reconnects with backoff across the brokers.

use super::Shared;
use buildbot_protocol::amqp::brokers::Brokers;
use buildbot_protocol::amqp::topology::{dead_letter_queue, declare_private_queue, Exchange};
use buildbot_protocol::Event;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The job queue's and its dead-letter queue's depths.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct QueueDepths {
    pub(crate) queue: String,
    /// Jobs waiting for a worker.
    pub(crate) ready: Option<u32>,
    /// Workers consuming the queue.
    pub(crate) consumers: Option<u32>,
    /// Jobs dead-lettered and not yet answered.
    pub(crate) dead_lettered: Option<u32>,
    /// Jobs with a start but no result in the view: taken by a worker,
    /// not yet acked.
    pub(crate) running: usize,
}

/// What the feed reads: the events matching `binding_key`, and the depths
/// of `queue`.
pub(crate) struct Follow {
    pub(crate) queue: String,
    pub(crate) binding_key: String,
}

/// Reads events into `shared` until `shutdown`, reconnecting on loss.
pub(crate) async fn run(
    brokers: Brokers,
    follow: Follow,
    shared: Shared,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    loop {
        for broker in brokers.iter() {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = read(broker.url(), &follow, &shared) => outcome,
            };
            match outcome {
                Ok(()) => tracing::warn!(node = %broker, "the events consumer ended; reconnecting"),
                Err(e) => {
                    tracing::warn!(node = %broker, error = %e, "cannot read the events exchange")
                }
            }
            shared.connected(false);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn read(url: &str, follow: &Follow, shared: &Shared) -> Result<(), lapin::Error> {
    let connection = Arc::new(Connection::connect(url, ConnectionProperties::default()).await?);
    let channel = connection.create_channel().await?;
    let key = ShortString::from(follow.binding_key.as_str());
    let private = declare_private_queue(&channel, &Exchange::events(), key)
        .await
        .map_err(|e| e.source)?;
    let mut consumer = channel
        .basic_consume(
            private,
            ShortString::from("dashboard"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(binding_key = %follow.binding_key, "reading the events exchange");
    shared.connected(true);
    let queue = follow.queue.clone();
    let depths = tokio::spawn(poll_depths(Arc::clone(&connection), queue, shared.clone()));
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        delivery.ack(BasicAckOptions::default()).await?;
        match serde_json::from_slice::<Event>(&delivery.data) {
            Ok(event) => shared.apply(delivery.routing_key.as_str(), event),
            Err(e) => tracing::warn!(error = %e, "skipping an event that does not parse"),
        }
    }
    depths.abort();
    Ok(())
}

/// Reads the queues' depths every 2 s (passive declares on their own
/// channel: a missing queue closes it).
async fn poll_depths(connection: Arc<Connection>, queue: String, shared: Shared) {
    loop {
        let depths = QueueDepths {
            queue: queue.clone(),
            ready: None,
            consumers: None,
            dead_lettered: None,
            running: 0,
        };
        let depths = read_depths(&connection, depths).await;
        shared.set_depths(depths);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn read_depths(connection: &Connection, mut depths: QueueDepths) -> QueueDepths {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for (name, dead) in [
        (depths.queue.clone(), false),
        (dead_letter_queue(&depths.queue), true),
    ] {
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let declared = channel
            .queue_declare(ShortString::from(name), passive, FieldTable::default())
            .await;
        if let Ok(found) = declared {
            if dead {
                depths.dead_lettered = Some(found.message_count());
            } else {
                depths.ready = Some(found.message_count());
                depths.consumers = Some(found.consumer_count());
            }
            let _ = channel.close(200, "depth read".into()).await;
        }
    }
    depths
}
