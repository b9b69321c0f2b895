//! The publishing task of one attempt: numbers events, batches log output,
//! masks credentials (holding back a chunk's tail that may start a secret,
//! see [`Redactor::mask_streamed`]; a long chunk on a blocking thread), and
//! sends everything in order to the sink; the result goes last, with
//! `last_seq`, and is confirmed before the job may be acked.
//!
//! Each piece of output is masked once: a chunk's held-back tail is kept
//! raw and masked with the text that follows it, never masked and then
//! masked again.

use super::batcher::LogBatcher;
use super::redact::Redactor;
use super::reporter::Report;
use super::{AttemptId, EventSink, SinkError};
use buildbot_protocol::{Event, EventBody, JobResult, LogEvent, LogStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Text at least this long is masked on a blocking thread. Masking reads
/// every byte a few times (as is, in its compacted view, at the end for the
/// held-back tail). With a job's SSH key and a password, a release build
/// here masked a full 64 KiB chunk in about 0.5 ms, far longer than a task
/// should keep a runtime thread from the others, and 4 KiB in about 20 µs,
/// what a round trip to a blocking thread costs (about 25 µs).
const MASK_OFF_RUNTIME_BYTES: usize = 8 * 1024;

/// The task that owns an attempt's sequence numbers: batches, masks and
/// sends every event, in order.
pub(super) struct Publisher<S> {
    pub(super) sink: S,
    pub(super) attempt: AttemptId,
    pub(super) redactor: Redactor,
    pub(super) batcher: LogBatcher,
    /// Output held back, not yet masked, because it may start a secret
    /// that the next chunk of its step and stream continues (see
    /// `emit_log`).
    pub(super) held: Option<LogEvent>,
    pub(super) next_seq: u64,
    /// How much log text the attempt may still publish.
    pub(super) log_cap: LogCap,
    /// First delivery failure; later events are not attempted and the
    /// result reports it, so the job is not acked.
    pub(super) failure: Option<SinkError>,
}

impl<S: EventSink> Publisher<S> {
    pub(super) async fn run(mut self, mut inbox: mpsc::Receiver<Report>) {
        loop {
            let due = self.batcher.due();
            tokio::select! {
                // What is queued first: lines that arrived while a publish
                // was in flight join the pending chunk, which goes out as
                // one event once the inbox is empty.
                biased;
                report = inbox.recv() => match report {
                    Some(Report::Finish(result, reply)) => {
                        let _ = reply.send(self.finish(*result).await);
                        return;
                    }
                    Some(Report::Abandon(reply)) => {
                        let _ = reply.send(self.abandon().await);
                        return;
                    }
                    Some(report) => self.handle(report).await,
                    None => return,
                },
                _ = sleep_until(due), if due.is_some() => {
                    if let Some(chunk) = self.batcher.take_due(Instant::now()) {
                        self.emit_log(chunk).await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, report: Report) {
        match report {
            Report::Step(step) => {
                self.flush_logs().await;
                self.emit(EventBody::Step(step)).await;
            }
            Report::Log(log) => {
                for chunk in self.batcher.push(log, Instant::now()) {
                    self.emit_log(chunk).await;
                }
            }
            Report::Finish(..) | Report::Abandon(_) => {}
        }
    }

    async fn flush_logs(&mut self) {
        if let Some(chunk) = self.batcher.take_all() {
            self.emit_log(chunk).await;
        }
        if let Some(held) = self.held.take() {
            self.emit_held(held).await;
        }
    }

    /// Sends held output, masked: nothing more of it is coming.
    async fn emit_held(&mut self, held: LogEvent) {
        let LogEvent { step, stream, text } = held;
        let masked = self
            .mask_off_runtime(text, |redactor, text| redactor.mask(&text))
            .await;
        if let Some(text) = masked {
            self.emit_output(LogEvent { step, stream, text }).await;
        }
    }

    /// Masks and sends a chunk of output. A chunk may end with the first
    /// part of a secret whose rest comes in the next chunk (a line cut by
    /// the batcher, a line of wrapped base64): that part is held back, raw,
    /// and masked with what follows it.
    async fn emit_log(&mut self, chunk: LogEvent) {
        let LogEvent { step, stream, text } = chunk;
        let text = match self.held.take() {
            Some(mut held) if held.step == step && held.stream == stream => {
                held.text.push_str(&text);
                held.text
            }
            Some(other) => {
                self.emit_held(other).await;
                text
            }
            None => text,
        };
        let masked = self
            .mask_off_runtime(text, |redactor, text| {
                let (ready, rest) = redactor.mask_streamed(&text);
                (ready, rest.to_owned())
            })
            .await;
        let Some((ready, rest)) = masked else {
            return;
        };
        if !rest.is_empty() {
            let text = rest;
            self.held = Some(LogEvent { step, stream, text });
        }
        if !ready.is_empty() {
            let text = ready;
            self.emit_output(LogEvent { step, stream, text }).await;
        }
    }

    /// `mask(redactor, text)`, on a blocking thread when `text` is long,
    /// so the runtime thread goes on with other tasks (other jobs' events,
    /// the consumer) meanwhile; this task waits, so events keep their
    /// order. `None` when the blocking task was cancelled, which happens
    /// only when the runtime shuts down: nothing of `text` is sent, and the
    /// attempt counts as failed.
    async fn mask_off_runtime<T: Send + 'static>(
        &mut self,
        text: String,
        mask: impl FnOnce(&Redactor, String) -> T + Send + 'static,
    ) -> Option<T> {
        if text.len() < MASK_OFF_RUNTIME_BYTES {
            return Some(mask(&self.redactor, text));
        }
        let redactor = self.redactor.clone();
        match tokio::task::spawn_blocking(move || mask(&redactor, text)).await {
            Ok(masked) => Some(masked),
            // A panic in masking is this task's panic, as it was inline.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                self.failure.get_or_insert(SinkError::Stopped);
                None
            }
        }
    }

    /// Publishes the result, masked and with `last_seq`, and waits for the
    /// sink to confirm everything; returns the result as published.
    async fn finish(&mut self, mut result: JobResult) -> Result<JobResult, SinkError> {
        self.flush_logs().await;
        result.last_seq = self.next_seq;
        self.mask_result(&mut result);
        self.emit(EventBody::Result(result.clone())).await;
        if self.failure.is_none() {
            if let Err(e) = self.sink.flush().await {
                self.failure = Some(match e {
                    SinkError::Transport(reason) => SinkError::Unconfirmed {
                        reason,
                        resend: self.sink.take_unconfirmed(),
                    },
                    other => other,
                });
            }
        }
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    async fn abandon(&mut self) -> Result<(), SinkError> {
        self.flush_logs().await;
        if self.failure.is_none() {
            if let Err(e) = self.sink.flush().await {
                self.failure = Some(e);
            }
        }
        self.failure.take().map_or(Ok(()), Err)
    }

    /// Sends masked output within the job's log cap: the part that fits,
    /// then once a notice that the rest is dropped.
    async fn emit_output(&mut self, mut log: LogEvent) {
        match self.log_cap.admit(&mut log.text) {
            Admit::All => {
                self.emit(EventBody::Log(log)).await;
            }
            Admit::Part => {
                let step = log.step;
                if !log.text.is_empty() {
                    self.emit(EventBody::Log(log)).await;
                }
                let notice = LogEvent {
                    step,
                    stream: LogStream::System,
                    text: format!(
                        "\nlog truncated: this job printed more than {} bytes (--max-log-bytes); the rest of its output is dropped, the job goes on\n",
                        self.log_cap.limit
                    ),
                };
                self.emit(EventBody::Log(notice)).await;
            }
            Admit::Nothing => {}
        }
    }

    /// Numbers and sends one event, already masked; returns its `seq`.
    async fn emit(&mut self, body: EventBody) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.failure.is_some() {
            return seq;
        }
        let event = Event {
            job_id: self.attempt.job_id.clone(),
            attempt: self.attempt.attempt,
            seq,
            timestamp: chrono::Utc::now(),
            body,
        };
        if let Err(e) = self.sink.send(&event).await {
            self.failure = Some(e);
        }
        seq
    }

    /// Masks the text of a result's error. (Log text is masked once, in
    /// `emit_log`; step events carry no text.)
    fn mask_result(&self, result: &mut JobResult) {
        if let Some(error) = result.error.as_mut() {
            error.message = self.redactor.mask(&error.message);
            for problem in &mut error.problems {
                *problem = self.redactor.mask(problem);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The per-attempt budget of log text.
pub(super) struct LogCap {
    limit: u64,
    sent: u64,
    truncated: bool,
}

/// What [`LogCap::admit`] let through.
enum Admit {
    All,
    /// The text was cut to what fits (maybe nothing); the cap is reached
    /// now, so the notice goes out.
    Part,
    /// The cap was reached earlier: nothing goes out.
    Nothing,
}

impl LogCap {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            sent: 0,
            truncated: false,
        }
    }

    /// Cuts `text` to what the budget has left (at a character boundary)
    /// and counts it.
    fn admit(&mut self, text: &mut String) -> Admit {
        if self.truncated {
            return Admit::Nothing;
        }
        let left = self.limit.saturating_sub(self.sent);
        let len = text.len() as u64;
        if len <= left {
            self.sent += len;
            return Admit::All;
        }
        let mut cut = usize::try_from(left).unwrap_or(usize::MAX).min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        self.sent += cut as u64;
        self.truncated = true;
        Admit::Part
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::redact::tests::{
        assert_no_base64_piece, base64_pieces, openssh_key, printed_base64, pseudo_random_bytes,
        wrap, PASSWORD,
    };
    use crate::events::redact::MASK;
    use crate::events::reply::Outgoing;
    use crate::events::{start, LogBatching};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use buildbot_protocol::JobStatus;
    use buildbot_protocol::{LogStream, StepName, StepState};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn batching(max_bytes: usize) -> LogBatching {
        LogBatching {
            max_bytes,
            max_job_bytes: crate::events::DEFAULT_MAX_JOB_LOG_BYTES,
            max_delay: Duration::from_millis(50),
            partial_line_delay: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_split_across_partial_line_flushes_is_masked() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let redactor = Redactor::new(["hunter22"]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(1024));
        reporter
            .log(StepName::Build, LogStream::Stdout, "pw hun")
            .await;
        // Past the partial-line delay: the first half is flushed alone.
        tokio::time::sleep(Duration::from_secs(2)).await;
        reporter
            .log(StepName::Build, LogStream::Stdout, "ter22 ok\n")
            .await;
        finisher.finish(result()).await.expect("finish");

        let events = sink.0.lock().expect("lock").clone();
        let text: String = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log(l) => Some(l.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "pw ******** ok\n");
        let first = match &events[0].body {
            EventBody::Log(l) => l.text.clone(),
            other => panic!("expected a log event, got {other:?}"),
        };
        assert_eq!(first, "pw ", "the possible start of a secret is held back");
    }

    /// The text of every log event `sink` was sent, in order.
    fn log_texts(sink: &RecordingSink) -> Vec<String> {
        let events = sink.0.lock().expect("lock");
        events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log(l) => Some(l.text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Reports `output` as a build would, in pieces cut at `cuts` (mid-line
    /// too), with pauses that make the batcher cut by time as well; then
    /// finishes and returns the text of each log event.
    async fn publish_in_pieces(
        redactor: Redactor,
        max_bytes: usize,
        output: &str,
        cuts: &[usize],
    ) -> Vec<String> {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(max_bytes));
        let mut from = 0;
        for (index, &cut) in cuts.iter().chain([&output.len()]).enumerate() {
            let cut = cut.clamp(from, output.len());
            reporter
                .log(StepName::Build, LogStream::Stdout, &output[from..cut])
                .await;
            from = cut;
            // Past the complete-line delay, and now and then past the
            // partial-line one.
            let pause = if index % 3 == 2 { 2000 } else { 60 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        finisher.finish(result()).await.expect("finish");
        log_texts(&sink)
    }

    #[tokio::test(start_paused = true)]
    async fn wrapped_base64_of_the_key_cut_by_the_batcher_is_masked() {
        let key = openssh_key();
        let secret = STANDARD.encode(&key);
        let pieces = base64_pieces(&key);
        for line_end in ["\n", "\r\n"] {
            let wrapped = wrap(&secret, 76, line_end);
            let output = format!("$ base64 key{line_end}key: {wrapped}done{line_end}");
            let lines = wrapped.lines().count();
            let expected = format!(
                "$ base64 key{line_end}key: {MASK}{line_end}{}done{line_end}",
                format!("{MASK}{line_end}").repeat(lines - 1)
            );
            for max_bytes in [50, 100, 230] {
                let redactor = Redactor::new([secret.as_str()]);
                let texts =
                    publish_in_pieces(redactor, max_bytes, &output, &[7, 90, 91, 300, 555]).await;
                let case = format!("{line_end:?}, max_bytes {max_bytes}");
                for text in &texts {
                    assert_no_base64_piece(&pieces, text, &case);
                }
                assert_eq!(texts.concat(), expected, "{case}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wrapped_base64_at_any_alignment_cut_by_the_batcher_is_masked() {
        let key = openssh_key();
        let pieces = base64_pieces(&key);
        for (width, line_end, before) in [(76, "\n", 1), (64, "\r\n", 2), (64, "\n", 0)] {
            let data = pseudo_random_bytes(3, before);
            let output = printed_base64(&key, &data, width, line_end, "key: ");
            let redactor = Redactor::new([key.as_str(), PASSWORD]);
            let expected = redactor.mask(&output);
            let texts = publish_in_pieces(redactor, 100, &output, &[30, 200, 201, 450]).await;
            let case = format!("width {width}, {line_end:?}, {before} bytes before");
            for text in &texts {
                assert_no_base64_piece(&pieces, text, &case);
            }
            assert_eq!(texts.concat(), expected, "{case}");
            // Only the secret's lines are masked: the others stay, in order.
            let output_lines: Vec<&str> = output.lines().collect();
            let expected_lines: Vec<&str> = expected.lines().collect();
            assert_eq!(output_lines.len(), expected_lines.len(), "{case}");
            assert_eq!(output_lines.first(), expected_lines.first(), "{case}");
            assert_eq!(output_lines.last(), expected_lines.last(), "{case}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ordinary_output_is_sent_at_once() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let redactor = Redactor::new([STANDARD.encode(openssh_key()).as_str(), PASSWORD]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(1024));
        // Base64 that is no secret, in whole 76-column lines: its last line
        // may be a line of wrapped base64, so its end is looked at, and it
        // would be held back if it began a secret's base64 (see
        // redact::tests::a_non_secret_blob_ending_like_a_secret_holds_only_that_end).
        let blob = wrap(&STANDARD.encode(pseudo_random_bytes(12, 57 * 4)), 76, "\n");
        for text in [
            "Step 1/5 : FROM busybox\n",
            "Compiling the project, which takes a while.\nDone.\n",
            blob.as_str(),
        ] {
            reporter.log(StepName::Build, LogStream::Stdout, text).await;
            // Past the batcher's delay for complete lines, nothing later.
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(log_texts(&sink).last().map(String::as_str), Some(text));
        }
        finisher.finish(result()).await.expect("finish");
        assert_eq!(log_texts(&sink).len(), 3);
    }

    /// Masking a long chunk leaves the runtime thread to other tasks: on a
    /// one-thread runtime, this test's task counts its turns until the
    /// masked chunk reaches the sink. Masked on the runtime thread, the
    /// chunk would be sent within the publisher's first turn, after one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_huge_chunk_is_masked_while_other_tasks_run() {
        let line = "compiling a module; it printed the password hunter22\n";
        let huge = line.repeat(4 * 1024 * 1024 / line.len());
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let redactor = Redactor::new(["hunter22"]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(huge.len()));
        reporter
            .log(StepName::Build, LogStream::Stdout, huge.clone())
            .await;
        let mut turns = 0;
        while sink.0.lock().expect("lock").is_empty() {
            turns += 1;
            tokio::task::yield_now().await;
        }
        reporter
            .log(StepName::Build, LogStream::Stdout, "done\n")
            .await;
        finisher.finish(result()).await.expect("finish");

        assert!(turns > 10, "masking held the runtime thread: {turns} turns");
        let masked = huge.replace("hunter22", MASK);
        assert_eq!(log_texts(&sink), [masked.as_str(), "done\n"]);
    }

    /// A sink that records what it was sent, in memory.
    #[derive(Clone, Default)]
    struct RecordingSink(Arc<Mutex<Vec<Event>>>);

    impl EventSink for RecordingSink {
        async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
            self.0
                .lock()
                .map_err(|_| SinkError::Stopped)?
                .push(event.clone());
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }

        fn take_unconfirmed(&mut self) -> Vec<Outgoing> {
            Vec::new()
        }
    }

    /// A sink whose connection is lost while the result awaits its
    /// confirm: every event was sent, none confirmed.
    #[derive(Default)]
    struct ConfirmLostSink(Vec<Outgoing>);

    impl EventSink for ConfirmLostSink {
        async fn send(&mut self, event: &Event) -> Result<(), SinkError> {
            self.0.push(Outgoing {
                exchange: String::new(),
                routing_key: "reply".into(),
                mandatory: true,
                payload: serde_json::to_vec(event).expect("encode").into(),
                properties: lapin::BasicProperties::default(),
            });
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            Err(SinkError::Transport("connection reset".into()))
        }

        fn take_unconfirmed(&mut self) -> Vec<Outgoing> {
            std::mem::take(&mut self.0)
        }
    }

    #[tokio::test]
    async fn a_result_whose_confirm_is_lost_comes_back_with_every_unconfirmed_event() {
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let (reporter, finisher) = start(
            ConfirmLostSink::default(),
            attempt,
            Redactor::default(),
            LogBatching::default(),
        );
        reporter.step(StepName::Build, StepState::Started).await;
        let error = finisher.finish(result()).await.expect_err("not confirmed");
        let SinkError::Unconfirmed { resend, .. } = error else {
            panic!("not the unconfirmed result: {error:?}");
        };
        let events: Vec<Event> = resend
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).expect("an event"))
            .collect();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2], "the step, then the result, as numbered");
        assert!(matches!(events[1].body, EventBody::Result(_)));
    }

    fn result() -> JobResult {
        JobResult::new(JobStatus::Succeeded, "w")
    }

    /// A build printing numbered lines as fast as it can, its output cut
    /// anywhere (as the daemon's stream cuts it): every event carries whole
    /// lines, all of them, in order, with a job's key among the secrets.
    #[tokio::test]
    async fn many_lines_cut_anywhere_arrive_as_whole_lines_in_order() {
        let key = openssh_key();
        let redactor = Redactor::new([STANDARD.encode(&key).as_str(), PASSWORD]);
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(64 * 1024));
        let output: String = (1..=50_000).map(|n| format!("bench line {n}\n")).collect();
        let bytes = pseudo_random_bytes(3, 50_000);
        let mut from = 0;
        for step in bytes.iter().map(|b| 1 + usize::from(*b) * 4) {
            let to = (from + step).min(output.len());
            reporter
                .log(StepName::Build, LogStream::Stdout, &output[from..to])
                .await;
            from = to;
            if from == output.len() {
                break;
            }
        }
        reporter
            .log(StepName::Build, LogStream::Stdout, &output[from..])
            .await;
        finisher.finish(result()).await.expect("finish");
        let texts = log_texts(&sink);
        let mid_line: Vec<&String> = texts.iter().filter(|t| !t.ends_with('\n')).collect();
        assert!(
            mid_line.is_empty(),
            "events ending mid-line: {:?}",
            &mid_line[..mid_line.len().min(3)]
        );
        assert_eq!(texts.concat(), output);
    }

    #[tokio::test]
    async fn events_are_numbered_masked_and_end_with_the_result() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 2,
        };
        let redactor = Redactor::new(["hunter22"]);
        let (reporter, finisher) = start(sink.clone(), attempt, redactor, batching(1024));
        reporter.step(StepName::Build, StepState::Started).await;
        reporter
            .log(StepName::Build, LogStream::Stdout, "pw hunter22\n")
            .await;
        reporter.step(StepName::Build, StepState::Succeeded).await;
        let last = finisher.finish(result()).await.expect("finish");
        reporter.system(StepName::Build, "too late").await;

        let events = sink.0.lock().expect("lock").clone();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(last.last_seq, 4);
        assert!(events.iter().all(|e| e.attempt == 2 && e.job_id == "j"));
        match &events[1].body {
            EventBody::Log(l) => assert_eq!(l.text, "pw ********\n"),
            other => panic!("expected a log event, got {other:?}"),
        }
        match &events[3].body {
            EventBody::Result(r) => assert_eq!(r.last_seq, 4),
            other => panic!("expected the result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_job_s_log_is_cut_at_its_cap_with_one_notice_and_the_result_still_last() {
        let sink = RecordingSink::default();
        let attempt = AttemptId {
            job_id: "j".into(),
            attempt: 1,
        };
        let capped = LogBatching {
            max_job_bytes: 100,
            ..batching(64)
        };
        let (reporter, finisher) = start(sink.clone(), attempt, Redactor::default(), capped);
        for n in 0..100 {
            reporter
                .log(StepName::Build, LogStream::Stdout, format!("line {n:04}\n"))
                .await;
        }
        reporter.step(StepName::Build, StepState::Succeeded).await;
        finisher.finish(result()).await.expect("finish");

        let events = sink.0.lock().expect("lock").clone();
        let output: String = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log(l) if l.stream == LogStream::Stdout => Some(l.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(output.len(), 100, "{output:?}");
        assert!(output.starts_with("line 0000\nline 0001\n"), "{output:?}");
        let notices = events
            .iter()
            .filter(|e| matches!(&e.body, EventBody::Log(l) if l.text.contains("log truncated")))
            .count();
        assert_eq!(notices, 1);
        assert!(matches!(
            events.last().map(|e| &e.body),
            Some(EventBody::Result(_))
        ));
        assert!(events
            .iter()
            .any(|e| matches!(&e.body, EventBody::Step(s) if s.state == StepState::Succeeded)));
    }
}
