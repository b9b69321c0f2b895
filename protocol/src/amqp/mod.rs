//! AMQP names and header keys shared by workers and orchestrators.
//!
//! Kept in one place so both sides of the queue agree on them by construction.
//! [`topology`] says how each exchange and queue is declared; with the
//! `client` feature, `brokers` parses the URLs of the broker's nodes.

#[cfg(feature = "client")]
pub mod brokers;
pub mod topology;

/// Durable quorum queue the workers consume jobs from.
pub const JOB_QUEUE: &str = "buildbot.jobs";
/// Exchange that jobs rejected or over the delivery limit are dead-lettered to.
pub const DEAD_LETTER_EXCHANGE: &str = "buildbot.jobs.dlx";
/// Queue bound to [`DEAD_LETTER_EXCHANGE`]: workers take each dead-lettered
/// job from it, publish its final result and park a masked copy.
pub const DEAD_LETTER_QUEUE: &str = "buildbot.jobs.dead";
/// Topic exchange every event is also published to, for dashboards, by a
/// worker that has this copy on (its default; `--events-exchange off`
/// keeps events on their reply queues). Routing key:
/// `<service_id>.<job_id>.<kind>`.
pub const EVENTS_EXCHANGE: &str = "buildbot.events";
/// Fanout exchange cancels are published to; [`CANCEL_STREAM`] is bound to it.
pub const CONTROL_EXCHANGE: &str = "buildbot.control";
/// Stream queue keeping every control message for [`CANCEL_RETENTION`]:
/// every worker reads it from the start when it starts, then live, so a
/// cancel sent while no worker ran is still honoured.
pub const CANCEL_STREAM: &str = "buildbot.cancels";
/// How long the cancel stream keeps a message (`x-max-age`): longer than a
/// job waits in a healthy queue plus the longest `timeout_secs`.
pub const CANCEL_RETENTION: &str = "2D";
/// Suffix of the queue keeping a job queue's dead-lettered jobs after their
/// final result, with credentials masked: `<job queue>.parked`.
pub const PARKED_QUEUE_SUFFIX: &str = ".parked";

/// Deliveries of one job before the broker dead-letters it instead of
/// redelivering (the job queue's `x-delivery-limit` is one less: RabbitMQ
/// counts the redeliveries).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 3;

/// AMQP delivery mode of messages that survive a broker restart: jobs,
/// events and parked jobs.
pub const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// Content type of every message body in protocol v1.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Header on every event naming its kind: `step`, `log` or `result`.
pub const HEADER_KIND: &str = "kind";
/// Header on every event with the attempt number (1 for the first delivery).
pub const HEADER_ATTEMPT: &str = "attempt";
/// Header on every event with its sequence number.
pub const HEADER_SEQ: &str = "seq";
/// Header RabbitMQ sets on quorum-queue redeliveries: deliveries before this one.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// Queue argument: the queue type (`quorum`).
pub const ARG_QUEUE_TYPE: &str = "x-queue-type";
/// Queue argument: the stream's retention (`x-max-age`).
pub const ARG_MAX_AGE: &str = "x-max-age";
/// Consume argument: where a stream consumer starts (`x-stream-offset`).
pub const ARG_STREAM_OFFSET: &str = "x-stream-offset";
/// Header RabbitMQ sets on a dead-lettered message: the first reason
/// (`rejected`, `delivery_limit`, `expired`, ...).
pub const HEADER_FIRST_DEATH_REASON: &str = "x-first-death-reason";

/// Queue argument: deliveries before dead-lettering.
pub const ARG_DELIVERY_LIMIT: &str = "x-delivery-limit";
/// Queue argument: exchange to dead-letter to.
pub const ARG_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
/// Queue argument: milliseconds of disuse after which the broker deletes a reply queue.
pub const ARG_EXPIRES: &str = "x-expires";
