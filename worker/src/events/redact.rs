//! Masking of credentials in text that leaves the worker (log chunks, error
//! messages).
//!
//! A [`Redactor`] is built once per job from every secret in it. It masks
//! these forms of each secret:
//! - the value as is, and URL-encoded;
//! - its base64 encoding, padded, and, for each of the three byte
//!   alignments, the part of the encoding that does not depend on the
//!   neighbouring bytes, so the value is found inside a longer base64 stream;
//! - for a value that is base64 text (the job's SSH key, a docker config),
//!   the decoded value in all of the above forms;
//! - for a multi-line value (a PEM key), each of its lines in all of the
//!   above forms, because tools print keys one line at a time.
//!
//! Forms made of base64 characters only are searched in a *compacted view*
//! of the text, in which a line break (`\n` or `\r\n`) between two base64
//! characters is removed, so base64 wrapped at any width (`base64` at 76
//! columns, PEM at 64, CRLF line ends) is found as well as `base64 -w0`.
//! Other forms are searched in the text as is. Every byte of every
//! occurrence, overlapping ones included, is masked: each line segment of an
//! occurrence becomes [`MASK`] and its line breaks stay, so the log keeps its
//! shape. Each search is one Aho-Corasick pass over the text.
//!
//! Streaming ([`Redactor::mask_streamed`]): a chunk of output may end with
//! the start of a secret whose rest is in the next chunk, so the chunk's
//! unsafe suffix ([`Redactor::unsafe_suffix_len`]) is held back, raw, and
//! masked again together with the next chunk of the same step and stream:
//! - a chunk that does not end a line: the longest end of its last line that
//!   begins a form, and the longest end of its compacted view (reaching back
//!   over earlier wrapped lines) that begins a base64 form;
//! - a chunk that ends a line: nothing, unless the line ends with at least
//!   [`WRAPPED_LINE_MIN`] base64 characters, which makes it a possible line
//!   of wrapped base64 that the next chunk continues: then the longest end
//!   of the compacted view, line break included, that begins a base64 form.
//!
//! So ordinary lines (`Step 1/5 : FROM busybox`) are sent at once, and what
//! is held is no longer than the longest form, plus line breaks (or an
//! occurrence the cut would go through, held whole). Held text is sent
//! with the next chunk of its step and stream, or when the step or the job
//! ends; it waits for nothing else.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use buildbot_protocol::grammar::base64 as base64_grammar;
use buildbot_protocol::{Job, RegistryAuth, RepoAuth, Secret};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// What a masked value is replaced with.
pub(crate) const MASK: &str = "********";

/// Values shorter than this are not masked on their own: masking every `a`
/// or `1` would destroy the log without protecting anything.
const MIN_SECRET_LEN: usize = 4;

/// A line ending with at least this many base64 characters may be one line
/// of wrapped base64 (`base64` wraps at 76, PEM at 64) continued by the next
/// chunk. Shorter runs end ordinary lines (`FROM busybox`, a 12-digit image
/// id) or the last line of a block, so such lines are never held back.
/// (Base64 wrapped narrower than this is still masked within a chunk, not
/// across a chunk boundary.)
const WRAPPED_LINE_MIN: usize = 16;

/// Replaces every known form of a job's credentials with [`MASK`].
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Forms searched in the text as is.
    plain: Option<Arc<NeedleSet>>,
    /// Forms made of base64 characters only, searched in the compacted view.
    base64: Option<Arc<NeedleSet>>,
}

/// Counts only: the needles are the secrets.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |set: &Option<Arc<NeedleSet>>| set.as_ref().map_or(0, |s| s.sorted.len());
        f.debug_struct("Redactor")
            .field("plain_needles", &count(&self.plain))
            .field("base64_needles", &count(&self.base64))
            .finish()
    }
}

