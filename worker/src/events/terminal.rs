//! The terminal: how a person (or a script) sees a job's events. Renders
//! step changes with the elapsed time, the live log, and a summary of the
//! result, or every event as one JSON line; notes gaps in `seq` and
//! redeliveries. `buildbot submit --follow` prints the events it reads from
//! the reply queue with it, and `buildbot build` plugs [`TerminalSink`] into
//! the pipeline's event publisher, so both show a job the same way.

use crate::events::{EventSink, SinkError};
use buildbot_protocol::{Event, EventBody, JobResult, JobStatus};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// The exit status of a command that ran or followed a job: 0 succeeded,
/// 1 failed, 2 rejected, 3 timed out, 4 cancelled. (5 is left for "could
/// not run or follow the job at all".)
pub(crate) fn exit_code(status: JobStatus) -> ExitCode {
    ExitCode::from(match status {
        JobStatus::Succeeded => 0,
        JobStatus::Failed => 1,
        JobStatus::Rejected => 2,
        JobStatus::TimedOut => 3,
        JobStatus::Cancelled => 4,
    })
}

/// Renders events for a person (or as JSON lines), noting gaps in `seq`.
pub(crate) struct Printer {
    json: bool,
    started: Instant,
    /// (attempt, seq) of the last event rendered.
    last: Option<(u32, u64)>,
}

impl Printer {
    /// A printer whose elapsed times count from now; `json` prints each
    /// event as one JSON line instead.
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            started: Instant::now(),
            last: None,
        }
    }

    /// Writes `event` to stdout at once. Write errors (a closed pipe) are
    /// ignored: the job must not fail because nobody reads its log.
    pub(crate) fn print(&mut self, event: &Event) {
        let text = self.render(event);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// The text [`Printer::print`] writes for `event`.
    pub(crate) fn render(&mut self, event: &Event) -> String {
        if self.json {
            // An Event always serializes; an empty line would be the sign.
            let mut line = serde_json::to_string(event).unwrap_or_default();
            line.push('\n');
            return line;
        }
        let mut text = self.sequence_note(event);
        let elapsed = self.started.elapsed().as_secs_f64();
        match &event.body {
            EventBody::Step(step) => {
                let state = step.state.as_str();
                let name = step.name.as_str();
                text.push_str(&format!("==> [{elapsed:7.1}s] {name} {state}\n"));
            }
            EventBody::Log(log) => text.push_str(&log.text),
            EventBody::Result(result) => {
                text.push_str(&summary(result, elapsed));
                text.push('\n');
            }
        }
        text
    }

    /// A line about a gap in `seq` or a new attempt, or nothing.
    fn sequence_note(&mut self, event: &Event) -> String {
        let note = match self.last {
            Some((attempt, seq)) if attempt == event.attempt && event.seq > seq + 1 => {
                match (seq + 1, event.seq - 1) {
                    (first, last) if first == last => format!("==> event {first} is missing\n"),
                    (first, last) => format!("==> events {first} to {last} are missing\n"),
                }
            }
            Some((attempt, seq)) if attempt == event.attempt && event.seq <= seq => {
                format!("==> event {} arrived again or out of order\n", event.seq)
            }
            Some((attempt, _)) if attempt != event.attempt => {
                format!("==> attempt {} (the job was redelivered)\n", event.attempt)
            }
            _ => String::new(),
        };
        self.last = Some((event.attempt, event.seq));
        note
    }
}

/// The result's lines: status, revision, the pushed image, the error.
fn summary(result: &JobResult, elapsed: f64) -> String {
    // Prose for a person: "timed out", not the wire's "timed_out".
    let status = result.status.as_str().replace('_', " ");
    let mut line = format!("==> [{elapsed:7.1}s] job {status}");
    if let Some(revision) = &result.revision {
        line.push_str(&format!(" at revision {revision}"));
    }
    if let Some(image) = &result.image {
        line.push_str(&format!(
            "\n    pushed {}@{} as {}",
            image.repository,
            image.digest,
            image.tags.join(", ")
        ));
        if let Some(size) = image.size {
            line.push_str(&format!(", {size} bytes"));
        }
        if let Some(base) = &image.base_image {
            line.push_str(&format!(", from {base}"));
        }
    }
    if let Some(error) = &result.error {
        line.push_str(&format!(
            "\n    {} step: {}",
            error.step.as_str(),
            error.message
        ));
    }
    line
}

