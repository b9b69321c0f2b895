//! `bench`: measures the worker against the real rig (`scripts/rig-up`) and
//! prints one Markdown table: overhead against the bare git + docker CLI
//! pipeline, latency, log throughput, memory, throughput of cached jobs
//! (issue 7), jobs with a builder image and a long-lived worker. It reports figures and never judges them; `scripts/bench`
//! builds the release binaries and runs it. Not part of `cargo test`.
//!
//! Owns the command line, the shared state of the sections, the machine
//! description and the order the sections run in; each section is a module.

mod baseline;
mod builder;
mod caller;
mod dashboard;
mod engine;
mod latency;
mod logs;
mod longlived;
mod memory;
mod overhead;
mod report;
mod repos;
mod throughput;
mod workers;

use anyhow::{bail, Context};
use buildbot_tests::{Rig, TestRepo};
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str =
    "usage: bench [--runs N] [--quick] [--only 1,2,...,8] [--worker-bin PATH] [--amqp-url URL]

  --runs N          runs per side in sections 1 and 6 (default 5)
  --quick           small counts everywhere, to check the benchmark itself works
  --only LIST       run only these sections (1 overhead, 2 latency, 3 logs,
                    4 memory, 5 cached-job throughput, 6 builder jobs,
                    7 long-lived worker, 8 dashboard)
  --worker-bin PATH the buildbot binary to measure (default target/release/buildbot)
  --amqp-url URL    another RabbitMQ than the rig's (workers and caller both use it)";

/// What to run and how much of it.
pub struct Options {
    /// Runs per side and repository in section 1, and of each kind in
    /// section 6.
    pub runs: usize,
    /// Sequential jobs whose first event is timed.
    pub first_event_jobs: usize,
    /// Probe lines of the line-latency build.
    pub probes: usize,
    /// Lines of the log-throughput build.
    pub log_lines: usize,
    /// Runs per side of the log-throughput build.
    pub log_runs: usize,
    /// Lines each log build prints in the memory section.
    pub memory_log_lines: usize,
    /// Jobs per batch in the cached-throughput section.
    pub cached_jobs: usize,
    /// Jobs through the long-lived worker of section 7.
    pub long_lived_jobs: usize,
    /// Sections to run.
    pub sections: Vec<u8>,
    /// The worker binary.
    pub worker_bin: PathBuf,
    /// RabbitMQ to use instead of the rig's.
    pub amqp_url: Option<String>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self {
            runs: 5,
            first_event_jobs: 100,
            probes: 300,
            log_lines: 200_000,
            log_runs: 5,
            memory_log_lines: 50_000,
            cached_jobs: 20,
            long_lived_jobs: 1000,
            sections: vec![1, 2, 3, 4, 5, 6, 7, 8],
            worker_bin: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/release/buildbot"),
            amqp_url: None,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--runs" => options.runs = value()?.parse().context("--runs")?,
                "--worker-bin" => options.worker_bin = value()?.into(),
                "--amqp-url" => options.amqp_url = Some(value()?),
                "--only" => {
                    options.sections = value()?
                        .split(',')
                        .map(|s| s.trim().parse().context("--only takes numbers 1 to 8"))
                        .collect::<anyhow::Result<_>>()?;
                }
                "--quick" => options.quick(),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(options)
    }

    fn quick(&mut self) {
        self.runs = 2;
        self.first_event_jobs = 10;
        self.probes = 30;
        self.log_lines = 20_000;
        self.log_runs = 1;
        self.memory_log_lines = 5_000;
        self.cached_jobs = 4;
        self.long_lived_jobs = 50;
    }
}

/// The repositories every section builds.
pub struct Repos {
    /// A small app.
    pub small: TestRepo,
    /// An app with a large history.
    pub history: TestRepo,
    /// A build printing `LINES` lines.
    pub logs: TestRepo,
    /// A build printing timestamped probe lines.
    pub latency: TestRepo,
    /// An app built with a builder image from its own Dockerfile, or
    /// without one.
    pub builder: TestRepo,
}

