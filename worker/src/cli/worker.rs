//! `buildbot worker`: its flags (each also readable from an environment
//! variable), the settings they make, and the worker's start: Docker
//! Engine client, leftover sweep, HTTP endpoint, then the consumer until a
//! shutdown signal.

use super::{BrokerArgs, JobRunArgs};
use crate::consumer::{self, Observers, Settings};
use crate::events::reply::EventsExchange;
use crate::events::{LogBatching, DEFAULT_MAX_JOB_LOG_BYTES};
use crate::observe::{disk::DiskWatch, http, metrics::Metrics};
use crate::pipeline::{
    docker, parse_cpus, parse_memory, parse_network, parse_size, remove_leftovers, workspaces,
    ContainerLimits, HostKeyDefault, ImagePolicy, LocalImages, Memory, Network, SizeLimits,
};
use anyhow::Context;
use buildbot_protocol::amqp::brokers::Brokers;
use buildbot_protocol::amqp::{DEFAULT_DELIVERY_LIMIT, JOB_QUEUE};
use buildbot_protocol::signature::{parse_public_keys, VerifyingKey};
use buildbot_protocol::MAX_JOB_BYTES;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of `buildbot worker`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Where RabbitMQ is.
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    #[command(flatten)]
    pub(crate) jobs: JobRunArgs,

    /// OpenSSH known_hosts file pinning the SSH host keys of jobs that have
    /// no repo.known_hosts (a job's own pin wins). Read once at start; a
    /// bad file stops the worker. Given, --accept-any-host-key is ignored.
    // Not a clap conflict: an env var set to 0 would count as given.
    #[arg(long, env = "BUILDBOT_KNOWN_HOSTS", value_name = "FILE")]
    pub(crate) known_hosts: Option<PathBuf>,

    /// Queue the worker takes jobs from. Its dead-letter exchange and queue
    /// are named `<queue>.dlx` and `<queue>.dead`.
    #[arg(long, env = "BUILDBOT_QUEUE", default_value = JOB_QUEUE)]
    pub(crate) queue: String,

    /// Jobs run at once; also the AMQP prefetch.
    #[arg(long, env = "BUILDBOT_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,

    /// Deliveries of one job before the broker dead-letters it: with 3, a
    /// job whose worker dies three times is not delivered a fourth time.
    /// Set when the queue is created (`x-delivery-limit`, one less).
    #[arg(long, env = "BUILDBOT_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) delivery_limit: u32,

    /// Id reported in results and logs, and the name of this worker's
    /// workspace directory. Defaults to `<hostname>-<random>`; set it
    /// stable (and unique among running workers) so a restart cleans up
    /// after a crash.
    #[arg(long, env = "BUILDBOT_WORKER_ID", value_parser = parse_worker_id)]
    pub(crate) worker_id: Option<String>,

    /// Parent of the workers' workspace directories: jobs check out under
    /// `<dir>/<worker-id>/`, which a worker empties when it starts.
    /// Defaults to `buildbot/` in the system temp dir.
    #[arg(long, env = "BUILDBOT_WORKSPACE_DIR")]
    pub(crate) workspace_dir: Option<PathBuf>,

    /// Largest job message accepted, in bytes; larger ones are rejected.
    #[arg(long, env = "BUILDBOT_MAX_JOB_BYTES", default_value_t = MAX_JOB_BYTES)]
    pub(crate) max_job_bytes: usize,

    /// A log event is published once this many bytes of output wait.
    #[arg(long, env = "BUILDBOT_LOG_BATCH_BYTES", default_value_t = 64 * 1024)]
    pub(crate) log_batch_bytes: usize,

    /// Bytes of log text one job may publish; past it the job goes on, one
    /// notice says the log was truncated, the rest is dropped.
    #[arg(long, env = "BUILDBOT_MAX_LOG_BYTES", default_value_t = DEFAULT_MAX_JOB_LOG_BYTES)]
    pub(crate) max_log_bytes: u64,

    /// A log line is published as soon as the previous publish is done;
    /// lines that keep arriving faster are batched, and wait at most this
    /// many milliseconds.
    #[arg(long, env = "BUILDBOT_LOG_BATCH_MS", default_value_t = 50)]
    pub(crate) log_batch_ms: u64,

    /// Whether every event also goes to the topic exchange
    /// `buildbot.events`, for dashboards.
    #[arg(long, env = "BUILDBOT_EVENTS_EXCHANGE", value_enum, default_value_t = EventsExchangeArg::On)]
    pub(crate) events_exchange: EventsExchangeArg,

    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and
    /// `/readyz` (e.g. `0.0.0.0:9800`; port 0 picks a free one). None: no
    /// endpoint.
    #[arg(long, env = "BUILDBOT_HTTP_ADDR")]
    pub(crate) http_addr: Option<std::net::SocketAddr>,

    /// Accept only jobs signed by one of these ed25519 public keys (base64
    /// of 32 bytes; comma-separated in the environment). Unsigned or forged
    /// jobs are rejected before git or Docker is touched. Empty: signatures
    /// are not checked.
    #[arg(long = "trusted-key", env = "BUILDBOT_TRUSTED_KEYS", value_delimiter = ',',
          value_parser = parse_trusted_key)]
    pub(crate) trusted_keys: Vec<VerifyingKey>,

    /// With --trusted-key: the longest validity a signed job's envelope
    /// may have (`expires_at - issued_at`), in seconds. Its nonce is
    /// remembered by every worker until it expires, so a replay is refused.
    #[arg(long, env = "BUILDBOT_MAX_SIGNED_VALIDITY_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) max_signed_validity_secs: u64,

    /// On SIGTERM/SIGINT, seconds the running jobs get to finish before
    /// they are stopped and requeued for another worker.
    #[arg(long, env = "BUILDBOT_DRAIN_TIMEOUT_SECS", default_value_t = 300)]
    pub(crate) drain_timeout_secs: u64,

    /// An image jobs may use as this worker's Docker Engine has it (its
    /// base images, say): `name` for any tag of it, `name:tag`, or
    /// `name@digest`. Repeatable; comma-separated in the environment.
    /// Every other image a job names (`FROM`, `COPY --from`,
    /// `build.builder.image`, `build.cache_from`) is resolved at its
    /// registry with the job's own credentials first, since the engine is
    /// shared by every job this worker runs.
    #[arg(
        long = "local-image",
        env = "BUILDBOT_LOCAL_IMAGES",
        value_delimiter = ',',
        value_name = "IMAGE"
    )]
    pub(crate) local_images: Vec<String>,

    /// Bytes of images the worker keeps on the Docker Engine as cache (the
    /// runtime images it built, cached builder images); past it, after
    /// each job, the least recently used go. 0: each job's go right after
    /// it. Accepts k, m, g suffixes (powers of 1024).
    #[arg(long, env = "BUILDBOT_IMAGE_CACHE_BYTES", default_value = "10g",
          value_parser = parse_byte_size)]
    pub(crate) image_cache_bytes: u64,

    /// Free space the Docker Engine's data root and the workspace
    /// directory must each keep (after the image cache's trim); below it
    /// the worker stops taking jobs, and `/readyz` says why, until space
    /// returns. Accepts k, m, g suffixes; 0 turns the check off.
    #[arg(long, env = "BUILDBOT_MIN_FREE_DISK", default_value = "2g",
          value_parser = parse_byte_size)]
    pub(crate) min_free_disk: u64,

    /// Accept only jobs whose image.repository is this prefix or under it
    /// (`registry.example.com/team-a` allows `…/team-a` and `…/team-a/app`,
    /// not `…/team-ab`; end it with `/` or `:` for a plain string prefix).
    /// Repeatable; comma-separated in the environment. Empty: any.
    #[arg(
        long = "allowed-repository",
        env = "BUILDBOT_ALLOWED_REPOSITORIES",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    pub(crate) allowed_repositories: Vec<String>,

    /// Seconds a dead-lettered job's copy (credentials masked) stays in
    /// `<queue>.parked` for inspection.
    #[arg(long, env = "BUILDBOT_PARKED_TTL_SECS", default_value_t = 7 * 24 * 60 * 60)]
    pub(crate) parked_ttl_secs: u64,
}

