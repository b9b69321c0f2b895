//! The benchmark's output: rows of measured figures with the target
//! next to them, printed as one Markdown table, plus the small statistics
//! (median, percentiles) the rows are made of. Figures are reported, never
//! judged: a missed target is a row like any other.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the result table.
pub struct Row {
    /// Section number (1 to 7).
    pub section: u8,
    /// What was measured, with its unit.
    pub measure: String,
    /// The figure(s).
    pub value: String,
    /// The target, or empty when it sets none.
    pub target: String,
}

/// Rows collected while the sections run.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a row without a target.
    pub fn add(&mut self, section: u8, measure: impl Into<String>, value: impl Into<String>) {
        self.add_with_target(section, measure, value, "");
    }

    /// Adds a row with the target for it.
    pub fn add_with_target(
        &mut self,
        section: u8,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
    ) {
        let row = Row {
            section,
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
        };
        // Rows print as they come too, so a long run shows progress and a
        // failure later on does not lose what was measured.
        eprintln!("    [{}] {}: {}", row.section, row.measure, row.value);
        self.rows.push(row);
    }

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| # | measure | result | target |\n| --- | --- | --- | --- |\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.section, row.measure, row.value, row.target
            );
        }
        out
    }
}

/// Sorted copy of `samples`.
fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The `p`th percentile (0 to 100) by the nearest-rank method: the smallest
/// sample with at least p % of the samples at or below it. With fewer than
/// 100 samples p99 is therefore the maximum, which is stated in the report.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The median (mean of the two middle samples for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let sorted = sorted(samples);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Seconds as a float, for arithmetic on durations.
pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Milliseconds as a float.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `p50 X ms, p99 Y ms (n samples)`.
pub fn p50_p99_ms(samples_ms: &[f64]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms (n={})",
        percentile(samples_ms, 50.0),
        percentile(samples_ms, 99.0),
        samples_ms.len()
    )
}

/// Every value with two decimals, comma separated.
pub fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), 3.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
