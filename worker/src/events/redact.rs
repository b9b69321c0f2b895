//! Masking of credentials in text that leaves the worker (log chunks, error
//! messages).
//!
//! A [`Redactor`] is built once per job from every secret in it. It masks
//! each value and the forms a build is likely to print it in: base64 (with
//! and without padding, at each of the three byte alignments, so a secret
//! embedded in a longer base64 blob is found too) and URL encoding. A
//! multi-line secret such as a PEM key is also masked line by line, because
//! tools print keys one line at a time.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use buildbot_protocol::{Job, RegistryAuth, RepoAuth};

/// What a masked value is replaced with.
pub(crate) const MASK: &str = "********";

/// Values shorter than this are not masked on their own: masking every `a`
/// or `1` would destroy the log without protecting anything.
const MIN_SECRET_LEN: usize = 4;

/// Replaces every known form of a job's credentials with [`MASK`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Every needle, longest first so a longer form is masked before a
    /// shorter one that it contains.
    needles: Vec<String>,
}

impl Redactor {
    /// A redactor for the given secret values.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = secrets.into_iter().flat_map(forms_of).collect();
        needles.retain(|n| n.len() >= MIN_SECRET_LEN);
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
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

    /// `text` with every needle replaced by [`MASK`].
    pub(crate) fn mask(&self, text: &str) -> String {
        let mut masked = text.to_owned();
        for needle in &self.needles {
            if masked.contains(needle.as_str()) {
                masked = masked.replace(needle.as_str(), MASK);
            }
        }
        masked
    }

    /// Bytes at the end of (already masked) `text` that could be the start
    /// of a secret continued in the next chunk: a streaming caller holds
    /// them back until it knows. Zero for text that ends a line, since no
    /// needle spans lines.
    pub(crate) fn unsafe_suffix_len(&self, text: &str) -> usize {
        if text.ends_with('\n') {
            return 0;
        }
        self.needles
            .iter()
            .filter_map(|needle| {
                (1..needle.len().min(text.len() + 1))
                    .rev()
                    .find(|&k| needle.is_char_boundary(k) && text.ends_with(&needle[..k]))
            })
            .max()
            .unwrap_or(0)
    }
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
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD
        .decode(&compact)
        .or_else(|_| STANDARD_NO_PAD.decode(&compact))
        .ok()?;
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
/// dozen lines are not worth a dependency.
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
mod tests {
    use super::*;

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
}
