//! The orchestrator's side of the protocol over RabbitMQ (feature `client`).
//!
//! Owns what a caller does: declare its reply queue before publishing
//! (non-exclusive, durable, expiring when unused), publish a job with
//! publisher confirms and `mandatory` so a missing job queue is an error,
//! and read typed events until the result. The worker never uses this.

use crate::amqp::brokers::Brokers;
use crate::amqp::topology::{
    self as topology, declare_private_queue, durable_queue_options, reply_queue_arguments,
    DeclareError, Exchange,
};
use crate::amqp::{CONTENT_TYPE_JSON, DELIVERY_MODE_PERSISTENT};
use crate::signature::{sign_job, SigningKey};
use crate::SignedEnvelope;
use crate::{ControlMessage, Event, EventBody, Job, JobResult};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Milliseconds an unused reply queue lives before the broker deletes it:
/// long enough to reconnect and resume reading, short enough that callers
/// that vanish leave nothing behind.
pub const REPLY_QUEUE_EXPIRES_MS: i64 = 30 * 60 * 1000;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker connection or channel failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused to declare an exchange or queue.
    #[error("RabbitMQ: {0}")]
    Declare(#[from] DeclareError),
    /// The broker answered the publish with a nack.
    #[error("the broker refused the job (publisher nack)")]
    Refused,
    /// Nothing is bound to the queue the job was published to.
    #[error("queue {0:?} does not exist: start a worker first, it declares the job queue")]
    NoSuchQueue(String),
    /// AMQP names are short strings (at most 255 bytes).
    #[error("{what} is longer than 255 bytes")]
    NameTooLong {
        /// Which name.
        what: &'static str,
    },
    /// The job could not be serialised.
    #[error("cannot encode the job: {0}")]
    Encode(#[from] serde_json::Error),
    /// The job could not be signed (it is not a JSON object).
    #[error(transparent)]
    Sign(#[from] crate::signature::SignatureError),
    /// No node of a [`Brokers`] list accepted a connection; each node
    /// (`host:port`, never the URL) and why.
    #[error("no RabbitMQ node answered: {0}")]
    Unreachable(String),
    /// A message on the reply queue is not a protocol v1 event.
    #[error("a message on the reply queue is not an event: {0}")]
    BadEvent(serde_json::Error),
}

/// Message counts of a queue, from a passive declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery.
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// A connection to RabbitMQ with a confirm-mode channel.
pub struct Client {
    connection: Connection,
    channel: Channel,
}

/// The reply queue name this client uses for a job: `buildbot.reply.<job_id>`.
pub fn reply_queue_name(job: &Job) -> String {
    format!("buildbot.reply.{}", job.job_id)
}

fn short(value: &str, what: &'static str) -> Result<ShortString, ClientError> {
    ShortString::try_new(value.to_owned()).map_err(|_| ClientError::NameTooLong { what })
}

impl Client {
    /// Connects to RabbitMQ at `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Connects to the first node of `brokers` that accepts, trying them
    /// in order (the nodes of one cluster, which share every queue). A
    /// node that takes no TCP connection is given up after the system's
    /// connect timeout, or the URL's `connection_timeout` (milliseconds).
    /// A client does not move to another node by itself once connected:
    /// after a lost connection, connect again and call
    /// [`Client::reply_queue`] to read on.
    pub async fn connect_any(brokers: &Brokers) -> Result<Self, ClientError> {
        let mut refusals = Vec::new();
        for broker in brokers.iter() {
            match Self::connect(broker.url()).await {
                Ok(client) => return Ok(client),
                Err(e) => refusals.push(format!("{broker}: {e}")),
            }
        }
        Err(ClientError::Unreachable(refusals.join("; ")))
    }

    /// Declares the job's reply queue, publishes the job to `queue` and
    /// returns its events. The queue is declared first so no event is lost.
    pub async fn submit(&self, queue: &str, job: &Job) -> Result<Events, ClientError> {
        let reply_to = reply_queue_name(job);
        let events = self.reply_queue(&reply_to).await?;
        let body = serde_json::to_vec(job)?;
        let job_id = job.job_id.to_string();
        self.publish(queue, &body, &job_id, Some(&reply_to)).await?;
        Ok(events)
    }

    /// [`Client::submit`] for workers with trusted keys: the job gets an
    /// envelope binding it to `queue` and its reply queue, valid from now
    /// for `valid_for`, with a fresh nonce, and is signed with `key`.
    pub async fn submit_signed(
        &self,
        queue: &str,
        job: &Job,
        key: &SigningKey,
        valid_for: Duration,
    ) -> Result<Events, ClientError> {
        let reply_to = reply_queue_name(job);
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let envelope = SignedEnvelope::new(issued_at, valid_for.as_secs(), queue, &reply_to);
        let job = job.clone().with_envelope(envelope);
        let signed = sign_job(&serde_json::to_value(&job)?, key)?;
        let events = self.reply_queue(&reply_to).await?;
        let body = serde_json::to_vec(&signed)?;
        let job_id = job.job_id.to_string();
        self.publish(queue, &body, &job_id, Some(&reply_to)).await?;
        Ok(events)
    }

    /// Declares the reply queue `name` (durable, non-exclusive so a caller
    /// can reconnect, expiring after [`REPLY_QUEUE_EXPIRES_MS`] unused) and
    /// starts reading it.
    pub async fn reply_queue(&self, name: &str) -> Result<Events, ClientError> {
        let name = short(name, "reply queue name")?;
        self.channel
            .queue_declare(
                name.clone(),
                durable_queue_options(),
                reply_queue_arguments(REPLY_QUEUE_EXPIRES_MS),
            )
            .await?;
        let consumer = self
            .channel
            .basic_consume(
                name,
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Events::new(consumer))
    }

    /// Publishes raw bytes as a job message: persistent, `message_id` and
    /// `correlation_id` set to `job_id`, `reply_to` when given. Waits for the
    /// broker's confirm. Raw so callers (and tests) can send any body.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        job_id: &str,
        reply_to: Option<&str>,
    ) -> Result<(), ClientError> {
        let id = short(job_id, "job id")?;
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE_JSON.into())
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_message_id(id.clone())
            .with_correlation_id(id);
        if let Some(reply_to) = reply_to {
            properties = properties.with_reply_to(short(reply_to, "reply queue name")?);
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirmation = self
            .channel
            .basic_publish(
                ShortString::from(""),
                short(queue, "queue name")?,
                options,
                body,
                properties,
            )
            .await?
            .await?;
        if !confirmation.is_ack() {
            return Err(ClientError::Refused);
        }
        if confirmation.take_message().is_some() {
            return Err(ClientError::NoSuchQueue(queue.to_owned()));
        }
        Ok(())
    }

    /// Watches every worker's events on the events topic exchange through a
    /// private queue bound with `binding_key`, e.g. `billing-api.#` for one
    /// service or `#` for everything (routing key
    /// `<service_id>.<job_id>.<kind>`, dots in ids replaced by `_`). For
    /// dashboards: the caller's reply queues are not touched. Declares the
    /// events exchange as the worker does when it does not exist yet, so
    /// watching may start first; an account that may only bind to it and
    /// read (a dashboard's) needs it to exist.
    pub async fn watch_events(&self, binding_key: &str) -> Result<Events, ClientError> {
        let binding_key = short(binding_key, "binding key")?;
        let events = Exchange::events();
        self.ensure_exchange(&events).await?;
        let queue = declare_private_queue(&self.channel, &events, binding_key).await?;
        let consumer = self
            .channel
            .basic_consume(
                queue,
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Events::new(consumer))
    }

    /// Declares `exchange` unless it exists. Declaring takes the configure
    /// permission, which also allows deleting it; looking it up (a passive
    /// declare) takes none.
    async fn ensure_exchange(&self, exchange: &Exchange) -> Result<(), ClientError> {
        // A passive declare of a missing exchange closes its channel, so
        // the lookup gets a channel of its own.
        let probe = self.connection.create_channel().await?;
        let options = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let name = ShortString::from(exchange.name.as_str());
        let found = probe
            .exchange_declare(name, exchange.lapin_kind(), options, FieldTable::default())
            .await;
        if found.is_ok() {
            let _ = probe.close(200, "probe done".into()).await;
            return Ok(());
        }
        exchange
            .declare(&self.channel)
            .await
            .map_err(|source| DeclareError {
                what: "the exchange",
                source,
            })?;
        Ok(())
    }

    /// Asks every worker to cancel job `job_id`: the one running it stops
    /// and reports `cancelled`; one that receives it later does not run it.
    /// Workers with trusted keys ignore it: use [`Client::cancel_signed`].
    pub async fn cancel(&self, job_id: Uuid) -> Result<(), ClientError> {
        self.publish_control(&ControlMessage::cancel(job_id)).await
    }

    /// [`Client::cancel`], signed with `key` for workers with trusted keys.
    pub async fn cancel_signed(&self, job_id: Uuid, key: &SigningKey) -> Result<(), ClientError> {
        self.publish_control(&ControlMessage::signed_cancel(job_id, key))
            .await
    }

    async fn publish_control(&self, message: &ControlMessage) -> Result<(), ClientError> {
        // Kept by the cancel stream: a worker started later still reads it.
        topology::declare_cancel_stream(&self.channel).await?;
        let exchange = ShortString::from(Exchange::control().name);
        let body = serde_json::to_vec(message)?;
        let properties = BasicProperties::default().with_content_type(CONTENT_TYPE_JSON.into());
        let confirmation = self
            .channel
            .basic_publish(
                exchange,
                ShortString::from(""),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?
            .await?;
        if !confirmation.is_ack() {
            return Err(ClientError::Refused);
        }
        Ok(())
    }

    /// Deletes `queue` and the messages in it (a reply queue read to its
    /// end, say). Deleting a queue that does not exist succeeds.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), ClientError> {
        self.channel
            .queue_delete(short(queue, "queue name")?, QueueDeleteOptions::default())
            .await?;
        Ok(())
    }

    /// Takes the next message of `queue` (e.g. a parked job, to inspect
    /// it), acked; `None` when the queue is empty.
    pub async fn take_message(&self, queue: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let name = short(queue, "queue name")?;
        let message = self
            .channel
            .basic_get(name, BasicGetOptions::default())
            .await?;
        let Some(message) = message else {
            return Ok(None);
        };
        message.delivery.ack(BasicAckOptions::default()).await?;
        Ok(Some(message.delivery.data))
    }

    /// Counts of `queue`; an error when it does not exist.
    pub async fn queue_counts(&self, queue: &str) -> Result<QueueCounts, ClientError> {
        let name = short(queue, "queue name")?;
        // A passive declare of a missing queue closes its channel, so each
        // probe gets a channel of its own.
        let probe = self.connection.create_channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = probe
            .queue_declare(name, options, FieldTable::default())
            .await;
        let _ = probe.close(200, "probe done".into()).await;
        let declared = declared?;
        Ok(QueueCounts {
            messages: declared.message_count(),
            consumers: declared.consumer_count(),
        })
    }
}

/// Events read from a reply queue, acked as they are read. An event a
/// worker sent again (its confirm was lost with a broker node) is read
/// once: events of an attempt arrive in `seq` order, so one whose `seq` is
/// not past the last read of its attempt is a copy.
pub struct Events {
    consumer: Consumer,
    last_seq: LastSeq,
}

impl Events {
    fn new(consumer: Consumer) -> Self {
        Self {
            consumer,
            last_seq: LastSeq::default(),
        }
    }

    /// The next event, or `None` when the consumer ends (channel closed).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let delivery = match self.consumer.next().await? {
                Ok(delivery) => delivery,
                Err(e) => return Some(Err(e.into())),
            };
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                return Some(Err(e.into()));
            }
            let event: Event = match serde_json::from_slice(&delivery.data) {
                Ok(event) => event,
                Err(e) => return Some(Err(ClientError::BadEvent(e))),
            };
            if self.last_seq.is_new(&event) {
                return Some(Ok(event));
            }
        }
    }

    /// Reads events until a result; returns every event, the result last.
    /// `Ok(None)` when the reply queue ends first.
    pub async fn until_result(&mut self) -> Result<Option<Vec<Event>>, ClientError> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            let event = event?;
            let is_result = matches!(event.body, EventBody::Result(_));
            events.push(event);
            if is_result {
                return Ok(Some(events));
            }
        }
        Ok(None)
    }
}

