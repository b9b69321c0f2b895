//! Shared helpers of the end-to-end tests: access to the real services the
//! test rig (`scripts/rig-up`) started on this machine.

pub mod rig;

pub use rig::{Rig, SshKey, TestRepo};