/// `--events-exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventsExchangeArg {
    /// A copy of every event, rejections and dead-letter results included;
    /// any broker user allowed to bind a queue to the exchange reads every
    /// job's log.
    On,
    /// Events go to their job's reply queue only; the exchange is not
    /// declared.
    Off,
}

/// What one job's containers (the builder, the image builds' `RUN` steps)
/// may use: the setting of every subcommand that runs jobs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LimitArgs {
    /// Memory of a job's container, swap not allowed on top: bytes or a
    /// number with k, m, g (powers of 1024). The image builds' `RUN` steps
    /// get at most 2 GiB - 1 byte (a limit of the Engine API's build
    /// call).
    #[arg(long, env = "BUILDBOT_JOB_MEMORY", default_value = "4g",
          value_parser = |s: &str| parse_memory(s).map_err(|e| e.to_string()))]
    pub(crate) job_memory: Memory,

    /// Processes (threads included) a builder container may run at once:
    /// a fork bomb fails its job, not the host.
    #[arg(long, env = "BUILDBOT_JOB_PIDS", default_value_t = 1024,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) job_pids: i64,

    /// CPUs a job's container may use (e.g. 2 or 1.5). Default: all of
    /// the Docker host's.
    #[arg(long, env = "BUILDBOT_JOB_CPUS",
          value_parser = |s: &str| parse_cpus(s).map_err(|e| e.to_string()))]
    pub(crate) job_cpus: Option<f64>,

    /// Network of a job's containers: `none` (no network), `bridge`
    /// (Docker's default, outbound access), or a network's name (e.g. one
    /// whose firewall blocks the cloud metadata endpoint). `host` and
    /// `container:<id>` are refused.
    #[arg(long, env = "BUILDBOT_BUILDER_NETWORK", default_value = "bridge",
          value_parser = |s: &str| parse_network(s).map_err(|e| e.to_string()))]
    pub(crate) builder_network: Network,
}

