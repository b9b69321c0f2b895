//! `buildbot`: the build worker binary. Parses the command line, sets up
//! logging and hands over to the library.

use anyhow::Context;
use buildbot_worker::config::WorkerConfig;
use buildbot_worker::consumer::{self, Observers};
use buildbot_worker::local::{self, BuildArgs};
use buildbot_worker::metrics::Metrics;
use buildbot_worker::pipeline::Pipeline;
use buildbot_worker::schema::{self, SchemaArgs};
use buildbot_worker::submit::{self, SubmitArgs};
use buildbot_worker::{builder, docker, http};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Stateless build worker for Dockerized apps: takes build jobs from
/// RabbitMQ, builds and pushes images, streams events to each job's reply
/// queue.
#[derive(Debug, Parser)]
#[command(name = "buildbot", version)]
struct Cli {
    /// Format of the worker's own log lines (on stderr).
    #[arg(long, env = "BUILDBOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume build jobs from RabbitMQ until SIGTERM or SIGINT.
    Worker(WorkerConfig),
    /// Publish a job file and, with --follow, print its live log and exit
    /// with a status that reflects the result.
    Submit(SubmitArgs),
    /// Run one job here against the local Docker Engine, without a broker,
    /// printing its live log; the exit status is the result (0 succeeded,
    /// 1 failed, 2 invalid job, 3 timed out, 4 interrupted, 5 could not
    /// run).
    // Boxed: its many flags would make every other variant as large.
    Build(Box<BuildArgs>),
    /// Write the JSON Schemas of the job and event messages into a
    /// directory, check them (--check), or print one (--print).
    Schema(SchemaArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Worker(config) => {
            run_worker(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit(args) => Ok(submit::run(&args).await.unwrap_or_else(|e| {
            eprintln!("buildbot submit: {e}");
            e.exit_code()
        })),
        Command::Build(args) => Ok(local::run(&args).await.unwrap_or_else(|e| {
            eprintln!("buildbot build: {e}");
            e.exit_code()
        })),
        Command::Schema(args) => Ok(schema::run(&args)?),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUILDBOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files or collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_worker(config: WorkerConfig) -> anyhow::Result<()> {
    // A daemon that is down is reported by /readyz and by the jobs that
    // fail meanwhile; only a malformed DOCKER_HOST stops the worker.
    let docker = docker::client()
        .await
        .context("DOCKER_HOST does not name a usable Docker Engine address")?;
    let worker_id = config.resolved_worker_id();
    tracing::info!(worker_id = %worker_id, "worker starting");
    match builder::remove_leftovers(&docker, &worker_id).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed builder leftovers of an earlier run"),
        Err(e) => tracing::warn!(error = %e, "cannot look for builder leftovers"),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let observers = Observers {
        metrics: Metrics::new(),
        readiness: Arc::default(),
    };
    if let Some(addr) = config.http_addr {
        let bound = http::serve(
            addr,
            Arc::clone(&observers.metrics),
            Arc::clone(&observers.readiness),
            docker.clone(),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("cannot serve HTTP on {addr}"))?;
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    }
    let pipeline = Pipeline::new(docker, worker_id, config.workspace_dir.clone());
    consumer::run_until_shutdown(&config, pipeline, shutdown, observers).await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

/// Completes on SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the worker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
