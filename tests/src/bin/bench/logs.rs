//! Section 3: log throughput. A build prints N numbered lines as fast as it
//! can; the caller checks every line arrived, in order, and how fast, and
//! the same build runs with the docker CLI for comparison.

use crate::baseline::Checkout;
use crate::caller;
use crate::report::{mib, secs};
use crate::Bench;
use anyhow::bail;
use buildbot_protocol::StepName;
use std::time::Duration;

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
        let Some(n) = line
            .strip_prefix("bench line ")
            .and_then(|n| n.trim_end().parse::<u64>().ok())
        else {
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

/// Runs the build through a worker, then with the CLI.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let lines = bench.options.log_lines;
    eprintln!("==> 3. a build printing {lines} lines");
    let queue = bench.caller.new_queue("logs");
    let worker = bench.launcher.start("bench-logs", &queue, 1)?;
    bench.caller.wait_for_consumers(&queue, 1).await?;
    let repo = bench.repos.logs.clone();
    let image = format!("{}/bench/logs", bench.rig.registry);
    let mut job = caller::job(&bench.rig, &repo, &repo.commit, &image);
    job.image.push = false;
    job.build.no_cache = true;
    job.build
        .build_args
        .insert("LINES".into(), lines.to_string());
    let followed = bench.caller.run(&queue, &job).await?;
    let mut check = LineCheck::default();
    let mut last_line = followed.published;
    for (arrival, line) in followed.build_lines() {
        if check.feed(line) {
            last_line = arrival.at;
        }
    }
    check.ensure_complete(lines as u64, "through the worker")?;
    let delivered = last_line - followed.published;
    let memory = worker.memory()?;
    drop(worker);
    let cli = through_cli(bench, &repo.ssh_url, &repo.commit, lines).await?;

    let rate = |elapsed: Duration| lines as f64 / secs(elapsed);
    let report = &mut bench.report;
    report.add(
        3,
        format!("{lines} lines through the worker: lines/s at the caller"),
        format!(
            "{:.0} lines/s (all {lines} present, in order; last line {:.2} s after publish)",
            rate(delivered),
            secs(delivered)
        ),
    );
    report.add(
        3,
        "  job wall time (publish → result) / worker's build step",
        format!(
            "{:.2} s / {:.2} s",
            secs(followed.elapsed()),
            followed.step_ms(StepName::Build).unwrap_or(0) as f64 / 1000.0
        ),
    );
    report.add(
        3,
        "  same `docker build --no-cache` on the CLI, output read by a pipe",
        format!("{:.2} s ({:.0} lines/s)", secs(cli), rate(cli)),
    );
    report.add(
        3,
        "  ratio worker job / CLI build",
        format!("{:.2}", secs(followed.elapsed()) / secs(cli)),
    );
    report.add(
        3,
        "  worker peak resident memory during this build (VmHWM)",
        mib(memory.peak),
    );
    Ok(())
}

async fn through_cli(
    bench: &Bench,
    url: &str,
    revision: &str,
    lines: usize,
) -> anyhow::Result<Duration> {
    let checkout = Checkout::new(&bench.cli, url, revision).await?;
    let tag = format!("{}/bench/logs:cli", bench.rig.registry);
    let mut check = LineCheck::default();
    let build_args = [("LINES", lines.to_string())];
    let elapsed = bench
        .cli
        .build_streaming(&checkout.path(), &build_args, &tag, |line, _| {
            check.feed(line);
        })
        .await?;
    check.ensure_complete(lines as u64, "through the docker CLI")?;
    Ok(elapsed)
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
