//! Transfer progress as human-readable lines, throttled so a large fetch
//! does not flood the job's event stream: about a line per second, a line
//! per quarter after the first second, and one final line.

use git2::Progress;
use std::time::{Duration, Instant};

/// Shortest gap between two transfer progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The progress of one fetch, and when it last spoke.
pub(super) struct Throttle {
    started: Instant,
    last: Option<Instant>,
    quarter: usize,
    done: bool,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: None,
            quarter: 0,
            done: false,
        }
    }
}

impl Throttle {
    /// The line to show for libgit2's `stats` now, if one is due.
    pub(super) fn line(&mut self, stats: &Progress<'_>) -> Option<String> {
        let counts = (stats.received_objects(), stats.total_objects());
        self.line_at(Instant::now(), counts, stats.received_bytes())
    }

    fn line_at(
        &mut self,
        now: Instant,
        (received, total): (usize, usize),
        bytes: usize,
    ) -> Option<String> {
        if total == 0 || self.done {
            return None;
        }
        let kib = bytes as f64 / 1024.0;
        if received >= total {
            self.done = true;
            return Some(format!("received {received} objects, {kib:.1} KiB"));
        }
        let quarter = received * 4 / total;
        let new_quarter =
            quarter > self.quarter && now.duration_since(self.started) >= PROGRESS_INTERVAL;
        let due = now.duration_since(self.last.unwrap_or(self.started)) >= PROGRESS_INTERVAL;
        self.quarter = self.quarter.max(quarter);
        if !(due || new_quarter) {
            return None;
        }
        self.last = Some(now);
        Some(format!(
            "received {received}/{total} objects ({}%), {kib:.1} KiB",
            received * 100 / total
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_progress_is_throttled() {
        let mut throttle = Throttle::default();
        let start = throttle.started;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The first second stays quiet, even across quarters.
        assert_eq!(throttle.line_at(at(100), (30, 100), 2048), None);
        assert_eq!(throttle.line_at(at(900), (60, 100), 4096), None);
        assert_eq!(
            throttle.line_at(at(1000), (61, 100), 4096).as_deref(),
            Some("received 61/100 objects (61%), 4.0 KiB")
        );
        assert_eq!(throttle.line_at(at(1500), (62, 100), 4096), None);
        // A new quarter speaks up before the second is over.
        assert!(throttle.line_at(at(1600), (80, 100), 4096).is_some());
        assert_eq!(throttle.line_at(at(1700), (81, 100), 4096), None);
        assert_eq!(
            throttle.line_at(at(1800), (100, 100), 10240).as_deref(),
            Some("received 100 objects, 10.0 KiB")
        );
        // Delta resolution reports "done" again: said once only.
        assert_eq!(throttle.line_at(at(5000), (100, 100), 10240), None);
    }
}
