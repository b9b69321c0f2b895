//! Section 5: throughput of jobs whose build is fully cached (same
//! revision, every layer in the daemon's cache, every layer already in the
//! registry): a batch published at once, drained by one worker, then by two
//! workers on the same queue. Both workers share this machine's daemon.

use crate::caller;
use crate::report::secs;
use crate::repos::tip;
use crate::Bench;
use buildbot_protocol::Job;
use uuid::Uuid;

/// Runs the batch against one worker, then two.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let count = bench.options.cached_jobs;
    eprintln!("==> 5. {count} fully cached jobs, one worker then two");
    let repo = bench.repos.small.clone();
    let revision = tip(&repo)?;
    let image = format!("{}/bench/cached", bench.rig.registry);
    let job = caller::job(&bench.rig, &repo, &revision, &image);
    for workers in [1, 2] {
        let per_minute = batch(bench, &job, workers, count).await?;
        bench.report.add(
            5,
            format!("fully cached jobs, {workers} worker(s) on one queue"),
            format!("{per_minute:.0} jobs/min ({count} jobs)"),
        );
    }
    Ok(())
}

/// Starts `workers` workers on a fresh queue and returns jobs per minute
/// for `count` copies of `job`.
async fn batch(bench: &mut Bench, job: &Job, workers: u32, count: usize) -> anyhow::Result<f64> {
    let queue = bench.caller.new_queue(&format!("cached{workers}"));
    let mut running = Vec::new();
    for n in 0..workers {
        let name = format!("bench-cached-{workers}-{n}");
        running.push(bench.launcher.start(&name, &queue, 1)?);
    }
    bench.caller.wait_for_consumers(&queue, workers).await?;
    // The first job fills the cache (build and push) and is not counted.
    bench.caller.run(&queue, &renewed(job)).await?;
    // Each job pushes a tag of its own. Two builds of one revision are two
    // images (the OCI `created` label differs), and pushing the same tag
    // of both at once from one daemon races: the tag may point at the
    // other image by the time it is pushed, and the registry answers such
    // pushes with errors now and then (the docker CLI does the same).
    let jobs: Vec<Job> = (0..count)
        .map(|n| {
            let mut job = renewed(job);
            job.image.tags = vec![format!("batch{workers}-{n}")];
            job
        })
        .collect();
    let elapsed = bench.caller.run_batch(&queue, &jobs).await?;
    for worker in &mut running {
        worker.ensure_running()?;
    }
    Ok(count as f64 * 60.0 / secs(elapsed))
}

/// `job` with a new id.
fn renewed(job: &Job) -> Job {
    let mut job = job.clone();
    job.job_id = Uuid::new_v4();
    job
}
