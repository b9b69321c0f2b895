//! The events a worker publishes to a job's reply queue while it runs the job.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One message on a job's reply queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// The job's id as the orchestrator sent it: its `job_id`, or for a job
    /// that could not be decoded, the message's `correlation_id`.
    pub job_id: String,
    /// Delivery attempt this event belongs to, 1 for the first delivery.
    /// A redelivered job starts a new attempt whose `seq` starts again at 1.
    pub attempt: u32,
    /// Position of this event within its attempt: 1, 2, 3… with no gaps, so
    /// the caller can detect a missing event.
    pub seq: u64,
    /// When the worker created the event (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What an event reports. The `kind` field names the variant; the same name
/// is in the message's `kind` header.
// The result is much larger than a step or log event, but an event is built,
// serialized and dropped at once and there is one result per attempt: boxing
// it would cost every constructor and match a `Box` for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A pipeline step started or ended.
    Step(StepEvent),
    /// A chunk of output.
    Log(LogEvent),
    /// The end of the attempt; exactly one per attempt, always the last event.
    Result(JobResult),
}

impl EventBody {
    /// The value of the `kind` field and header.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Step(_) => "step",
            EventBody::Log(_) => "log",
            EventBody::Result(_) => "result",
        }
    }
}

/// The steps of a job, in the order they run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// Decoding and validating the job message (only ever named in errors).
    Validate,
    /// Fetching the revision from the git remote.
    Clone,
    /// Running the builder container that produces the artifact.
    Builder,
    /// Building the runtime image.
    Build,
    /// Running the test command in a container of the built image.
    Test,
    /// Pushing every tag.
    Push,
    /// The job queue: a job dead-lettered after its delivery limit, whose
    /// workers all stopped before it finished (only ever named in errors).
    Queue,
}

impl StepName {
    /// The wire name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Validate => "validate",
            StepName::Clone => "clone",
            StepName::Builder => "builder",
            StepName::Build => "build",
            StepName::Test => "test",
            StepName::Push => "push",
            StepName::Queue => "queue",
        }
    }
}

/// A step changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepEvent {
    /// The step.
    pub name: StepName,
    /// Its new state.
    pub state: StepState,
}

/// State of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// The step began.
    Started,
    /// The step finished successfully.
    Succeeded,
    /// The step failed; the result's `error` says why.
    Failed,
}

impl StepState {
    /// The wire name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Started => "started",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
        }
    }
}

/// Output of a step: lines, batched so a noisy build does not flood the
/// broker. A line is whole unless it is longer than the worker's batch size
/// (64 KiB by default) or its newline is slow to come; then it continues in
/// the next log event of the same step and stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogEvent {
    /// The step that produced the output.
    pub step: StepName,
    /// Where the output came from.
    pub stream: LogStream,
    /// The text, credentials masked. Lines end with `\n`; text that does
    /// not end with `\n` is continued by the next log event of the same
    /// step and stream (concatenate them to rebuild the line).
    pub text: String,
}

/// Origin of log text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output of the build or builder command.
    Stdout,
    /// Standard error of the build or builder command.
    Stderr,
    /// Messages of the worker itself (resolved revision, pushed tags, …).
    System,
}

/// The outcome of one attempt at a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobResult {
    /// How the attempt ended.
    pub status: JobStatus,
    /// Why it did not succeed; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The commit SHA that was built, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The pushed image; present when the push succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageResult>,
    /// Milliseconds each step that ran took.
    #[serde(default)]
    pub durations_ms: BTreeMap<StepName, u64>,
    /// Id of the worker that ran the attempt.
    pub worker: String,
    /// The job's `service_id`, when the job could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// `seq` of this, the last event of the attempt: the caller has every
    /// event when it holds `last_seq` of them.
    pub last_seq: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every tag was built and pushed.
    Succeeded,
    /// A step failed; `error` names it.
    Failed,
    /// A cancel message stopped the job.
    Cancelled,
    /// The job ran longer than its `timeout_secs`.
    TimedOut,
    /// The job message was invalid and will not be retried; `error.problems`
    /// lists every problem.
    Rejected,
}

impl JobStatus {
    /// The wire name, as in JSON (`timed_out`, not "timed out").
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Rejected => "rejected",
        }
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobError {
    /// The step that failed.
    pub step: StepName,
    /// What went wrong, in words, credentials masked.
    pub message: String,
    /// Exit code of the failed command, where there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// For a rejected job: every problem found, each naming its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Results as the worker (and tests) build them. `last_seq` is left 0:
/// the publisher fills it in.
impl JobResult {
    /// A result with `status` from `worker` and nothing else set.
    pub fn new(status: JobStatus, worker: impl Into<String>) -> Self {
        Self {
            status,
            error: None,
            revision: None,
            image: None,
            durations_ms: BTreeMap::new(),
            worker: worker.into(),
            service_id: None,
            last_seq: 0,
        }
    }

    /// Every tag built and pushed (or tagged only, when `image` is None).
    pub fn succeeded(worker: impl Into<String>, image: Option<ImageResult>) -> Self {
        Self {
            image,
            ..Self::new(JobStatus::Succeeded, worker)
        }
    }

    /// Ended with `status` (failed, cancelled, timed out) because of `error`.
    pub fn unsuccessful(status: JobStatus, worker: impl Into<String>, error: JobError) -> Self {
        Self::new(status, worker).with_error(error)
    }

    /// An invalid job message: every problem, as `field: reason`.
    pub fn rejected(worker: impl Into<String>, problems: Vec<String>) -> Self {
        let message = format!("invalid job: {}", problems.join("; "));
        let error = JobError {
            problems,
            ..JobError::new(StepName::Validate, message)
        };
        Self::new(JobStatus::Rejected, worker).with_error(error)
    }

    /// With `error`.
    pub fn with_error(mut self, error: JobError) -> Self {
        self.error = Some(error);
        self
    }

    /// With the commit SHA that was built.
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    /// With the job's `service_id`.
    pub fn with_service_id(mut self, service_id: impl Into<String>) -> Self {
        self.service_id = Some(service_id.into());
        self
    }

    /// With `millis` recorded for `step`.
    pub fn with_duration(mut self, step: StepName, millis: u64) -> Self {
        self.durations_ms.insert(step, millis);
        self
    }
}

impl JobError {
    /// `step` failed with `message`; no exit code, no problems.
    pub fn new(step: StepName, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
            exit_code: None,
            problems: Vec::new(),
        }
    }

    /// With the failed command's exit code.
    pub fn with_exit_code(mut self, exit_code: i64) -> Self {
        self.exit_code = Some(exit_code);
        self
    }
}

