//! The steps' side of event reporting: a cheap, cloneable [`Reporter`] for
//! step changes and output, and the [`Finisher`] that publishes the result.

use super::redact::Redactor;
use super::SinkError;
use buildbot_protocol::{JobResult, LogEvent, LogStream, StepEvent, StepName, StepState};
use tokio::sync::{mpsc, oneshot};

/// What a step says, queued for the publisher.
pub(super) enum Report {
    Step(StepEvent),
    Log(LogEvent),
    Finish(
        Box<JobResult>,
        oneshot::Sender<Result<JobResult, SinkError>>,
    ),
    Abandon(oneshot::Sender<Result<(), SinkError>>),
}

/// Handle the pipeline steps report through. Cloning is cheap. Reports made
/// after the result was published are dropped: the result stays last.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(super) reports: mpsc::Sender<Report>,
    /// The job's masking, for output that a step must interleave itself.
    pub(super) redactor: Redactor,
}

impl Reporter {
    /// Masks one stream of output before the step mixes it with others
    /// (BuildKit's parallel steps): a secret that stream prints across
    /// lines is found there, and nowhere once the lines are interleaved.
    pub(crate) fn stream_masker(&self) -> StreamMasker {
        StreamMasker::new(self.redactor.clone())
    }

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
    pub(super) reports: mpsc::Sender<Report>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Finisher {
    /// Publishes `result` as the last event of the attempt, with `last_seq`
    /// filled in and credentials masked, and waits until the sink confirmed
    /// every event. Returns the result as published.
    pub(crate) async fn finish(self, result: JobResult) -> Result<JobResult, SinkError> {
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

    /// Ends the attempt without a result (the job goes back to the queue):
    /// publishes what was reported so far and waits until the sink
    /// confirmed it, so the caller reads why before another attempt starts.
    pub(crate) async fn abandon(self) -> Result<(), SinkError> {
        let (reply, confirmed) = oneshot::channel();
        if self.reports.send(Report::Abandon(reply)).await.is_err() {
            return Err(SinkError::Stopped);
        }
        let outcome = confirmed.await.unwrap_or(Err(SinkError::Stopped));
        let _ = self.task.await;
        outcome
    }
}

/// Masks one stream of output as it comes (see
/// [`Reporter::stream_masker`]). The publisher masks every event again;
/// masked text holds no secret to find.
pub(crate) struct StreamMasker {
    redactor: Redactor,
    /// Raw output that may start a secret the next piece continues.
    held: String,
}

impl StreamMasker {
    pub(crate) fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            held: String::new(),
        }
    }

    /// The masked output that `text` makes ready; the rest is held.
    pub(crate) fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        let (ready, rest) = self.redactor.mask_streamed(&self.held);
        let rest = rest.to_owned();
        self.held = rest;
        ready
    }

    /// Everything held, masked: the stream has ended.
    pub(crate) fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        self.redactor.mask(&held)
    }
}
