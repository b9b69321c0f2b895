//! buildbot protocol v1.
//!
//! Owns the wire contract between orchestrators and workers: the build
//! [`Job`] an orchestrator publishes, the [`Event`]s a worker streams back to
//! the job's reply queue, the AMQP names and header keys both sides use, and
//! the validation every job passes before a worker touches git or Docker.

pub mod amqp;
mod event;
mod job;
mod secret;

pub use event::{
    Event, EventBody, ImageResult, JobError, JobResult, JobStatus, LogEvent, LogStream,
    StepEvent, StepName, StepState,
};
pub use job::{Build, Builder, Image, Job, RegistryAuth, Repo, RepoAuth, DEFAULT_TIMEOUT_SECS};
pub use secret::Secret;

/// The protocol version this crate speaks; a job with any other `version` is rejected.
pub const PROTOCOL_VERSION: u32 = 1;
