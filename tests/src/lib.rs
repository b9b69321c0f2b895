//! Shared helpers of the end-to-end tests (`tests/tests/e2e/`, built with
//! the `e2e` feature) and of the benchmark (`src/bin/bench/`): access to the
//! real services the test rig (`scripts/rig-up`) started on this machine,
//! the orchestrator side of the protocol, and the worker binary under test.

pub mod cluster;
pub mod daemon;
pub mod e2e;
pub mod orchestrator;
pub mod rig;
pub mod worker;

pub use rig::{Rig, SshKey, TestRepo};
