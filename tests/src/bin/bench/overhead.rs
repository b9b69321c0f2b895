//! Section 1: a job through the worker against the bare pipeline a user
//! would run (git clone + checkout, docker build, docker push of the same
//! tags), run by run, on the same remote, daemon and registry, for the
//! small and the large-history repository. The worker side is timed as a
//! whole `buildbot submit --follow` process (its start-up included), once
//! with the job on BuildKit and once on the legacy builder.

use crate::caller::{self, tags_for};
use crate::report::{list, median, secs};
use crate::Bench;
use anyhow::Context as _;
use buildbot_protocol::{BuildEngine, Event, EventBody, StepName};
use buildbot_tests::TestRepo;
use std::time::Instant;
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
    submitted(bench, queue, repo, &image, BuildEngine::Buildkit).await?;
    bare(bench, repo, &image).await?;
    submitted(bench, queue, repo, &image, BuildEngine::Legacy).await?;
    let mut buildkit = Vec::new();
    let mut legacy = Vec::new();
    let mut baseline = Vec::new();
    for run in 0..bench.options.runs {
        // Rotating which side goes first keeps a drift in the machine's
        // load (other builds share it) from favouring one side.
        for side in (0..3).map(|i| (i + run) % 3) {
            match side {
                0 => buildkit
                    .push(submitted(bench, queue, repo, &image, BuildEngine::Buildkit).await?),
                1 => legacy.push(submitted(bench, queue, repo, &image, BuildEngine::Legacy).await?),
                _ => baseline.push(bare(bench, repo, &image).await?),
            }
        }
    }
    report(
        bench,
        &format!("{label} repo, BuildKit"),
        target,
        &buildkit,
        &baseline,
    );
    report(
        bench,
        &format!("{label} repo, legacy builder"),
        "",
        &legacy,
        &baseline[..0],
    );
    Ok(())
}

fn report(bench: &mut Bench, label: &str, target: &str, worker: &[Timing], baseline: &[Timing]) {
    if baseline.is_empty() {
        let totals: Vec<f64> = worker.iter().map(|t| t.total).collect();
        bench.report.add(
            1,
            format!("{label}, `buildbot submit --follow` (s)"),
            format!("{} (median {:.2})", list(&totals), median(&totals)),
        );
        bench
            .report
            .add(1, format!("{label}, worker steps (median)"), phases(worker));
        return;
    }
    let ratios: Vec<f64> = worker
        .iter()
        .zip(baseline)
        .map(|(w, b)| w.total / b.total)
        .collect();
    let totals = |t: &[Timing]| t.iter().map(|t| t.total).collect::<Vec<_>>();
    let runs = worker.len();
    let report = &mut bench.report;
    report.add(
        1,
        format!("{label}, `buildbot submit --follow` (s, {runs} runs)"),
        format!(
            "{} (median {:.2})",
            list(&totals(worker)),
            median(&totals(worker))
        ),
    );
    report.add(
        1,
        format!("{label}: bare git clone + docker build + docker push (s)"),
        format!(
            "{} (median {:.2})",
            list(&totals(baseline)),
            median(&totals(baseline))
        ),
    );
    report.add_with_target(
        1,
        format!("{label}: ratio worker / bare, per run"),
        format!("{} (median {:.2})", list(&ratios), median(&ratios)),
        target,
    );
    report.add(1, format!("{label}, worker steps (median)"), phases(worker));
    report.add(1, format!("{label}: bare steps (median)"), phases(baseline));
}

fn phases(t: &[Timing]) -> String {
    let m = |f: fn(&Timing) -> f64| median(&t.iter().map(f).collect::<Vec<_>>());
    format!(
        "clone {:.2} s, build {:.2} s, push {:.2} s",
        m(|t| t.clone),
        m(|t| t.build),
        m(|t| t.push)
    )
}

/// One job on `engine`, as a user runs it: `buildbot submit --follow
/// --json`, the whole process timed; the steps from its result.
async fn submitted(
    bench: &mut Bench,
    queue: &str,
    repo: &TestRepo,
    image: &str,
    engine: BuildEngine,
) -> anyhow::Result<Timing> {
    let revision = new_revision(repo, engine.as_str())?;
    let mut job = caller::job(&bench.rig, repo, &revision, image);
    job.build.engine = Some(engine);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_vec(&job)?)?;
    let started = Instant::now();
    let output = tokio::process::Command::new(&bench.launcher.binary)
        .args(["submit", "--follow", "--json", "--queue", queue])
        .arg(file.path())
        .env("BUILDBOT_AMQP_URL", &bench.launcher.amqp_url)
        .output()
        .await?;
    let total = secs(started.elapsed());
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "buildbot submit --follow failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        .find_map(|event| match event.body {
            EventBody::Result(result) => Some(result),
            _ => None,
        })
        .context("submit printed no result")?;
    let step = |name| result.durations_ms.get(&name).copied().unwrap_or(0) as f64 / 1000.0;
    Ok(Timing {
        total,
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
