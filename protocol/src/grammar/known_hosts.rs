//! OpenSSH `known_hosts` text (`repo.known_hosts`): one key per line,
//! `[@marker] hosts key-type base64-key [comment]`, `#` comments and blank
//! lines ignored; hosts are comma-separated patterns with `*`/`?`
//! wildcards, `!` negation, `[host]:port`, or hashed (`|1|salt|hash`).
//!
//! What the `ssh-key` crate does and does not do here: its
//! `PublicKey::from_bytes` parses and checks every key blob (the ecdsa
//! curves, RSA, ed25519). Its `known_hosts::Entry` parser is not used: it
//! splits fields on single spaces only (a tab or two spaces between fields
//! fail, though OpenSSH and today's jobs allow any whitespace), its one
//! error (`FormatEncoding`) cannot say which field is wrong, and neither
//! 0.6 nor 0.7 matches hosts against patterns. So the line tokenizer, the
//! marker and host pattern parsing and the OpenSSH matching rules below
//! are hand-written (`ssh_key_entry_parser_limits` pins why).

use super::base64;
use super::private_key::ssh_string;
use super::repo_url::known_hosts_name;
use ::base64::engine::general_purpose::STANDARD_NO_PAD;
use ::base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// Key types accepted in `known_hosts` lines.
pub(crate) const KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];
/// Longest key type echoed in an error.
const KEY_TYPE_SHOWN_LEN: usize = 40;
/// Prefix of a hashed host name.
const HASHED_PREFIX: &str = "|1|";
/// Bytes of the HMAC-SHA1 of a hashed host name.
const HASH_LEN: usize = 20;

/// What is wrong with one line. Names fields, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineProblem {
    /// Fewer than three fields.
    #[error("expected \"<hosts> <key type> <base64 key>\"")]
    MissingFields,
    /// A marker other than `@cert-authority` and `@revoked`.
    #[error("unknown marker {0:?}; expected @cert-authority or @revoked")]
    UnknownMarker(String),
    /// A key type this worker does not accept (first 40 characters).
    #[error("unsupported key type {0:?}; expected one of {types}", types = KEY_TYPES.join(", "))]
    UnsupportedKeyType(String),
    /// The key field is not base64.
    #[error("key is not valid base64")]
    KeyNotBase64,
    /// The key blob names another type than the key type field.
    #[error("key is not of type {0:?}")]
    KeyTypeMismatch(String),
    /// The key blob is not a well-formed key of its type.
    #[error("key is not a valid {0} key")]
    InvalidKey(String),
    /// A `|1|` host pattern that is not `|1|<base64 salt>|<base64 hash>`.
    #[error(
        "host pattern {0} is not a valid hashed host name (|1|<base64 salt>|<base64 SHA-1 hash>)"
    )]
    BadHashedHost(usize),
}

/// A problem with line `line` (1-based, as an editor counts).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {problem}")]
pub struct LineError {
    /// Line number, 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub problem: LineProblem,
}

/// Why a `known_hosts` text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KnownHostsError {
    /// Only comments and blank lines.
    #[error("no host key lines")]
    NoEntries,
    /// Some lines are malformed; every one is listed.
    #[error("{}", join_lines(.0))]
    Lines(Vec<LineError>),
}

fn join_lines(errors: &[LineError]) -> String {
    let messages: Vec<String> = errors.iter().map(LineError::to_string).collect();
    messages.join("; ")
}

/// The marker of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `@cert-authority`: the key signs host certificates. libssh2 does not
    /// hand host certificates over, so such lines never accept a host.
    CertAuthority,
    /// `@revoked`: this key must be refused for the hosts.
    Revoked,
}

impl Marker {
    fn parse(text: &str) -> Result<Self, LineProblem> {
        match text {
            "@cert-authority" => Ok(Marker::CertAuthority),
            "@revoked" => Ok(Marker::Revoked),
            other => Err(LineProblem::UnknownMarker(other.to_owned())),
        }
    }
}

/// A host key: its type name and its SSH wire-format blob.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    key_type: String,
    blob: Vec<u8>,
}

