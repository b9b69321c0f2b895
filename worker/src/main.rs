//! `buildbot`: the build worker binary. Everything is in the library;
//! see its `cli` module.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    buildbot_worker::cli::run().await
}