impl Redactor {
    /// A redactor for the given secret values.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let (base64, plain): (Vec<String>, Vec<String>) = secrets
            .into_iter()
            .flat_map(forms_of)
            .filter(|needle| needle.len() >= MIN_SECRET_LEN)
            .partition(|needle| needle.bytes().all(is_base64_char));
        Self {
            plain: NeedleSet::new(plain).map(Arc::new),
            base64: NeedleSet::new(base64).map(Arc::new),
        }
    }

    /// A redactor for every credential in `job`, including each one inside
    /// a docker config.
    pub(crate) fn for_job(job: &Job) -> Self {
        let inner = job
            .registry_auth
            .as_ref()
            .map(crate::pipeline::registry_auth::docker_config_secrets)
            .unwrap_or_default();
        Self::new(
            job_secrets(job)
                .into_iter()
                .chain(inner.iter().map(String::as_str)),
        )
    }

    /// `text` with every occurrence of a secret masked.
    pub(crate) fn mask(&self, text: &str) -> String {
        render(text, &self.secret_ranges(text))
    }

    /// A chunk of streamed output split in two: the part that can be sent
    /// now, masked, and the raw rest, which may begin a secret continued in
    /// the next chunk and is to be masked again with it. The rest starts
    /// at a line's start where it can.
    pub(crate) fn mask_streamed<'t>(&self, text: &'t str) -> (String, &'t str) {
        let ranges = self.secret_ranges(text);
        let mut cut = text.len() - self.unsafe_suffix_len(text);
        // What is held starts at the start of its line, so events carry
        // whole lines (a line without a newline before it is cut as is).
        if cut < text.len() {
            if let Some(newline) = text[..cut].rfind('\n') {
                cut = newline + 1;
            }
        }
        let sent = ranges.partition_point(|r| r.end <= cut);
        // The cut goes through an occurrence when a longer form may begin
        // inside it: hold the occurrence whole, so that both are found in
        // the next chunk (masked now, its end would be matched no more).
        if let Some(through) = ranges.get(sent).filter(|r| r.start < cut) {
            cut = through.start;
        }
        let ready = render(&text[..cut], &ranges[..sent]);
        (ready, &text[cut..])
    }

    /// Bytes at the end of `text` that could be the start of a secret
    /// continued in the next chunk (see the module doc for the rule): a
    /// streaming caller holds them back until it knows.
    pub(crate) fn unsafe_suffix_len(&self, text: &str) -> usize {
        let plain = self
            .plain
            .as_ref()
            .map_or(0, |set| plain_unsafe_suffix_len(set, text));
        let base64 = self
            .base64
            .as_ref()
            .map_or(0, |set| base64_unsafe_suffix_len(set, text.as_bytes()));
        plain.max(base64)
    }

    /// Byte ranges of `text` covered by an occurrence of any form, sorted,
    /// overlapping ones merged.
    fn secret_ranges(&self, text: &str) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        if let Some(plain) = &self.plain {
            ranges.extend(plain.occurrences(text.as_bytes()));
        }
        if let Some(base64) = &self.base64 {
            let view = CompactView::of(text.as_bytes());
            let found = base64.occurrences(&view.bytes).into_iter();
            ranges.extend(found.map(|r| view.original_range(r)));
        }
        merge_overlapping(ranges)
    }
}

/// The forms of a job's secrets of one kind, searchable two ways.
struct NeedleSet {
    /// Sorted bytewise and deduplicated: the needles that begin with a given
    /// text are then next to each other, found by binary search.
    sorted: Vec<String>,
    /// Every occurrence of every needle in one pass; `None` if it could not
    /// be built (only for absurdly large secrets), and then everything is
    /// masked rather than nothing.
    automaton: Option<AhoCorasick>,
    /// Length of the longest needle: what a held-back suffix is bounded by.
    longest: usize,
}

impl NeedleSet {
    fn new(mut needles: Vec<String>) -> Option<Self> {
        needles.sort_unstable();
        needles.dedup();
        let longest = needles.iter().map(String::len).max()?;
        // Standard semantics report overlapping occurrences too; leftmost
        // ones would skip a needle that starts inside another's occurrence
        // and ends past it, leaking its end.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&needles);
        if let Err(e) = &automaton {
            tracing::error!(error = %e, "secret matcher too large: masking all output");
        }
        Some(Self {
            sorted: needles,
            automaton: automaton.ok(),
            longest,
        })
    }

    /// Ranges of `haystack` where a needle occurs, overlapping ones too.
    fn occurrences(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        match &self.automaton {
            Some(automaton) => automaton
                .find_overlapping_iter(haystack)
                .map(|found| found.range())
                .collect(),
            None if haystack.is_empty() => Vec::new(),
            None => std::iter::once(0..haystack.len()).collect(),
        }
    }