impl HostKey {
    /// A key as an SSH server sends it (a wire-format blob, which starts
    /// with the type name). Never fails: an unknown blob still compares
    /// and prints.
    pub fn from_blob(blob: &[u8]) -> Self {
        let key_type = ssh_string(blob)
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
            .unwrap_or_default();
        Self {
            key_type,
            blob: blob.to_vec(),
        }
    }

    /// The type name, e.g. `ssh-ed25519`; empty for a blob without one.
    pub fn key_type(&self) -> &str {
        &self.key_type
    }

    /// The wire-format blob.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The type as `ssh-keygen -l` prints it: `ED25519`, `RSA`, `ECDSA`.
    pub fn type_label(&self) -> String {
        key_type_label(&self.key_type)
    }

    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(&self.blob))
        )
    }
}

/// `ED25519 SHA256:<base64>`.
impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.type_label(), self.fingerprint())
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey({self})")
    }
}

/// `ssh-ed25519` as `ED25519`, `ecdsa-sha2-*` as `ECDSA`, and so on.
pub(crate) fn key_type_label(key_type: &str) -> String {
    match key_type {
        "ssh-ed25519" => "ED25519".to_owned(),
        "ssh-rsa" => "RSA".to_owned(),
        "ssh-dss" => "DSA".to_owned(),
        t if t.starts_with("ecdsa-sha2-") => "ECDSA".to_owned(),
        "" => "unknown type".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

/// One host pattern of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    negated: bool,
    matcher: HostMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatcher {
    /// `*`/`?` glob, lowercased.
    Glob(String),
    /// `|1|salt|hash`: HMAC-SHA1 of the name keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

impl HostPattern {
    /// The `index`-th (1-based) pattern of a line.
    fn parse(text: &str, index: usize) -> Result<Self, LineProblem> {
        let (negated, body) = match text.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, text),
        };
        let matcher = match body.strip_prefix(HASHED_PREFIX) {
            Some(hashed) => parse_hashed(hashed).ok_or(LineProblem::BadHashedHost(index))?,
            None => HostMatcher::Glob(body.to_ascii_lowercase()),
        };
        Ok(Self { negated, matcher })
    }

    fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            HostMatcher::Glob(glob) => {
                glob_matches(glob.as_bytes(), name.to_ascii_lowercase().as_bytes())
            }
            HostMatcher::Hashed { salt, hash } => hashed_matches(salt, hash, name),
        }
    }
}

fn parse_hashed(salt_and_hash: &str) -> Option<HostMatcher> {
    let (salt, hash) = salt_and_hash.split_once('|')?;
    let salt = base64::decode(salt).ok()?;
    let hash = base64::decode(hash).ok().filter(|h| h.len() == HASH_LEN)?;
    Some(HostMatcher::Hashed { salt, hash })
}

/// One key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHostEntry {
    line: usize,
    marker: Option<Marker>,
    hosts: Vec<HostPattern>,
    key: HostKey,
}

impl KnownHostEntry {
    /// Parses one non-comment line, number `line`.
    fn parse(text: &str, line: usize) -> Result<Self, LineProblem> {
        let mut fields: Vec<&str> = text.split_whitespace().collect();
        let marker = match fields.first() {
            Some(first) if first.starts_with('@') => {
                let marker = Marker::parse(first)?;
                fields.remove(0);
                Some(marker)
            }
            _ => None,
        };
        let [hosts, key_type, key, ..] = fields[..] else {
            return Err(LineProblem::MissingFields);
        };
        let key = parse_key(key_type, key)?;
        let hosts = hosts
            .split(',')
            .enumerate()
            .map(|(i, pattern)| HostPattern::parse(pattern, i + 1))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            line,
            marker,
            hosts,
            key,
        })
    }

    /// The line's number in the text, 1-based.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The line's marker, if any.
    pub fn marker(&self) -> Option<Marker> {
        self.marker
    }

    /// The key.
    pub fn key(&self) -> &HostKey {
        &self.key
    }

    /// OpenSSH's rule: some pattern matches `name` and no negated one does.
    /// `name` is `host` on port 22, else `[host]:port` (see
    /// [`known_hosts_name`]).
    pub fn matches_host(&self, name: &str) -> bool {
        let mut matched = false;
        for pattern in &self.hosts {
            if pattern.matches(name) {
                if pattern.negated {
                    return false;
                }
                matched = true;
            }
        }
        matched
    }
}

