//! How the exchanges and queues of protocol v1 are declared, in one place:
//! RabbitMQ refuses a second declaration whose kind or arguments differ from
//! the first (`PRECONDITION_FAILED`), so the worker and every client must
//! declare them identically.
//!
//! The names and shapes are plain data; with the `client` feature the same
//! declarations are also available as lapin options, argument tables and
//! `declare_*` functions.

use super::{CONTROL_EXCHANGE, EVENTS_EXCHANGE, PARKED_QUEUE_SUFFIX};

/// Suffix of a job queue's dead-letter exchange name.
const DEAD_LETTER_EXCHANGE_SUFFIX: &str = ".dlx";
/// Suffix of a job queue's dead-letter queue name.
const DEAD_LETTER_QUEUE_SUFFIX: &str = ".dead";
/// `x-queue-type` of the job and dead-letter queues: replicated, and the
/// broker counts deliveries (`x-delivery-count`, `x-delivery-limit`).
pub const QUORUM_QUEUE_TYPE: &str = "quorum";

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// Every bound queue gets every message.
    Fanout,
    /// Bindings match the routing key with `*` and `#` patterns.
    Topic,
}

/// A durable exchange of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Exchange name.
    pub name: String,
    /// How it routes.
    pub kind: ExchangeType,
}

impl Exchange {
    /// [`CONTROL_EXCHANGE`]: fanout, so every worker gets every cancel.
    pub fn control() -> Self {
        Self {
            name: CONTROL_EXCHANGE.to_owned(),
            kind: ExchangeType::Fanout,
        }
    }

    /// [`EVENTS_EXCHANGE`]: topic, routing key `<service_id>.<job_id>.<kind>`.
    pub fn events() -> Self {
        Self {
            name: EVENTS_EXCHANGE.to_owned(),
            kind: ExchangeType::Topic,
        }
    }

    /// The fanout exchange that `job_queue` dead-letters to:
    /// `<job_queue>.dlx` (for the default queue,
    /// [`DEAD_LETTER_EXCHANGE`](super::DEAD_LETTER_EXCHANGE)).
    pub fn dead_letter(job_queue: &str) -> Self {
        Self {
            name: format!("{job_queue}{DEAD_LETTER_EXCHANGE_SUFFIX}"),
            kind: ExchangeType::Fanout,
        }
    }
}

/// The queue keeping `job_queue`'s dead-lettered jobs: `<job_queue>.dead`
/// (for the default queue, [`DEAD_LETTER_QUEUE`](super::DEAD_LETTER_QUEUE)).
pub fn dead_letter_queue(job_queue: &str) -> String {
    format!("{job_queue}{DEAD_LETTER_QUEUE_SUFFIX}")
}

/// The queue keeping `job_queue`'s dead-lettered jobs after their final
/// result, credentials masked: `<job_queue>.parked`.
pub fn parked_queue(job_queue: &str) -> String {
    format!("{job_queue}{PARKED_QUEUE_SUFFIX}")
}

/// `x-queue-type` of the cancel stream.
pub const STREAM_QUEUE_TYPE: &str = "stream";

#[cfg(feature = "client")]
pub use self::lapin_forms::*;

/// The declarations as lapin values (feature `client`).
#[cfg(feature = "client")]
mod lapin_forms {
    use super::{dead_letter_queue, Exchange, ExchangeType, QUORUM_QUEUE_TYPE};
    use super::{parked_queue, STREAM_QUEUE_TYPE};
    use crate::amqp::{
        ARG_DEAD_LETTER_EXCHANGE, ARG_DELIVERY_LIMIT, ARG_EXPIRES, ARG_MAX_AGE, ARG_QUEUE_TYPE,
        CANCEL_RETENTION, CANCEL_STREAM, CONTROL_EXCHANGE,
    };
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    use lapin::{Channel, ExchangeKind};

