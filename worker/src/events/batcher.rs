//! Log batching: output of a step is published in chunks of whole lines.
//! A line after a quiet moment is due at once; lines that arrive while a
//! publish is in flight, or faster than publishing, wait in one chunk (up
//! to a size, and a time cap), so a noisy build does not flood the broker
//! and a quiet one is seen as it prints.

use super::LogBatching;
use buildbot_protocol::{LogEvent, LogStream, StepName};
use tokio::time::Instant;

/// Output waiting to be published: text of one step and stream.
struct PendingLog {
    step: StepName,
    stream: LogStream,
    text: String,
    /// When the oldest byte of `text` arrived.
    since: Instant,
}

/// Batches log output into chunks of whole lines, at most `max_bytes` each.
/// Pure (time is passed in) so it is tested without a runtime.
pub(super) struct LogBatcher {
    batching: LogBatching,
    pending: Option<PendingLog>,
}

impl LogBatcher {
    pub(super) fn new(batching: LogBatching) -> Self {
        Self {
            batching,
            pending: None,
        }
    }

    /// Adds output; returns the chunks that are full.
    pub(super) fn push(&mut self, log: LogEvent, now: Instant) -> Vec<LogEvent> {
        let mut ready = Vec::new();
        let same_source = self
            .pending
            .as_ref()
            .is_some_and(|p| p.step == log.step && p.stream == log.stream);
        if !same_source {
            ready.extend(self.take_all());
        }
        let pending = self.pending.get_or_insert_with(|| PendingLog {
            step: log.step,
            stream: log.stream,
            text: String::new(),
            since: now,
        });
        pending.text.push_str(&log.text);
        // Lines that kept coming for the time cap go now, even though
        // more are still arriving.
        let overdue = now >= pending.since + self.batching.max_delay;
        if overdue && pending.text.contains('\n') {
            ready.extend(self.take_due(now));
        }
        while self
            .pending
            .as_ref()
            .is_some_and(|p| p.text.len() >= self.batching.max_bytes)
        {
            ready.extend(self.take_prefix(self.batching.max_bytes, now));
        }
        ready
    }

    /// When the pending output may be published, if there is any:
    /// complete lines at once (the publisher takes what is queued first,
    /// so lines that came meanwhile join them), a partial line after its
    /// delay.
    pub(super) fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| {
            if p.text.contains('\n') {
                p.since
            } else {
                p.since + self.batching.partial_line_delay
            }
        })
    }

    /// The output whose time has come: every complete line, or a partial
    /// line that waited long enough.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<LogEvent> {
        let pending = self.pending.as_ref()?;
        match pending.text.rfind('\n') {
            Some(last_newline) => self.take_prefix(last_newline + 1, now),
            None => self.take_all(),
        }
    }

    /// Everything pending, partial line included.
    pub(super) fn take_all(&mut self) -> Option<LogEvent> {
        self.pending.take().map(|p| LogEvent {
            step: p.step,
            stream: p.stream,
            text: p.text,
        })
    }

    /// Up to `limit` bytes, cut after the last newline within the limit
    /// (or at the limit when a single line is longer).
    pub(super) fn take_prefix(&mut self, limit: usize, now: Instant) -> Option<LogEvent> {
        let pending = self.pending.as_mut()?;
        if pending.text.len() <= limit {
            return self.take_all();
        }
        let cut = cut_point(&pending.text, limit);
        let rest = pending.text.split_off(cut);
        let chunk = std::mem::replace(&mut pending.text, rest);
        pending.since = now;
        Some(LogEvent {
            step: pending.step,
            stream: pending.stream,
            text: chunk,
        })
    }
}

/// Where to cut `text` so the first part is at most `limit` bytes: after the
/// last newline before the limit, else at the last char boundary.
fn cut_point(text: &str, limit: usize) -> usize {
    let mut boundary = limit.min(text.len());
    while !text.is_char_boundary(boundary) {
        boundary -= 1;
    }
    match text[..boundary].rfind('\n') {
        Some(newline) => newline + 1,
        None if boundary > 0 => boundary,
        // A single multi-byte char longer than the limit: take it whole.
        None => text.chars().next().map_or(text.len(), char::len_utf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn batching(max_bytes: usize) -> LogBatching {
        LogBatching {
            max_bytes,
            max_job_bytes: crate::events::DEFAULT_MAX_JOB_LOG_BYTES,
            max_delay: Duration::from_millis(50),
            partial_line_delay: Duration::from_secs(1),
        }
    }

    fn log(text: &str) -> LogEvent {
        LogEvent {
            step: StepName::Build,
            stream: LogStream::Stdout,
            text: text.to_owned(),
        }
    }

    #[test]
    fn batcher_cuts_full_chunks_at_line_ends() {
        let mut b = LogBatcher::new(batching(10));
        let now = Instant::now();
        let ready = b.push(log("aaaa\nbbbb\ncccc\n"), now);
        let texts: Vec<_> = ready.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["aaaa\nbbbb\n"]);
        assert_eq!(b.take_all().map(|c| c.text), Some("cccc\n".to_owned()));
    }

    #[test]
    fn batcher_cuts_an_overlong_line_at_the_limit() {
        let mut b = LogBatcher::new(batching(4));
        let ready = b.push(log("0123456789"), Instant::now());
        let texts: Vec<_> = ready.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["0123", "4567"]);
    }

    #[test]
    fn complete_lines_are_due_at_once_and_a_partial_line_after_its_delay() {
        let mut b = LogBatcher::new(batching(1024));
        let start = Instant::now();
        assert!(b.push(log("line\npartial"), start).is_empty());
        assert_eq!(b.due(), Some(start));
        let chunk = b.take_due(start);
        assert_eq!(chunk.map(|c| c.text), Some("line\n".to_owned()));
        assert_eq!(b.due(), Some(start + Duration::from_secs(1)));
        let chunk = b.take_due(start + Duration::from_secs(1));
        assert_eq!(chunk.map(|c| c.text), Some("partial".to_owned()));
        assert!(b.due().is_none());
    }

    #[test]
    fn lines_that_keep_coming_go_out_at_the_time_cap() {
        let mut b = LogBatcher::new(batching(1024));
        let start = Instant::now();
        assert!(b.push(log("1\n"), start).is_empty());
        assert!(b
            .push(log("2\n"), start + Duration::from_millis(49))
            .is_empty());
        let ready = b.push(log("3\npart"), start + Duration::from_millis(50));
        let texts: Vec<_> = ready.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["1\n2\n3\n"]);
        assert_eq!(b.take_all().map(|c| c.text), Some("part".to_owned()));
    }

    #[test]
    fn batcher_flushes_when_the_source_changes() {
        let mut b = LogBatcher::new(batching(1024));
        let now = Instant::now();
        assert!(b.push(log("out\n"), now).is_empty());
        let mut err = log("err\n");
        err.stream = LogStream::Stderr;
        let ready = b.push(err, now);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].stream, LogStream::Stdout);
    }

    #[test]
    fn cut_point_respects_char_boundaries() {
        assert_eq!(cut_point("ééé", 3), 2);
        assert_eq!(cut_point("é", 1), 2);
    }
}
