//! Event reporting: turns what the pipeline steps say into numbered events
//! and hands them, in order, to an [`EventSink`].
//!
//! Steps hold a cheap, cloneable [`Reporter`]. One task per attempt owns the
//! sequence counter, batches log output (by size and time, so a noisy build
//! does not flood the broker), masks credentials, and publishes. [`Finisher`]
//! publishes the result as the last event and returns only once the sink has
//! confirmed everything, which is when a job may be acked.

use crate::redact::Redactor;
use buildbot_protocol::{
    Event, EventBody, JobResult, LogEvent, LogStream, StepEvent, StepName, StepState,
};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Messages queued between the reporter and the publishing task. Bounded so
/// a sink slower than the build applies back-pressure instead of memory.
const REPORT_QUEUE: usize = 1024;

/// Where numbered events go: the job's reply queue, or a terminal.
pub trait EventSink: Send + 'static {
    /// Sends one event. May return before the event is durable.
    fn send(&mut self, event: &Event) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Returns once every event sent so far is durable at its destination.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why events could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
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
pub struct LogBatching {
    /// A chunk is published once this many bytes are waiting.
    pub max_bytes: usize,
    /// Complete lines wait at most this long before they are published.
    pub max_delay: Duration,
    /// A line without its newline yet (a prompt, a progress bar) waits at
    /// most this long.
    pub partial_line_delay: Duration,
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
pub struct AttemptId {
    /// The job's id, as the caller sent it.
    pub job_id: String,
    /// Delivery attempt, 1 for the first.
    pub attempt: u32,
}

enum Report {
    Step(StepEvent),
    Log(LogEvent),
    Finish(Box<JobResult>, oneshot::Sender<Result<u64, SinkError>>),
}

/// Handle the pipeline steps report through. Cloning is cheap. Reports made
/// after the result was published are dropped: the result stays last.
#[derive(Clone)]
pub struct Reporter {
    reports: mpsc::Sender<Report>,
}

impl Reporter {
    /// A step changed state.
    pub async fn step(&self, name: StepName, state: StepState) {
        self.send(Report::Step(StepEvent { name, state })).await;
    }

    /// Output of a step.
    pub async fn log(&self, step: StepName, stream: LogStream, text: impl Into<String>) {
        let text = text.into();
        self.send(Report::Log(LogEvent { step, stream, text }))
            .await;
    }

    /// A line from the worker itself about `step`.
    pub async fn system(&self, step: StepName, line: impl AsRef<str>) {
        self.log(step, LogStream::System, format!("{}\n", line.as_ref()))
            .await;
    }