/// The key fields: a supported type, base64 of a blob of that type that
/// `ssh-key` can parse.
fn parse_key(key_type: &str, key: &str) -> Result<HostKey, LineProblem> {
    if !KEY_TYPES.contains(&key_type) {
        let shown = key_type.chars().take(KEY_TYPE_SHOWN_LEN).collect();
        return Err(LineProblem::UnsupportedKeyType(shown));
    }
    let blob = base64::decode(key).map_err(|_| LineProblem::KeyNotBase64)?;
    let key = HostKey::from_blob(&blob);
    if key.key_type() != key_type {
        return Err(LineProblem::KeyTypeMismatch(key_type.to_owned()));
    }
    ssh_key::PublicKey::from_bytes(&blob)
        .map_err(|_| LineProblem::InvalidKey(key_type.to_owned()))?;
    Ok(key)
}

/// Why a server's host key is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// No line's host patterns match the host.
    NoEntry {
        /// The name looked up (`host` or `[host]:port`).
        name: String,
    },
    /// Lines match the host, but none holds this key.
    Mismatch {
        /// The types those lines list, as labels (`ED25519`), once each.
        listed_types: Vec<String>,
    },
    /// The key is listed as `@revoked` for the host.
    Revoked,
}

impl HostKeyProblem {
    /// The message for the job's author: which server (`host_port`, as
    /// [`RepoUrl::host_port`](super::RepoUrl::host_port)) sent which key,
    /// and what `repo.known_hosts` lists instead.
    pub fn message(&self, host_port: &str, key: &HostKey) -> String {
        let head = format!("the SSH host key of {host_port} ({key})");
        match self {
            Self::NoEntry { name } => format!(
                "{head} does not match repo.known_hosts: repo.known_hosts has no entry for {name}"
            ),
            Self::Mismatch { listed_types } => {
                let server_type = key.type_label();
                // libssh2 negotiates ED25519 first and cannot be told which
                // types are pinned, so a pin of only another type never matches.
                let hint = if listed_types.contains(&server_type) {
                    String::new()
                } else {
                    format!("; add the server's {server_type} key, e.g. from ssh-keyscan")
                };
                format!(
                    "{head} does not match repo.known_hosts (it lists {} for this host{hint})",
                    listed_types.join(", ")
                )
            }
            Self::Revoked => format!("{head} is marked @revoked in repo.known_hosts"),
        }
    }
}

/// Parsed `known_hosts` text: at least one key line, every line valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<KnownHostEntry>,
}

impl KnownHosts {
    /// Parses `text`, reporting every malformed line.
    pub fn parse(text: &str) -> Result<Self, KnownHostsError> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match KnownHostEntry::parse(line, index + 1) {
                Ok(entry) => entries.push(entry),
                Err(problem) => errors.push(LineError {
                    line: index + 1,
                    problem,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(KnownHostsError::Lines(errors));
        }
        if entries.is_empty() {
            return Err(KnownHostsError::NoEntries);
        }
        Ok(Self { entries })
    }

    /// Every key line, in order.
    pub fn entries(&self) -> &[KnownHostEntry] {
        &self.entries
    }

    /// Whether some unmarked line lists a key for `host` on `port`.
    pub fn has_entry_for(&self, host: &str, port: u16) -> bool {
        let name = known_hosts_name(host, port);
        self.entries
            .iter()
            .any(|entry| entry.marker.is_none() && entry.matches_host(&name))
    }

    /// Whether `host` on `port` may present `key`, as `ssh` with
    /// `StrictHostKeyChecking yes` decides: an unmarked line for the host
    /// lists the key, and no `@revoked` line for the host does.
    /// `@cert-authority` lines are ignored (libssh2 does not hand over host
    /// certificates).
    pub fn check_host_key(
        &self,
        host: &str,
        port: u16,
        key: &HostKey,
    ) -> Result<(), HostKeyProblem> {
        let name = known_hosts_name(host, port);
        let mut listed_types: Vec<String> = Vec::new();
        let mut accepted = false;
        for entry in self.entries.iter().filter(|e| e.matches_host(&name)) {
            let same_key = entry.key.blob == key.blob;
            match entry.marker {
                Some(Marker::Revoked) if same_key => return Err(HostKeyProblem::Revoked),
                Some(_) => {}
                None => {
                    accepted |= same_key;
                    let label = entry.key.type_label();
                    if !listed_types.contains(&label) {
                        listed_types.push(label);
                    }
                }
            }
        }
        if accepted {
            Ok(())
        } else if listed_types.is_empty() {
            Err(HostKeyProblem::NoEntry { name })
        } else {
            Err(HostKeyProblem::Mismatch { listed_types })
        }
    }
}

impl std::str::FromStr for KnownHosts {
    type Err = KnownHostsError;

