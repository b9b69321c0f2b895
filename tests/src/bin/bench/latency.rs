//! Section 2: latency seen by the caller. (a) From publishing a job to its
//! first event, over many sequential jobs on an idle worker. (b) From the
//! build printing a line to that line arriving at the caller: the build
//! stamps each probe line with the wall clock (microseconds) as it prints
//! it; the caller compares that with the wall clock when the event carrying
//! the line arrives. Containers, worker and caller share this machine's
//! clock, so no synchronisation error enters.

use crate::baseline::Checkout;
use crate::caller;
use crate::report::{millis, p50_p99_ms};
use crate::Bench;
use anyhow::{bail, Context};
use buildbot_protocol::BuildEngine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Runs both measurements on one worker.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let queue = bench.caller.new_queue("latency");
    let _worker = bench.launcher.start("bench-latency", &queue, 1)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    first_event(bench, &queue).await?;
    line_latency(bench, &queue).await
}

/// Publish → first event, for cached builds of the small app that are not
/// pushed (the job's length does not matter, only its start; short jobs
/// make many samples affordable).
async fn first_event(bench: &mut Bench, queue: &str) -> anyhow::Result<()> {
    let count = bench.options.first_event_jobs;
    eprintln!("==> 2. publish → first event, {count} jobs");
    let repo = bench.repos.small.clone();
    let revision = crate::repos::tip(&repo)?;
    let image = format!("{}/bench/latency", bench.rig.registry);
    let mut job = caller::job(&bench.rig, &repo, &revision, &image);
    job.image.push = false;
    // Warm-up: the first build fills the layer cache.
    bench.caller.run(queue, &job).await?;
    let mut at_caller = Vec::with_capacity(count);
    let mut stamped = Vec::with_capacity(count);
    for _ in 0..count {
        job.job_id = Uuid::new_v4();
        let followed = bench.caller.run(queue, &job).await?;
        let first = followed.first_event().context("no event")?;
        at_caller.push(millis(first.at - followed.published));
        stamped.push(ms_between(followed.published_wall, first.event.timestamp));
    }
    bench.report.add_with_target(
        2,
        "publish → first event at the caller",
        p50_p99_ms(&at_caller),
        "p50 < 50 ms",
    );
    bench.report.add(
        2,
        "  of which publish → worker stamps the first event",
        p50_p99_ms(&stamped),
    );
    Ok(())
}

/// Build prints a line → the line arrives at the caller, through the
/// worker, and through the docker CLI for the daemon's own share.
async fn line_latency(bench: &mut Bench, queue: &str) -> anyhow::Result<()> {
    let probes = bench.options.probes;
    eprintln!("==> 2. printed line → caller, {probes} probe lines");
    let repo = bench.repos.latency.clone();
    for engine in [BuildEngine::Legacy, BuildEngine::Buildkit] {
        let (at_caller, stamped) = probe_through_worker(bench, queue, &repo, engine).await?;
        let report = &mut bench.report;
        report.add_with_target(
            2,
            format!(
                "build prints a line → line at the caller ({})",
                engine.as_str()
            ),
            p50_p99_ms(&at_caller),
            "p99 < 10 ms",
        );
        report.add(
            2,
            "  of which printed → worker stamps its event",
            p50_p99_ms(&stamped),
        );
    }
    let floor = through_cli(bench, &repo.ssh_url, &repo.commit, probes).await?;
    let report = &mut bench.report;
    report.add(
        2,
        "same lines through `docker build` on the CLI (no worker)",
        p50_p99_ms(&floor),
    );
    Ok(())
}

/// The probe build through the worker on `engine`: per probe line, the
/// milliseconds from its printing to the caller, and to the worker's
/// stamp on its event.
async fn probe_through_worker(
    bench: &mut Bench,
    queue: &str,
    repo: &buildbot_tests::TestRepo,
    engine: BuildEngine,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let probes = bench.options.probes;
    let image = format!("{}/bench/probes", bench.rig.registry);
    let mut job = caller::job(&bench.rig, repo, &repo.commit, &image);
    job.image.push = false;
    job.build.no_cache = true;
    job.build.engine = Some(engine);
    job.build
        .build_args
        .insert("PROBES".into(), probes.to_string());
    let followed = bench.caller.run(queue, &job).await?;
    let mut at_caller = Vec::with_capacity(probes);
    let mut stamped = Vec::with_capacity(probes);
    for (arrival, line) in followed.build_lines() {
        if let Some(printed) = probe_time(line) {
            at_caller.push(ms_between(printed, arrival.wall));
            stamped.push(ms_between(printed, arrival.event.timestamp));
        }
    }
    ensure_all(at_caller.len(), probes, "through the worker")?;
    Ok((at_caller, stamped))
}

/// The probe build run with the docker CLI, lines timed as the CLI writes
/// them: the latency of the daemon's classic builder itself.
async fn through_cli(
    bench: &Bench,
    url: &str,
    revision: &str,
    probes: usize,
) -> anyhow::Result<Vec<f64>> {
    let checkout = Checkout::new(&bench.cli, url, revision).await?;
    let tag = format!("{}/bench/probes:cli", bench.rig.registry);
    let mut latencies = Vec::with_capacity(probes);
    let build_args = [("PROBES", probes.to_string())];
    bench
        .cli
        .build_streaming(&checkout, &build_args, &tag, |line, arrived| {
            if let Some(printed) = probe_time(line) {
                latencies.push(ms_between(printed, arrived));
            }
        })
        .await?;
    ensure_all(latencies.len(), probes, "through the docker CLI")?;
    Ok(latencies)
}

fn ensure_all(seen: usize, probes: usize, path: &str) -> anyhow::Result<()> {
    if seen != probes {
        bail!("{seen} of {probes} probe lines arrived {path}");
    }
    Ok(())
}

/// The moment a probe line `<epoch>.<micros> latency-probe <i>` was printed.
fn probe_time(line: &str) -> Option<DateTime<Utc>> {
    // BuildKit's plain progress puts `#N <seconds> ` before the line.
    let at = line.find(" latency-probe ")?;
    let stamp = line[..at].rsplit(' ').next()?;
    let (seconds, micros) = stamp.split_once('.')?;
    let seconds: i64 = seconds.parse().ok()?;
    let micros: u32 = micros.parse().ok()?;
    DateTime::from_timestamp(seconds, micros.checked_mul(1000)?)
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_time_a_probe_was_printed() {
        let printed = probe_time("1795622983.516964 latency-probe 7").expect("a probe");
        assert_eq!(printed.timestamp(), 1_795_622_983);
        assert_eq!(printed.timestamp_subsec_micros(), 516_964);
        assert_eq!(probe_time("Step 2/2 : RUN for i in"), None);
        let buildkit = probe_time("#5 0.231 1795622983.516964 latency-probe 7");
        assert_eq!(buildkit, Some(printed));
    }
}
