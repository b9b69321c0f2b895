//! Section 7: a long-lived worker. Many fully cached small jobs through one
//! worker with a small image-cache budget, and what the worker holds before
//! and after them: its resident memory, the images kept on the engine, the
//! entries under its workspace directory; and the jobs per minute, batch
//! by batch, so that a slowdown as the cache fills shows.

use crate::caller;
use crate::engine::{self, Kept};
use crate::memory::SETTLE;
use crate::report::{mib, secs};
use crate::repos::tip;
use crate::workers::{Memory, Worker};
use crate::Bench;
use anyhow::Context;
use bollard::Docker;
use buildbot_protocol::Job;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// The worker's `--image-cache-bytes`: small, so that the trim after each
/// job has work to do long before the run ends (each job's runtime image
/// counts about 2 MiB).
const BUDGET: &str = "200m";

/// Batches the jobs are published in; memory and speed are read after each.
const BATCHES: usize = 10;

/// The worker's id, and the name of its workspace directory.
const WORKER: &str = "bench-longlived";

/// What the worker holds at one moment.
struct Snapshot {
    memory: Memory,
    kept: Kept,
    /// Entries under `<workspace-dir>/<worker-id>/`.
    workspaces: usize,
}

/// The figures of the whole run.
struct Run {
    idle: Memory,
    before: Snapshot,
    after: Snapshot,
    elapsed: Duration,
    /// Per batch: jobs/min and VmRSS after it.
    batches: Vec<(f64, u64)>,
    /// What each failed job said.
    failures: Vec<String>,
}

/// One job to warm up, then `--long-lived-jobs` jobs in batches; removes
/// the runtime images the jobs left on the engine afterwards.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let count = bench.options.long_lived_jobs;
    eprintln!(
        "==> 7. a long-lived worker: {count} fully cached jobs, --image-cache-bytes {BUDGET}"
    );
    let docker = engine::connect().await?;
    let parent = tempfile::tempdir()?;
    let dir = parent
        .path()
        .to_str()
        .context("the temp dir's path is not UTF-8")?;
    let queue = bench.caller.new_queue("longlived");
    let flags = ["--image-cache-bytes", BUDGET, "--workspace-dir", dir];
    let mut worker = bench.launcher.start_with(WORKER, &queue, 1, &flags)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let mut ours = HashSet::new();
    let outcome = measure(
        bench,
        &docker,
        &mut worker,
        &queue,
        parent.path(),
        &mut ours,
    )
    .await;
    engine::remove(&docker, &ours).await;
    report(bench, count, &outcome?);
    Ok(())
}

/// Runs the jobs; `ours` collects their runtime images' names.
async fn measure(
    bench: &mut Bench,
    docker: &Docker,
    worker: &mut Worker,
    queue: &str,
    parent: &Path,
    ours: &mut HashSet<String>,
) -> anyhow::Result<Run> {
    tokio::time::sleep(SETTLE).await;
    let idle = worker.memory()?;
    let template = job(bench)?;
    let workspace = parent.join(WORKER);
    // The first job fills the layer cache and the registry; not counted.
    let first = renewed(&template, ours);
    bench.caller.run(queue, &first).await?;
    let before = snapshot(docker, worker, &workspace, ours).await?;
    let count = bench.options.long_lived_jobs;
    let per_batch = count.div_ceil(BATCHES);
    let mut elapsed = Duration::ZERO;
    let mut batches = Vec::new();
    let mut failures = Vec::new();
    let mut left = count;
    while left > 0 {
        let size = per_batch.min(left);
        let jobs: Vec<Job> = (0..size).map(|_| renewed(&template, ours)).collect();
        let (took, failed) = bench.caller.run_batch_counting(queue, &jobs).await?;
        worker.ensure_running()?;
        failures.extend(failed);
        elapsed += took;
        left -= size;
        batches.push((size as f64 * 60.0 / secs(took), worker.memory()?.rss));
        eprintln!("    {} of {count} jobs done", count - left);
    }
    let after = snapshot(docker, worker, &workspace, ours).await?;
    Ok(Run {
        idle,
        before,
        after,
        elapsed,
        batches,
        failures,
    })
}