impl LimitArgs {
    /// The limits these flags make.
    pub(crate) fn limits(&self) -> ContainerLimits {
        ContainerLimits {
            memory: self.job_memory,
            pids: self.job_pids,
            cpus: self.job_cpus,
            network: self.builder_network.clone(),
        }
    }
}

/// How much of a job's checkout and builder artifact the worker takes on
/// before failing the job (not the worker) with the limit named.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SizeLimitArgs {
    /// Directory levels a build context or builder source may have.
    #[arg(long, env = "BUILDBOT_MAX_CONTEXT_DEPTH", default_value_t = SizeLimits::CONTEXT_DEPTH as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_context_depth: u32,

    /// Directory entries a build context or builder source may have.
    #[arg(long, env = "BUILDBOT_MAX_CONTEXT_ENTRIES", default_value_t = SizeLimits::CONTEXT_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_context_entries: u64,

    /// Bytes of file content a builder's artifact may hold.
    #[arg(long, env = "BUILDBOT_MAX_ARTIFACT_BYTES", default_value_t = SizeLimits::ARTIFACT_BYTES)]
    pub(crate) max_artifact_bytes: u64,

    /// Entries (files, directories, links) a builder's artifact may hold.
    #[arg(long, env = "BUILDBOT_MAX_ARTIFACT_ENTRIES", default_value_t = SizeLimits::ARTIFACT_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_artifact_entries: u64,

    /// Directory levels a builder's artifact may have.
    #[arg(long, env = "BUILDBOT_MAX_ARTIFACT_DEPTH", default_value_t = SizeLimits::ARTIFACT_DEPTH as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_artifact_depth: u32,
}

impl SizeLimitArgs {
    /// The pipeline's limits these flags make.
    pub(crate) fn limits(&self) -> SizeLimits {
        SizeLimits {
            context_depth: self.max_context_depth as usize,
            context_entries: self.max_context_entries,
            artifact_bytes: self.max_artifact_bytes,
            artifact_entries: self.max_artifact_entries,
            artifact_depth: self.max_artifact_depth as usize,
        }
    }
}

/// A size in bytes, with the suffixes `--job-memory` takes.
fn parse_byte_size(text: &str) -> Result<u64, String> {
    parse_size(text)
        .map(i64::unsigned_abs)
        .map_err(|e| e.to_string())
}

fn parse_worker_id(text: &str) -> Result<String, String> {
    workspaces::check_worker_id(text).map(|()| text.to_owned())
}

fn parse_trusted_key(text: &str) -> Result<VerifyingKey, String> {
    parse_public_keys([text])
        .map_err(|_| "not base64 of a 32-byte ed25519 public key".to_owned())
        .and_then(|keys| keys.into_iter().next().ok_or_else(|| "empty".to_owned()))
}

