//! Section 4: the worker's footprint. Resident memory of an idle worker,
//! its peak while running 4 builds at once, the same with smaller AMQP
//! frames, and the size of the release binary.

use crate::caller;
use crate::report::mib;
use crate::repos::tip;
use crate::workers::{file_size, Memory};
use crate::Bench;
use std::time::Duration;

/// How long an idle worker is left alone before its memory is read, so
/// start-up work (connecting, declaring the queue) is over.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The AMQP frame size tried besides the broker's default (128 KiB). lapin
/// gives each connection a receive and a send buffer of 32 frames,
/// allocated and zeroed up front: 2 × 4 MiB at the default.
const SMALL_FRAME_MAX: u32 = 16 * 1024;

/// Memory of one worker: idle, then after 4 concurrent builds.
struct Footprint {
    idle: Memory,
    busy: Memory,
}

/// Measures a worker with the broker's default frame size, then one whose
/// AMQP URL asks for smaller frames (a setting users have today).
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    eprintln!("==> 4. worker memory, idle and with 4 concurrent builds");
    let url = bench.launcher.amqp_url.clone();
    let default = measure(bench, "memory", &url).await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let small_url = format!("{url}{separator}frame_max={SMALL_FRAME_MAX}");
    let small = measure(bench, "memory-small-frames", &small_url).await?;
    let binary = file_size(&bench.launcher.binary)?;
    let report = &mut bench.report;
    report.add_with_target(
        4,
        "worker resident memory, idle (VmRSS)",
        default.idle.describe_rss(),
        "< 15 MB",
    );
    report.add(
        4,
        "worker peak resident memory, 4 concurrent builds (VmHWM)",
        mib(default.busy.peak),
    );
    report.add(
        4,
        "worker resident memory after them (VmRSS)",
        default.busy.describe_rss(),
    );
    report.add_with_target(
        4,
        format!("  same, `?frame_max={SMALL_FRAME_MAX}` in the AMQP URL: idle (VmRSS)"),
        small.idle.describe_rss(),
        "< 15 MB",
    );
    report.add(
        4,
        "  same, small frames: peak with 4 concurrent builds (VmHWM)",
        mib(small.busy.peak),
    );
    report.add(4, "release `buildbot` binary size", mib(binary));
    Ok(())
}

/// Starts a worker with `--concurrency 4` on `amqp_url`, reads its memory
/// once settled, runs the 4 builds at once, reads it again.
async fn measure(bench: &mut Bench, name: &str, amqp_url: &str) -> anyhow::Result<Footprint> {
    let queue = bench.caller.new_queue(name);
    let worker_name = format!("bench-{name}");
    let mut worker = bench.launcher.start_on(amqp_url, &worker_name, &queue, 4)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = worker.memory()?;
    let jobs = concurrent_jobs(bench)?;
    bench.caller.run_batch(&queue, &jobs).await?;
    worker.ensure_running()?;
    let busy = worker.memory()?;
    Ok(Footprint { idle, busy })
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
