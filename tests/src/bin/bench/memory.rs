//! Section 4: the worker's footprint. Resident memory of an idle worker,
//! its peak while running 4 builds at once, and the size of the release
//! binary.

use crate::caller;
use crate::report::mib;
use crate::repos::tip;
use crate::workers::file_size;
use crate::Bench;
use std::time::Duration;

/// How long an idle worker is left alone before its memory is read, so
/// start-up work (connecting, declaring the queue) is over.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the measurement on a worker with `--concurrency 4`.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    eprintln!("==> 4. worker memory, idle and with 4 concurrent builds");
    let queue = bench.caller.new_queue("memory");
    let mut worker = bench.launcher.start("bench-memory", &queue, 4)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = worker.memory()?;
    let jobs = concurrent_jobs(bench)?;
    bench.caller.run_batch(&queue, &jobs).await?;
    worker.ensure_running()?;
    let busy = worker.memory()?;
    let binary = file_size(&bench.launcher.binary)?;
    let report = &mut bench.report;
    report.add_with_target(
        4,
        "worker resident memory, idle (VmRSS)",
        idle.describe_rss(),
        "< 15 MB",
    );
    report.add(
        4,
        "worker peak resident memory, 4 concurrent builds (VmHWM)",
        mib(busy.peak),
    );
    report.add(
        4,
        "worker resident memory after them (VmRSS)",
        busy.describe_rss(),
    );
    report.add(4, "release `buildbot` binary size", mib(binary));
    Ok(())
}

/// Two builds of the large-history app (shallow clone, 1 MiB context) and
/// two builds printing many lines, all without the layer cache and pushed.
fn concurrent_jobs(bench: &Bench) -> anyhow::Result<Vec<buildbot_protocol::Job>> {
    let image = format!("{}/bench/memory", bench.rig.registry);
    let lines = bench.options.memory_log_lines.to_string();
    let mut jobs = Vec::new();
    for i in 0..4 {
        let repo = if i % 2 == 0 {
            &bench.repos.history
        } else {
            &bench.repos.logs
        };
        // The branch tip, as for a build triggered by a push (section 1
        // added commits to the large-history repository).
        let revision = tip(repo)?;
        let mut job = caller::job(&bench.rig, repo, &revision, &image);
        job.build.no_cache = true;
        job.build.build_args.insert("LINES".into(), lines.clone());
        job.image.tags = vec![format!("concurrent-{i}")];
        jobs.push(job);
    }
    Ok(jobs)
}
