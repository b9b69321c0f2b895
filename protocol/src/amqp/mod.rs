//! AMQP names and header keys shared by workers and orchestrators.
//!
//! Kept in one place so both sides of the queue agree on them by construction.
//! [`topology`] says how each exchange and queue is declared.

pub mod topology;

/// Durable quorum queue the workers consume jobs from.
pub const JOB_QUEUE: &str = "buildbot.jobs";
/// Exchange that jobs rejected or over the delivery limit are dead-lettered to.
pub const DEAD_LETTER_EXCHANGE: &str = "buildbot.jobs.dlx";
/// Queue bound to [`DEAD_LETTER_EXCHANGE`] that keeps dead-lettered jobs for inspection.
pub const DEAD_LETTER_QUEUE: &str = "buildbot.jobs.dead";
/// Topic exchange every event is also published to, for dashboards.
/// Routing key: `<service_id>.<job_id>.<kind>`.
pub const EVENTS_EXCHANGE: &str = "buildbot.events";
/// Fanout exchange every worker binds a private queue to, for cancel messages.
pub const CONTROL_EXCHANGE: &str = "buildbot.control";

/// Deliveries of one job before the broker dead-letters it instead of
/// redelivering (the job queue's `x-delivery-limit` is one less: RabbitMQ
/// counts the redeliveries).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 3;

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
/// Queue argument: deliveries before dead-lettering.
pub const ARG_DELIVERY_LIMIT: &str = "x-delivery-limit";
/// Queue argument: exchange to dead-letter to.
pub const ARG_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
/// Queue argument: milliseconds of disuse after which the broker deletes a reply queue.
pub const ARG_EXPIRES: &str = "x-expires";