/// An [`EventSink`] that prints a local run's events as they are
/// published. Nothing is buffered, so there is nothing to confirm.
pub(crate) struct TerminalSink {
    printer: Printer,
}

impl TerminalSink {
    /// A sink printing with a fresh [`Printer`].
    pub(crate) fn new(json: bool) -> Self {
        Self {
            printer: Printer::new(json),
        }
    }
}

impl EventSink for TerminalSink {
    async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        self.printer.print(event);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn take_unconfirmed(&mut self) -> Vec<super::Outgoing> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::{
        ImageResult, JobError, LogEvent, LogStream, StepEvent, StepName, StepState,
    };

    fn event(attempt: u32, seq: u64, body: EventBody) -> Event {
        Event {
            job_id: "5d2c8a9e-1b4f-4c3d-8e7a-2f6b1c0d9e8a".into(),
            attempt,
            seq,
            timestamp: chrono::Utc::now(),
            body,
        }
    }

    fn step(name: StepName, state: StepState) -> EventBody {
        EventBody::Step(StepEvent { name, state })
    }

    fn log(text: &str) -> EventBody {
        EventBody::Log(LogEvent {
            step: StepName::Build,
            stream: LogStream::Stdout,
            text: text.into(),
        })
    }

    fn result(status: JobStatus) -> JobResult {
        JobResult {
            last_seq: 3,
            ..JobResult::new(status, "w").with_revision("7686ede26ff59ce4845a57a519222fd1f3d51262")
        }
    }

    #[test]
    fn steps_logs_and_result_read_like_a_build_log() {
        let mut printer = Printer::new(false);
        let started = printer.render(&event(1, 1, step(StepName::Clone, StepState::Started)));
        assert!(started.starts_with("==> ["), "{started:?}");
        assert!(started.ends_with("s] clone started\n"), "{started:?}");
        assert_eq!(
            printer.render(&event(1, 2, log("Step 1/3\n"))),
            "Step 1/3\n"
        );
        let mut succeeded = result(JobStatus::Succeeded);
        succeeded.image = Some(ImageResult {
            repository: "127.0.0.1:5000/demo/app".into(),
            digest: "sha256:cb97".into(),
            tags: vec!["7686ede26ff5".into(), "latest".into()],
            size: None,
            base_image: None,
        });
        let summary = printer.render(&event(1, 3, EventBody::Result(succeeded)));
        assert!(summary.contains(
            "job succeeded at revision 7686ede26ff59ce4845a57a519222fd1f3d51262\n    \
             pushed 127.0.0.1:5000/demo/app@sha256:cb97 as 7686ede26ff5, latest\n"
        ));
    }

    #[test]
    fn a_failure_names_the_step_and_the_message() {
        let mut failed = result(JobStatus::Failed);
        failed.error = Some(JobError {
            step: StepName::Build,
            message: "the Dockerfile failed".into(),
            exit_code: None,
            problems: Vec::new(),
        });
        let text = Printer::new(false).render(&event(1, 1, EventBody::Result(failed)));
        assert!(text.contains("job failed at revision"), "{text}");
        assert!(
            text.ends_with("\n    build step: the Dockerfile failed\n"),
            "{text}"
        );
    }

    #[test]
    fn gaps_and_redeliveries_are_noted() {
        let mut printer = Printer::new(false);
        printer.render(&event(1, 1, log("a\n")));
        assert_eq!(
            printer.render(&event(1, 4, log("b\n"))),
            "==> events 2 to 3 are missing\nb\n"
        );
        assert_eq!(
            printer.render(&event(1, 6, log("b\n"))),
            "==> event 5 is missing\nb\n"
        );
        assert_eq!(
            printer.render(&event(1, 6, log("b\n"))),
            "==> event 6 arrived again or out of order\nb\n"
        );
        assert_eq!(
            printer.render(&event(2, 1, log("c\n"))),
            "==> attempt 2 (the job was redelivered)\nc\n"
        );
    }

    #[test]
    fn json_mode_prints_each_event_as_one_line_that_parses_back() {
        let mut printer = Printer::new(true);
        let original = event(1, 1, log("two\nlines\n"));
        let line = printer.render(&original);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        let parsed: Event = serde_json::from_str(&line).expect("an event");
        assert_eq!(parsed.seq, 1);
        assert!(matches!(parsed.body, EventBody::Log(l) if l.text == "two\nlines\n"));
    }
}