impl WorkerArgs {
    /// The configured worker id, or a fresh `<hostname>-<random>`.
    fn resolved_worker_id(&self) -> String {
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

    /// The consumer's settings these flags make, connecting to `brokers`
    /// and watching the free disk of `disk_paths`.
    fn settings(&self, brokers: Brokers, disk_paths: Vec<PathBuf>) -> Settings {
        Settings {
            brokers,
            queue: self.queue.clone(),
            concurrency: self.concurrency,
            delivery_limit: self.delivery_limit,
            max_job_bytes: self.max_job_bytes,
            batching: LogBatching {
                max_job_bytes: self.max_log_bytes,
                max_bytes: self.log_batch_bytes.max(1),
                max_delay: Duration::from_millis(self.log_batch_ms),
                ..Default::default()
            },
            events_exchange: match self.events_exchange {
                EventsExchangeArg::On => EventsExchange::On,
                EventsExchangeArg::Off => EventsExchange::Off,
            },
            trusted_keys: self.trusted_keys.clone(),
            max_signed_validity: Duration::from_secs(self.max_signed_validity_secs),
            disk: DiskWatch::new(disk_paths, self.min_free_disk),
            allowed_repositories: self.allowed_repositories.clone(),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            parked_ttl: Duration::from_secs(self.parked_ttl_secs),
        }
    }
}

/// Where the worker writes: the engine's data root (when the engine says
/// and this process sees it) and the workspace directory.
async fn disk_paths(docker: &bollard::Docker, workspace_root: &std::path::Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    match docker.info().await.map(|info| info.docker_root_dir) {
        Ok(Some(root)) => paths.push(PathBuf::from(root)),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the Docker Engine did not name its data root; its free disk is not watched")
        }
    }
    paths.push(workspace_root.to_owned());
    paths
}

/// Runs the worker until SIGTERM or SIGINT, then drains.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let brokers = args.broker.brokers().context("--amqp-url")?;
    // Parsed once, here: a bad file stops the worker before any job.
    let pinned = args
        .known_hosts
        .as_deref()
        .map(HostKeyDefault::from_file)
        .transpose()?;
    // A daemon that is down is reported by /readyz and by the jobs that
    // fail meanwhile; only a malformed DOCKER_HOST stops the worker.
    let docker = docker::client()
        .await
        .context("DOCKER_HOST does not name a usable Docker Engine address")?;
    let worker_id = args.resolved_worker_id();
    tracing::info!(worker_id = %worker_id, "worker starting");
    match remove_leftovers(&docker, &worker_id).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed builder leftovers of an earlier run"),
        Err(e) => tracing::warn!(error = %e, "cannot look for builder leftovers"),
    }
    let (workspace_root, swept) = workspaces::prepare(args.workspace_dir.as_deref(), &worker_id)
        .with_context(|| format!("cannot prepare the workspace directory of worker {worker_id}"))?;
    if swept > 0 {
        tracing::info!(swept, dir = %workspace_root.display(), "removed workspaces an earlier run of this worker left");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let observers = Observers {
        metrics: Metrics::new(),
        readiness: Arc::default(),
    };
    if let Some(addr) = args.http_addr {
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
    let disk_paths = disk_paths(&docker, &workspace_root).await;
    let pipeline = args
        .jobs
        .pipeline(
            docker,
            worker_id,
            Some(workspace_root),
            pinned,
            ImagePolicy::Shared {
                local_images: LocalImages::new(args.local_images.clone()),
                cache_bytes: args.image_cache_bytes,
            },
        )
        .context("cannot set the git network timeouts")?;
    // What an earlier run kept may be over a budget lowered since.
    if let Some(trim) = pipeline.trim_image_cache().await {
        observers
            .metrics
            .image_cache_trimmed(trim.kept_bytes, trim.evicted);
        tracing::info!(
            kept_bytes = trim.kept_bytes,
            evicted = trim.evicted,
            budget = args.image_cache_bytes,
            "image cache within its budget"
        );
    }
    let settings = args.settings(brokers, disk_paths);
    consumer::run_until_shutdown(&settings, pipeline, shutdown, observers).await?;
    tracing::info!("worker stopped");
    Ok(())
}
