//! The steps, one module per [`StepName`](buildbot_protocol::StepName),
//! in the order the pipeline runs them. Each exposes `run`, which does the
//! step's work and reports through the job's
//! [`Reporter`](crate::events::Reporter); the spine wraps it in the step's
//! events.

pub(crate) mod build;
pub(crate) mod builder;
pub(crate) mod clone;
pub(crate) mod push;
pub(crate) mod test;
