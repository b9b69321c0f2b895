//! Worker configuration: every setting in one struct, each readable from a
//! flag or an environment variable.

use buildbot_protocol::amqp::{DEFAULT_DELIVERY_LIMIT, JOB_QUEUE};
use buildbot_protocol::signature::{parse_public_keys, VerifyingKey};
use buildbot_protocol::MAX_JOB_BYTES;
use std::path::PathBuf;
use std::time::Duration;

/// Where RabbitMQ is: the setting of every subcommand that talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL. Its password is never logged.
    #[arg(
        long,
        env = "BUILDBOT_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
}

/// Settings of `buildbot worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Where RabbitMQ is.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Queue the worker takes jobs from. Its dead-letter exchange and queue
    /// are named `<queue>.dlx` and `<queue>.dead`.
    #[arg(long, env = "BUILDBOT_QUEUE", default_value = JOB_QUEUE)]
    pub queue: String,

    /// Jobs run at once; also the AMQP prefetch.
    #[arg(long, env = "BUILDBOT_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Deliveries of one job before the broker dead-letters it
    /// (`x-delivery-limit` of the job queue, set when the queue is created).
    #[arg(long, env = "BUILDBOT_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,

    /// Id reported in results and logs. Defaults to `<hostname>-<random>`.
    #[arg(long, env = "BUILDBOT_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Directory for the per-job workspaces (removed after every job).
    /// Defaults to the system temp dir.
    #[arg(long, env = "BUILDBOT_WORKSPACE_DIR")]
    pub workspace_dir: Option<PathBuf>,

    /// Largest job message accepted, in bytes; larger ones are rejected.
    #[arg(long, env = "BUILDBOT_MAX_JOB_BYTES", default_value_t = MAX_JOB_BYTES)]
    pub max_job_bytes: usize,

    /// A log event is published once this many bytes of output wait.
    #[arg(long, env = "BUILDBOT_LOG_BATCH_BYTES", default_value_t = 64 * 1024)]
    pub log_batch_bytes: usize,

    /// Complete log lines wait at most this many milliseconds.
    #[arg(long, env = "BUILDBOT_LOG_BATCH_MS", default_value_t = 50)]
    pub log_batch_ms: u64,

    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and
    /// `/readyz` (e.g. `0.0.0.0:9800`; port 0 picks a free one). None: no
    /// endpoint.
    #[arg(long, env = "BUILDBOT_HTTP_ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,

    /// Accept only jobs signed by one of these ed25519 public keys (base64
    /// of 32 bytes; comma-separated in the environment). Unsigned or forged
    /// jobs are rejected before git or Docker is touched. Empty: signatures
    /// are not checked.
    #[arg(long = "trusted-key", env = "BUILDBOT_TRUSTED_KEYS", value_delimiter = ',',
          value_parser = parse_trusted_key)]
    pub trusted_keys: Vec<VerifyingKey>,

    /// On SIGTERM/SIGINT, seconds the running jobs get to finish before
    /// they are stopped and requeued for another worker.
    #[arg(long, env = "BUILDBOT_DRAIN_TIMEOUT_SECS", default_value_t = 300)]
    pub drain_timeout_secs: u64,
}

fn parse_trusted_key(text: &str) -> Result<VerifyingKey, String> {
    parse_public_keys([text])
        .map_err(|_| "not base64 of a 32-byte ed25519 public key".to_owned())
        .and_then(|keys| keys.into_iter().next().ok_or_else(|| "empty".to_owned()))
}

impl WorkerConfig {
    /// The configured worker id, or a fresh `<hostname>-<random>`.
    pub fn resolved_worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "worker".to_owned());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }

    /// Exchange jobs are dead-lettered to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// Queue holding dead-lettered jobs.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    /// How long running jobs may take to finish at shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Log batching as configured.
    pub fn log_batching(&self) -> crate::events::LogBatching {
        crate::events::LogBatching {
            max_bytes: self.log_batch_bytes.max(1),
            max_delay: Duration::from_millis(self.log_batch_ms),
            ..Default::default()
        }
    }
}