    /// [`Reporter::system`] for code on a blocking thread (git2 callbacks).
    pub fn system_blocking(&self, step: StepName, line: &str) {
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
pub struct Finisher {
    reports: mpsc::Sender<Report>,
    task: tokio::task::JoinHandle<()>,
}

impl Finisher {
    /// Publishes `result` as the last event of the attempt, with `last_seq`
    /// filled in, and waits until the sink confirmed every event. Returns the
    /// result's `seq`.
    pub async fn finish(self, result: JobResult) -> Result<u64, SinkError> {
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
pub fn start<S: EventSink>(
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

/// Output waiting to be published: text of one step and stream.
struct PendingLog {
    step: StepName,
    stream: LogStream,
    text: String,
    /// When the oldest byte of `text` arrived.
    since: Instant,
}

/// Batches log output into chunks of whole lines, at most `max_bytes` each.
/// Pure (time is passed in) so it is tested without a runtime.
struct LogBatcher {
    batching: LogBatching,
    pending: Option<PendingLog>,
}

impl LogBatcher {
    fn new(batching: LogBatching) -> Self {
        Self {
            batching,
            pending: None,
        }
    }

    /// Adds output; returns the chunks that are full.
    fn push(&mut self, log: LogEvent, now: Instant) -> Vec<LogEvent> {
        let mut ready = Vec::new();
        let same_source = self
            .pending
            .as_ref()
            .is_some_and(|p| p.step == log.step && p.stream == log.stream);
        if !same_source {
            ready.extend(self.take_all());
        }
        let pending = self.pending.get_or_insert_with(|| PendingLog {
            step: log.step,
            stream: log.stream,
            text: String::new(),
            since: now,
        });
        pending.text.push_str(&log.text);
        while self
            .pending
            .as_ref()
            .is_some_and(|p| p.text.len() >= self.batching.max_bytes)
        {
            ready.extend(self.take_prefix(self.batching.max_bytes, now));
        }
        ready
    }

    /// When the pending output must be published, if there is any.
    fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| {
            let delay = if p.text.contains('\n') {
                self.batching.max_delay
            } else {
                self.batching.partial_line_delay
            };
            p.since + delay
        })
    }

    /// The output whose time has come: every complete line, or a partial
    /// line that waited long enough.
    fn take_due(&mut self, now: Instant) -> Option<LogEvent> {
        let pending = self.pending.as_ref()?;
        match pending.text.rfind('\n') {
            Some(last_newline) => self.take_prefix(last_newline + 1, now),
            None => self.take_all(),
        }
    }

    /// Everything pending, partial line included.
    fn take_all(&mut self) -> Option<LogEvent> {
        self.pending.take().map(|p| LogEvent {
            step: p.step,
            stream: p.stream,
            text: p.text,
        })
    }

    /// Up to `limit` bytes, cut after the last newline within the limit
    /// (or at the limit when a single line is longer).
    fn take_prefix(&mut self, limit: usize, now: Instant) -> Option<LogEvent> {
        let pending = self.pending.as_mut()?;
        if pending.text.len() <= limit {
            return self.take_all();
        }
        let cut = cut_point(&pending.text, limit);
        let rest = pending.text.split_off(cut);
        let chunk = std::mem::replace(&mut pending.text, rest);
        pending.since = now;
        Some(LogEvent {
            step: pending.step,
            stream: pending.stream,
            text: chunk,
        })
    }
}

/// Where to cut `text` so the first part is at most `limit` bytes: after the
/// last newline before the limit, else at the last char boundary.
fn cut_point(text: &str, limit: usize) -> usize {
    let mut boundary = limit.min(text.len());
    while !text.is_char_boundary(boundary) {
        boundary -= 1;
    }
    match text[..boundary].rfind('\n') {
        Some(newline) => newline + 1,
        None if boundary > 0 => boundary,
        // A single multi-byte char longer than the limit: take it whole.
        None => text.chars().next().map_or(text.len(), char::len_utf8),
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

    fn log(text: &str) -> LogEvent {
        LogEvent {
            step: StepName::Build,
            stream: LogStream::Stdout,
            text: text.to_owned(),
        }
    }

    #[test]
    fn batcher_cuts_full_chunks_at_line_ends() {
        let mut b = LogBatcher::new(batching(10));
        let now = Instant::now();
        let ready = b.push(log("aaaa\nbbbb\ncccc\n"), now);
        let texts: Vec<_> = ready.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["aaaa\nbbbb\n"]);
        assert_eq!(b.take_all().map(|c| c.text), Some("cccc\n".to_owned()));
    }

    #[test]
    fn batcher_cuts_an_overlong_line_at_the_limit() {
        let mut b = LogBatcher::new(batching(4));
        let ready = b.push(log("0123456789"), Instant::now());
        let texts: Vec<_> = ready.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["0123", "4567"]);
    }

    #[test]
    fn batcher_keeps_partial_line_until_its_delay() {
        let mut b = LogBatcher::new(batching(1024));
        let start = Instant::now();
        assert!(b.push(log("line\npartial"), start).is_empty());
        assert_eq!(b.due(), Some(start + Duration::from_millis(50)));
        let chunk = b.take_due(start + Duration::from_millis(50));
        assert_eq!(chunk.map(|c| c.text), Some("line\n".to_owned()));
        let later = start + Duration::from_millis(50);
        assert_eq!(b.due(), Some(later + Duration::from_secs(1)));
        let chunk = b.take_due(later + Duration::from_secs(1));
        assert_eq!(chunk.map(|c| c.text), Some("partial".to_owned()));
        assert!(b.due().is_none());
    }

    #[test]
    fn batcher_flushes_when_the_source_changes() {
        let mut b = LogBatcher::new(batching(1024));
        let now = Instant::now();
        assert!(b.push(log("out\n"), now).is_empty());
        let mut err = log("err\n");
        err.stream = LogStream::Stderr;
        let ready = b.push(err, now);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].stream, LogStream::Stdout);
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

    #[test]
    fn cut_point_respects_char_boundaries() {
        assert_eq!(cut_point("ééé", 3), 2);
        assert_eq!(cut_point("é", 1), 2);
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
