//! `buildbot submit`: the orchestrator's side from a terminal. Validates a
//! job file, publishes it with confirms, and follows its events: the live
//! log with step progress, then the result as the exit status (rendered by
//! [`crate::events::terminal`], as `buildbot build` shows a local run).

use super::BrokerArgs;
use crate::events::terminal::{exit_code, Printer};
use buildbot_protocol::amqp::brokers::BrokerUrlError;
use buildbot_protocol::client::{Client, ClientError};
use buildbot_protocol::{decode_job, EventBody};
use std::path::PathBuf;
use std::process::ExitCode;

/// Settings of `buildbot submit`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The job, a protocol v1 JSON file (see `protocol/examples/`).
    pub(crate) job: PathBuf,

    /// Where RabbitMQ is.
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    /// Queue to publish the job to.
    #[arg(long, env = "BUILDBOT_QUEUE", default_value = buildbot_protocol::amqp::JOB_QUEUE)]
    pub(crate) queue: String,

    /// Follow the job: print its log and exit with a status that reflects
    /// the result (0 succeeded, 1 failed, 2 rejected, 3 timed out,
    /// 4 cancelled). Without it, print the reply queue and exit.
    #[arg(long)]
    pub(crate) follow: bool,

    /// With --follow, print every event as one JSON line instead of the log.
    #[arg(long, requires = "follow")]
    pub(crate) json: bool,
}

/// Why submitting or following failed (exit status 5).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    /// The job file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The job is not valid; every problem is listed.
    #[error("{path} is not a valid job:\n  {}", problems.join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, `field: reason`.
        problems: Vec<String>,
    },
    /// `--amqp-url` names no broker.
    #[error("--amqp-url: {0}")]
    Brokers(#[from] BrokerUrlError),
    /// The broker could not be reached or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The reply queue closed before the result arrived.
    #[error("the reply queue closed before the job's result arrived")]
    NoResult,
}

impl SubmitError {
    /// Exit status: a job that cannot be valid is `rejected`, as a worker
    /// would report it; everything else is a failure to submit.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            SubmitError::Invalid { .. } => ExitCode::from(2),
            _ => ExitCode::from(5),
        }
    }
}

/// Submits the job and, with `--follow`, prints its events until the result.
pub(crate) async fn run(args: &SubmitArgs) -> Result<ExitCode, SubmitError> {
    let bytes = std::fs::read(&args.job).map_err(|source| SubmitError::Read {
        path: args.job.clone(),
        source,
    })?;
    // Validate here too, so a typo is reported at once, not by a worker.
    let job = decode_job(&bytes).map_err(|e| SubmitError::Invalid {
        path: args.job.clone(),
        problems: e.problems(),
    })?;
    let client = Client::connect_any(&args.broker.brokers()?).await?;
    let mut events = client.submit(&args.queue, &job).await?;
    let job_id = job.job_id;
    if !args.follow {
        println!("submitted job {job_id}; events go to buildbot.reply.{job_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut printer = Printer::new(args.json);
    while let Some(event) = events.next().await {
        let event = event?;
        printer.print(&event);
        if let EventBody::Result(result) = &event.body {
            return Ok(exit_code(result.status));
        }
    }
    Err(SubmitError::NoResult)
}
