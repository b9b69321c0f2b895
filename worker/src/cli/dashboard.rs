//! `buildbot dashboard`: raw flags of the live web view, and the checks
//! that keep it safe by default (loopback, or credentials).

use super::BrokerArgs;
use crate::dashboard::{self, Access, Bounds};
use buildbot_protocol::Secret;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Environment variable holding the password of `--user`.
const PASSWORD_ENV: &str = "BUILDBOT_DASHBOARD_PASSWORD";

/// Settings of `buildbot dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Where RabbitMQ is. The account needs only to bind a private queue to
    /// the events exchange (the `buildbot-dashboard` account of
    /// deploy/rabbitmq-definitions.json).
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    /// Which events to follow, as a binding key on the events exchange
    /// (`<service_id>.<job_id>.<kind>`): `#` for every job, `billing-api.#`
    /// for one service.
    #[arg(long, env = "BUILDBOT_DASHBOARD_BINDING_KEY", default_value = "#")]
    pub(crate) binding_key: String,

    /// The job queue whose depth the page shows.
    #[arg(long, env = "BUILDBOT_QUEUE", default_value = buildbot_protocol::amqp::JOB_QUEUE)]
    pub(crate) queue: String,

    /// Address to serve the page on. Anything but loopback needs --user.
    #[arg(
        long,
        env = "BUILDBOT_DASHBOARD_ADDR",
        default_value = "127.0.0.1:8088"
    )]
    pub(crate) http_addr: SocketAddr,

    /// User name for HTTP basic auth; the password comes from
    /// BUILDBOT_DASHBOARD_PASSWORD.
    #[arg(long, env = "BUILDBOT_DASHBOARD_USER")]
    pub(crate) user: Option<String>,

    /// Jobs kept in memory; the oldest seen goes first.
    #[arg(long, env = "BUILDBOT_DASHBOARD_MAX_JOBS", default_value_t = 500)]
    pub(crate) max_jobs: usize,

    /// Log bytes kept per job; past it the page says the rest is not kept.
    #[arg(long, env = "BUILDBOT_DASHBOARD_MAX_LOG_BYTES", default_value_t = 1 << 20)]
    pub(crate) max_log_bytes: usize,
}

/// Why the dashboard does not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DashboardError {
    #[error("refusing to serve on {0} without credentials: anyone who reaches it would read every job's log. Set --user and {PASSWORD_ENV}, or bind to 127.0.0.1")]
    OpenBeyondLoopback(SocketAddr),
    #[error("--user needs {PASSWORD_ENV} set in the environment")]
    NoPassword,
    #[error("--max-jobs must be at least 1")]
    NoJobs,
    #[error("{0}")]
    Brokers(String),
    #[error("cannot serve on the address: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves until SIGTERM or SIGINT.
pub(crate) async fn run(args: &DashboardArgs) -> Result<ExitCode, DashboardError> {
    let access = access(args)?;
    if args.max_jobs == 0 {
        return Err(DashboardError::NoJobs);
    }
    let brokers = args
        .broker
        .brokers()
        .map_err(|e| DashboardError::Brokers(e.to_string()))?;
    let settings = dashboard::Settings {
        brokers,
        queue: args.queue.clone(),
        binding_key: args.binding_key.clone(),
        http_addr: args.http_addr,
        access,
        bounds: Bounds {
            max_jobs: args.max_jobs,
            max_log_bytes: args.max_log_bytes,
        },
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    dashboard::run(settings, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Open on loopback; basic auth when `--user` is set; refused otherwise.
fn access(args: &DashboardArgs) -> Result<Access, DashboardError> {
    match &args.user {
        Some(user) => {
            let password = std::env::var(PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or(DashboardError::NoPassword)?;
            Ok(Access::Basic {
                user: user.clone(),
                password: Secret::new(password),
            })
        }
        None if args.http_addr.ip().is_loopback() => Ok(Access::Open),
        None => Err(DashboardError::OpenBeyondLoopback(args.http_addr)),
    }
}