    /// A declaration the broker refused; `what` names the exchange, queue
    /// or binding.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot declare {what}: {source}")]
    pub struct DeclareError {
        /// What was being declared, e.g. "the dead-letter queue".
        pub what: &'static str,
        /// The broker's or connection's error.
        #[source]
        pub source: lapin::Error,
    }

    fn declaring(what: &'static str) -> impl FnOnce(lapin::Error) -> DeclareError {
        move |source| DeclareError { what, source }
    }

    impl Exchange {
        /// The lapin exchange kind.
        pub fn lapin_kind(&self) -> ExchangeKind {
            match self.kind {
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Topic => ExchangeKind::Topic,
            }
        }

        /// Declares the exchange: durable, no arguments. Idempotent.
        pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
            let options = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    ShortString::from(self.name.as_str()),
                    self.lapin_kind(),
                    options,
                    FieldTable::default(),
                )
                .await
        }
    }

    /// Options of every durable queue (job, dead-letter and reply queues).
    pub fn durable_queue_options() -> QueueDeclareOptions {
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        }
    }

    /// Options of a private queue (a worker's control queue, a dashboard's
    /// events queue): server-named, gone with its connection.
    pub fn private_queue_options() -> QueueDeclareOptions {
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        }
    }

    /// Arguments of a quorum queue: `x-queue-type: quorum`.
    pub fn quorum_queue_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from(ARG_QUEUE_TYPE),
            AMQPValue::LongString(LongString::from(QUORUM_QUEUE_TYPE)),
        );
        args
    }

    /// Arguments of the job queue `job_queue`: quorum, dead-lettered to
    /// [`Exchange::dead_letter`] once it was delivered `deliveries` times
    /// (at least once) without an ack.
    pub fn job_queue_arguments(job_queue: &str, deliveries: u32) -> FieldTable {
        let mut args = quorum_queue_arguments();
        // RabbitMQ's `x-delivery-limit` counts the returns allowed before
        // dead-lettering, so a limit of L means L + 1 deliveries.
        args.insert(
            ShortString::from(ARG_DELIVERY_LIMIT),
            AMQPValue::LongUInt(deliveries.saturating_sub(1)),
        );
        args.insert(
            ShortString::from(ARG_DEAD_LETTER_EXCHANGE),
            AMQPValue::LongString(LongString::from(Exchange::dead_letter(job_queue).name)),
        );
        args
    }

    /// Arguments of a reply queue: deleted by the broker after
    /// `expires_ms` milliseconds unused.
    pub fn reply_queue_arguments(expires_ms: i64) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from(ARG_EXPIRES),
            AMQPValue::LongLongInt(expires_ms),
        );
        args
    }

    /// Declares what a worker consuming `job_queue` needs: the dead-letter
    /// exchange, the dead-letter queue and its binding, and the job queue
    /// itself, dead-lettering a job after `deliveries` deliveries.
    /// Idempotent. The events exchange is not among them: a worker that
    /// copies events there declares it ([`Exchange::events`]), one that
    /// does not never needs it.
    pub async fn declare_job_topology(
        channel: &Channel,
        job_queue: &str,
        deliveries: u32,
    ) -> Result<(), DeclareError> {
        let dead_letter = Exchange::dead_letter(job_queue);
        let dead_queue = ShortString::from(dead_letter_queue(job_queue));
        dead_letter
            .declare(channel)
            .await
            .map_err(declaring("the dead-letter exchange"))?;
        channel
            .queue_declare(
                dead_queue.clone(),
                durable_queue_options(),
                quorum_queue_arguments(),
            )
            .await
            .map_err(declaring("the dead-letter queue"))?;
        channel
            .queue_bind(
                dead_queue,
                ShortString::from(dead_letter.name.as_str()),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(declaring("the dead-letter binding"))?;
        channel
            .queue_declare(
                ShortString::from(job_queue),
                durable_queue_options(),
                job_queue_arguments(job_queue, deliveries),
            )
            .await
            .map_err(declaring("the job queue"))?;
        Ok(())
    }

    /// Arguments of the cancel stream: a stream keeping messages for
    /// [`CANCEL_RETENTION`].
    pub fn cancel_stream_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from(ARG_QUEUE_TYPE),
            AMQPValue::LongString(LongString::from(STREAM_QUEUE_TYPE)),
        );
        args.insert(
            ShortString::from(ARG_MAX_AGE),
            AMQPValue::LongString(LongString::from(CANCEL_RETENTION)),
        );
        args
    }

    /// Declares the control exchange and the cancel stream bound to it, so
    /// every cancel published to the exchange is kept. Idempotent.
    pub async fn declare_cancel_stream(channel: &Channel) -> Result<(), DeclareError> {
        Exchange::control()
            .declare(channel)
            .await
            .map_err(declaring("the control exchange"))?;
        channel
            .queue_declare(
                ShortString::from(CANCEL_STREAM),
                durable_queue_options(),
                cancel_stream_arguments(),
            )
            .await
            .map_err(declaring("the cancel stream"))?;
        channel
            .queue_bind(
                ShortString::from(CANCEL_STREAM),
                ShortString::from(CONTROL_EXCHANGE),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(declaring("the cancel stream's binding"))
    }

    /// Declares `job_queue`'s parked queue (quorum; each message carries
    /// its own expiry). Idempotent.
    pub async fn declare_parked_queue(
        channel: &Channel,
        job_queue: &str,
    ) -> Result<(), DeclareError> {
        channel
            .queue_declare(
                ShortString::from(parked_queue(job_queue)),
                durable_queue_options(),
                quorum_queue_arguments(),
            )
            .await
            .map(|_| ())
            .map_err(declaring("the parked queue"))
    }

    /// Declares a private queue bound to `exchange` with `binding_key`,
    /// and returns the queue's server-chosen name: a dashboard's events
    /// queue (`Exchange::events()`, key `app.#`). The exchange must exist;
    /// not declaring it here lets an account that may only read it bind.
    /// The caller consumes the queue.
    pub async fn declare_private_queue(
        channel: &Channel,
        exchange: &Exchange,
        binding_key: ShortString,
    ) -> Result<ShortString, DeclareError> {
        let queue = channel
            .queue_declare(
                ShortString::from(""),
                private_queue_options(),
                FieldTable::default(),
            )
            .await
            .map_err(declaring("the private queue"))?;
        channel
            .queue_bind(
                queue.name().clone(),
                ShortString::from(exchange.name.as_str()),
                binding_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(declaring("the private queue's binding"))?;
        Ok(queue.name().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::{DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, JOB_QUEUE};

    #[test]
    fn default_names_follow_the_job_queue() {
        assert_eq!(Exchange::dead_letter(JOB_QUEUE).name, DEAD_LETTER_EXCHANGE);
        assert_eq!(dead_letter_queue(JOB_QUEUE), DEAD_LETTER_QUEUE);
        assert_eq!(Exchange::control().kind, ExchangeType::Fanout);
        assert_eq!(Exchange::events().kind, ExchangeType::Topic);
    }

    #[cfg(feature = "client")]
    #[test]
    fn job_queue_arguments_match_the_worker_s() {
        use lapin::types::{AMQPValue, LongString, ShortString};
        let args = job_queue_arguments("q", 5);
        let inner = args.inner();
        let get = |key: &str| inner.get(&ShortString::from(key)).cloned();
        assert_eq!(
            get(crate::amqp::ARG_QUEUE_TYPE),
            Some(AMQPValue::LongString(LongString::from("quorum")))
        );
        // 5 deliveries: the first and 4 redeliveries.
        assert_eq!(
            get(crate::amqp::ARG_DELIVERY_LIMIT),
            Some(AMQPValue::LongUInt(4))
        );
        assert_eq!(
            get(crate::amqp::ARG_DEAD_LETTER_EXCHANGE),
            Some(AMQPValue::LongString(LongString::from("q.dlx")))
        );
    }
}
