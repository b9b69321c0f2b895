//! What the worker declares on the broker: the job queue (quorum, delivery
//! limit, dead-letter exchange), the dead-letter exchange and queue, and the
//! events exchange. Declaring is idempotent; a queue that exists with other
//! arguments is a [`ConsumerError::Mismatch`].

use super::connection::broker;
use super::{ConsumerError, Settings};
use buildbot_protocol::amqp::{
    ARG_DEAD_LETTER_EXCHANGE, ARG_DELIVERY_LIMIT, ARG_QUEUE_TYPE, EVENTS_EXCHANGE,
};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Declares a durable exchange (idempotent).
pub(super) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            ShortString::from(name),
            kind,
            options,
            FieldTable::default(),
        )
        .await
}

/// The job queue (quorum, delivery limit, dead-letter exchange), the
/// dead-letter exchange and queue, and the events exchange. Idempotent.
pub(super) async fn declare(channel: &Channel, settings: &Settings) -> Result<(), ConsumerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlx = settings.dead_letter_exchange();
    let dead = settings.dead_letter_queue();
    declare_exchange(channel, &dlx, ExchangeKind::Fanout)
        .await
        .map_err(broker("the dead-letter exchange"))?;
    declare_exchange(channel, EVENTS_EXCHANGE, ExchangeKind::Topic)
        .await
        .map_err(broker("the events exchange"))?;
    channel
        .queue_declare(ShortString::from(dead.as_str()), durable, quorum_args())
        .await
        .map_err(broker("the dead-letter queue"))?;
    channel
        .queue_bind(
            ShortString::from(dead.as_str()),
            ShortString::from(dlx.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("the dead-letter binding"))?;
    let mut args = quorum_args();
    args.insert(
        ShortString::from(ARG_DELIVERY_LIMIT),
        AMQPValue::LongUInt(settings.delivery_limit),
    );
    args.insert(
        ShortString::from(ARG_DEAD_LETTER_EXCHANGE),
        AMQPValue::LongString(LongString::from(dlx.as_str())),
    );
    channel
        .queue_declare(ShortString::from(settings.queue.as_str()), durable, args)
        .await
        .map_err(broker("the job queue"))?;
    Ok(())
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from(ARG_QUEUE_TYPE),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}