/// The small app at its tip, pushed under one tag: the worker runs one
/// job at a time, so the pushes of that tag never race.
fn job(bench: &Bench) -> anyhow::Result<Job> {
    let repo = &bench.repos.small;
    let image = format!("{}/bench/longlived", bench.rig.registry);
    let mut job = caller::job(&bench.rig, repo, &tip(repo)?, &image);
    job.image.tags = vec!["longlived".into()];
    Ok(job)
}

/// `job` with a new id, its runtime image's name added to `ours`.
fn renewed(job: &Job, ours: &mut HashSet<String>) -> Job {
    let mut job = job.clone();
    job.job_id = Uuid::new_v4();
    ours.insert(engine::runtime_name(&job.job_id));
    job
}

/// Read once the worker has had time to finish the last job's trim.
async fn snapshot(
    docker: &Docker,
    worker: &Worker,
    workspace: &Path,
    ours: &HashSet<String>,
) -> anyhow::Result<Snapshot> {
    tokio::time::sleep(SETTLE).await;
    let workspaces = std::fs::read_dir(workspace)
        .with_context(|| format!("reading {}", workspace.display()))?
        .count();
    Ok(Snapshot {
        memory: worker.memory()?,
        kept: engine::kept(docker, ours).await?,
        workspaces,
    })
}

fn report(bench: &mut Bench, count: usize, run: &Run) {
    let (before, after) = (&run.before, &run.after);
    let rates: Vec<String> = run.batches.iter().map(|(r, _)| format!("{r:.0}")).collect();
    let rss: Vec<String> = run
        .batches
        .iter()
        .map(|(_, rss)| format!("{:.1}", *rss as f64 / (1024.0 * 1024.0)))
        .collect();
    let per_batch = count.div_ceil(BATCHES);
    let report = &mut bench.report;
    report.add(
        7,
        format!("long-lived worker, `--image-cache-bytes {BUDGET}`: {count} fully cached jobs"),
        format!(
            "{:.0} jobs/min ({:.0} s); per {per_batch} jobs: {}",
            count as f64 * 60.0 / secs(run.elapsed),
            secs(run.elapsed),
            rates.join(", ")
        ),
    );
    report.add_with_target(
        7,
        format!("  worker VmRSS: idle; after 1 warm-up job; after {count} more"),
        format!(
            "{}; {}; {}",
            run.idle.describe_rss(),
            before.memory.describe_rss(),
            after.memory.describe_rss()
        ),
        "< 30 MB",
    );
    report.add(
        7,
        format!("  worker VmRSS after each {per_batch} jobs (MiB)"),
        rss.join(", "),
    );
    report.add(
        7,
        format!("  worker VmHWM: after 1 warm-up job; after {count} more"),
        format!("{}; {}", mib(before.memory.peak), mib(after.memory.peak)),
    );
    report.add_with_target(
        7,
        "  kept images on the engine (`buildbot-runtime:*`, `buildbot-builder:*`; \
         engine sizes): before; after",
        format!(
            "{}; {}",
            before.kept.describe("this worker's jobs"),
            after.kept.describe("this worker's jobs")
        ),
        format!("≤ {BUDGET} (+ one job)"),
    );
    report.add_with_target(7, "  failed jobs", failed(&run.failures, count), "0");
    report.add_with_target(
        7,
        "  entries under the worker's workspace directory: before; after",
        format!("{}; {}", before.workspaces, after.workspaces),
        "0",
    );
}

/// `N of M`, and how many failed with which error (image ids left out, so
/// that the same race reads as one kind).
fn failed(failures: &[String], count: usize) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for failure in failures {
        *kinds.entry(kind_of(failure)).or_default() += 1;
    }
    let mut text = format!("{} of {count}", failures.len());
    for (kind, n) in kinds {
        text.push_str(&format!("; {n}× `{kind}`"));
    }
    text
}

/// A failure's status and error without the job, repository and image id.
fn kind_of(failure: &str) -> String {
    let status = failure
        .split_once(" ended ")
        .map_or(failure, |(_, rest)| rest);
    match status.split_once("sha256:") {
        Some((before, _)) => format!("{before}sha256:…"),
        None => status.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind() {
        let race = |id: &str| {
            format!("job {id} for ssh://x/r.git ended Failed: Build: unable to find image \"sha256:{id}\"")
        };
        let text = failed(&[race("ab"), race("cd")], 10);
        assert_eq!(
            text,
            "2 of 10; 2× `Failed: Build: unable to find image \"sha256:…`"
        );
        assert_eq!(failed(&[], 10), "0 of 10");
    }
}