    fn from_str(text: &str) -> Result<Self, KnownHostsError> {
        Self::parse(text)
    }
}

/// `salt` and `hash` of a `|1|` pattern match `name`.
fn hashed_matches(salt: &[u8], hash: &[u8], name: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(hash).is_ok()
}

/// `*` and `?` wildcards, as in OpenSSH host patterns. Greedy with one
/// backtrack point, so a pattern full of `*` cannot make it exponential.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::known_hosts_line;

    // Keys and hashed line from worker/src/git.rs.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";
    const KEY_A_FINGERPRINT: &str = "SHA256:wlyvFlxXco4aYuzSsY34exHH3AKqig4aV3MU839pZ7Y";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIP31+oAJfDvTjXzdCFgXRX6m/UwOxmN4CYDl2RG2V2aH";
    const KEY_C: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJQAYgzu1giOcfHr7ohIW7NRMYD0OJpTsRuUacVLnUlO/8bvv+U9KlfF8EOvFNP7PPzBDiM8JDR1cmhZClC1wtM=";
    /// `ssh-keygen -H` of `[127.0.0.1]:2222 ssh-ed25519 KEY_A`.
    const HASHED_A: &str = "|1|h82dJEUJ5ACHkKcay+Ddl9TGV08=|MeOpetghJYtPinVKCCK9J3SW2QQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";

    fn key(text: &str) -> HostKey {
        HostKey::from_blob(&base64::decode(text).unwrap())
    }

    /// git.rs's `check_host_key`, on the parsed text.
    fn check(known: &str, host: &str, port: u16, text: &str) -> Result<(), HostKeyProblem> {
        KnownHosts::parse(known)
            .unwrap()
            .check_host_key(host, port, &key(text))
    }

    fn no_entry(name: &str) -> Result<(), HostKeyProblem> {
        Err(HostKeyProblem::NoEntry { name: name.into() })
    }

    // From worker/src/git.rs.
    #[test]
    fn known_hosts_accepts_the_pinned_key_for_the_host_and_port() {
        let known = format!("# pinned\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n");
        assert_eq!(check(&known, "127.0.0.1", 2222, KEY_A), Ok(()));
        let known = format!("github.com,gitlab.com ssh-ed25519 {KEY_A} comment here");
        assert_eq!(check(&known, "GitLab.com", 22, KEY_A), Ok(()));
        let known = format!("*.example.com,!evil.example.com ssh-ed25519 {KEY_A}");
        assert_eq!(check(&known, "git.example.com", 22, KEY_A), Ok(()));
        assert_eq!(
            check(&known, "evil.example.com", 22, KEY_A),
            no_entry("evil.example.com")
        );
        assert_eq!(check(HASHED_A, "127.0.0.1", 2222, KEY_A), Ok(()));
        let known = format!("[127.0.0.1]:2222 ecdsa-sha2-nistp256 {KEY_C}\n{HASHED_A}");
        assert_eq!(check(&known, "127.0.0.1", 2222, KEY_A), Ok(()));
    }

