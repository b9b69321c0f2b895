//! Section 1: a job through the worker (publish to result, at the caller)
//! against the bare pipeline a user would run (git clone + checkout, docker
//! build, docker push of the same tags), run by run, on the same remote,
//! daemon and registry, for the small and the large-history repository.

use crate::caller::{self, tags_for};
use crate::report::{list, median, secs};
use crate::Bench;
use buildbot_protocol::StepName;
use buildbot_tests::TestRepo;
use uuid::Uuid;

/// What one side took in one run, in seconds: total, clone, build, push.
#[derive(Clone, Copy)]
struct Timing {
    total: f64,
    clone: f64,
    build: f64,
    push: f64,
}

/// Runs both comparisons on one worker.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let queue = bench.caller.new_queue("overhead");
    let _worker = bench.launcher.start("bench-overhead", &queue, 1)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let small = bench.repos.small.clone();
    compare(bench, &queue, &small, "small", "≤ 1.05").await?;
    let history = bench.repos.history.clone();
    let shape = crate::repos::describe_history(&history);
    bench.report.add(1, "large-history repo", shape);
    compare(bench, &queue, &history, "large-history", "< 1.0").await
}

async fn compare(
    bench: &mut Bench,
    queue: &str,
    repo: &TestRepo,
    label: &str,
    target: &str,
) -> anyhow::Result<()> {
    eprintln!("==> 1. {label} repo: worker vs bare pipeline");
    let image = format!("{}/bench/{label}", bench.rig.registry);
    // One untimed run of each side first: the repository's first push of
    // the base layer and cold caches would otherwise land in run 1 only.
    through_worker(bench, queue, repo, &image).await?;
    bare(bench, repo, &image).await?;
    let mut worker = Vec::new();
    let mut baseline = Vec::new();
    for run in 0..bench.options.runs {
        // Alternating which side goes first keeps a drift in the machine's
        // load (other builds share it) from favouring one side.
        if run % 2 == 0 {
            worker.push(through_worker(bench, queue, repo, &image).await?);
            baseline.push(bare(bench, repo, &image).await?);
        } else {
            baseline.push(bare(bench, repo, &image).await?);
            worker.push(through_worker(bench, queue, repo, &image).await?);
        }
    }
    report(bench, label, target, &worker, &baseline);
    Ok(())
}

fn report(bench: &mut Bench, label: &str, target: &str, worker: &[Timing], baseline: &[Timing]) {
    let ratios: Vec<f64> = worker
        .iter()
        .zip(baseline)
        .map(|(w, b)| w.total / b.total)
        .collect();
    let totals = |t: &[Timing]| t.iter().map(|t| t.total).collect::<Vec<_>>();
    let phases = |t: &[Timing]| {
        let m = |f: fn(&Timing) -> f64| median(&t.iter().map(f).collect::<Vec<_>>());
        format!(
            "clone {:.2} s, build {:.2} s, push {:.2} s",
            m(|t| t.clone),
            m(|t| t.build),
            m(|t| t.push)
        )
    };
    let runs = worker.len();
    let report = &mut bench.report;
    report.add(
        1,
        format!("{label} repo, worker: publish → result (s, {runs} runs)"),
        format!(
            "{} (median {:.2})",
            list(&totals(worker)),
            median(&totals(worker))
        ),
    );
    report.add(
        1,
        format!("{label} repo, bare git + docker CLI pipeline (s)"),
        format!(
            "{} (median {:.2})",
            list(&totals(baseline)),
            median(&totals(baseline))
        ),
    );
    report.add_with_target(
        1,
        format!("{label} repo, ratio worker / bare, per run"),
        format!("{} (median {:.2})", list(&ratios), median(&ratios)),
        target,
    );
    report.add(
        1,
        format!("{label} repo, worker steps (median)"),
        phases(worker),
    );
    report.add(
        1,
        format!("{label} repo, bare steps (median)"),
        phases(baseline),
    );
}

async fn through_worker(
    bench: &mut Bench,
    queue: &str,
    repo: &TestRepo,
    image: &str,
) -> anyhow::Result<Timing> {
    let revision = new_revision(repo, "worker")?;
    let job = caller::job(&bench.rig, repo, &revision, image);
    let followed = bench.caller.run(queue, &job).await?;
    let step = |name| followed.step_ms(name).unwrap_or(0) as f64 / 1000.0;
    Ok(Timing {
        total: secs(followed.elapsed()),
        clone: step(StepName::Clone),
        build: step(StepName::Build),
        push: step(StepName::Push),
    })
}

async fn bare(bench: &Bench, repo: &TestRepo, image: &str) -> anyhow::Result<Timing> {
    let revision = new_revision(repo, "bare")?;
    let run = bench
        .cli
        .pipeline(&repo.ssh_url, &revision, image, &tags_for(&revision))
        .await?;
    Ok(Timing {
        total: secs(run.total),
        clone: run.clone,
        build: run.build,
        push: run.push,
    })
}

/// A fresh commit on top of `main` for each build, so each side builds its
/// own `COPY` layer and pushes it, instead of reusing what the other side
/// just built and pushed. The revision is the branch tip, as it is for a
/// build triggered by a push.
fn new_revision(repo: &TestRepo, side: &str) -> anyhow::Result<String> {
    let content = format!("{side} build {}\n", Uuid::new_v4());
    repo.try_commit_files(&[("run.txt", content.as_bytes())])
}