/// The last `seq` read of each recent attempt, to recognise copies. Bounded
/// for a watch of the events exchange that runs for months: the attempts
/// read longest ago are forgotten first.
#[derive(Default)]
struct LastSeq {
    seqs: std::collections::HashMap<(String, u32), u64>,
    order: std::collections::VecDeque<(String, u32)>,
}

/// Attempts [`LastSeq`] remembers.
const ATTEMPTS_REMEMBERED: usize = 4096;

impl LastSeq {
    /// Whether `event` is past the last one read of its attempt; it is
    /// the last one then.
    fn is_new(&mut self, event: &Event) -> bool {
        let key = (event.job_id.clone(), event.attempt);
        match self.seqs.get_mut(&key) {
            Some(last) if event.seq <= *last => false,
            Some(last) => {
                *last = event.seq;
                true
            }
            None => {
                if self.order.len() == ATTEMPTS_REMEMBERED {
                    if let Some(oldest) = self.order.pop_front() {
                        self.seqs.remove(&oldest);
                    }
                }
                self.order.push_back(key.clone());
                self.seqs.insert(key, event.seq);
                true
            }
        }
    }
}

/// The result of a list of events that ends with one, if it does.
pub fn result_of(events: &[Event]) -> Option<&JobResult> {
    match events.last().map(|e| &e.body) {
        Some(EventBody::Result(result)) => Some(result),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogEvent, LogStream, StepName};

    fn event(job_id: &str, attempt: u32, seq: u64) -> Event {
        Event {
            job_id: job_id.into(),
            attempt,
            seq,
            timestamp: chrono::Utc::now(),
            body: EventBody::Log(LogEvent {
                step: StepName::Build,
                stream: LogStream::Stdout,
                text: "line\n".into(),
            }),
        }
    }

    #[test]
    fn an_event_sent_again_is_read_once_and_attempts_are_apart() {
        let mut last = LastSeq::default();
        assert!(last.is_new(&event("a", 1, 0)));
        assert!(last.is_new(&event("a", 1, 1)));
        assert!(!last.is_new(&event("a", 1, 1)), "a copy");
        assert!(!last.is_new(&event("a", 1, 0)), "an older copy");
        assert!(last.is_new(&event("a", 2, 0)), "the next attempt");
        assert!(last.is_new(&event("b", 1, 0)), "another job");
        assert!(last.is_new(&event("a", 1, 2)));
    }

    #[test]
    fn the_attempts_read_longest_ago_are_forgotten_first() {
        let mut last = LastSeq::default();
        for job in 0..=ATTEMPTS_REMEMBERED {
            assert!(last.is_new(&event(&job.to_string(), 1, 5)));
        }
        assert_eq!(last.seqs.len(), ATTEMPTS_REMEMBERED);
        assert!(last.is_new(&event("0", 1, 5)), "forgotten");
        assert!(!last.is_new(&event("2", 1, 5)), "still known");
    }
}