    /// Whether `text` is the beginning of a longer needle.
    fn continues_in_a_needle(&self, text: &[u8]) -> bool {
        // Needles starting with `text` sort right after `text` itself.
        let after = self.sorted.partition_point(|n| n.as_bytes() <= text);
        self.sorted
            .get(after)
            .is_some_and(|n| n.as_bytes().starts_with(text))
    }

    /// The longest end of `text` (after `from`) that begins a longer needle:
    /// its offset, tried from the longest candidate (bounded by the longest
    /// needle) down.
    fn first_continuing(&self, text: &[u8], from: usize) -> Option<usize> {
        let from = from.max((text.len() + 1).saturating_sub(self.longest));
        (from..text.len()).find(|&start| self.continues_in_a_needle(&text[start..]))
    }
}

/// Unsafe suffix for the forms searched as is: the end of an unfinished last
/// line that begins one. A finished line is safe: the separate lines of a
/// multi-line secret are forms of their own.
fn plain_unsafe_suffix_len(set: &NeedleSet, text: &str) -> usize {
    if text.ends_with('\n') {
        return 0;
    }
    let line_start = text.rfind('\n').map_or(0, |newline| newline + 1);
    // Offsets inside a UTF-8 character never begin a needle, which is text.
    set.first_continuing(text.as_bytes(), line_start)
        .map_or(0, |start| text.len() - start)
}

/// Unsafe suffix for the base64 forms, found in the compacted view of the
/// text's end; a text that ends a line counts only if the line may be a line
/// of wrapped base64.
fn base64_unsafe_suffix_len(set: &NeedleSet, text: &[u8]) -> usize {
    let line_break = trailing_line_break_len(text);
    let body = &text[..text.len() - line_break];
    if line_break > 0 && trailing_base64_run(body) < WRAPPED_LINE_MIN {
        return 0;
    }
    let (tail, offsets) = compact_base64_tail(body, set.longest);
    set.first_continuing(&tail, 0)
        .and_then(|start| offsets.get(start))
        .map_or(0, |&offset| text.len() - offset)
}

/// The text with each line segment of each range replaced by [`MASK`], its
/// line breaks kept. Ranges are sorted, disjoint and on character
/// boundaries (needles are whole UTF-8 text, or ASCII).
fn render(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for range in ranges {
        out.push_str(&text[done..range.start]);
        push_masked(&mut out, &text[range.clone()]);
        done = range.end;
    }
    out.push_str(&text[done..]);
    out
}

/// Appends `secret` with each of its lines masked and its line ends kept.
fn push_masked(out: &mut String, secret: &str) {
    for (index, line) in secret.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let (content, line_end) = match line.strip_suffix('\r') {
            Some(content) => (content, "\r"),
            None => (line, ""),
        };
        if !content.is_empty() {
            out.push_str(MASK);
        }
        out.push_str(line_end);
    }
}