/// What the sections share.
pub struct Bench {
    /// The services.
    pub rig: Rig,
    /// The orchestrator side.
    pub caller: caller::Caller,
    /// Starts workers.
    pub launcher: workers::Launcher,
    /// The git and docker CLIs for the baselines.
    pub cli: baseline::Cli,
    /// What to run.
    pub options: Options,
    /// The figures so far.
    pub report: report::Report,
    /// The repositories.
    pub repos: Repos,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    if !options.worker_bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p buildbot-worker` (scripts/bench does)",
            options.worker_bin.display()
        );
    }
    let started = Instant::now();
    let load_before = load_average();
    let work = tempfile::tempdir()?;
    let mut bench = setup(options, work.path()).await?;
    let outcome = run_sections(&mut bench).await;
    let worker_bin = bench.launcher.binary.clone();
    let broker = broker_address(&bench.launcher.amqp_url);
    let Bench { caller, report, .. } = bench;
    caller.clean_up().await;
    if let Err(error) = &outcome {
        eprintln!("the benchmark stopped early: {error:#}");
        eprintln!("worker logs kept in {}", work.keep().display());
    }
    println!("{}", machine(&load_before, &worker_bin, &broker));
    println!("{}", report.markdown());
    println!(
        "total benchmark time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    outcome
}

async fn setup(options: Options, work: &std::path::Path) -> anyhow::Result<Bench> {
    let rig = Rig::try_load().context("the rig is not up: run scripts/rig-up")?;
    let known_hosts = work.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", rig.known_hosts_line()))?;
    let repos = Repos {
        small: repos::small_app(&rig)?,
        history: repos::history_app(&rig)?,
        logs: repos::log_app(&rig)?,
        latency: repos::latency_app(&rig)?,
        // A marker of this run: no earlier run's builder image or layer
        // matches.
        builder: repos::builder_app(&rig, &uuid::Uuid::new_v4().simple().to_string())?,
    };
    let amqp_url = options
        .amqp_url
        .clone()
        .unwrap_or_else(|| rig.amqp_url.clone());
    let launcher = workers::Launcher {
        binary: options.worker_bin.clone(),
        amqp_url: amqp_url.clone(),
        log_dir: work.to_owned(),
        base_image: rig.base_image.clone(),
    };
    Ok(Bench {
        caller: caller::Caller::connect(&amqp_url).await?,
        cli: baseline::Cli::new(&rig.ssh_key, &known_hosts),
        launcher,
        options,
        report: report::Report::default(),
        repos,
        rig,
    })
}

async fn run_sections(bench: &mut Bench) -> anyhow::Result<()> {
    let sections = bench.options.sections.clone();
    for section in sections {
        match section {
            1 => overhead::run(bench).await,
            2 => latency::run(bench).await,
            3 => logs::run(bench).await,
            4 => memory::run(bench).await,
            5 => throughput::run(bench).await,
            6 => builder::run(bench).await,
            7 => longlived::run(bench).await,
            8 => dashboard::run(bench).await,
            other => bail!("there is no section {other}"),
        }
        .with_context(|| format!("section {section}"))?;
    }
    Ok(())
}

/// The machine the figures were taken on, and how busy it was.
fn machine(load_before: &str, worker_bin: &std::path::Path, broker: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(|kib| kib.trim().to_owned())
        .unwrap_or_default();
    format!(
        "machine: {cpus} CPUs ({model}), {memory} RAM, kernel {}\n\
         load average (1, 5, 15 min) at start: {load_before}; at end: {}\n\
         worker binary: {}, RabbitMQ at {broker}\n",
        read("/proc/sys/kernel/osrelease").trim(),
        load_average(),
        worker_bin.display()
    )
}

/// Host, port and vhost of an AMQP URL, without the credentials.
fn broker_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.rsplit_once('@')
        .map_or(rest, |(_, host)| host)
        .to_owned()
}

fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A /proc file's text, or nothing: the description is informative only.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
