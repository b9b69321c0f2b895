//! Section 6: a job whose artifact is made in a builder container, the
//! builder image built from the repository's `build.builder.dockerfile`.
//! Three kinds of run on one worker, each of a fresh commit: (a) the first
//! run of a builder Dockerfile nobody built before (the image is built),
//! (b) the next commit of the app only (the builder's inputs unchanged: the
//! cached builder image is reused), (c) the same app built by a plain
//! Dockerfile without a builder. The target is (b) within 1.2× of
//! (c).

use crate::caller;
use crate::engine;
use crate::report::{list, median, secs};
use crate::repos::builder_dockerfile;
use crate::Bench;
use anyhow::bail;
use buildbot_protocol::{Builder, StepName};
use buildbot_tests::TestRepo;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

/// What the worker's log says when it reuses a builder image.
const CACHE_HIT: &str = "using the cached builder image";

/// The prefix of the builder images the worker builds and keeps.
const BUILDER_IMAGE: &str = "buildbot-builder:";

/// One kind of run.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A builder Dockerfile with a fresh marker: nothing of it is cached.
    Cold,
    /// A new commit of the app only: the builder image is cached.
    Cached,
    /// The plain Dockerfile, no builder.
    Plain,
}

/// One job, publish → result and its steps, in seconds.
#[derive(Clone, Copy)]
struct Timing {
    total: f64,
    clone: f64,
    builder: f64,
    build: f64,
    push: f64,
}

/// Every run of the section.
#[derive(Default)]
struct Runs {
    cold: Vec<Timing>,
    /// Only the runs that found the builder image cached.
    cached: Vec<Timing>,
    plain: Vec<Timing>,
    /// (b) / (c) of each run whose (b) found the cached builder image.
    ratios: Vec<f64>,
    /// (b) runs that found no cached builder image: on a shared engine
    /// another worker's trim may have evicted it.
    misses: usize,
}

/// The section's worker queue and repository, and what its jobs left on
/// the engine.
struct Section {
    queue: String,
    repo: TestRepo,
    image: String,
    /// Image names to remove at the end: each job's kept runtime image and
    /// the builder images (about 22 MiB each).
    left: HashSet<String>,
}

/// Runs (a), (b) and (c) `--runs` times on one worker, then removes what
/// the jobs kept on the engine.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    eprintln!("==> 6. builder job: first run, cached builder image, plain Dockerfile");
    let docker = engine::connect().await?;
    let queue = bench.caller.new_queue("builder");
    let _worker = bench.launcher.start("bench-builder", &queue, 1)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let mut section = Section {
        queue,
        repo: bench.repos.builder.clone(),
        image: format!("{}/bench/builder-app", bench.rig.registry),
        left: HashSet::new(),
    };
    let runs = measure(bench, &mut section).await;
    engine::remove(&docker, &section.left).await;
    report(bench, &runs?);
    Ok(())
}

async fn measure(bench: &mut Bench, section: &mut Section) -> anyhow::Result<Runs> {
    // Untimed: the registry repository's first push of the base layer
    // would otherwise land in one run only.
    one(bench, section, Kind::Plain).await?;
    let mut runs = Runs::default();
    for run in 0..bench.options.runs {
        runs.cold.push(one(bench, section, Kind::Cold).await?.0);
        // (b) must follow a build of its builder; which of (b) and (c)
        // goes next alternates, so a drift in load favours neither.
        let (cached, plain) = if run % 2 == 0 {
            let cached = one(bench, section, Kind::Cached).await?;
            (cached, one(bench, section, Kind::Plain).await?.0)
        } else {
            let plain = one(bench, section, Kind::Plain).await?.0;
            (one(bench, section, Kind::Cached).await?, plain)
        };
        runs.plain.push(plain);
        match cached {
            (timing, true) => {
                runs.ratios.push(timing.total / plain.total);
                runs.cached.push(timing);
            }
            (_, false) => runs.misses += 1,
        }
    }
    Ok(runs)
}