/// Sorts ranges and merges the overlapping ones.
fn merge_overlapping(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start < last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// Text without the line breaks that sit between two base64 characters, as
/// wrapped base64 reads once unwrapped, with the way back to offsets in the
/// text. (No crate matches across wrapping; this is what makes it possible.)
struct CompactView {
    bytes: Vec<u8>,
    /// For each removed line break: the view offset of the byte after it,
    /// and how many bytes were removed up to and including it.
    joins: Vec<(usize, usize)>,
}

impl CompactView {
    fn of(text: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(text.len());
        let mut joins = Vec::new();
        let mut removed = 0;
        let mut at = 0;
        while let Some(&byte) = text.get(at) {
            let line_break = line_break_len_at(text, at);
            if line_break > 0 && joins_base64(text, at, line_break) {
                removed += line_break;
                joins.push((bytes.len(), removed));
                at += line_break;
            } else {
                bytes.push(byte);
                at += 1;
            }
        }
        Self { bytes, joins }
    }

    /// Offset in the text of the byte at `offset` in the view.
    fn original_offset(&self, offset: usize) -> usize {
        let joins_before = self.joins.partition_point(|&(at, _)| at <= offset);
        let removed = joins_before
            .checked_sub(1)
            .and_then(|last| self.joins.get(last))
            .map_or(0, |&(_, removed)| removed);
        offset + removed
    }

    /// The text range of a non-empty view range.
    fn original_range(&self, range: Range<usize>) -> Range<usize> {
        let end = self.original_offset(range.end.saturating_sub(1)) + 1;
        self.original_offset(range.start)..end
    }
}

/// The last characters (at most `limit`) of the compacted view of `text`
/// that are one run of base64, with their offsets in `text`.
fn compact_base64_tail(text: &[u8], limit: usize) -> (Vec<u8>, Vec<usize>) {
    let mut chars = Vec::new();
    let mut offsets = Vec::new();
    let mut end = text.len();
    while chars.len() < limit {
        let Some(last) = end.checked_sub(1) else {
            break;
        };
        if is_base64_char(text[last]) {
            chars.push(text[last]);
            offsets.push(last);
            end = last;
            continue;
        }
        let line_break = line_break_len_ending_at(text, end);
        if line_break == 0 || chars.is_empty() || !joins_base64(text, end - line_break, line_break)
        {
            break;
        }
        end -= line_break;
    }
    chars.reverse();
    offsets.reverse();
    (chars, offsets)
}

/// Whether the line break of `len` bytes at `at` has base64 on both sides.
fn joins_base64(text: &[u8], at: usize, len: usize) -> bool {
    let before = at.checked_sub(1).and_then(|i| text.get(i));
    let after = text.get(at + len);
    before.is_some_and(|&b| is_base64_char(b)) && after.is_some_and(|&b| is_base64_char(b))
}

/// Length of the line break (`\n` or `\r\n`) starting at `at`, or 0.
fn line_break_len_at(text: &[u8], at: usize) -> usize {
    match (text.get(at), text.get(at + 1)) {
        (Some(b'\n'), _) => 1,
        (Some(b'\r'), Some(b'\n')) => 2,
        _ => 0,
    }
}

/// Length of the line break ending just before `end`, or 0.
fn line_break_len_ending_at(text: &[u8], end: usize) -> usize {
    let head = &text[..end];
    if head.ends_with(b"\r\n") {
        2
    } else {
        usize::from(head.ends_with(b"\n"))
    }
}

/// Length of the line break ending `text`; a final `\r` counts, since its
/// `\n` may come in the next chunk.
fn trailing_line_break_len(text: &[u8]) -> usize {
    if text.ends_with(b"\r\n") {
        2
    } else {
        usize::from(text.ends_with(b"\n") || text.ends_with(b"\r"))
    }
}

/// How many base64 characters `text` ends with.
fn trailing_base64_run(text: &[u8]) -> usize {
    text.iter()
        .rev()
        .take_while(|&&b| is_base64_char(b))
        .count()
}

/// Standard base64 alphabet with padding: what `base64` prints.
fn is_base64_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=')
}

/// Every credential value carried by a job, in clear text, including the
/// decoded forms of base64-wrapped ones (the SSH key, the docker config).
fn job_secrets(job: &Job) -> Vec<&str> {
    let mut secrets = Vec::new();
    match &job.repo.auth {
        RepoAuth::None => {}
        RepoAuth::SshKey {
            private_key,
            passphrase,
        } => {
            secrets.push(private_key.expose());
            secrets.extend(passphrase.as_ref().map(|p| p.expose()));
        }
        RepoAuth::Https { token, .. } => secrets.push(token.expose()),
    }
    match &job.registry_auth {
        None => {}
        Some(RegistryAuth::Basic { password, .. }) => secrets.push(password.expose()),
        Some(RegistryAuth::DockerConfig { config }) => secrets.push(config.expose()),
    }
    let build_secrets = job.build.secrets.values();
    let secret_env = job.build.builder.iter().flat_map(|b| b.secret_env.values());
    secrets.extend(build_secrets.chain(secret_env).map(Secret::expose));
    secrets
}

/// The value, its lines, its decoded form when it is base64 text, and the
/// encodings of each of those.
fn forms_of(secret: &str) -> Vec<String> {
    let mut plain = vec![secret.to_owned()];
    if let Some(decoded) = decode_base64_text(secret) {
        plain.push(decoded);
    }
    let lines: Vec<String> = plain
        .iter()
        .flat_map(|p| p.lines().map(str::trim).map(str::to_owned))
        .collect();
    plain.extend(lines);
    plain.iter().flat_map(|p| encodings_of(p)).collect()
}

