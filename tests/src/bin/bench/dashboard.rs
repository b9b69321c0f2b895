//! Section 8: `buildbot dashboard` under load. Concurrent jobs each print
//! many lines while several live pages are open (each a client of the
//! dashboard's event stream, `/api/stream`, as a browser tab is). Reports
//! event → page latency (the worker's stamp on the event to its arrival
//! at the page), the dashboard's memory and CPU, and whether every page
//! got every event.

use crate::caller;
use crate::report::{mib, p50_p99_ms, secs};
use crate::workers::memory_of;
use crate::Bench;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Concurrent jobs, lines each prints, and open pages.
const JOBS: usize = 20;
const LINES: usize = 10_000;
const PAGES: usize = 5;

/// What one page saw: the latency of each log update, and each job's
/// event numbers.
#[derive(Default)]
struct Page {
    latencies_ms: Vec<f64>,
    seqs: BTreeMap<String, BTreeSet<u64>>,
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    eprintln!("==> 8. dashboard: {JOBS} concurrent jobs × {LINES} lines, {PAGES} live pages");
    let queue = bench.caller.new_queue("dashboard");
    let _worker = bench
        .launcher
        .start("bench-dashboard", &queue, JOBS as u16)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let service = format!("dash{}", uuid::Uuid::new_v4().simple());
    let (mut dashboard, addr) = start_dashboard(bench, &format!("{service}.#")).await?;
    let pid = dashboard.id().context("the dashboard exited")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pages: Vec<_> = (0..PAGES)
        .map(|_| tokio::spawn(follow_page(addr.clone(), stopped.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let repo = bench.repos.logs.clone();
    let image = format!("{}/bench/dashboard", bench.rig.registry);
    let jobs: Vec<_> = (0..JOBS)
        .map(|_| {
            let mut job = caller::job(&bench.rig, &repo, &repo.commit, &image);
            job.service_id.clone_from(&service);
            job.image.push = false;
            job.build.no_cache = true;
            job.build.engine = Some(buildbot_protocol::BuildEngine::Legacy);
            job.build
                .build_args
                .insert("LINES".into(), LINES.to_string());
            job
        })
        .collect();
    let ran = bench.caller.run_batch(&queue, &jobs).await?;
    // The last updates are on their way to the pages.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wall = secs(started.elapsed());
    let cpu = cpu_seconds(pid)? - cpu_before;
    let memory = memory_of(pid)?;
    let _ = stop.send(true);
    let mut latencies = Vec::new();
    let mut missing = 0;
    for page in pages {
        let seen = page.await.context("a page's task")?;
        latencies.extend(seen.latencies_ms);
        missing += missing_events(&seen.seqs, &jobs);
    }
    let _ = dashboard.kill().await;
    report(bench, &latencies, missing, memory.peak, cpu, wall, ran);
    Ok(())
}

fn report(
    bench: &mut Bench,
    latencies: &[f64],
    missing: u64,
    peak: u64,
    cpu: f64,
    wall: f64,
    ran: Duration,
) {
    let report = &mut bench.report;
    report.add(
        8,
        format!("{JOBS} concurrent jobs × {LINES} lines, {PAGES} live pages: jobs took"),
        format!("{:.1} s", secs(ran)),
    );
    report.add(
        8,
        "event → page (worker's stamp to the page)",
        p50_p99_ms(latencies),
    );
    report.add_with_target(8, "events missing at the pages", missing.to_string(), "0");
    report.add(8, "dashboard peak resident memory (VmHWM)", mib(peak));
    report.add(
        8,
        "dashboard CPU over the run",
        format!(
            "{cpu:.2} s in {wall:.1} s ({:.0} % of one core)",
            100.0 * cpu / wall
        ),
    );
}

/// Starts `buildbot dashboard` on a free port, following `binding_key`;
/// returns it and its address once it serves.
async fn start_dashboard(
    bench: &Bench,
    binding_key: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = Command::new(&bench.launcher.binary)
        .args(["dashboard", "--amqp-url", &bench.launcher.amqp_url])
        .args(["--http-addr", "127.0.0.1:0", "--binding-key", binding_key])
        .args(["--max-log-bytes", &(4 << 20).to_string()])
        .env("BUILDBOT_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the dashboard")?;
    let stderr = child.stderr.take().context("its stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let marker = "dashboard serving http://";
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(marker) {
                let rest = &line[at + marker.len()..];
                return rest.split('/').next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the dashboard did not say where it serves")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // Connected to RabbitMQ before the jobs start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((child, addr))
}

/// A live page: reads the event stream until `stop` turns true.
async fn follow_page(addr: String, mut stop: tokio::sync::watch::Receiver<bool>) -> Page {
    let mut page = Page::default();
    let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
        return page;
    };
    let request =
        format!("GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return page;
    }
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = stop.changed() => return page,
        };
        let Ok(Some(line)) = line else {
            return page;
        };
        if let Some(data) = line.strip_prefix("data: ") {
            record(&mut page, data, Utc::now());
        }
    }
}

/// Notes one update: its job's event number, and for log text its latency.
fn record(page: &mut Page, data: &str, arrived: DateTime<Utc>) {
    let Ok(update) = serde_json::from_str::<serde_json::Value>(data) else {
        return;
    };
    let (Some(job_id), Some(seq)) = (update["job"]["job_id"].as_str(), update["seq"].as_u64())
    else {
        return;
    };
    page.seqs.entry(job_id.to_owned()).or_default().insert(seq);
    let stamped = update["job"]["updated_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    if let (Some(stamped), false) = (stamped, update["log"].is_null()) {
        let ms = (arrived - stamped.with_timezone(&Utc))
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0;
        page.latencies_ms.push(ms);
    }
}

/// Events a page lacks: for each job, the numbers from 1 to its highest
/// that it never got (a job it never heard of counts as one missing).
fn missing_events(seqs: &BTreeMap<String, BTreeSet<u64>>, jobs: &[buildbot_protocol::Job]) -> u64 {
    jobs.iter()
        .map(|job| match seqs.get(&job.job_id.to_string()) {
            Some(seen) => seen.last().copied().unwrap_or(0) - seen.len() as u64,
            None => 1,
        })
        .sum()
}

/// User plus system CPU seconds of `pid` so far (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        // utime and stime, in clock ticks of 1/100 s on Linux.
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => bail!("/proc/{pid}/stat has no utime/stime"),
    }
}
