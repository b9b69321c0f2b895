//! Section 3: log throughput. A build prints N numbered lines as fast as it
//! can; the caller checks every line arrived, in order, and how fast, and
//! the same build runs with the docker CLI for comparison.

use crate::baseline::Checkout;
use crate::caller;
use crate::report::{list, median, mib, secs};
use crate::Bench;
use anyhow::bail;
use buildbot_protocol::StepName;
use buildbot_tests::TestRepo;

/// Checks a stream of lines for `bench line 1` .. `bench line N` in order;
/// other lines (the builder's step lines) are ignored.
#[derive(Default)]
struct LineCheck {
    count: u64,
    expected: u64,
    out_of_order: u64,
}

impl LineCheck {
    fn feed(&mut self, line: &str) -> bool {
        // BuildKit's plain progress puts `#N <seconds> ` before each line.
        let Some(n) = line.find("bench line ").and_then(|at| {
            line[at + "bench line ".len()..]
                .trim_end()
                .parse::<u64>()
                .ok()
        }) else {
            return false;
        };
        self.count += 1;
        if n != self.expected + 1 {
            self.out_of_order += 1;
        }
        self.expected = n;
        true
    }

    fn ensure_complete(&self, lines: u64, path: &str) -> anyhow::Result<()> {
        if self.count != lines || self.out_of_order != 0 || self.expected != lines {
            bail!(
                "{path}: {} of {lines} lines arrived, {} out of order, last {}",
                self.count,
                self.out_of_order,
                self.expected
            );
        }
        Ok(())
    }
}

/// One build through the worker, in seconds after publishing.
struct WorkerRun {
    /// Until the last numbered line arrived.
    last_line: f64,
    /// Until the result arrived.
    wall: f64,
    /// The worker's build step alone.
    build_step: f64,
}

/// Runs the build through a worker and with the CLI, alternately.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let lines = bench.options.log_lines;
    let runs = bench.options.log_runs;
    eprintln!("==> 3. a build printing {lines} lines, {runs} runs per side");
    let queue = bench.caller.new_queue("logs");
    let worker = bench.launcher.start("bench-logs", &queue, 1)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let repo = bench.repos.logs.clone();
    let checkout = Checkout::new(&bench.cli, &repo.ssh_url, &repo.commit).await?;
    let mut through_worker = Vec::new();
    let mut cli = Vec::new();
    for run in 0..runs {
        // Alternating, as in section 1, so load drift favours neither.
        if run % 2 == 0 {
            through_worker.push(worker_run(bench, &queue, &repo).await?);
            cli.push(cli_run(bench, &checkout).await?);
        } else {
            cli.push(cli_run(bench, &checkout).await?);
            through_worker.push(worker_run(bench, &queue, &repo).await?);
        }
    }
    let peak = worker.memory()?.peak;
    report(bench, &through_worker, &cli, peak);
    Ok(())
}

fn report(bench: &mut Bench, through_worker: &[WorkerRun], cli: &[f64], peak: u64) {
    let lines = bench.options.log_lines as f64;
    let pick = |f: fn(&WorkerRun) -> f64| through_worker.iter().map(f).collect::<Vec<_>>();
    let (last_line, wall) = (pick(|r| r.last_line), pick(|r| r.wall));
    let build_step = pick(|r| r.build_step);
    let ratio_to_cli =
        |values: &[f64]| -> Vec<f64> { values.iter().zip(cli).map(|(w, c)| w / c).collect() };
    let with_median = |values: &[f64]| format!("{} (median {:.2})", list(values), median(values));
    let report = &mut bench.report;
    report.add(
        3,
        format!("{lines} lines through the worker: lines/s at the caller"),
        format!(
            "{:.0} lines/s (median; publish → last line {}); every run: all present, in order",
            lines / median(&last_line),
            with_median(&last_line)
        ),
    );
    report.add(
        3,
        "  job wall time, publish → result (s)",
        with_median(&wall),
    );
    report.add(
        3,
        "  of which the worker's build step (s)",
        with_median(&build_step),
    );
    report.add(
        3,
        "  same `docker build --no-cache` on the CLI, output read through a pipe (s)",
        format!("{} ({:.0} lines/s)", with_median(cli), lines / median(cli)),
    );
    report.add(
        3,
        "  ratio worker job / CLI build, per run",
        with_median(&ratio_to_cli(&wall)),
    );
    // The job also clones and reports; the build step alone is the part
    // that streams the 200,000 lines.
    report.add(
        3,
        "  ratio worker's build step / CLI build, per run",
        with_median(&ratio_to_cli(&build_step)),
    );
    report.add(
        3,
        "  worker peak resident memory over these builds (VmHWM)",
        mib(peak),
    );
}

async fn worker_run(bench: &mut Bench, queue: &str, repo: &TestRepo) -> anyhow::Result<WorkerRun> {
    let lines = bench.options.log_lines;
    let image = format!("{}/bench/logs", bench.rig.registry);
    let mut job = caller::job(&bench.rig, repo, &repo.commit, &image);
    job.image.push = false;
    job.build.no_cache = true;
    job.build
        .build_args
        .insert("LINES".into(), lines.to_string());
    // The worker's log path on the builder that passes every line:
    // BuildKit drops a step's output in the daemon (200 KiB/s on Docker 20.10).
    job.build.engine = Some(buildbot_protocol::BuildEngine::Legacy);
    let followed = bench.caller.run(queue, &job).await?;
    // The stream as a whole: a line the worker flushed in two parts (its
    // partial-line delay, when the daemon's output stalls mid-line) is
    // still one line.
    let mut check = LineCheck::default();
    let mut last_line = followed.published;
    let mut text = String::new();
    for (arrival, chunk) in followed.build_texts() {
        text.push_str(chunk);
        if chunk.contains("bench line ") {
            last_line = arrival.at;
        }
    }
    for line in text.lines() {
        check.feed(line);
    }
    check.ensure_complete(lines as u64, "through the worker")?;
    Ok(WorkerRun {
        last_line: secs(last_line - followed.published),
        wall: secs(followed.elapsed()),
        build_step: followed.step_ms(StepName::Build).unwrap_or(0) as f64 / 1000.0,
    })
}

/// The same build with the docker CLI; seconds from start to exit.
async fn cli_run(bench: &Bench, checkout: &Checkout) -> anyhow::Result<f64> {
    let lines = bench.options.log_lines;
    let tag = format!("{}/bench/logs:cli", bench.rig.registry);
    let mut check = LineCheck::default();
    let build_args = [("LINES", lines.to_string())];
    let elapsed = bench
        .cli
        .build_streaming(checkout, &build_args, &tag, |line, _| {
            check.feed(line);
        })
        .await?;
    check.ensure_complete(lines as u64, "through the docker CLI")?;
    Ok(secs(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_check_finds_gaps_and_disorder() {
        let mut check = LineCheck::default();
        for line in [
            "Step 2/2 : RUN awk",
            "bench line 1",
            "bench line 2",
            "bench line 3",
        ] {
            check.feed(line);
        }
        assert!(check.ensure_complete(3, "test").is_ok());
        let mut check = LineCheck::default();
        for line in ["bench line 1", "bench line 3", "bench line 2"] {
            check.feed(line);
        }
        assert!(check.ensure_complete(3, "test").is_err());
    }
}
