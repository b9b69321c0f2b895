//! buildbot worker: takes build jobs from RabbitMQ, clones, builds and pushes
//! images, and streams events to each job's reply queue.
//!
//! Data flows one way: delivery -> decode/validate -> [`pipeline`] -> steps ->
//! events -> sink -> ack. A step never talks to AMQP; the consumer never talks
//! to Docker.

pub mod artifact;
pub mod builder;
pub mod config;
pub mod consumer;
pub mod context;
pub mod control;
pub mod docker;
pub mod dockerignore;
pub mod events;
pub mod git;
pub mod http;
pub mod local;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod registry_auth;
pub mod reply;
pub mod schema;
pub mod submit;
pub mod terminal;
