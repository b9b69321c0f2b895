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
    /// Pushing every tag.
    Push,
}

impl StepName {
    /// The wire name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Validate => "validate",
            StepName::Clone => "clone",
            StepName::Builder => "builder",
            StepName::Build => "build",
            StepName::Push => "push",
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

/// Output of a step: one or more whole lines, batched so a noisy build does
/// not flood the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogEvent {
    /// The step that produced the output.
    pub step: StepName,
    /// Where the output came from.
    pub stream: LogStream,
    /// The text, credentials masked. Lines end with `\n`.
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

/// The image a successful job pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageResult {
    /// The repository the tags were pushed to.
    pub repository: String,
    /// Manifest digest (`sha256:…`) the registry reported for the pushed image.
    pub digest: String,
    /// Every tag pushed, all pointing at `digest`.
    pub tags: Vec<String>,
}
