//! BuildKit's progress (`moby.buildkit.trace`, decoded by bollard into
//! [`StatusResponse`]s) as the lines `docker build --progress=plain` prints:
//! each step numbered in the order it appears, its output prefixed with
//! its number and the seconds since it started.
//!
//! ```text
//! #5 [2/3] RUN make
//! #5 0.231 cc -o app main.c
//! #5 DONE 1.2s
//! ```
//!
//! Written by hand: the Docker CLI's printer is Go, and no crate renders
//! BuildKit's progress.

use crate::events::StreamMasker;
use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::{StatusResponse, Vertex, VertexLog};
use std::collections::HashMap;

/// What the build's progress said so far.
pub(super) struct Progress {
    vertices: HashMap<String, VertexState>,
    /// The first step that failed: its name and BuildKit's error.
    failed: Option<Failure>,
    /// Masking for each step's output, before it is interleaved with the
    /// other steps' and prefixed.
    masker: Box<dyn Fn() -> StreamMasker + Send>,
    /// BuildKit dropped some step's output past its log limit.
    clipped: bool,
}

/// What BuildKit writes in a step's output when it starts dropping it.
const CLIPPED: &str = "[output clipped, log limit";

/// A step that failed: `[2/3] RUN make`, and what BuildKit said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) instruction: String,
    pub(super) error: String,
}

impl Failure {
    /// The exit code of the step's command, from BuildKit's words
    /// (`... did not complete successfully: exit code: 2`).
    pub(super) fn exit_code(&self) -> Option<i64> {
        exit_code_in(&self.error)
    }
}

