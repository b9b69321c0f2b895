//! The last lines of the builder command's output, kept while it runs so a
//! failure can quote them in the job's error.

use buildbot_protocol::LogStream;
use std::collections::VecDeque;

/// Output lines of a failed command quoted in the job's error.
const TAIL_LINES: usize = 20;
/// At most this many bytes of them (the end is kept).
const TAIL_BYTES: usize = 4096;

/// The last lines of the command's output, for the error of a failed run:
/// stdout and stderr lines in the order they completed.
#[derive(Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    /// Per stream, the last line while it has no newline yet: a chunk of
    /// one stream must not be glued to a half line of the other.
    partial_stdout: String,
    partial_stderr: String,
}

impl Tail {
    /// Adds a chunk of `stream`'s output (any number of lines, possibly
    /// ending mid-line).
    pub(super) fn push(&mut self, stream: LogStream, text: &str) {
        let partial = match stream {
            LogStream::Stderr => &mut self.partial_stderr,
            _ => &mut self.partial_stdout,
        };
        partial.push_str(text);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            self.lines
                .push_back(line.trim_end_matches(['\n', '\r']).to_owned());
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
        // A huge line without a newline: only its end can be quoted.
        if partial.len() > TAIL_BYTES {
            let cut = ceil_char_boundary(partial, partial.len() - TAIL_BYTES);
            partial.drain(..cut);
        }
    }

    /// The lines, oldest first, at most [`TAIL_BYTES`] (the end kept).
    pub(super) fn text(&self) -> String {
        let mut lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        for partial in [&self.partial_stdout, &self.partial_stderr] {
            if !partial.is_empty() {
                lines.push(partial);
            }
        }
        let text = lines.join("\n");
        let cut = ceil_char_boundary(&text, text.len().saturating_sub(TAIL_BYTES));
        text[cut..].to_owned()
    }
}

/// The first char boundary at or after `index`.
fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..30 {
            tail.push(LogStream::Stdout, &format!("line {i}\n"));
        }
        tail.push(LogStream::Stdout, "no newline ");
        tail.push(LogStream::Stderr, "error: half a line, ");
        tail.push(LogStream::Stdout, "yet");
        tail.push(LogStream::Stderr, "then the rest\n");
        let text = tail.text();
        assert!(text.starts_with("line 11\n"), "{text}");
        assert!(
            text.ends_with("line 29\nerror: half a line, then the rest\nno newline yet"),
            "{text}"
        );
        assert_eq!(text.lines().count(), TAIL_LINES + 1);
    }

    #[test]
    fn tail_is_bounded_in_bytes_at_a_char_boundary() {
        let mut tail = Tail::default();
        tail.push(LogStream::Stdout, &"é".repeat(10_000));
        tail.push(LogStream::Stdout, "\nend\n");
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES, "{}", text.len());
        assert!(text.ends_with("\nend"));
    }
}
