//! The command line: raw flags, parsed by clap, and the subcommands they
//! start. One module per [`Command`] variant. Flags are turned into domain
//! values (a [`Job`](buildbot_protocol::Job), the worker's settings) here
//! and nowhere else; the rest of the crate never sees clap.

mod build;
mod schema;
mod submit;
mod worker;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

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
    Worker(worker::WorkerArgs),
    /// Publish a job file and, with --follow, print its live log and exit
    /// with a status that reflects the result.
    Submit(submit::SubmitArgs),
    /// Run one job here against the local Docker Engine, without a broker,
    /// printing its live log; the exit status is the result (0 succeeded,
    /// 1 failed, 2 invalid job, 3 timed out, 4 interrupted, 5 could not
    /// run).
    // Boxed: its many flags would make every other variant as large.
    Build(Box<build::BuildArgs>),
    /// Write the JSON Schemas of the job and event messages into a
    /// directory, check them (--check), or print one (--print).
    Schema(schema::SchemaArgs),
}

/// Where RabbitMQ is: the setting of every subcommand that talks to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct BrokerArgs {
    /// RabbitMQ URL. Its password is never logged.
    #[arg(
        long,
        env = "BUILDBOT_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub(crate) amqp_url: String,
}

/// How long a clone waits on the git server: the setting of every
/// subcommand that clones.
#[derive(Debug, Clone, Args)]
pub(crate) struct GitTimeoutArgs {
    /// Seconds to wait for a git server to accept the connection.
    #[arg(long, env = "BUILDBOT_GIT_CONNECT_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    git_connect_timeout_secs: u64,

    /// Seconds a git server may stay silent during a clone (each read,
    /// not the whole transfer) before the clone fails.
    #[arg(long, env = "BUILDBOT_GIT_READ_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    git_read_timeout_secs: u64,
}

impl GitTimeoutArgs {
    /// Puts the timeouts in effect for every clone of this process.
    fn apply(&self) -> Result<(), git2::Error> {
        let connect = Duration::from_secs(self.git_connect_timeout_secs);
        let read = Duration::from_secs(self.git_read_timeout_secs);
        crate::pipeline::set_git_timeouts(connect, read)
    }
}

/// Parses the command line, sets up logging and runs the subcommand.
pub async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Worker(args) => {
            worker::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit(args) => Ok(submit::run(&args).await.unwrap_or_else(|e| {
            eprintln!("buildbot submit: {e}");
            e.exit_code()
        })),
        Command::Build(args) => Ok(build::run(&args).await.unwrap_or_else(|e| {
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