/// Base64 text that decodes to UTF-8, decoded; e.g. the job's SSH key.
fn decode_base64_text(value: &str) -> Option<String> {
    let bytes = base64_grammar::decode_padding_optional(value).ok()?;
    String::from_utf8(bytes).ok()
}

/// `value` as is, URL-encoded, and base64-encoded at each byte alignment.
fn encodings_of(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned(), url_encode(value)];
    forms.push(STANDARD.encode(value));
    forms.extend(base64_infixes(value.as_bytes()));
    forms
}

/// The part of the base64 encoding of `value` that is the same wherever the
/// value sits in a longer encoded text: for each of the three alignments,
/// the encoding with the characters that depend on neighbouring bytes
/// trimmed off both ends.
fn base64_infixes(value: &[u8]) -> Vec<String> {
    (0..3)
        .filter_map(|offset| {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(value);
            let encoded = STANDARD_NO_PAD.encode(&padded);
            // Characters covering the zero padding bytes or the final
            // partial group depend on what surrounds the value.
            let start = (offset * 8).div_ceil(6);
            let end = (padded.len() * 8) / 6;
            encoded.get(start..end).map(str::to_owned)
        })
        .collect()
}

/// Percent-encoding of every byte outside RFC 3986's unreserved set, as
/// `encodeURIComponent` and most URL builders produce it. Hand-written: a
/// dozen lines are not worth a dependency (`percent-encoding` would need
/// this set spelled out all the same).
fn url_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also the helpers of the publisher's tests of masking.

    use super::*;
    use std::collections::HashSet;

    const SECRET: &str = "s3cr3t-p@ss/word";

    #[test]
    fn masks_plain_value() {
        let r = Redactor::new([SECRET]);
        assert_eq!(r.mask(&format!("pw={SECRET}!")), format!("pw={MASK}!"));
    }

    #[test]
    fn masks_url_encoded_value() {
        let r = Redactor::new([SECRET]);
        assert_eq!(
            r.mask("https://u:s3cr3t-p%40ss%2Fword@host"),
            format!("https://u:{MASK}@host")
        );
    }

    #[test]
    fn masks_base64_at_every_alignment() {
        let r = Redactor::new([SECRET]);
        for prefix in ["", "a", "ab", "abc"] {
            let blob = STANDARD.encode(format!("{prefix}{SECRET}tail"));
            assert!(
                r.mask(&blob).contains(MASK),
                "prefix {prefix:?}: {blob} not masked"
            );
        }
    }

    #[test]
    fn masks_lines_of_a_base64_wrapped_multiline_secret() {
        let pem = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\n-----END KEY-----\n";
        let r = Redactor::new([STANDARD.encode(pem).as_str()]);
        assert_eq!(
            r.mask("line: AAAAB3NzaC1yc2EAAAADAQAB"),
            format!("line: {MASK}")
        );
    }

    #[test]
    fn a_partial_secret_at_the_end_is_held_back() {
        let r = Redactor::new([SECRET]);
        assert_eq!(r.unsafe_suffix_len("pw=s3cr"), 4);
        assert_eq!(r.unsafe_suffix_len("pw=s3cr\n"), 0);
        assert_eq!(r.unsafe_suffix_len("nothing here"), 0);
        assert_eq!(r.unsafe_suffix_len(&format!("pw={MASK}")), 0);
    }

    #[test]
    fn leaves_short_values_and_other_text_alone() {
        let r = Redactor::new(["ab", SECRET]);
        assert_eq!(r.mask("abc def"), "abc def");
    }

    /// A short password, long enough to straddle a wrapped line.
    pub(crate) const PASSWORD: &str = "correct-horse-battery-42";

    /// Deterministic bytes that look random (a linear congruential
    /// generator): key material and non-secret blobs.
    pub(crate) fn pseudo_random_bytes(seed: u32, len: usize) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                state.to_be_bytes()[0]
            })
            .collect()
    }

    /// `text` cut into lines of `width` characters, each ended by `line_end`.
    pub(crate) fn wrap(text: &str, width: usize, line_end: &str) -> String {
        text.as_bytes()
            .chunks(width)
            .map(|line| format!("{}{line_end}", String::from_utf8_lossy(line)))
            .collect()
    }

    /// An OpenSSH private key as `ssh-keygen` writes it (made-up key
    /// material: no real key in the tree).
    pub(crate) fn openssh_key() -> String {
        let mut blob = b"openssh-key-v1\0\0\0\0\x04none\0\0\0\x04none".to_vec();
        blob.extend(pseudo_random_bytes(7, 380));
        let body = wrap(&STANDARD.encode(blob), 70, "\n");
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}-----END OPENSSH PRIVATE KEY-----\n")
    }

    /// What a build prints for `echo "{label}$(base64 -w {width} file)"`
    /// where the file holds `before`, the secret, then more data, between a
    /// command line and a last line.
    pub(crate) fn printed_base64(
        secret: &str,
        before: &[u8],
        width: usize,
        line_end: &str,
        label: &str,
    ) -> String {
        let mut data = before.to_vec();
        data.extend_from_slice(secret.as_bytes());
        data.extend_from_slice(b"\n# end of file\n");
        let wrapped = wrap(&STANDARD.encode(data), width, line_end);
        format!("$ base64 secret.file{line_end}{label}{wrapped}done{line_end}")
    }

    /// Every 8-character piece of the base64 of `secret`, at each alignment.
    pub(crate) fn base64_pieces(secret: &str) -> HashSet<String> {
        let mut encodings = base64_infixes(secret.as_bytes());
        encodings.push(STANDARD.encode(secret));
        encodings
            .iter()
            .flat_map(|e| (0..e.len().saturating_sub(7)).map(move |i| e[i..i + 8].to_owned()))
            .collect()
    }

    /// Fails if any line of `output` holds 8 characters of the base64 of
    /// the secret.
    pub(crate) fn assert_no_base64_piece(pieces: &HashSet<String>, output: &str, case: &str) {
        for line in output.lines() {
            let bytes = line.as_bytes();
            for window in bytes.windows(8) {
                let piece = String::from_utf8_lossy(window);
                assert!(
                    !pieces.contains(piece.as_ref()),
                    "{case}: {piece:?} of the secret's base64 in {line:?}"
                );
            }
        }
    }

    /// The redactors of a job carrying the key (as base64, like
    /// `repo.auth.private_key`) or the key itself, and the password.
    fn redactors(key: &str) -> Vec<(&'static str, Redactor)> {
        vec![
            (
                "job form",
                Redactor::new([STANDARD.encode(key).as_str(), PASSWORD]),
            ),
            ("plain", Redactor::new([key, PASSWORD])),
        ]
    }

    #[test]
    fn wrapped_base64_is_masked_at_any_width_alignment_and_line_end() {
        let key = openssh_key();
        let cases = [
            (key.as_str(), vec![0, 1, 2]),
            (PASSWORD, (0..=60).collect()),
        ];
        for (name, r) in redactors(&key) {
            for (secret, befores) in &cases {
                let pieces = base64_pieces(secret);
                for width in [76, 64, 40, 16, 5] {
                    for line_end in ["\n", "\r\n"] {
                        for label in ["", "key: "] {
                            for &before in befores {
                                let data = pseudo_random_bytes(3, before);
                                let text = printed_base64(secret, &data, width, line_end, label);
                                let masked = r.mask(&text);
                                let case = format!("{name}, width {width}, {line_end:?}, {label:?}, {before} bytes before");
                                assert_no_base64_piece(&pieces, &masked, &case);
                                assert_same_lines_apart_from_secrets(&text, &masked, &case);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Masking keeps every line, and the lines around the base64 block.
    fn assert_same_lines_apart_from_secrets(text: &str, masked: &str, case: &str) {
        let lines: Vec<&str> = text.split('\n').collect();
        let masked_lines: Vec<&str> = masked.split('\n').collect();
        assert_eq!(lines.len(), masked_lines.len(), "{case}: {masked}");
        assert_eq!(lines.first(), masked_lines.first(), "{case}");
        assert_eq!(
            lines.iter().rev().nth(1),
            masked_lines.iter().rev().nth(1),
            "{case}"
        );
    }

    /// What the publisher does with `chunks`: each masked and cut with what
    /// was held before it prepended, what is held sent masked at the end.
    fn stream_through(r: &Redactor, chunks: &[&str]) -> Vec<String> {
        let mut sent = Vec::new();
        let mut held = String::new();
        for chunk in chunks {
            let text = format!("{held}{chunk}");
            let (ready, rest) = r.mask_streamed(&text);
            sent.push(ready);
            held = rest.to_owned();
        }
        sent.push(r.mask(&held));
        sent
    }

    #[test]
    fn wrapped_base64_cut_anywhere_into_chunks_is_masked_as_a_whole() {
        let key = openssh_key();
        let pieces = base64_pieces(&key);
        for (name, r) in redactors(&key) {
            for (width, line_end, label, before) in [
                (76, "\n", "", 0),
                (64, "\n", "key: ", 1),
                (76, "\r\n", "key: ", 2),
                (64, "\r\n", "", 0),
            ] {
                let data = pseudo_random_bytes(3, before);
                let text = printed_base64(&key, &data, width, line_end, label);
                let whole = r.mask(&text);
                for first_cut in 0..=text.len() {
                    for gap in [1, 37, 80] {
                        let second_cut = (first_cut + gap).min(text.len());
                        let chunks = [
                            &text[..first_cut],
                            &text[first_cut..second_cut],
                            &text[second_cut..],
                        ];
                        let sent = stream_through(&r, &chunks);
                        let case = format!(
                            "{name}, width {width}, {line_end:?}, cuts {first_cut}, {second_cut}"
                        );
                        for piece in &sent {
                            assert_no_base64_piece(&pieces, piece, &case);
                        }
                        assert_eq!(sent.concat(), whole, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn base64_of_the_job_key_wrapped_becomes_masked_lines() {
        let key = openssh_key();
        let r = Redactor::new([STANDARD.encode(&key).as_str()]);
        let wrapped = wrap(&STANDARD.encode(&key), 76, "\n");
        let masked = r.mask(&format!("key: {wrapped}done\n"));
        let lines = wrapped.lines().count();
        let expected = format!("key: {}done\n", format!("{MASK}\n").repeat(lines));
        assert_eq!(masked, expected);
    }

    #[test]
    fn ordinary_lines_are_not_held_back() {
        let key = openssh_key();
        // A non-secret blob of whole 76-column lines: its last line may be
        // a line of wrapped base64, so the rule looks at its end, and holds
        // back only an end that begins a base64 form of a secret. This
        // blob's end begins none; see the next test for what one that does
        // costs.
        let blob = wrap(&STANDARD.encode(pseudo_random_bytes(12, 57 * 4)), 76, "\n");
        for (name, r) in redactors(&key) {
            for text in [
                "Step 1/5 : FROM busybox\n",
                " ---> 3f57d9401f8d\n",
                "Successfully built 3f57d9401f8d\n",
                "Fetching dependencies, this may take a while.\nAll good.\r\n",
                "sha256:2e1d4ad1b0e7c1a0b7a6bd9d8ed1e8c4a1e4e0b6a5e1d2c3b4a5f6e7d8c9b0a1 done\n",
                blob.as_str(),
            ] {
                let (ready, held) = r.mask_streamed(text);
                assert_eq!((ready.as_str(), held), (text, ""), "{name}");
            }
        }
    }

    #[test]
    fn a_non_secret_blob_ending_like_a_secret_holds_only_its_last_line() {
        // What the hold-back costs for non-secret base64: when a chunk ends
        // with a line of it whose last characters begin a base64 form of a
        // secret (with this job's forms, one or two characters about half
        // the time), that line waits, whole, for the next output of the
        // step or its end, so no event ends mid-line. Only the last line of a chunk is
        // looked at, and a block printed at once seldom ends a chunk: its
        // last line is short or a `-----END` line.
        let key = openssh_key();
        let r = Redactor::new([STANDARD.encode(&key).as_str(), PASSWORD]);
        let blob = wrap(&STANDARD.encode(pseudo_random_bytes(11, 57 * 4)), 76, "\n");
        let (ready, held) = r.mask_streamed(&blob);
        let last_line = format!("{}\n", blob.lines().last().expect("lines"));
        assert!(
            last_line.ends_with("b\n"),
            "the line ends as a secret may start"
        );
        assert_eq!(held, last_line, "held whole, so no event ends mid-line");
        assert_eq!(format!("{ready}{held}"), blob);
    }

    #[test]
    fn a_wrapped_line_that_may_continue_a_secret_is_held_back() {
        let key = openssh_key();
        let r = Redactor::new([STANDARD.encode(&key).as_str()]);
        let wrapped = wrap(&STANDARD.encode(&key), 76, "\n");
        let first_lines: String = wrapped.split_inclusive('\n').take(2).collect();
        let text = format!("Step 2/5 : RUN base64 key\n{first_lines}");
        let (ready, held) = r.mask_streamed(&text);
        assert_eq!(
            (ready.as_str(), held),
            ("Step 2/5 : RUN base64 key\n", first_lines.as_str())
        );
    }

    #[test]
    fn a_secret_the_chunk_end_cuts_through_is_held_whole() {
        // "efgh" may begin the second secret, inside an occurrence of the
        // first: both are held, so the second is found whole next time.
        let r = Redactor::new(["abcdefgh", "efghijkl"]);
        let sent = stream_through(&r, &["x abcdefgh", "ijkl y\n"]);
        assert_eq!(sent, ["x ", &format!("{MASK} y\n"), ""]);
    }

    #[test]
    fn overlapping_secrets_are_both_masked() {
        let r = Redactor::new(["abcdefgh", "efghijkl"]);
        assert_eq!(r.mask("x abcdefghijkl y"), format!("x {MASK} y"));
    }

    #[test]
    fn a_multiline_secret_is_masked_line_by_line_keeping_its_lines() {
        let key = openssh_key();
        let r = Redactor::new([STANDARD.encode(&key).as_str()]);
        let masked = r.mask(&format!("$ cat key\n{key}$ true\n"));
        let lines = key.lines().count();
        assert_eq!(
            masked,
            format!("$ cat key\n{}$ true\n", format!("{MASK}\n").repeat(lines))
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let r = Redactor::new([SECRET]);
        let debug = format!("{r:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    /// 60,000 lines of a made-up password, each with `-line-` inside.
    fn long_secret_lines() -> Vec<String> {
        let mut state: u32 = 0x1234_5678;
        (0..60_000)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                format!("{state:08x}-line-{i:05}")
            })
            .collect()
    }

    /// About 2 MB of build output: ordinary lines, some printing a line of
    /// the secret, some its base64 (`echo line | base64`).
    fn long_log(lines: &[String]) -> String {
        let mut log = String::new();
        let mut n = 0usize;
        while log.len() < 2_000_000 {
            n += 1;
            log.push_str(&format!("Step {n}/9 : RUN make target-{n}\n"));
            if n.is_multiple_of(4) {
                log.push_str(&format!("pw: {}\n", lines[(n * 7) % lines.len()]));
            }
            if n.is_multiple_of(50) {
                let line = &lines[(n * 13) % lines.len()];
                log.push_str(&STANDARD.encode(format!("{line}\n")));
                log.push('\n');
            }
        }
        log
    }

    /// Cost, not timed (run with `--release -- --nocapture` to see the
    /// times): a 60,000-line secret makes 360,000 forms.
    #[test]
    fn masks_two_megabytes_with_a_60000_line_secret() {
        let lines = long_secret_lines();
        let secret = lines.join("\n");
        let log = long_log(&lines);

        let started = std::time::Instant::now();
        let r = Redactor::new([secret.as_str()]);
        eprintln!("built for 60,000 lines in {:?}", started.elapsed());

        let started = std::time::Instant::now();
        let masked = r.mask(&log);
        eprintln!("masked 2 MB at once in {:?}", started.elapsed());
        assert!(!masked.contains("-line-"));
        let input_lines: Vec<&str> = log.lines().collect();
        let masked_lines: Vec<&str> = masked.lines().collect();
        assert_eq!(input_lines.len(), masked_lines.len());
        for (line, masked_line) in input_lines.iter().zip(&masked_lines) {
            if line.starts_with("Step ") {
                assert_eq!(line, masked_line);
            } else {
                assert!(
                    masked_line.starts_with("pw: ********") || masked_line.starts_with(MASK),
                    "{line} -> {masked_line}"
                );
            }
        }

        let started = std::time::Instant::now();
        let chunks: Vec<&str> = log
            .as_bytes()
            .chunks(64 * 1024)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        let sent = stream_through(&r, &chunks);
        eprintln!("streamed 2 MB in 64 KiB chunks in {:?}", started.elapsed());
        assert_eq!(sent.concat(), masked);
    }
}
