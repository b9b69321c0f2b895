//! buildbot protocol v1.
//!
//! Owns the wire contract between orchestrators and workers: the build
//! [`Job`] an orchestrator publishes, the [`Event`]s a worker streams back to
//! the job's reply queue, the AMQP names and header keys both sides use
//! ([`amqp`]), and the checks every job passes before a worker touches git or
//! Docker: [`decode_job`] (size, JSON, version, shape) and [`Job::validate`]
//! (every rule, all problems at once). [`grammar`] parses each text format
//! a job carries (clone URL, known_hosts, SSH key, docker config, base64,
//! paths) into a typed value once, for validation and the worker alike;
//! `Repo::parse_url` and the other `parse_*` methods hand those values out.
//! [`schema`] generates the JSON Schema of both messages;
//! [`reference`](mod@reference) is Docker's image reference grammar;
//! [`amqp::topology`] declares the exchanges and queues. With the `client`
//! feature, `client` submits jobs and reads their events.

#![warn(missing_docs)]

pub mod amqp;
#[cfg(feature = "client")]
pub mod client;
mod control;
mod decode;
mod event;
pub mod grammar;
mod job;
pub mod parked;
pub mod reference;
pub mod schema;
mod secret;
pub mod signature;
#[cfg(test)]
mod test_support;
mod typed;
mod validate;

pub use control::ControlMessage;
pub use decode::{
    decode_job, decode_job_with_limit, read_envelope, DecodeError, JobEnvelope, ProblemList,
    MAX_JOB_BYTES, MAX_PROBLEMS,
};
pub use event::{
    Event, EventBody, ImageResult, JobError, JobResult, JobStatus, LogEvent, LogStream, StepEvent,
    StepName, StepState,
};
pub use job::{
    Build, BuildEngine, Builder, Image, Job, RegistryAuth, Repo, RepoAuth, SignedEnvelope, Test,
    DEFAULT_TEST_TIMEOUT_SECS, DEFAULT_TIMEOUT_SECS,
};
pub use reference::{parse_reference, registry_host, Reference, ReferenceError, Repository};
pub use schema::{event_schema, job_schema};
pub use secret::Secret;
pub use validate::{Problem, ValidationErrors, MAX_TIMEOUT_SECS};

/// The protocol version this crate speaks; a job with any other `version` is rejected.
pub const PROTOCOL_VERSION: u32 = 1;
