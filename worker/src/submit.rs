//! `buildbot submit`: the orchestrator's side from a terminal. Validates a
//! job file, publishes it with confirms, and follows its events: the live
//! log with step progress, then the result as the exit status.

use buildbot_protocol::client::{Client, ClientError};
use buildbot_protocol::{decode_job, Event, EventBody, JobResult, JobStatus, StepState};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Settings of `buildbot submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The job, a protocol v1 JSON file (see `protocol/examples/`).
    pub job: PathBuf,

    /// RabbitMQ URL.
    #[arg(
        long,
        env = "BUILDBOT_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Queue to publish the job to.
    #[arg(long, env = "BUILDBOT_QUEUE", default_value = buildbot_protocol::amqp::JOB_QUEUE)]
    pub queue: String,

    /// Follow the job: print its log and exit with a status that reflects
    /// the result (0 succeeded, 1 failed, 2 rejected, 3 timed out,
    /// 4 cancelled). Without it, print the reply queue and exit.
    #[arg(long)]
    pub follow: bool,

    /// With --follow, print every event as one JSON line instead of the log.
    #[arg(long, requires = "follow")]
    pub json: bool,
}

/// Why submitting or following failed (exit status 5).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
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
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SubmitError::Invalid { .. } => ExitCode::from(2),
            _ => ExitCode::from(5),
        }
    }
}

/// Submits the job and, with `--follow`, prints its events until the result.
pub async fn run(args: &SubmitArgs) -> Result<ExitCode, SubmitError> {
    let bytes = std::fs::read(&args.job).map_err(|source| SubmitError::Read {
        path: args.job.clone(),
        source,
    })?;
    // Validate here too, so a typo is reported at once, not by a worker.
    let job = decode_job(&bytes).map_err(|e| SubmitError::Invalid {
        path: args.job.clone(),
        problems: e.problems(),
    })?;
    let client = Client::connect(&args.amqp_url).await?;
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

/// The exit status documented on `--follow`.
pub fn exit_code(status: JobStatus) -> ExitCode {
    ExitCode::from(match status {
        JobStatus::Succeeded => 0,
        JobStatus::Failed => 1,
        JobStatus::Rejected => 2,
        JobStatus::TimedOut => 3,
        JobStatus::Cancelled => 4,
    })
}

/// Renders events for a person (or as JSON lines), noting gaps in `seq`.
struct Printer {
    json: bool,
    started: Instant,
    /// (attempt, seq) of the last event printed.
    last: Option<(u32, u64)>,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            started: Instant::now(),
            last: None,
        }
    }

    fn print(&mut self, event: &Event) {
        let mut out = std::io::stdout().lock();
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(out, "{line}");
            }
            return;
        }
        self.note_sequence(&mut out, event);
        let elapsed = self.started.elapsed().as_secs_f64();
        let _ = match &event.body {
            EventBody::Step(step) => {
                let state = match step.state {
                    StepState::Started => "started",
                    StepState::Succeeded => "succeeded",
                    StepState::Failed => "failed",
                };
                writeln!(out, "==> [{elapsed:7.1}s] {} {state}", step.name.as_str())
            }
            EventBody::Log(log) => write!(out, "{}", log.text),
            EventBody::Result(result) => writeln!(out, "{}", summary(result, elapsed)),
        };
        let _ = out.flush();
    }

    fn note_sequence(&mut self, out: &mut impl Write, event: &Event) {
        match self.last {
            Some((attempt, seq)) if attempt == event.attempt && event.seq != seq + 1 => {
                let _ = writeln!(out, "==> events {}..{} are missing", seq + 1, event.seq);
            }
            Some((attempt, _)) if attempt != event.attempt => {
                let _ = writeln!(
                    out,
                    "==> attempt {} (the job was redelivered)",
                    event.attempt
                );
            }
            _ => {}
        }
        self.last = Some((event.attempt, event.seq));
    }
}

fn summary(result: &JobResult, elapsed: f64) -> String {
    let status = match result.status {
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Rejected => "rejected",
        JobStatus::TimedOut => "timed out",
        JobStatus::Cancelled => "cancelled",
    };
    let mut line = format!("==> [{elapsed:7.1}s] job {status}");
    if let Some(revision) = &result.revision {
        line.push_str(&format!(" at revision {revision}"));
    }
    if let Some(image) = &result.image {
        line.push_str(&format!(
            "\n    pushed {}@{} as {}",
            image.repository,
            image.digest,
            image.tags.join(", ")
        ));
    }
    if let Some(error) = &result.error {
        line.push_str(&format!(
            "\n    {} step: {}",
            error.step.as_str(),
            error.message
        ));
    }
    line
}
