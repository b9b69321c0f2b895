//! buildbot worker: takes build jobs from RabbitMQ, clones, builds and pushes
//! images, and streams events to each job's reply queue.
//!
//! # Layout
//!
//! Data flows one way, and the folders follow it:
//!
//! ```text
//! delivery -> consumer (decode, validate) -> pipeline (steps) -> events -> sink -> ack
//! ```
//!
//! - [`cli`]: the command line. Raw flags become domain values here; one
//!   module per subcommand (`worker`, `build`, `submit`, `schema`).
//! - `consumer`: the AMQP side. Connection and failover across the
//!   broker's nodes, declared topology, control (cancel, admitted nonce)
//!   messages, signed-job admission, delivery decoding, the job consumer
//!   paused while disk is short, one job's run and ack (bounded in time),
//!   the outbox of what a lost connection kept back, and the registry of
//!   running jobs. It never talks to Docker.
//! - `pipeline`: one job's steps in a private workspace. `mod.rs` is the
//!   spine (order, step events, timeout, cancel); `steps/` has one module
//!   per step (`clone`, `builder`, `build`, `test`, `push`); `images` says
//!   which engine images a job may use, what the worker keeps and what a
//!   result says of the built image; `conventions` the original buildbot's
//!   marker lines; `workspaces` where checkouts live. A step never talks
//!   to AMQP.
//! - `events`: what steps report becomes numbered, batched, masked events
//!   for a sink: the reply queue (`reply`) or the terminal (`terminal`).
//! - `observe`: metrics, readiness, free disk, and the HTTP endpoint.
//! - `dashboard`: `buildbot dashboard`, a live web view of every job built
//!   from the events exchange (bounded, in memory; assets embedded).
//! - `shutdown`: SIGTERM/SIGINT, for the worker and `buildbot build`.
//! - `core_dumps`: off at start, so no crash writes credentials to disk.
//!
//! Formats from jobs (repository URLs, known_hosts, keys, docker config,
//! paths) are parsed once, by `buildbot_protocol`'s grammar.
#![warn(missing_docs)]

pub mod cli;
mod consumer;
mod core_dumps;
mod dashboard;
mod events;
mod observe;
mod pipeline;
mod shutdown;