/// The exit code in a builder's error text (`exit code: 2`, or the legacy
/// builder's `returned a non-zero code: 2`).
pub(crate) fn exit_code_in(text: &str) -> Option<i64> {
    ["exit code: ", "returned a non-zero code: "]
        .iter()
        .find_map(|words| {
            let at = text.rfind(words)? + words.len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
}

struct VertexState {
    /// `#N`: the order in which the step first appeared.
    number: usize,
    name: String,
    started: Option<Timestamp>,
    announced: bool,
    finished: bool,
    /// The step's raw output goes through here first.
    masker: StreamMasker,
    /// Masked output after the last newline, waiting for the rest of its
    /// line.
    partial: String,
}

impl Progress {
    /// Progress whose steps' output is masked by a `masker` each.
    pub(super) fn new(masker: impl Fn() -> StreamMasker + Send + 'static) -> Self {
        Self {
            vertices: HashMap::new(),
            failed: None,
            masker: Box::new(masker),
            clipped: false,
        }
    }

    /// The lines one status update adds, each ending with a newline: new
    /// steps, their output, and steps that ended. Steps are announced
    /// before their output, and end after it.
    pub(super) fn lines(&mut self, status: StatusResponse) -> String {
        let mut out = String::new();
        for vertex in &status.vertexes {
            self.see(vertex, &mut out);
        }
        for log in &status.logs {
            self.output(log, &mut out);
        }
        for status in &status.statuses {
            if status.completed.is_some() {
                let number = self.number_of(&status.vertex, &mut out);
                out.push_str(&format!("#{number} {} done\n", status.id));
            }
        }
        for vertex in &status.vertexes {
            self.end(vertex, &mut out);
        }
        out
    }

    /// Whether BuildKit dropped output of a step past its log limit.
    pub(super) fn clipped(&self) -> bool {
        self.clipped
    }

    /// The first step that failed, if one did.
    pub(super) fn failure(&self) -> Option<&Failure> {
        self.failed.as_ref()
    }

    fn see(&mut self, vertex: &Vertex, out: &mut String) {
        let state = self.state(&vertex.digest);
        if !vertex.name.is_empty() {
            state.name.clone_from(&vertex.name);
        }
        if vertex.started.is_some() && state.started.is_none() {
            state.started = vertex.started;
        }
        if !state.announced && (vertex.started.is_some() || vertex.cached) {
            state.announced = true;
            out.push_str(&format!("#{} {}\n", state.number, state.name));
        }
    }

    fn output(&mut self, log: &VertexLog, out: &mut String) {
        let number = self.number_of(&log.vertex, out);
        let text = String::from_utf8_lossy(&log.msg);
        self.clipped |= text.contains(CLIPPED);
        let state = self.state(&log.vertex);
        let elapsed = seconds_between(state.started.as_ref(), log.timestamp.as_ref());
        let masked = state.masker.push(&text);
        state.partial.push_str(&masked);
        while let Some(newline) = state.partial.find('\n') {
            let line: String = state.partial.drain(..=newline).collect();
            out.push_str(&format!("#{number} {elapsed:.3} {line}"));
        }
    }

    fn end(&mut self, vertex: &Vertex, out: &mut String) {
        let state = self.state(&vertex.digest);
        if state.finished {
            return;
        }
        let number = state.number;
        let held = state.masker.finish();
        state.partial.push_str(&held);
        if !state.partial.is_empty() {
            let rest = std::mem::take(&mut state.partial);
            out.push_str(&format!("#{number} {rest}\n"));
        }
        if vertex.cached {
            state.finished = true;
            out.push_str(&format!("#{number} CACHED\n"));
        } else if !vertex.error.is_empty() {
            state.finished = true;
            out.push_str(&format!("#{number} ERROR: {}\n", vertex.error));
            let instruction = state.name.clone();
            self.failed.get_or_insert(Failure {
                instruction,
                error: vertex.error.clone(),
            });
        } else if let Some(completed) = &vertex.completed {
            state.finished = true;
            let took = seconds_between(state.started.as_ref(), Some(completed));
            out.push_str(&format!("#{number} DONE {took:.1}s\n"));
        }
    }

    /// The step's number, announcing it first if its output comes before
    /// the step itself did.
    fn number_of(&mut self, digest: &str, out: &mut String) -> usize {
        let state = self.state(digest);
        if !state.announced {
            state.announced = true;
            out.push_str(&format!("#{} {}\n", state.number, state.name));
        }
        state.number
    }

    fn state(&mut self, digest: &str) -> &mut VertexState {
        let number = self.vertices.len() + 1;
        let masker = &self.masker;
        self.vertices
            .entry(digest.to_owned())
            .or_insert_with(|| VertexState {
                number,
                name: String::new(),
                started: None,
                announced: false,
                finished: false,
                masker: masker(),
                partial: String::new(),
            })
    }
}

/// Seconds from `from` to `to`; 0 when either is unknown.
fn seconds_between(from: Option<&Timestamp>, to: Option<&Timestamp>) -> f64 {
    let (Some(from), Some(to)) = (from, to) else {
        return 0.0;
    };
    let nanos = |t: &Timestamp| t.seconds as f64 + f64::from(t.nanos) / 1e9;
    (nanos(to) - nanos(from)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::redact::tests::{assert_no_base64_piece, base64_pieces, openssh_key, wrap};
    use crate::events::redact::Redactor;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    fn progress() -> Progress {
        Progress::new(|| StreamMasker::new(Redactor::new([])))
    }

    #[test]
    fn a_secret_wrapped_over_lines_of_one_step_is_masked_among_another_steps_lines() {
        let key = openssh_key();
        let mut progress = Progress::new({
            let key = key.clone();
            move || StreamMasker::new(Redactor::new([key.as_str()]))
        });
        // `base64` of the key, 76 columns, one line per log message, the
        // other step's lines in between.
        let printed = wrap(&STANDARD.encode(&key), 76, "\n");
        let mut logs = Vec::new();
        for (i, line) in printed.lines().enumerate() {
            logs.push(log("sha256:a", 10, &format!("{line}\n")));
            logs.push(log("sha256:b", 10, &format!("other step {i}\n")));
        }
        let mut text = progress.lines(StatusResponse {
            logs,
            ..Default::default()
        });
        let done = |digest| Vertex {
            completed: at(101, 0),
            ..vertex(digest, "RUN")
        };
        text.push_str(&progress.lines(StatusResponse {
            vertexes: vec![done("sha256:a"), done("sha256:b")],
            ..Default::default()
        }));
        assert_no_base64_piece(&base64_pieces(&key), &text, "interleaved steps");
        assert!(text.contains("other step 3"), "{text}");
    }

    fn at(seconds: i64, millis: i32) -> Option<Timestamp> {
        Some(Timestamp {
            seconds,
            nanos: millis * 1_000_000,
        })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn log(digest: &str, millis: i32, msg: &str) -> VertexLog {
        VertexLog {
            vertex: digest.into(),
            timestamp: at(100, millis),
            stream: 1,
            msg: msg.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_run_step_reads_as_plain_progress() {
        let mut progress = progress();
        let started = Vertex {
            started: at(100, 0),
            ..vertex("sha256:a", "[2/3] RUN make")
        };
        let mut update = StatusResponse {
            vertexes: vec![started.clone()],
            ..Default::default()
        };
        assert_eq!(progress.lines(update.clone()), "#1 [2/3] RUN make\n");
        update.vertexes.clear();
        update.logs = vec![
            log("sha256:a", 231, "cc -o app"),
            log("sha256:a", 300, " main.c\nok\n"),
        ];
        assert_eq!(
            progress.lines(update),
            "#1 0.300 cc -o app main.c\n#1 0.300 ok\n"
        );
        let done = Vertex {
            completed: at(101, 200),
            ..started
        };
        let update = StatusResponse {
            vertexes: vec![done],
            ..Default::default()
        };
        assert_eq!(progress.lines(update), "#1 DONE 1.2s\n");
        assert!(progress.failure().is_none());
    }

    #[test]
    fn cached_steps_and_failures_are_named() {
        let mut progress = progress();
        let cached = Vertex {
            cached: true,
            ..vertex("sha256:a", "[1/2] FROM base")
        };
        let failed = Vertex {
            started: at(100, 0),
            completed: at(100, 500),
            error: "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
                .into(),
            ..vertex("sha256:b", "[2/2] RUN exit 3")
        };
        let update = StatusResponse {
            vertexes: vec![cached, failed],
            ..Default::default()
        };
        assert_eq!(
            progress.lines(update),
            "#1 [1/2] FROM base\n#2 [2/2] RUN exit 3\n#1 CACHED\n#2 ERROR: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3\n"
        );
        let failure = progress.failure().expect("a failure");
        assert_eq!(failure.instruction, "[2/2] RUN exit 3");
        assert_eq!(failure.exit_code(), Some(3));
    }

    #[test]
    fn output_buildkit_clipped_is_noticed() {
        let mut progress = progress();
        progress.lines(StatusResponse {
            logs: vec![log("sha256:a", 10, "line\n")],
            ..Default::default()
        });
        assert!(!progress.clipped());
        let clipped = "[output clipped, log limit 200KiB/s reached]\n";
        let text = progress.lines(StatusResponse {
            logs: vec![log("sha256:a", 20, clipped)],
            ..Default::default()
        });
        assert!(text.ends_with(clipped), "{text}");
        assert!(progress.clipped());
    }

    #[test]
    fn exit_codes_of_both_builders() {
        assert_eq!(
            exit_code_in("executor failed running [/bin/sh -c make]: exit code: 2"),
            Some(2)
        );
        assert_eq!(
            exit_code_in("The command '/bin/sh -c make' returned a non-zero code: 127"),
            Some(127)
        );
        assert_eq!(exit_code_in("failed to compute cache key: not found"), None);
    }
}
