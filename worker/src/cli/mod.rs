//! The command line: raw flags, parsed by clap, and the subcommands they
//! start. One module per [`Command`] variant. Flags are turned into domain
//! values (a [`Job`](buildbot_protocol::Job), the worker's settings) here
//! and nowhere else; the rest of the crate never sees clap.

mod build;
mod dashboard;
mod schema;
mod submit;
mod worker;

use crate::pipeline::{CloneSettings, HostKeyDefault, DEFAULT_MAX_CLONE_BYTES};
use buildbot_protocol::amqp::brokers::{BrokerUrl, BrokerUrlError, Brokers};
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
    // Boxed, like Build: its many flags would make every other variant as
    // large.
    Worker(Box<worker::WorkerArgs>),
    /// Publish a job file and, with --follow, print its live log and exit
    /// with a status that reflects the result.
    Submit(submit::SubmitArgs),
    /// Run one job here against the local Docker Engine, without a broker,
    /// printing its live log; the exit status is the result (0 succeeded,
    /// 1 failed, 2 invalid job, 3 timed out, 4 interrupted, 5 could not
    /// run).
    // Boxed: its many flags would make every other variant as large.
    Build(Box<build::BuildArgs>),
    /// Serve a live web view of every job (from the events exchange) on
    /// --http-addr (loopback unless --user is set).
    Dashboard(dashboard::DashboardArgs),
    /// Write the JSON Schemas of the job and event messages into a
    /// directory, check them (--check), or print one (--print).
    Schema(schema::SchemaArgs),
}

/// Where RabbitMQ is: the setting of every subcommand that talks to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct BrokerArgs {
    /// RabbitMQ URL. Repeat the flag, or separate URLs with commas, for
    /// the nodes of a cluster: the first that answers is used, and a lost
    /// connection fails over to the next (write a comma in a password as
    /// %2C). Shown only as host:port: its password is never logged.
    #[arg(
        long = "amqp-url",
        env = "BUILDBOT_AMQP_URL",
        value_name = "URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_delimiter = ',',
        value_parser = BrokerUrlParser,
        hide_env_values = true
    )]
    amqp_urls: Vec<BrokerUrl>,
}

impl BrokerArgs {
    /// The nodes to connect to, in the order given.
    pub(crate) fn brokers(&self) -> Result<Brokers, BrokerUrlError> {
        Brokers::new(self.amqp_urls.clone())
    }
}

/// Parses one `--amqp-url` into a [`BrokerUrl`]. Not a plain function:
/// clap would quote the rejected value, password and all, in its error.
#[derive(Debug, Clone, Copy)]
struct BrokerUrlParser;

impl clap::builder::TypedValueParser for BrokerUrlParser {
    type Value = BrokerUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<BrokerUrl, clap::Error> {
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "--amqp-url".to_owned(), |long| format!("--{long}"));
        let refused = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {flag} (or BUILDBOT_AMQP_URL): {reason}\n"),
            )
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("not UTF-8".to_owned()))?;
        BrokerUrl::parse(text).map_err(|e| refused(e.to_string()))
    }
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

/// Whom a clone trusts and how much it may fetch: the settings of every
/// subcommand that clones.
#[derive(Debug, Clone, Args)]
pub(crate) struct CloneArgs {
    /// Accept any SSH host key from servers that nothing pins (no
    /// repo.known_hosts in the job, no worker --known-hosts). Unsafe: a
    /// machine in the middle can then serve any code; each such job's log
    /// says so. Without it such clones fail.
    #[arg(long, env = "BUILDBOT_ACCEPT_ANY_HOST_KEY",
          value_parser = clap::builder::BoolishValueParser::new())]
    accept_any_host_key: bool,

    /// Most bytes one clone (with its submodules) may receive; a larger
    /// transfer is stopped and the job fails.
    #[arg(long, env = "BUILDBOT_MAX_CLONE_BYTES", value_name = "BYTES",
          default_value_t = DEFAULT_MAX_CLONE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_clone_bytes: u64,
}

impl CloneArgs {
    /// The clone settings, with `pinned` (the worker's `--known-hosts`) as
    /// the default pin. Accepting any key is logged loudly.
    fn settings(&self, pinned: Option<HostKeyDefault>) -> CloneSettings {
        let host_keys = match pinned {
            Some(pinned) => pinned,
            None if self.accept_any_host_key => {
                tracing::warn!(
                    "--accept-any-host-key: SSH host keys of servers that no known_hosts pins \
                     are NOT verified; a machine in the middle can serve any code to such jobs"
                );
                HostKeyDefault::AcceptAny
            }
            None => HostKeyDefault::Refuse,
        };
        CloneSettings {
            host_keys,
            max_bytes: self.max_clone_bytes,
        }
    }
}