/// The image a successful job pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageResult {
    /// The repository the tags were pushed to.
    pub repository: String,
    /// Manifest digest (`sha256:…`) the registry reported for the pushed image.
    pub digest: String,
    /// Every tag pushed, all pointing at `digest`.
    pub tags: Vec<String>,
    /// The image's size in bytes, as the Docker Engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The base image: the `FROM` of the final stage, as
    /// `name@sha256:…` where the engine knows its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            job_id: "6f1c2a3e-9b7d-4c1e-8f00-0123456789ab".into(),
            attempt: 2,
            seq,
            timestamp: "2026-01-02T03:04:05.678Z".parse().unwrap(),
            body,
        }
    }

    fn result() -> JobResult {
        JobResult {
            status: JobStatus::Succeeded,
            error: None,
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            image: Some(ImageResult {
                repository: "localhost:5000/app".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                tags: vec!["latest".into()],
                size: Some(7_654_321),
                base_image: None,
            }),
            durations_ms: BTreeMap::from([(StepName::Clone, 120), (StepName::Push, 900)]),
            worker: "worker-1".into(),
            service_id: Some("app".into()),
            last_seq: 3,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let events = [
            event(
                1,
                EventBody::Step(StepEvent {
                    name: StepName::Clone,
                    state: StepState::Started,
                }),
            ),
            event(
                2,
                EventBody::Log(LogEvent {
                    step: StepName::Build,
                    stream: LogStream::Stderr,
                    text: "Step 1/3 : FROM scratch\n".into(),
                }),
            ),
            event(3, EventBody::Result(result())),
            event(
                1,
                EventBody::Result(JobResult {
                    status: JobStatus::Rejected,
                    error: Some(JobError {
                        step: StepName::Validate,
                        message: "invalid job: repo.revision: empty".into(),
                        exit_code: None,
                        problems: vec!["repo.revision: empty".into()],
                    }),
                    revision: None,
                    image: None,
                    durations_ms: BTreeMap::new(),
                    worker: "worker-1".into(),
                    service_id: None,
                    last_seq: 1,
                }),
            ),
        ];
        for event in events {
            let text = serde_json::to_string(&event).unwrap();
            let back: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(back, event, "{text}");
        }
    }

    #[test]
    fn wire_form_is_flat_with_kind() {
        let step = event(
            1,
            EventBody::Step(StepEvent {
                name: StepName::Push,
                state: StepState::Failed,
            }),
        );
        assert_eq!(step.body.kind(), "step");
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            json!({
                "job_id": "6f1c2a3e-9b7d-4c1e-8f00-0123456789ab",
                "attempt": 2,
                "seq": 1,
                "timestamp": "2026-01-02T03:04:05.678Z",
                "kind": "step",
                "name": "push",
                "state": "failed"
            })
        );
        let done = serde_json::to_value(event(3, EventBody::Result(result()))).unwrap();
        assert_eq!(done["kind"], "result");
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["durations_ms"], json!({"clone": 120, "push": 900}));
        assert!(done.get("error").is_none());
    }

    #[test]
    fn step_names_match_their_wire_names() {
        for name in [
            StepName::Validate,
            StepName::Clone,
            StepName::Builder,
            StepName::Build,
            StepName::Push,
        ] {
            assert_eq!(serde_json::to_value(name).unwrap(), json!(name.as_str()));
        }
    }

    #[test]
    fn constructors_fill_what_they_name() {
        let rejected = JobResult::rejected("w", vec!["a: x".into(), "b: y".into()]);
        assert_eq!(rejected.status, JobStatus::Rejected);
        let error = rejected.error.unwrap();
        assert_eq!(error.step, StepName::Validate);
        assert_eq!(error.message, "invalid job: a: x; b: y");
        assert_eq!(error.problems, ["a: x", "b: y"]);
        assert_eq!(rejected.last_seq, 0);

        let built = result();
        let again = JobResult::succeeded("worker-1", built.image.clone())
            .with_revision("0123456789abcdef0123456789abcdef01234567")
            .with_service_id("app")
            .with_duration(StepName::Clone, 120)
            .with_duration(StepName::Push, 900);
        assert_eq!(
            JobResult {
                last_seq: 3,
                ..again
            },
            built
        );

        let failed = JobResult::unsuccessful(
            JobStatus::Failed,
            "w",
            JobError::new(StepName::Build, "exit 2").with_exit_code(2),
        );
        assert_eq!(failed.error.as_ref().unwrap().exit_code, Some(2));
        assert_eq!(failed.error.unwrap().problems, Vec::<String>::new());
    }

    #[test]
    fn states_and_statuses_match_their_wire_names() {
        for state in [StepState::Started, StepState::Succeeded, StepState::Failed] {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        }
        for status in [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::TimedOut,
            JobStatus::Rejected,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
    }
}
