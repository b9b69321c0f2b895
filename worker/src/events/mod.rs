//! Event reporting: turns what the pipeline steps say into numbered events
//! and hands them, in order, to an [`EventSink`].
//!
//! Steps hold a cheap, cloneable [`Reporter`]. One task per attempt owns the
//! sequence counter, batches log output (by size and time, so a noisy build
//! does not flood the broker), masks credentials, and publishes. [`Finisher`]
//! publishes the result as the last event and returns only once the sink has
//! confirmed everything, which is when a job may be acked.

pub(crate) mod redact;
pub(crate) mod reply;
pub(crate) mod terminal;

mod batcher;
mod publisher;
mod reporter;

pub(crate) use reporter::{Finisher, Reporter, StreamMasker};

use batcher::LogBatcher;
use buildbot_protocol::Event;
use publisher::Publisher;
use redact::Redactor;
use reply::Outgoing;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages queued between the reporter and the publishing task. Bounded so
/// a sink slower than the build applies back-pressure instead of memory.
const REPORT_QUEUE: usize = 1024;

/// Where numbered events go: the job's reply queue, or a terminal.
pub(crate) trait EventSink: Send + 'static {
    /// Sends one event. May return before the event is durable.
    fn send(&mut self, event: &Event) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Returns once every event sent so far is durable at its destination.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// After `flush` failed: the events sent but not confirmed, as
    /// published, oldest first, to be sent again on another connection.
    /// Empty for a sink that has no connection to lose.
    fn take_unconfirmed(&mut self) -> Vec<Outgoing>;
}

/// Why events could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SinkError {
    /// The transport failed (connection or channel lost, I/O error).
    #[error("publishing events failed: {0}")]
    Transport(String),
    /// The broker refused an event.
    #[error("the broker refused event {seq}")]
    Refused {
        /// `seq` of the refused event.
        seq: u64,
    },
    /// The publishing task stopped before the result was published.
    #[error("the event publisher stopped early")]
    Stopped,
    /// Every event, the result last, was sent, but the connection was lost
    /// before the broker confirmed the last of them: they may or may not
    /// have arrived. `resend` holds them as published (same `seq`, same
    /// message id), to be sent again on the next connection.
    #[error("the connection was lost before the broker confirmed the result ({reason})")]
    Unconfirmed {
        reason: String,
        resend: Vec<Outgoing>,
    },
}

/// Default of `--max-log-bytes`: far more than any build log a person
/// reads, far less than a disk-filling flood.
pub(crate) const DEFAULT_MAX_JOB_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// How log output becomes log events: batching, and the per-job cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBatching {
    /// Bytes of log text one attempt may publish; past it the job goes on,
    /// one notice says the log was truncated, and the rest is dropped, so
    /// a build printing without end cannot flood the broker.
    pub(crate) max_job_bytes: u64,
    /// A chunk is published once this many bytes are waiting.
    pub(crate) max_bytes: usize,
    /// Complete lines are published as soon as nothing else is queued;
    /// while lines keep coming faster, they wait at most this long.
    pub(crate) max_delay: Duration,
    /// A line without its newline yet (a prompt, a progress bar) waits at
    /// most this long.
    pub(crate) partial_line_delay: Duration,
}

impl Default for LogBatching {
    fn default() -> Self {
        Self {
            max_job_bytes: DEFAULT_MAX_JOB_LOG_BYTES,
            max_bytes: 64 * 1024,
            max_delay: Duration::from_millis(50),
            partial_line_delay: Duration::from_secs(1),
        }
    }
}

/// Identity of the attempt every event belongs to.
#[derive(Debug, Clone)]
pub(crate) struct AttemptId {
    /// The job's id, as the caller sent it.
    pub(crate) job_id: String,
    /// Delivery attempt, 1 for the first.
    pub(crate) attempt: u32,
}

/// Starts the publishing task of one attempt.
pub(crate) fn start<S: EventSink>(
    sink: S,
    attempt: AttemptId,
    redactor: Redactor,
    batching: LogBatching,
) -> (Reporter, Finisher) {
    let (reports, inbox) = mpsc::channel(REPORT_QUEUE);
    let publisher = Publisher {
        sink,
        attempt,
        redactor,
        batcher: LogBatcher::new(batching),
        log_cap: publisher::LogCap::new(batching.max_job_bytes),
        held: None,
        next_seq: 1,
        failure: None,
    };
    let reporter = Reporter {
        reports: reports.clone(),
        redactor: publisher.redactor.clone(),
    };
    let task = tokio::spawn(publisher.run(inbox));
    let finisher = Finisher {
        reports: reports.clone(),
        task,
    };
    (reporter, finisher)
}