    // From worker/src/git.rs.
    #[test]
    fn known_hosts_rejects_other_keys_hosts_and_ports() {
        let known = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY_A}");
        assert_eq!(
            check(&known, "127.0.0.1", 2222, KEY_B),
            Err(HostKeyProblem::Mismatch {
                listed_types: vec!["ED25519".into()]
            })
        );
        assert_eq!(check(&known, "127.0.0.1", 22, KEY_A), no_entry("127.0.0.1"));
        assert_eq!(
            check(HASHED_A, "127.0.0.2", 2222, KEY_A),
            no_entry("[127.0.0.2]:2222")
        );
        let known = format!("127.0.0.1 ssh-ed25519 {KEY_A}");
        assert!(check(&known, "127.0.0.1", 2222, KEY_A).is_err());
        let known = format!("@cert-authority * ssh-ed25519 {KEY_A}");
        assert!(check(&known, "127.0.0.1", 22, KEY_A).is_err());
        let known = format!("* ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}");
        assert_eq!(
            check(&known, "127.0.0.1", 22, KEY_A),
            Err(HostKeyProblem::Revoked)
        );
        // A revoked line for another key does not refuse this one.
        let known = format!("* ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}");
        assert_eq!(check(&known, "127.0.0.1", 22, KEY_A), Ok(()));
    }

    // From worker/src/git.rs.
    #[test]
    fn host_key_messages_name_host_type_and_fingerprint() {
        let mismatch = HostKeyProblem::Mismatch {
            listed_types: vec!["ECDSA".into()],
        };
        assert_eq!(
            mismatch.message("127.0.0.1:2222", &key(KEY_A)),
            format!(
                "the SSH host key of 127.0.0.1:2222 (ED25519 {KEY_A_FINGERPRINT}) does not match \
                 repo.known_hosts (it lists ECDSA for this host; add the server's ED25519 key, \
                 e.g. from ssh-keyscan)"
            )
        );
        let same_type = HostKeyProblem::Mismatch {
            listed_types: vec!["ED25519".into()],
        };
        assert!(same_type
            .message("127.0.0.1:2222", &key(KEY_A))
            .ends_with("(it lists ED25519 for this host)"));
        let none = HostKeyProblem::NoEntry {
            name: "[127.0.0.1]:2222".into(),
        };
        assert_eq!(
            none.message("127.0.0.1:2222", &key(KEY_A)),
            format!(
                "the SSH host key of 127.0.0.1:2222 (ED25519 {KEY_A_FINGERPRINT}) does not match \
                 repo.known_hosts: repo.known_hosts has no entry for [127.0.0.1]:2222"
            )
        );
        assert!(key(KEY_C).to_string().starts_with("ECDSA SHA256:"));
        assert_eq!(
            HostKey::from_blob(b"").to_string().split(' ').next(),
            Some("unknown")
        );
        assert_eq!(key_type_label("ssh-dss"), "DSA");
        assert_eq!(key_type_label("sk-x"), "SK-X");
    }

    // From worker/src/git.rs.
    #[test]
    fn glob_patterns() {
        assert!(glob_matches(b"*", b"anything"));
        assert!(glob_matches(b"git?.example.com", b"git1.example.com"));
        assert!(!glob_matches(b"git?.example.com", b"git.example.com"));
        assert!(glob_matches(b"[*]:2222", b"[10.0.0.1]:2222"));
        assert!(!glob_matches(b"[*]:2222", b"[10.0.0.1]:22"));
        assert!(!glob_matches(b"a", b""));
        assert!(glob_matches(b"**", b""));
        let many_stars = [b'*'; 64].iter().chain(b"x").copied().collect::<Vec<_>>();
        assert!(!glob_matches(&many_stars, &[b'a'; 256]));
    }

    #[test]
    fn hashed_patterns_in_lists_and_negated() {
        let hashed = HASHED_A.split_once(' ').unwrap().0;
        let known = format!("other.example.com,{hashed} ssh-ed25519 {KEY_A}");
        assert_eq!(check(&known, "127.0.0.1", 2222, KEY_A), Ok(()));
        let known = format!("[*]:2222,!{hashed} ssh-ed25519 {KEY_A}");
        assert_eq!(
            check(&known, "127.0.0.1", 2222, KEY_A),
            no_entry("[127.0.0.1]:2222")
        );
        assert_eq!(check(&known, "127.0.0.3", 2222, KEY_A), Ok(()));
    }

    #[test]
    fn lookup_of_entries() {
        let known = KnownHosts::parse(&format!(
            "\t# comment\n\ngithub.com\tssh-ed25519  {KEY_A}\n@cert-authority *.corp ssh-ed25519 {KEY_B}\n"
        ))
        .unwrap();
        assert_eq!(known.entries().len(), 2);
        assert_eq!(known.entries()[0].line(), 3);
        assert_eq!(known.entries()[1].marker(), Some(Marker::CertAuthority));
        assert_eq!(known.entries()[0].key().key_type(), "ssh-ed25519");
        assert!(known.has_entry_for("GitHub.com", 22));
        assert!(!known.has_entry_for("github.com", 2222));
        assert!(
            !known.has_entry_for("git.corp", 22),
            "only marked lines match"
        );
    }

    // The cases of validate.rs's `known_hosts`.
    #[test]
    fn reports_every_bad_line() {
        assert_eq!(
            KnownHosts::parse("# nothing\n\n"),
            Err(KnownHostsError::NoEntries)
        );
        let good = known_hosts_line("git.example.com");
        let rsa_claim = good.replace("ssh-ed25519", "ssh-rsa");
        let text = format!(
            "{good}\ngit.example.com ssh-ed25519\n# comment\ngit.example.com ssh-dss AAAA\nh ssh-ed25519 !!!\n{rsa_claim}\n@bogus {good}\n@cert-authority *.example.com {}\n|1|x|y {}\nh ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAQ==\n",
            good.split_once(' ').unwrap().1,
            good.split_once(' ').unwrap().1,
        );
        let Err(KnownHostsError::Lines(errors)) = KnownHosts::parse(&text) else {
            panic!("accepted");
        };
        let messages: Vec<String> = errors.iter().map(LineError::to_string).collect();
        assert_eq!(
            messages,
            [
                "line 2: expected \"<hosts> <key type> <base64 key>\"",
                "line 4: unsupported key type \"ssh-dss\"; expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521",
                "line 5: key is not valid base64",
                "line 6: key is not of type \"ssh-rsa\"",
                "line 7: unknown marker \"@bogus\"; expected @cert-authority or @revoked",
                "line 9: host pattern 1 is not a valid hashed host name (|1|<base64 salt>|<base64 SHA-1 hash>)",
                "line 10: key is not a valid ssh-ed25519 key",
            ]
        );
    }

    #[test]
    fn errors_never_echo_the_key() {
        let text = format!("h ssh-rsa {KEY_A}\nh ssh-ed25519 {}x", &KEY_B[..20]);
        let message = KnownHosts::parse(&text).unwrap_err().to_string();
        assert!(
            !message.contains(KEY_A) && !message.contains(&KEY_B[..20]),
            "{message}"
        );
    }

    /// Why the `ssh-key` crate's line parser is not used (see the module
    /// doc): should this test fail after an upgrade, reconsider.
    #[test]
    fn ssh_key_entry_parser_limits() {
        use ssh_key::known_hosts::Entry;
        let spaced = format!("github.com ssh-ed25519 {KEY_A}");
        assert!(spaced.parse::<Entry>().is_ok());
        let tabbed = format!("github.com\tssh-ed25519 {KEY_A}");
        assert!(tabbed.parse::<Entry>().is_err());
        assert!(KnownHosts::parse(&tabbed).is_ok());
        let double = format!("github.com  ssh-ed25519 {KEY_A}");
        assert!(double.parse::<Entry>().is_err());
        assert!(KnownHosts::parse(&double).is_ok());
    }
}
