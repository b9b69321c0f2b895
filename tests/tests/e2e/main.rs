//! The end-to-end tests: the real `buildbot` binary against the real
//! services of the test rig (`scripts/rig-up`: RabbitMQ, the Docker
//! Engine, two registries, an SSH git remote), one module per topic, all
//! linked into this one test binary. The helpers they share are the
//! `buildbot_tests` library (`tests/src/`).
//!
//! They need the rig, so they are behind the `e2e` feature: a plain
//! `cargo test --workspace` builds only the ignored placeholder below,
//! whose reason says how to run them. `scripts/test` runs them all:
//!
//! ```text
//! scripts/rig-up
//! cargo build -p buildbot-worker          # the binary the tests spawn
//! cargo test -p buildbot-tests --features e2e --test e2e
//! cargo test -p buildbot-tests --features e2e --test e2e -- --ignored image_cache_budget
//! cargo test -p buildbot-tests --features e2e --test e2e -- --ignored broker_restart
//! cargo test -p buildbot-tests --features e2e --test e2e -- --ignored several_brokers
//! ```
//!
//! The last three lines run the ignored tests alone, after the others:
//! `workspaces`' image cache budget (the budget is the engine's, so it
//! would count and evict what concurrent tests keep), `broker_restart`
//! (it restarts RabbitMQ under every other test) and `several_brokers`'
//! cluster (three RabbitMQ nodes of its own, one killed mid-load).
//! One topic runs with its module path as filter, e.g. `-- pipeline::`.
//!
//! The topics, in the order of the flow:
//! - `rig_smoke`: each service of the rig does what the tests rely on;
//! - `pipeline`: a job through clone, build and push, its events in order;
//! - `builder`: builder containers, and nothing left behind;
//! - `conventions`: the original buildbot's `build.sh` builder and the
//!   test step before the push;
//! - `buildkit`: BuildKit's cache mounts, targets, build secrets and
//!   registry cache (its cold-cache test runs alone, like the two above);
//! - `isolation`: tenants sharing a worker's Docker Engine cannot plant
//!   or read each other's images;
//! - `workspaces`: checkouts under `<workspace-dir>/<worker-id>/`, swept
//!   after a SIGKILL, nothing left by a cancelled clone;
//! - `secrets`: credentials masked in every event and log;
//! - `signed_jobs`: only jobs signed by a trusted key run;
//! - `reliability`: crashes, poison messages, timeouts, cancellation,
//!   graceful shutdown;
//! - `failure_paths`: dead letters, late cancels, rejections without a
//!   reply queue, wrapped base64 and trace logs;
//! - `broker_restart`: RabbitMQ restarting under a running job;
//! - `several_brokers`: a worker given several nodes' URLs fails over
//!   (a closed port; a three-node cluster losing the job queue's leader);
//! - `observability`: `/metrics`, `/healthz`, `/readyz`, the events
//!   exchange;
//! - `cli`: the `buildbot` command line;
//! - `dashboard`: `buildbot dashboard` in headless Chromium, its bounds
//!   and its access rules;
//! - `packaging`: the compose file and Dockerfile users deploy with;
//! - `broker_accounts`: the compose file's RabbitMQ accounts, one per
//!   role, tried on the rig's RabbitMQ.

#[cfg(feature = "e2e")]
mod rig_smoke;

#[cfg(feature = "e2e")]
mod pipeline;

#[cfg(feature = "e2e")]
mod git_defaults;

#[cfg(feature = "e2e")]
mod push;

#[cfg(feature = "e2e")]
mod builder;

#[cfg(feature = "e2e")]
mod conventions;

#[cfg(feature = "e2e")]
mod buildkit;

#[cfg(feature = "e2e")]
mod dashboard;

#[cfg(feature = "e2e")]
mod limits;

#[cfg(feature = "e2e")]
mod hostile;

#[cfg(feature = "e2e")]
mod isolation;

#[cfg(feature = "e2e")]
mod workspaces;

#[cfg(feature = "e2e")]
mod secrets;

#[cfg(feature = "e2e")]
mod signed_jobs;

#[cfg(feature = "e2e")]
mod reliability;

#[cfg(feature = "e2e")]
mod failure_paths;

#[cfg(feature = "e2e")]
mod broker_restart;

#[cfg(feature = "e2e")]
mod several_brokers;

#[cfg(feature = "e2e")]
mod observability;

#[cfg(feature = "e2e")]
mod cli;

#[cfg(feature = "e2e")]
mod packaging;

#[cfg(feature = "e2e")]
mod broker_accounts;

/// Stands in for the end-to-end tests when they are not built: `cargo
/// test` lists it as ignored, with the reason saying how to run them.
#[cfg(not(feature = "e2e"))]
#[test]
#[ignore = "end-to-end tests need the rig: run scripts/test, or scripts/rig-up then cargo test -p buildbot-tests --features e2e"]
fn end_to_end_tests_are_skipped_without_the_e2e_feature() {}
