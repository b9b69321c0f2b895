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

use batcher::LogBatcher;
use buildbot_protocol::{
    Event, EventBody, JobResult, LogEvent, LogStream, StepEvent, StepName, StepState,
};
use redact::Redactor;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Messages queued between the reporter and the publishing task. Bounded so
/// a sink slower than the build applies back-pressure instead of memory.
const REPORT_QUEUE: usize = 1024;

/// Where numbered events go: the job's reply queue, or a terminal.
pub(crate) trait EventSink: Send + 'static {
    /// Sends one event. May return before the event is durable.
    fn send(&mut self, event: &Event) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Returns once every event sent so far is durable at its destination.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
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
}

/// How log output is batched into log events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBatching {
    /// A chunk is published once this many bytes are waiting.
    pub(crate) max_bytes: usize,
    /// Complete lines wait at most this long before they are published.
    pub(crate) max_delay: Duration,
    /// A line without its newline yet (a prompt, a progress bar) waits at
    /// most this long.
    pub(crate) partial_line_delay: Duration,
}

impl Default for LogBatching {
    fn default() -> Self {
        Self {
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

enum Report {
    Step(StepEvent),
    Log(LogEvent),
    Finish(Box<JobResult>, oneshot::Sender<Result<u64, SinkError>>),
}

/// Handle the pipeline steps report through. Cloning is cheap. Reports made
/// after the result was published are dropped: the result stays last.
#[derive(Clone)]
pub(crate) struct Reporter {
    reports: mpsc::Sender<Report>,
}

impl Reporter {
    /// A step changed state.
    pub(crate) async fn step(&self, name: StepName, state: StepState) {
        self.send(Report::Step(StepEvent { name, state })).await;
    }

    /// Output of a step.
    pub(crate) async fn log(&self, step: StepName, stream: LogStream, text: impl Into<String>) {
        let text = text.into();
        self.send(Report::Log(LogEvent { step, stream, text }))
            .await;
    }

    /// A line from the worker itself about `step`.
    pub(crate) async fn system(&self, step: StepName, line: impl AsRef<str>) {
        self.log(step, LogStream::System, format!("{}\n", line.as_ref()))
            .await;
    }

    /// [`Reporter::system`] for code on a blocking thread (git2 callbacks).
    pub(crate) fn system_blocking(&self, step: StepName, line: &str) {
        let text = format!("{line}\n");
        let report = Report::Log(LogEvent {
            step,
            stream: LogStream::System,
            text,
        });
        // Err only when the publisher is gone; then nobody is listening.
        let _ = self.reports.blocking_send(report);
    }

    async fn send(&self, report: Report) {
        // Err only when the publisher is gone; then nobody is listening.
        let _ = self.reports.send(report).await;
    }
}

/// Publishes the result of an attempt; consumed by doing so.
pub(crate) struct Finisher {
    reports: mpsc::Sender<Report>,
    task: tokio::task::JoinHandle<()>,
}

impl Finisher {
    /// Publishes `result` as the last event of the attempt, with `last_seq`
    /// filled in, and waits until the sink confirmed every event. Returns the
    /// result's `seq`.
    pub(crate) async fn finish(self, result: JobResult) -> Result<u64, SinkError> {
        let (reply, confirmed) = oneshot::channel();
        if self
            .reports
            .send(Report::Finish(Box::new(result), reply))
            .await
            .is_err()
        {
            return Err(SinkError::Stopped);
        }
        let outcome = confirmed.await.unwrap_or(Err(SinkError::Stopped));
        // The task ends right after answering; a join error would be a
        // panic inside it, already reported as Stopped above.
        let _ = self.task.await;
        outcome
    }
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
        held: None,
        next_seq: 1,
        failure: None,
    };
    let task = tokio::spawn(publisher.run(inbox));
    let finisher = Finisher {
        reports: reports.clone(),
        task,
    };
    (Reporter { reports }, finisher)
}

struct Publisher<S> {
    sink: S,
    attempt: AttemptId,
    redactor: Redactor,
    batcher: LogBatcher,
    /// Masked output held back because it may start a secret (see
    /// `emit_log`).
    held: Option<LogEvent>,
    next_seq: u64,
    /// First delivery failure; later events are not attempted and the
    /// result reports it, so the job is not acked.
    failure: Option<SinkError>,
}

impl<S: EventSink> Publisher<S> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Report>) {
        loop {
            let due = self.batcher.due();
            tokio::select! {
                report = inbox.recv() => match report {
                    Some(Report::Finish(result, reply)) => {
                        let _ = reply.send(self.finish(*result).await);
                        return;
                    }
                    Some(report) => self.handle(report).await,
                    None => return,
                },
                _ = sleep_until(due), if due.is_some() => {
                    if let Some(chunk) = self.batcher.take_due(Instant::now()) {
                        self.emit_log(chunk).await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, report: Report) {
        match report {
            Report::Step(step) => {
                self.flush_logs().await;
                self.emit(EventBody::Step(step)).await;
            }
            Report::Log(log) => {
                for chunk in self.batcher.push(log, Instant::now()) {
                    self.emit_log(chunk).await;
                }
            }
            Report::Finish(..) => {}
        }
    }

    async fn flush_logs(&mut self) {
        if let Some(chunk) = self.batcher.take_all() {
            self.emit_log(chunk).await;
        }
        if let Some(held) = self.held.take() {
            self.emit(EventBody::Log(held)).await;
        }
    }

    /// Masks and sends a chunk of output. A chunk cut inside a line may end
    /// with the first part of a secret whose rest comes in the next chunk:
    /// that part is held back and sent with what follows it.
    async fn emit_log(&mut self, mut chunk: LogEvent) {
        match self.held.take() {
            Some(mut held) if held.step == chunk.step && held.stream == chunk.stream => {
                held.text.push_str(&chunk.text);
                chunk.text = held.text;
            }
            Some(other) => {
                self.emit(EventBody::Log(other)).await;
            }
            None => {}
        }
        chunk.text = self.redactor.mask(&chunk.text);
        let keep = chunk.text.len() - self.redactor.unsafe_suffix_len(&chunk.text);
        let tail = chunk.text.split_off(keep);
        if !tail.is_empty() {
            self.held = Some(LogEvent {
                step: chunk.step,
                stream: chunk.stream,
                text: tail,
            });
        }
        if !chunk.text.is_empty() {
            self.emit(EventBody::Log(chunk)).await;
        }
    }

    async fn finish(&mut self, mut result: JobResult) -> Result<u64, SinkError> {
        self.flush_logs().await;
        result.last_seq = self.next_seq;
        let seq = self.emit(EventBody::Result(result)).await;
        if self.failure.is_none() {
            if let Err(e) = self.sink.flush().await {
                self.failure = Some(e);
            }
        }
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(seq),
        }
    }

    /// Numbers, masks and sends one event; returns its `seq`.
    async fn emit(&mut self, body: EventBody) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.failure.is_some() {
            return seq;
        }
        let event = Event {
            job_id: self.attempt.job_id.clone(),
            attempt: self.attempt.attempt,
            seq,
            timestamp: chrono::Utc::now(),
            body: self.mask(body),
        };
        if let Err(e) = self.sink.send(&event).await {
            self.failure = Some(e);
        }
        seq
    }

    fn mask(&self, body: EventBody) -> EventBody {
        match body {
            EventBody::Log(mut log) => {
                log.text = self.redactor.mask(&log.text);
                EventBody::Log(log)
            }
            EventBody::Result(mut result) => {
                if let Some(error) = result.error.as_mut() {
                    error.message = self.redactor.mask(&error.message);
                    for problem in &mut error.problems {
                        *problem = self.redactor.mask(problem);
                    }
                }
                EventBody::Result(result)
            }
            step => step,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::JobStatus;
    use std::sync::{Arc, Mutex};

    fn batching(max_bytes: usize) -> LogBatching {
        LogBatching {
            max_bytes,
            max_delay: Duration::from_millis(50),
            partial_line_delay: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_split_across_partial_line_flushes_is_masked() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let redactor = Redactor::new(["hunter22"]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(1024));
        reporter
            .log(StepName::Build, LogStream::Stdout, "pw hun")
            .await;
        // Past the partial-line delay: the first half is flushed alone.
        tokio::time::sleep(Duration::from_secs(2)).await;
        reporter
            .log(StepName::Build, LogStream::Stdout, "ter22 ok\n")
            .await;
        finisher.finish(result()).await.expect("finish");

        let events = sink.0.lock().expect("lock").clone();
        let text: String = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log(l) => Some(l.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "pw ******** ok\n");
        let first = match &events[0].body {
            EventBody::Log(l) => l.text.clone(),
            other => panic!("expected a log event, got {other:?}"),
        };
        assert_eq!(first, "pw ", "the possible start of a secret is held back");
    }

    /// A sink that records what it was sent, in memory.
    #[derive(Clone, Default)]
    struct RecordingSink(Arc<Mutex<Vec<Event>>>);

    impl EventSink for RecordingSink {
        async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
            self.0
                .lock()
                .map_err(|_| SinkError::Stopped)?
                .push(event.clone());
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn result() -> JobResult {
        JobResult {
            status: JobStatus::Succeeded,
            error: None,
            revision: None,
            image: None,
            durations_ms: Default::default(),
            worker: "w".into(),
            service_id: None,
            last_seq: 0,
        }
    }

    #[tokio::test]
    async fn events_are_numbered_masked_and_end_with_the_result() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 2,
        };
        let redactor = Redactor::new(["hunter22"]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(1024));
        reporter.step(StepName::Build, StepState::Started).await;
        reporter
            .log(StepName::Build, LogStream::Stdout, "pw hunter22\n")
            .await;
        reporter.step(StepName::Build, StepState::Succeeded).await;
        let last = finisher.finish(result()).await.expect("finish");
        reporter.system(StepName::Build, "too late").await;

        let events = sink.0.lock().expect("lock").clone();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(last, 4);
        assert!(events.iter().all(|e| e.attempt == 2 && e.job_id == "j"));
        match &events[1].body {
            EventBody::Log(l) => assert_eq!(l.text, "pw ********\n"),
            other => panic!("expected a log event, got {other:?}"),
        }
        match &events[3].body {
            EventBody::Result(r) => assert_eq!(r.last_seq, 4),
            other => panic!("expected the result, got {other:?}"),
        }
    }
}