/// One job of `kind` on a fresh commit; returns its timing and whether it
/// used a cached builder image. A cold run that did is a failed check.
async fn one(
    bench: &mut Bench,
    section: &mut Section,
    kind: Kind,
) -> anyhow::Result<(Timing, bool)> {
    let run = format!("{kind:?} run {}\n", Uuid::new_v4());
    let mut files = vec![("app/run.txt", run)];
    if let Kind::Cold = kind {
        let marker = Uuid::new_v4().simple().to_string();
        let dockerfile = builder_dockerfile(&bench.rig.base_image, &marker);
        files.push(("Dockerfile.build", dockerfile));
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
    let revision = section.repo.try_commit_files(&files)?;
    let mut job = caller::job(&bench.rig, &section.repo, &revision, &section.image);
    match kind {
        Kind::Plain => job.build.dockerfile = "Dockerfile.plain".into(),
        Kind::Cold | Kind::Cached => job.build.builder = Some(builder()),
    }
    section.left.insert(engine::runtime_name(&job.job_id));
    let followed = bench.caller.run(&section.queue, &job).await?;
    let log = followed.log_of(StepName::Builder);
    section.left.extend(builder_image(&log));
    let hit = log.contains(CACHE_HIT);
    match kind {
        Kind::Cold if hit => bail!("a builder Dockerfile never built before was cached:\n{log}"),
        Kind::Cached if !hit => {
            eprintln!("    warning: the builder image was not cached (evicted?); run not counted")
        }
        _ => {}
    }
    let step = |name| followed.step_ms(name).unwrap_or(0) as f64 / 1000.0;
    let timing = Timing {
        total: secs(followed.elapsed()),
        clone: step(StepName::Clone),
        builder: step(StepName::Builder),
        build: step(StepName::Build),
        push: step(StepName::Push),
    };
    Ok((timing, hit))
}

/// The builder the repository's files are made for: the builder image from
/// `Dockerfile.build`, its tool script as the command, `/out` (a copy of
/// `app/`) as the artifact the runtime `Dockerfile` copies.
fn builder() -> Builder {
    Builder {
        image: None,
        dockerfile: Some("Dockerfile.build".into()),
        command: vec!["sh".into(), "/opt/render.sh".into()],
        workdir: "/src".into(),
        env: BTreeMap::new(),
        secret_env: Default::default(),
        artifacts: "/out".into(),
        artifacts_dest: "artifact".into(),
    }
}

/// The builder image a job built or used, as its log names it.
fn builder_image(log: &str) -> Option<String> {
    let start = log.find(BUILDER_IMAGE)?;
    let name = log[start..].split_whitespace().next()?;
    Some(name.to_owned())
}

fn report(bench: &mut Bench, runs: &Runs) {
    let totals = |t: &[Timing]| t.iter().map(|t| t.total).collect::<Vec<_>>();
    let builders = |t: &[Timing]| t.iter().map(|t| t.builder).collect::<Vec<_>>();
    let with_median = |values: &[f64]| format!("{} (median {:.2})", list(values), median(values));
    let n = runs.plain.len();
    let report = &mut bench.report;
    report.add(
        6,
        "builder app",
        "builder Dockerfile: a `RUN` writing a 20 MiB toolchain file, its sha256 and a \
         1,000,000-step awk table, a `COPY` of one tool script; the builder's command copies \
         `app/` as the artifact, which the runtime Dockerfile `COPY`s",
    );
    report.add(
        6,
        format!("(a) builder job, first run (builder image built): publish → result (s, {n} runs)"),
        with_median(&totals(&runs.cold)),
    );
    report.add(
        6,
        "(a)   of which the builder step (s)",
        with_median(&builders(&runs.cold)),
    );
    let hits = runs.cached.len();
    report.add(
        6,
        format!("(b) builder job, next app commit (cached builder image): publish → result (s, {hits} of {n} runs)"),
        with_median(&totals(&runs.cached)),
    );
    report.add(
        6,
        "(b)   of which the builder step (s)",
        with_median(&builders(&runs.cached)),
    );
    report.add(
        6,
        "(c) same app, plain Dockerfile, no builder: publish → result (s)",
        with_median(&totals(&runs.plain)),
    );
    report.add_with_target(
        6,
        "ratio (b) / (c), per run",
        with_median(&runs.ratios),
        "≤ 1.2",
    );
    report.add(6, "(b) steps (median)", steps(&runs.cached, true));
    report.add(6, "(c) steps (median)", steps(&runs.plain, false));
    if runs.misses > 0 {
        report.add(
            6,
            "(b) runs that found no cached builder image (not counted above)",
            runs.misses.to_string(),
        );
    }
}

/// The median of each step.
fn steps(timings: &[Timing], with_builder: bool) -> String {
    let m = |f: fn(&Timing) -> f64| median(&timings.iter().map(f).collect::<Vec<_>>());
    let builder = if with_builder {
        format!("builder {:.2} s, ", m(|t| t.builder))
    } else {
        String::new()
    };
    format!(
        "clone {:.2} s, {builder}build {:.2} s, push {:.2} s",
        m(|t| t.clone),
        m(|t| t.build),
        m(|t| t.push)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_image_is_read_from_the_log() {
        let log =
            "using the cached builder image buildbot-builder:0f1e (the same Dockerfile.build)\n";
        assert_eq!(builder_image(log).as_deref(), Some("buildbot-builder:0f1e"));
        assert_eq!(builder_image("no image here\n"), None);
    }
}