/// The settings of every subcommand that runs jobs (`worker`, `build`):
/// how a clone waits and which host keys it trusts, and what a job's
/// containers and inputs may use.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobRunArgs {
    #[command(flatten)]
    git_timeouts: GitTimeoutArgs,

    #[command(flatten)]
    limits: worker::LimitArgs,

    #[command(flatten)]
    size_limits: worker::SizeLimitArgs,

    /// Without a `--known-hosts` pin (the job's or the worker's), an SSH
    /// clone fails unless `--accept-any-host-key` is given.
    #[command(flatten)]
    clone: CloneArgs,

    /// Whether images are built on the Engine's BuildKit, where it has it
    /// (`off`: the legacy builder only). BuildKit's `RUN` steps run in the
    /// daemon's cgroup: `--job-memory`, `--job-cpus` and `--job-pids` do
    /// not bind them, only builder containers and legacy builds; with
    /// `off`, jobs that need BuildKit (`build.secrets`,
    /// `build.cache_inline`, `build.engine: buildkit`) fail saying so.
    #[arg(long, env = "BUILDBOT_BUILDKIT", value_enum, default_value_t = BuildkitArg::On)]
    buildkit: BuildkitArg,
}

/// `--buildkit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BuildkitArg {
    /// BuildKit where the Engine has it, unless a job asks for `legacy`.
    On,
    /// The legacy builder for every job.
    Off,
}

impl JobRunArgs {
    /// Puts the git timeouts in effect for this process and makes the
    /// pipeline jobs run through, trusting `pinned` host keys by default
    /// and using the engine's images as `images` allows.
    fn pipeline(
        &self,
        docker: bollard::Docker,
        worker_id: String,
        workspace_root: Option<std::path::PathBuf>,
        pinned: Option<crate::pipeline::HostKeyDefault>,
        images: crate::pipeline::ImagePolicy,
    ) -> Result<crate::pipeline::Pipeline, git2::Error> {
        self.git_timeouts.apply()?;
        let settings = crate::pipeline::JobSettings {
            limits: self.limits.limits(),
            size_limits: self.size_limits.limits(),
            clone: self.clone.settings(pinned),
            images,
            buildkit: self.buildkit == BuildkitArg::On,
        };
        Ok(crate::pipeline::Pipeline::new(
            docker,
            worker_id,
            workspace_root,
            settings,
        ))
    }
}

/// Parses the command line, sets up logging, turns core dumps off and
/// runs the subcommand.
pub async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // Every subcommand but `schema` holds a job's credentials in memory.
    crate::core_dumps::disable();
    match cli.command {
        Command::Worker(args) => {
            worker::run(*args).await?;
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
        Command::Dashboard(args) => Ok(dashboard::run(&args).await.unwrap_or_else(|e| {
            eprintln!("buildbot dashboard: {e}");
            ExitCode::from(2)
        })),
        Command::Schema(args) => Ok(schema::run(&args)?),
    }
}

/// Environment variable that lifts the cap on dependencies' log levels.
const LOG_UNSAFE_ENV: &str = "BUILDBOT_LOG_UNSAFE";

/// Logs to stderr, filtered by `BUILDBOT_LOG` (default `info`). Other
/// crates than buildbot's own are capped at `info` whatever the filter
/// says: at debug and trace, lapin prints every job body (keys, passwords)
/// and the AMQP login, and bollard raw build output and build arguments.
/// `BUILDBOT_LOG_UNSAFE=1` lifts the cap, loudly.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter, EnvFilter, Layer};
    let wanted = EnvFilter::try_from_env("BUILDBOT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let unsafe_logs = std::env::var_os(LOG_UNSAFE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    let dependency_cap = filter::filter_fn(move |meta| {
        unsafe_logs
            || is_own_target(meta.target())
            || (*meta.level() <= tracing::Level::INFO && !is_noisy_target(meta.target()))
    });
    // Colours only for a person at a terminal, not in files or collectors.
    let ansi = std::io::stderr().is_terminal();
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(wanted).with_filter(dependency_cap))
        .init();
    if unsafe_logs {
        tracing::warn!(
            "{LOG_UNSAFE_ENV} is set: dependencies log at any level BUILDBOT_LOG asks for, \
             and at debug or trace they print job bodies, credentials and build arguments \
             in clear; unset it outside a debugging session"
        );
    }
}

/// Dependency events that carry whole messages even at warn: lapin dumps
/// every returned message as a byte array (the worker logs its own line
/// with the job id and size instead).
fn is_noisy_target(target: &str) -> bool {
    target == "lapin::returned_messages"
}

/// Events of buildbot's own crates, which never log a credential at any
/// level.
fn is_own_target(target: &str) -> bool {
    target.starts_with("buildbot")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit_brokers(args: &[&str]) -> Result<String, String> {
        let argv = ["buildbot", "submit", "job.json"].iter().chain(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Submit(submit),
                ..
            }) => Ok(submit
                .broker
                .brokers()
                .map_err(|e| e.to_string())?
                .to_string()),
            Ok(other) => Err(format!("not submit: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn amqp_url_is_repeatable_and_takes_comma_lists() {
        let nodes = submit_brokers(&[
            "--amqp-url",
            "amqp://u:p@a:5673/%2f,amqp://u:p@b/%2f",
            "--amqp-url",
            "amqps://u:p@c/%2f",
        ]);
        assert_eq!(nodes.as_deref(), Ok("a:5673, b:5672, c:5671"));
    }

    #[test]
    fn a_bad_amqp_url_is_named_by_its_flag_without_its_password() {
        let error = submit_brokers(&["--amqp-url", "amqp://u:p@a/%2f,http://u:hunter2@b/"])
            .expect_err("http is not AMQP");
        assert!(error.contains("--amqp-url"), "{error}");
        assert!(error.contains("http://u:********@b/"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
