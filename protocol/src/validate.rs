//! Validation of a decoded [`Job`]: every rule of protocol v1 that the types
//! alone do not enforce. All problems are collected, each naming the field
//! path (`image.tags[2]`, `build.builder.env["PATH"]`) and the reason, so the
//! job author can fix everything in one round trip.
//!
//! Reasons never contain a credential: they say what is wrong with a secret
//! value (empty, not base64, not a private key) without echoing it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::grammar::docker_config::DockerAuths;
use crate::grammar::known_hosts::{KnownHosts, KnownHostsError};
use crate::grammar::private_key::{check_passphrase, PrivateKeyError, SshPrivateKey};
use crate::grammar::{base64, CleanPath, PathError, RelativePath, RepoUrl, Transport};
use crate::reference::{self, ReferenceError};
use crate::{
    Build, BuildEngine, Builder, Image, Job, RegistryAuth, Repo, RepoAuth, Secret, SignedEnvelope,
    Test, PROTOCOL_VERSION,
};

/// Longest `service_id`.
pub(crate) const SERVICE_ID_MAX_LEN: usize = 128;
/// Longest `timeout_secs`: one day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

static SERVICE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._-]+$").expect("service_id regex"));
static TARGET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*$").expect("target regex"));
/// A BuildKit secret id: what `RUN --mount=type=secret,id=` names.
static SECRET_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.-]{1,128}$").expect("secret id regex"));
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("env name regex"));

/// One thing wrong with a job: the field (a path like `repo.auth.token` or
/// `image.tags[2]`) and why, in words. Displays as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
#[error("{field}: {reason}")]
pub struct Problem {
    /// Path of the offending field, `.` between names and `[i]` or `["key"]`
    /// for list items and map entries; `job` for the message as a whole.
    pub field: String,
    /// What is wrong and, where it helps, what would be right. Never holds a
    /// credential.
    pub reason: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in a job; never empty when returned as an error.
/// Displays as the problems joined with `; `.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", join_problems(.0))]
pub struct ValidationErrors(pub Vec<Problem>);

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    /// Each problem as `field: reason`.
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(Problem::to_string).collect()
    }
}

impl Job {
    /// Checks every rule of protocol v1 and returns all problems found, or
    /// `Ok(())` when the job may run.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut problems = Vec::new();
        self.report_problems(&mut |problem| problems.push(problem));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(problems))
        }
    }

    /// Hands each problem [`Job::validate`] finds to `report` as it is
    /// found, so the decoder can keep a bounded number of them instead of
    /// holding one per bad tag of a hostile job.
    pub(crate) fn report_problems(&self, report: &mut dyn FnMut(Problem)) {
        Validator { report }.job(self);
    }
}

/// Longest piece of a job (a map key, a value) a problem quotes.
pub(crate) const MAX_QUOTED_CHARS: usize = 64;

/// `text` quoted as Rust debug-formats a string, cut after
/// [`MAX_QUOTED_CHARS`] characters (then `…` outside the quotes), so a
/// problem never echoes long input.
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// Why `id` is not a valid `service_id`, if it is not. Shared with
/// [`read_envelope`](crate::read_envelope), which routes a rejection by it.
pub(crate) fn check_service_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("empty".to_owned())
    } else if id.len() > SERVICE_ID_MAX_LEN {
        Err(format!(
            "{} characters; at most {SERVICE_ID_MAX_LEN} are allowed",
            id.len()
        ))
    } else if !SERVICE_ID.is_match(id) {
        Err("only letters, digits, \".\", \"_\" and \"-\" are allowed".to_owned())
    } else {
        Ok(())
    }
}

/// The reason for an unknown protocol version, shared with the decoder.
pub(crate) fn unsupported_version(version: impl fmt::Display) -> String {
    format!("unsupported protocol version {version}; this worker speaks {PROTOCOL_VERSION}")
}

/// How many directories below `/` an absolute path ends, lexically: `..`
/// at the root stays there, as the kernel resolves it (`/a/..` is 0).
fn absolute_depth(path: &str) -> usize {
    CleanPath::new(path).components().count()
}

struct Validator<'r> {
    report: &'r mut dyn FnMut(Problem),
}

impl Validator<'_> {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        (self.report)(Problem::new(field, reason));
    }

    fn job(&mut self, job: &Job) {
        if job.version != PROTOCOL_VERSION {
            self.push("version", unsupported_version(job.version));
        }
        if job.job_id.is_nil() {
            self.push("job_id", "the nil UUID is not a job id");
        }
        self.service_id(&job.service_id);
        self.repo(&job.repo);
        self.build(&job.build);
        self.image(&job.image);
        if let Some(auth) = &job.registry_auth {
            self.registry_auth(auth);
        }
        if let Some(test) = &job.test {
            self.test(test);
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&job.timeout_secs) {
            self.push(
                "timeout_secs",
                format!(
                    "{} is out of range; must be between 1 and {MAX_TIMEOUT_SECS} (one day)",
                    job.timeout_secs
                ),
            );
        }
        if let Some(envelope) = &job.envelope {
            self.envelope(envelope);
        }
        if let Some(signature) = &job.signature {
            match base64::decode(signature) {
                Err(_) => self.push("signature", "not valid base64"),
                Ok(bytes) if bytes.len() != 64 => self.push(
                    "signature",
                    format!(
                        "decodes to {} bytes; an ed25519 signature is 64",
                        bytes.len()
                    ),
                ),
                Ok(_) => {}
            }
        }
    }

    fn envelope(&mut self, envelope: &SignedEnvelope) {
        let nonce = &envelope.nonce;
        let nonce_chars = nonce
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !(16..=128).contains(&nonce.len()) || !nonce_chars {
            self.push(
                "envelope.nonce",
                "must be 16 to 128 letters, digits, \"_\" or \"-\"",
            );
        }
        if envelope.expires_at <= envelope.issued_at {
            self.push("envelope.expires_at", "must be after envelope.issued_at");
        }
        if envelope.queue.is_empty() {
            self.push(
                "envelope.queue",
                "empty; name the queue the job is published to",
            );
        }
        if envelope.reply_to.is_empty() {
            self.push("envelope.reply_to", "empty; name the message's reply_to");
        }
    }

    fn service_id(&mut self, id: &str) {
        if let Err(reason) = check_service_id(id) {
            self.push("service_id", reason);
        }
    }

    fn repo(&mut self, repo: &Repo) {
        let transport = match RepoUrl::parse(&repo.url) {
            Ok(url) => Some(url.transport()),
            Err(reason) => {
                self.push("repo.url", reason.to_string());
                None
            }
        };
        if let Err(reason) = check_revision(&repo.revision) {
            self.push("repo.revision", reason);
        }
        match &repo.auth {
            RepoAuth::None => {}
            RepoAuth::SshKey {
                private_key,
                passphrase,
            } => {
                self.ssh_key(private_key, passphrase.as_ref());
                if transport == Some(Transport::Https) {
                    self.push("repo.auth", "ssh_key needs an ssh:// or scp-like repo.url");
                }
            }
            RepoAuth::Https { username, token } => {
                if username.is_empty() {
                    self.push("repo.auth.username", "empty");
                } else if username.contains(['\0', ':', '\n', '\r']) {
                    self.push(
                        "repo.auth.username",
                        "must not contain \":\", line breaks or NUL bytes",
                    );
                }
                if token.expose().is_empty() {
                    self.push("repo.auth.token", "empty");
                }
                if transport == Some(Transport::Ssh) {
                    self.push("repo.auth", "https needs an https:// repo.url");
                }
            }
        }
        if let Some(known_hosts) = &repo.known_hosts {
            if transport == Some(Transport::Https) {
                self.push(
                    "repo.known_hosts",
                    "only applies to an ssh:// or scp-like repo.url",
                );
            }
            self.known_hosts(known_hosts);
        }
    }

    /// The key's problem and, even then, the passphrase's, so both are
    /// reported at once.
    fn ssh_key(&mut self, private_key: &Secret, passphrase: Option<&Secret>) {
        const KEY: &str = "repo.auth.private_key";
        const PASSPHRASE: &str = "repo.auth.passphrase";
        const EMPTY_PASSPHRASE: &str = "empty; omit it for a key without a passphrase";
        match SshPrivateKey::parse(private_key, passphrase) {
            Ok(_) => {}
            Err(PrivateKeyError::EmptyPassphrase) => self.push(PASSPHRASE, EMPTY_PASSPHRASE),
            Err(PrivateKeyError::EncryptedWithoutPassphrase) => {
                self.push(KEY, "encrypted, but repo.auth.passphrase is not set")
            }
            Err(key_problem) => {
                self.push(KEY, key_problem.to_string());
                if passphrase.is_some_and(|p| check_passphrase(p).is_err()) {
                    self.push(PASSPHRASE, EMPTY_PASSPHRASE);
                }
            }
        }
    }

    fn known_hosts(&mut self, text: &str) {
        match KnownHosts::parse(text) {
            Ok(_) => {}
            Err(KnownHostsError::NoEntries) => self.push(
                "repo.known_hosts",
                "no host key lines; omit the field to skip host key checking",
            ),
            Err(KnownHostsError::Lines(errors)) => {
                for error in errors {
                    self.push("repo.known_hosts", error.to_string());
                }
            }
        }
    }

    fn build(&mut self, build: &Build) {
        let context_depth = match RelativePath::parse(&build.context) {
            Ok(path) => path.depth(),
            Err(issue) => {
                let reason = match issue {
                    PathError::Empty => "empty; use \".\" for the checkout root".to_owned(),
                    PathError::Absolute => {
                        "absolute path; must be relative to the checkout".to_owned()
                    }
                    other => path_reason(other, "the checkout"),
                };
                self.push("build.context", reason);
                0
            }
        };
        match RelativePath::parse(&build.dockerfile) {
            Ok(path) if path.is_base() => self.push(
                "build.dockerfile",
                "names the build context itself, not a file",
            ),
            Ok(_) => {}
            Err(PathError::Escapes { levels }) if levels <= context_depth => self.push(
                "build.dockerfile",
                "leaves the build context; the Dockerfile must be inside build.context",
            ),
            Err(PathError::Absolute) => self.push(
                "build.dockerfile",
                "absolute path; must be relative to build.context",
            ),
            Err(issue) => self.push("build.dockerfile", path_reason(issue, "the checkout")),
        }
        self.string_map("build.build_args", &build.build_args, |key| {
            if key.contains('=') {
                Some("name contains \"=\"")
            } else {
                None
            }
        });
        self.string_map("build.labels", &build.labels, |_| None);
        if let Some(target) = &build.target {
            if !TARGET.is_match(target) {
                self.push(
                    "build.target",
                    "not a valid stage name (letters, digits, \".\", \"_\", \"-\", starting with a letter or digit)",
                );
            }
        }
        for (i, reference) in build.cache_from.iter().enumerate() {
            if let Err(e) = reference::parse_reference(reference) {
                self.push(
                    format!("build.cache_from[{i}]"),
                    format!("not a valid image reference: {e}"),
                );
            }
        }
        self.secret_map("build.secrets", &build.secrets, |id| {
            (!SECRET_ID.is_match(id))
                .then_some("not a valid secret id (1 to 128 letters, digits, \".\", \"_\", \"-\")")
        });
        if build.engine == Some(BuildEngine::Legacy) {
            if !build.secrets.is_empty() {
                self.push(
                    "build.secrets",
                    "needs BuildKit; the legacy builder cannot mount secrets (set build.engine to buildkit or leave it unset)",
                );
            }
            if build.cache_inline {
                self.push(
                    "build.cache_inline",
                    "needs BuildKit; the legacy builder writes no inline cache (set build.engine to buildkit or leave it unset)",
                );
            }
        }
        if let Some(builder) = &build.builder {
            self.builder(builder);
        }
        if let Some(path) = &build.version_file {
            self.version_file(path);
        }
    }

    /// Credentials by name: the names follow `key_rule`, the values must not
    /// hold NUL bytes (the reason never shows a value).
    fn secret_map(
        &mut self,
        field: &str,
        map: &BTreeMap<String, Secret>,
        key_rule: impl Fn(&str) -> Option<&'static str>,
    ) {
        for (key, value) in map {
            let entry = format!("{field}[{}]", quoted(key));
            if let Some(reason) = key_rule(key) {
                self.push(entry, reason);
            } else if value.expose().contains('\0') {
                self.push(entry, "value contains a NUL byte");
            }
        }
    }

    /// Keys must be non-empty (and pass `key_rule`); keys and values must not
    /// hold NUL bytes.
    fn string_map(
        &mut self,
        field: &str,
        map: &BTreeMap<String, String>,
        key_rule: impl Fn(&str) -> Option<&'static str>,
    ) {
        for (key, value) in map {
            let entry = format!("{field}[{}]", quoted(key));
            if key.is_empty() {
                self.push(entry, "empty name");
            } else if key.contains('\0') {
                self.push(entry, "name contains a NUL byte");
            } else if let Some(reason) = key_rule(key) {
                self.push(entry, reason);
            } else if value.contains('\0') {
                self.push(entry, "value contains a NUL byte");
            }
        }
    }

    fn builder(&mut self, builder: &Builder) {
        match (&builder.image, &builder.dockerfile) {
            (Some(_), Some(_)) | (None, None) => {
                self.push("build.builder", "set exactly one of image and dockerfile");
            }
            _ => {}
        }
        if let Some(image) = &builder.image {
            if let Err(e) = reference::parse_reference(image) {
                self.push(
                    "build.builder.image",
                    format!("not a valid image reference: {e}"),
                );
            }
        }
        if let Some(dockerfile) = &builder.dockerfile {
            match RelativePath::parse(dockerfile) {
                Ok(path) if path.is_base() => self.push(
                    "build.builder.dockerfile",
                    "names the checkout root, not a file",
                ),
                Ok(_) => {}
                Err(PathError::Absolute) => self.push(
                    "build.builder.dockerfile",
                    "absolute path; must be relative to the checkout",
                ),
                Err(issue) => self.push(
                    "build.builder.dockerfile",
                    path_reason(issue, "the checkout"),
                ),
            }
        }
        self.command("build.builder.command", &builder.command);
        if builder.workdir.contains('\0') {
            self.push("build.builder.workdir", "contains a NUL byte");
        } else if !builder.workdir.starts_with('/') {
            self.push("build.builder.workdir", "must be an absolute path");
        } else if absolute_depth(&builder.workdir) == 0 {
            // The checkout is unpacked into the workdir: over `/` it would
            // overwrite the builder's own programs.
            self.push(
                "build.builder.workdir",
                "names the builder's root directory; use a directory below it, e.g. /src",
            );
        }
        self.env("build.builder.env", &builder.env);
        self.secret_map("build.builder.secret_env", &builder.secret_env, |key| {
            if !ENV_NAME.is_match(key) {
                Some("not a valid environment variable name (letters, digits and \"_\", not starting with a digit)")
            } else if builder.env.contains_key(key) {
                Some("also set in build.builder.env; set it in one of the two")
            } else {
                None
            }
        });
        if builder.artifacts.starts_with('/') {
            if builder.artifacts.contains('\0') {
                self.push("build.builder.artifacts", "contains a NUL byte");
            } else if absolute_depth(&builder.artifacts) == 0 {
                self.push(
                    "build.builder.artifacts",
                    "names the builder's root directory; name the file or directory the command produces",
                );
            }
        } else {
            match RelativePath::parse(&builder.artifacts) {
                Ok(_) => {}
                Err(PathError::Empty) => self.push(
                    "build.builder.artifacts",
                    "empty; name the file or directory the command produces",
                ),
                Err(issue) => self.push(
                    "build.builder.artifacts",
                    path_reason(issue, "build.builder.workdir; use an absolute path instead"),
                ),
            }
        }
        // `.`: the artifact becomes the checkout the runtime build reads.
        match RelativePath::parse(&builder.artifacts_dest) {
            Ok(_) => {}
            Err(PathError::Empty) => self.push(
                "build.builder.artifacts_dest",
                "empty; must name a path inside the build context",
            ),
            Err(PathError::Absolute) => self.push(
                "build.builder.artifacts_dest",
                "absolute path; must be relative to the build context",
            ),
            Err(issue) => self.push(
                "build.builder.artifacts_dest",
                path_reason(issue, "the build context"),
            ),
        }
    }

    /// An argv: a program name, no NUL bytes.
    fn command(&mut self, field: &str, command: &[String]) {
        match command.first() {
            None => self.push(field, "empty; give the program and its arguments"),
            Some(program) if program.is_empty() => {
                self.push(format!("{field}[0]"), "empty program name")
            }
            Some(_) => {}
        }
        for (i, arg) in command.iter().enumerate() {
            if arg.contains('\0') {
                self.push(format!("{field}[{i}]"), "contains a NUL byte");
            }
        }
    }

    /// An environment: valid variable names, no NUL bytes.
    fn env(&mut self, field: &str, env: &BTreeMap<String, String>) {
        self.string_map(field, env, |key| {
            if ENV_NAME.is_match(key) {
                None
            } else {
                Some("not a valid environment variable name (letters, digits and \"_\", not starting with a digit)")
            }
        });
    }

    fn test(&mut self, test: &Test) {
        self.command("test.command", &test.command);
        self.env("test.env", &test.env);
        if !(1..=MAX_TIMEOUT_SECS).contains(&test.timeout_secs) {
            self.push(
                "test.timeout_secs",
                format!(
                    "{} is out of range; must be between 1 and {MAX_TIMEOUT_SECS} (one day)",
                    test.timeout_secs
                ),
            );
        }
    }

    fn version_file(&mut self, path: &str) {
        match RelativePath::parse(path) {
            Ok(path) if path.is_base() => {
                self.push("build.version_file", "names the checkout root, not a file")
            }
            Ok(_) => {}
            Err(PathError::Absolute) => self.push(
                "build.version_file",
                "absolute path; must be relative to the checkout",
            ),
            Err(issue) => self.push("build.version_file", path_reason(issue, "the checkout")),
        }
    }

    fn image(&mut self, image: &Image) {
        match reference::parse_repository(&image.repository) {
            // A bare name (`node`, `team/app`) means Docker Hub, and on a
            // shared engine it would claim a name other jobs build FROM.
            Ok(repository) if repository.domain.is_none() => self.push(
                "image.repository",
                "names no registry host; write it in full, such as registry.example.com/team/app or docker.io/team/app",
            ),
            Ok(_) => {}
            Err(ReferenceError::ContainsTag) => {
                self.push("image.repository", "contains a tag; put tags in image.tags")
            }
            Err(ReferenceError::ContainsDigest) => self.push(
                "image.repository",
                "contains a digest; name the repository only, the digest is the build's result",
            ),
            Err(e) => self.push("image.repository", format!("not a valid repository: {e}")),
        }
        if image.tags.is_empty() {
            self.push("image.tags", "empty; at least one tag is required");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, tag) in image.tags.iter().enumerate() {
            if !reference::is_valid_tag(tag) {
                self.push(
                    format!("image.tags[{i}]"),
                    "not a valid tag; a tag is up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\"",
                );
                continue;
            }
            match seen.entry(tag) {
                Entry::Occupied(first) => self.push(
                    format!("image.tags[{i}]"),
                    format!("duplicate of image.tags[{}]", first.get()),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
    }

    fn registry_auth(&mut self, auth: &RegistryAuth) {
        match auth {
            RegistryAuth::Basic {
                server,
                username,
                password,
            } => {
                if let Some(server) = server {
                    if !reference::is_valid_registry_host(server) {
                        self.push(
                            "registry_auth.server",
                            "not a valid registry host[:port], such as registry.example.com:5000",
                        );
                    }
                }
                if username.is_empty() {
                    self.push("registry_auth.username", "empty");
                } else if username.contains(['\0', ':', '\n', '\r']) {
                    self.push(
                        "registry_auth.username",
                        "must not contain \":\", line breaks or NUL bytes",
                    );
                }
                if password.expose().is_empty() {
                    self.push("registry_auth.password", "empty");
                }
            }
            RegistryAuth::DockerConfig { config } => {
                if let Err(reason) = DockerAuths::parse(config) {
                    self.push("registry_auth.config", reason.to_string());
                }
            }
        }
    }
}

/// The reason for a path that is not plainly inside `base`.
fn path_reason(issue: PathError, base: &str) -> String {
    match issue {
        PathError::Empty | PathError::Nul => issue.to_string(),
        PathError::Absolute => format!("absolute path; must be relative to {base}"),
        PathError::Escapes { .. } => format!("escapes {base}"),
    }
}

/// A full commit SHA, or a ref name `git check-ref-format --allow-onelevel`
/// accepts.
fn check_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("empty".into());
    }
    if revision
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("contains whitespace or control characters".into());
    }
    if revision.starts_with('-') {
        return Err("must not start with \"-\"".into());
    }
    let is_hex = revision.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && (revision.len() == 40 || revision.len() == 64) {
        return Ok(());
    }
    check_ref_name(revision)
        .map_err(|why| format!("not a commit SHA or a valid branch or tag name: {why}"))
}

/// `git check-ref-format` rules (with `--allow-onelevel`).
fn check_ref_name(name: &str) -> Result<(), &'static str> {
    if name == "@" {
        return Err("\"@\" alone is not a ref name");
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err("must not start or end with \"/\"");
    }
    if name.contains("//") {
        return Err("contains \"//\"");
    }
    if name.contains("..") {
        return Err("contains \"..\"");
    }
    if name.contains("@{") {
        return Err("contains \"@{\"");
    }
    if name.contains(['~', '^', ':', '?', '*', '[', '\\', ' ']) {
        return Err("contains one of ~ ^ : ? * [ \\ or a space");
    }
    if name.ends_with('.') {
        return Err("must not end with \".\"");
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("a component starts with \".\"");
        }
        if component.ends_with(".lock") {
            return Err("a component ends with \".lock\"");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{b64, job, known_hosts_line, FAKE_KEY_TEXT};

    /// The problems of the fixture job after `change`, as `field: reason`.
    fn problems(change: impl FnOnce(&mut Job)) -> Vec<String> {
        let mut job = job();
        change(&mut job);
        match job.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.messages(),
        }
    }

    /// Asserts that `change` yields exactly the one problem `expected`.
    fn rejects(change: impl FnOnce(&mut Job), expected: &str) {
        assert_eq!(problems(change), vec![expected.to_owned()]);
    }

    fn builder() -> Builder {
        Builder {
            image: Some("debian:bookworm-slim".into()),
            dockerfile: None,
            command: vec!["make".into(), "dist".into()],
            workdir: "/src".into(),
            env: BTreeMap::from([("CI".into(), "1".into())]),
            secret_env: Default::default(),
            artifacts: "dist".into(),
            artifacts_dest: "artifact".into(),
        }
    }

    fn with_builder(change: impl FnOnce(&mut Builder)) -> impl FnOnce(&mut Job) {
        move |job| {
            let mut b = builder();
            change(&mut b);
            job.build.builder = Some(b);
        }
    }

    #[test]
    fn fixture_and_builder_are_valid() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
        assert_eq!(problems(with_builder(|_| {})), Vec::<String>::new());
        assert_eq!(
            problems(with_builder(|b| {
                b.image = None;
                b.dockerfile = Some("ci/Dockerfile.build".into());
                b.artifacts = "/out/site".into();
                b.artifacts_dest = "public/site".into();
            })),
            Vec::<String>::new()
        );
        // Below the root after resolving `..`, and the workdir itself as
        // the artifact: both fine.
        assert_eq!(
            problems(with_builder(|b| {
                b.workdir = "/../work/./src".into();
                b.artifacts = ".".into();
            })),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(with_builder(|b| b.artifacts = "/out/../site".into())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_version() {
        rejects(
            |j| j.version = 2,
            "version: unsupported protocol version 2; this worker speaks 1",
        );
    }

    #[test]
    fn nil_job_id() {
        rejects(
            |j| j.job_id = uuid::Uuid::nil(),
            "job_id: the nil UUID is not a job id",
        );
    }

    #[test]
    fn service_id() {
        rejects(|j| j.service_id.clear(), "service_id: empty");
        rejects(
            |j| j.service_id = "web app".into(),
            "service_id: only letters, digits, \".\", \"_\" and \"-\" are allowed",
        );
        rejects(
            |j| j.service_id = "a".repeat(129),
            "service_id: 129 characters; at most 128 are allowed",
        );
        assert!(problems(|j| j.service_id = "a".repeat(128)).is_empty());
    }

    #[test]
    fn repo_urls() {
        // Every case of the URL grammar is in grammar::repo_url's tests;
        // these show its reasons reach the job's problems under repo.url.
        let forms = "use ssh://user@host[:port]/path, user@host:path or https://host/path";
        let cases = [
            ("", "empty".to_owned()),
            (
                "https://user:pass@git.example.com/x.git",
                "embeds credentials; put them in repo.auth".into(),
            ),
            (
                "git.example.com:team/x.git",
                format!("scp-like URL without a user; {forms}"),
            ),
        ];
        for (url, reason) in cases {
            let mut job = job();
            job.repo.url = url.into();
            job.repo.auth = RepoAuth::None;
            job.repo.known_hosts = None;
            let got = job.validate().map_err(|e| e.messages());
            assert_eq!(got, Err(vec![format!("repo.url: {reason}")]), "{url}");
        }
        for url in [
            "ssh://git@git.example.com:2222/srv/x.git",
            "ssh://git.example.com/x",
            "ssh://git@[::1]:22/x",
            "git@github.com:team/x.git",
            "https://github.com/team/x.git",
            "https://localhost:8443/x",
        ] {
            let mut job = job();
            job.repo.url = url.into();
            job.repo.auth = RepoAuth::None;
            job.repo.known_hosts = None;
            assert_eq!(job.validate(), Ok(()), "{url}");
        }
    }

    #[test]
    fn revisions() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        for revision in [
            sha,
            "main",
            "v1.2.3",
            "refs/heads/main",
            "feature/x-y",
            "HEAD",
            "abc123",
        ] {
            assert!(
                problems(|j| j.repo.revision = revision.into()).is_empty(),
                "{revision}"
            );
        }
        let not_ref = "repo.revision: not a commit SHA or a valid branch or tag name";
        let cases = [
            ("", "repo.revision: empty".to_owned()),
            (
                "main branch",
                "repo.revision: contains whitespace or control characters".into(),
            ),
            (
                "main\u{7}",
                "repo.revision: contains whitespace or control characters".into(),
            ),
            ("-x", "repo.revision: must not start with \"-\"".into()),
            ("a..b", format!("{not_ref}: contains \"..\"")),
            (
                "a~1",
                format!("{not_ref}: contains one of ~ ^ : ? * [ \\ or a space"),
            ),
            (
                "a^",
                format!("{not_ref}: contains one of ~ ^ : ? * [ \\ or a space"),
            ),
            (
                "a:b",
                format!("{not_ref}: contains one of ~ ^ : ? * [ \\ or a space"),
            ),
            (
                "a*",
                format!("{not_ref}: contains one of ~ ^ : ? * [ \\ or a space"),
            ),
            (
                "main.lock",
                format!("{not_ref}: a component ends with \".lock\""),
            ),
            (
                "feature/",
                format!("{not_ref}: must not start or end with \"/\""),
            ),
            (
                "/main",
                format!("{not_ref}: must not start or end with \"/\""),
            ),
            ("a//b", format!("{not_ref}: contains \"//\"")),
            ("a@{1}", format!("{not_ref}: contains \"@{{\"")),
            (
                ".hidden",
                format!("{not_ref}: a component starts with \".\""),
            ),
            ("x/.y", format!("{not_ref}: a component starts with \".\"")),
            ("x.", format!("{not_ref}: must not end with \".\"")),
            ("@", format!("{not_ref}: \"@\" alone is not a ref name")),
        ];
        for (revision, expected) in cases {
            rejects(|j| j.repo.revision = revision.into(), &expected);
        }
    }

    #[test]
    fn ssh_key_auth() {
        let set_key = |key: String| {
            move |j: &mut Job| {
                j.repo.auth = RepoAuth::SshKey {
                    private_key: Secret::new(key),
                    passphrase: None,
                }
            }
        };
        rejects(set_key(String::new()), "repo.auth.private_key: empty");
        rejects(
            set_key("not base64!".into()),
            "repo.auth.private_key: not valid base64; encode the key file, e.g. with `base64 -w0 id_ed25519`",
        );
        rejects(
            set_key(b64("ssh-ed25519 AAAA user@host")),
            "repo.auth.private_key: not base64 of a private key (expected \"-----BEGIN ... PRIVATE KEY-----\" text)",
        );
        // Line-wrapped base64, as `base64` prints it, is fine.
        let wrapped = b64(FAKE_KEY_TEXT)
            .as_bytes()
            .chunks(20)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(problems(set_key(wrapped)).is_empty());
        rejects(
            |j| {
                j.repo.auth = RepoAuth::SshKey {
                    private_key: Secret::new(b64(FAKE_KEY_TEXT)),
                    passphrase: Some(Secret::new("")),
                }
            },
            "repo.auth.passphrase: empty; omit it for a key without a passphrase",
        );
        rejects(
            |j| {
                j.repo.url = "https://git.example.com/x.git".into();
                j.repo.known_hosts = None;
            },
            "repo.auth: ssh_key needs an ssh:// or scp-like repo.url",
        );
        // A bad key and an empty passphrase: both reported.
        assert_eq!(
            problems(|j| {
                j.repo.auth = RepoAuth::SshKey {
                    private_key: Secret::new(""),
                    passphrase: Some(Secret::new("")),
                }
            }),
            [
                "repo.auth.private_key: empty",
                "repo.auth.passphrase: empty; omit it for a key without a passphrase",
            ]
        );
        // An encrypted key is refused here, not only when the worker clones.
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        rejects(
            set_key(b64(encrypted)),
            "repo.auth.private_key: encrypted, but repo.auth.passphrase is not set",
        );
    }

    #[test]
    fn https_auth() {
        let https = |username: &str, token: &str| {
            let (username, token) = (username.to_owned(), token.to_owned());
            move |j: &mut Job| {
                j.repo.url = "https://git.example.com/x.git".into();
                j.repo.known_hosts = None;
                j.repo.auth = RepoAuth::Https {
                    username,
                    token: Secret::new(token),
                };
            }
        };
        assert!(problems(https("ci", "t0ken")).is_empty());
        assert_eq!(
            problems(https("", "")),
            ["repo.auth.username: empty", "repo.auth.token: empty"]
        );
        rejects(
            https("a:b", "t0ken"),
            "repo.auth.username: must not contain \":\", line breaks or NUL bytes",
        );
        rejects(
            |j| {
                j.repo.auth = RepoAuth::Https {
                    username: "ci".into(),
                    token: Secret::new("t0ken"),
                }
            },
            "repo.auth: https needs an https:// repo.url",
        );
    }

    #[test]
    fn known_hosts() {
        rejects(
            |j| {
                j.repo.url = "https://git.example.com/x.git".into();
                j.repo.auth = RepoAuth::None;
            },
            "repo.known_hosts: only applies to an ssh:// or scp-like repo.url",
        );
        rejects(
            |j| j.repo.known_hosts = Some("# nothing\n\n".into()),
            "repo.known_hosts: no host key lines; omit the field to skip host key checking",
        );
        let good = known_hosts_line("git.example.com");
        let rsa_claim = good.replace("ssh-ed25519", "ssh-rsa");
        let text = format!(
            "{good}\ngit.example.com ssh-ed25519\n# comment\ngit.example.com ssh-dss AAAA\nh ssh-ed25519 !!!\n{rsa_claim}\n@bogus {good}\n@cert-authority *.example.com {}\n",
            good.split_once(' ').unwrap().1
        );
        assert_eq!(
            problems(|j| j.repo.known_hosts = Some(text)),
            [
                "repo.known_hosts: line 2: expected \"<hosts> <key type> <base64 key>\"",
                "repo.known_hosts: line 4: unsupported key type \"ssh-dss\"; expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521",
                "repo.known_hosts: line 5: key is not valid base64",
                "repo.known_hosts: line 6: key is not of type \"ssh-rsa\"",
                "repo.known_hosts: line 7: unknown marker \"@bogus\"; expected @cert-authority or @revoked",
            ]
        );
    }

    #[test]
    fn build_paths() {
        rejects(
            |j| j.build.context = "/srv".into(),
            "build.context: absolute path; must be relative to the checkout",
        );
        rejects(
            |j| j.build.context = "../other".into(),
            "build.context: escapes the checkout",
        );
        rejects(
            |j| j.build.context = String::new(),
            "build.context: empty; use \".\" for the checkout root",
        );
        rejects(
            |j| j.build.context = "a\0b".into(),
            "build.context: contains a NUL byte",
        );
        rejects(
            |j| {
                j.build.context = ".".into();
                j.build.dockerfile = "../../etc/passwd".into();
            },
            "build.dockerfile: escapes the checkout",
        );
        rejects(
            |j| j.build.dockerfile = "../Dockerfile".into(),
            "build.dockerfile: leaves the build context; the Dockerfile must be inside build.context",
        );
        rejects(
            |j| j.build.dockerfile = "../../../Dockerfile".into(),
            "build.dockerfile: escapes the checkout",
        );
        rejects(
            |j| j.build.dockerfile = "/Dockerfile".into(),
            "build.dockerfile: absolute path; must be relative to build.context",
        );
        rejects(
            |j| j.build.dockerfile = "./".into(),
            "build.dockerfile: names the build context itself, not a file",
        );
        rejects(
            |j| j.build.dockerfile = String::new(),
            "build.dockerfile: empty",
        );
        for fine in ["a/../Dockerfile", "./Dockerfile", "docker//Dockerfile.prod"] {
            assert!(
                problems(|j| j.build.dockerfile = fine.into()).is_empty(),
                "{fine}"
            );
        }
        assert!(problems(|j| j.build.context = "a/../b/.".into()).is_empty());
    }

    #[test]
    fn build_options() {
        assert_eq!(
            problems(|j| {
                j.build.build_args.insert(String::new(), "x".into());
                j.build.build_args.insert("A=B".into(), "x".into());
                j.build.build_args.insert("NUL".into(), "a\0b".into());
                j.build.labels.insert(String::new(), "x".into());
                j.build.target = Some("-stage".into());
                j.build.cache_from = vec!["ok:1".into(), "Not/Valid:x".into()];
            }),
            [
                "build.build_args[\"\"]: empty name",
                "build.build_args[\"A=B\"]: name contains \"=\"",
                "build.build_args[\"NUL\"]: value contains a NUL byte",
                "build.labels[\"\"]: empty name",
                "build.target: not a valid stage name (letters, digits, \".\", \"_\", \"-\", starting with a letter or digit)",
                "build.cache_from[1]: not a valid image reference: path component \"Valid\" must be lowercase",
            ]
        );
    }

    #[test]
    fn build_secrets() {
        let secret = || Secret::new("s3cr3t-token");
        assert_eq!(
            problems(|j| {
                j.build.secrets.insert("npm_token".into(), secret());
                j.build.secrets.insert("bad id".into(), secret());
                j.build.secrets.insert("nul".into(), Secret::new("a\0b"));
            }),
            [
                "build.secrets[\"bad id\"]: not a valid secret id (1 to 128 letters, digits, \".\", \"_\", \"-\")",
                "build.secrets[\"nul\"]: value contains a NUL byte",
            ]
        );
        assert_eq!(
            problems(|j| {
                j.build.engine = Some(BuildEngine::Legacy);
                j.build.secrets.insert("npm_token".into(), secret());
                j.build.cache_inline = true;
            }),
            [
                "build.secrets: needs BuildKit; the legacy builder cannot mount secrets (set build.engine to buildkit or leave it unset)",
                "build.cache_inline: needs BuildKit; the legacy builder writes no inline cache (set build.engine to buildkit or leave it unset)",
            ]
        );
        assert!(problems(|j| {
            j.build.engine = Some(BuildEngine::Buildkit);
            j.build.secrets.insert("npm_token".into(), secret());
            j.build.cache_inline = true;
        })
        .is_empty());
        assert_eq!(
            problems(with_builder(|b| {
                b.env.insert("TOKEN".into(), "x".into());
                b.secret_env.insert("TOKEN".into(), secret());
                b.secret_env.insert("1X".into(), secret());
                b.secret_env.insert("NPM_TOKEN".into(), secret());
            })),
            [
                "build.builder.secret_env[\"1X\"]: not a valid environment variable name (letters, digits and \"_\", not starting with a digit)",
                "build.builder.secret_env[\"TOKEN\"]: also set in build.builder.env; set it in one of the two",
            ]
        );
    }

    #[test]
    fn test_and_version_file_rules() {
        let with_test = |change: fn(&mut Test)| {
            move |job: &mut Job| {
                let mut test = Test::new(["sh", "-c", "true"]);
                change(&mut test);
                job.test = Some(test);
            }
        };
        assert_eq!(problems(with_test(|_| {})), Vec::<String>::new());
        rejects(
            with_test(|t| t.command.clear()),
            "test.command: empty; give the program and its arguments",
        );
        rejects(
            with_test(|t| {
                t.env.insert("1X".into(), "v".into());
            }),
            "test.env[\"1X\"]: not a valid environment variable name (letters, digits and \"_\", not starting with a digit)",
        );
        rejects(
            with_test(|t| t.timeout_secs = 0),
            "test.timeout_secs: 0 is out of range; must be between 1 and 86400 (one day)",
        );
        rejects(
            |job| job.build.version_file = Some("../VERSION".into()),
            "build.version_file: escapes the checkout",
        );
        rejects(
            |job| job.build.version_file = Some("/VERSION".into()),
            "build.version_file: absolute path; must be relative to the checkout",
        );
        assert_eq!(
            problems(|job| job.build.version_file = Some("app/VERSION".into())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn builder_rules() {
        rejects(
            with_builder(|b| b.dockerfile = Some("Dockerfile.build".into())),
            "build.builder: set exactly one of image and dockerfile",
        );
        rejects(
            with_builder(|b| b.image = None),
            "build.builder: set exactly one of image and dockerfile",
        );
        rejects(
            with_builder(|b| b.image = Some("debian:-bad".into())),
            "build.builder.image: not a valid image reference: invalid tag: up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\"",
        );
        rejects(
            with_builder(|b| {
                b.image = None;
                b.dockerfile = Some("../Dockerfile.build".into());
            }),
            "build.builder.dockerfile: escapes the checkout",
        );
        rejects(
            with_builder(|b| {
                b.image = None;
                b.dockerfile = Some("/Dockerfile.build".into());
            }),
            "build.builder.dockerfile: absolute path; must be relative to the checkout",
        );
        rejects(
            with_builder(|b| b.command.clear()),
            "build.builder.command: empty; give the program and its arguments",
        );
        rejects(
            with_builder(|b| b.command = vec![String::new(), "x".into()]),
            "build.builder.command[0]: empty program name",
        );
        rejects(
            with_builder(|b| b.command.push("a\0".into())),
            "build.builder.command[2]: contains a NUL byte",
        );
        rejects(
            with_builder(|b| b.workdir = "src".into()),
            "build.builder.workdir: must be an absolute path",
        );
        rejects(
            with_builder(|b| {
                b.env.insert("1X".into(), "y".into());
            }),
            "build.builder.env[\"1X\"]: not a valid environment variable name (letters, digits and \"_\", not starting with a digit)",
        );
        for root in ["/", "//", "/.", "/out/..", "/../.."] {
            rejects(
                with_builder(|b| b.workdir = root.into()),
                "build.builder.workdir: names the builder's root directory; use a directory below it, e.g. /src",
            );
            rejects(
                with_builder(|b| b.artifacts = root.into()),
                "build.builder.artifacts: names the builder's root directory; name the file or directory the command produces",
            );
        }
        rejects(
            with_builder(|b| b.artifacts = String::new()),
            "build.builder.artifacts: empty; name the file or directory the command produces",
        );
        rejects(
            with_builder(|b| b.artifacts = "../x".into()),
            "build.builder.artifacts: escapes build.builder.workdir; use an absolute path instead",
        );
        for dest in [".", "a/.."] {
            assert_eq!(
                problems(with_builder(|b| {
                    b.artifacts = ".".into();
                    b.artifacts_dest = dest.into();
                })),
                Vec::<String>::new(),
                "the whole workdir as the checkout"
            );
        }
        rejects(
            with_builder(|b| b.artifacts_dest = String::new()),
            "build.builder.artifacts_dest: empty; must name a path inside the build context",
        );
        rejects(
            with_builder(|b| b.artifacts_dest = "/abs".into()),
            "build.builder.artifacts_dest: absolute path; must be relative to the build context",
        );
        rejects(
            with_builder(|b| b.artifacts_dest = "../x".into()),
            "build.builder.artifacts_dest: escapes the build context",
        );
    }

    #[test]
    fn image() {
        rejects(
            |j| j.image.repository = "registry.example.com/app:1.0".into(),
            "image.repository: contains a tag; put tags in image.tags",
        );
        rejects(
            |j| j.image.repository = format!("app@sha256:{}", "a".repeat(64)),
            "image.repository: contains a digest; name the repository only, the digest is the build's result",
        );
        rejects(
            |j| j.image.repository = "registry.example.com/Team/app".into(),
            "image.repository: not a valid repository: path component \"Team\" must be lowercase",
        );
        rejects(
            |j| j.image.repository = String::new(),
            "image.repository: not a valid repository: empty",
        );
        rejects(
            |j| j.image.repository = "node".into(),
            "image.repository: names no registry host; write it in full, such as registry.example.com/team/app or docker.io/team/app",
        );
        rejects(
            |j| j.image.repository = "team/app".into(),
            "image.repository: names no registry host; write it in full, such as registry.example.com/team/app or docker.io/team/app",
        );
        rejects(
            |j| j.image.tags.clear(),
            "image.tags: empty; at least one tag is required",
        );
        let bad_tag = "not a valid tag; a tag is up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\"";
        assert_eq!(
            problems(|j| j.image.tags = vec![
                "latest".into(),
                "v1".into(),
                "not a tag".into(),
                ".x".into(),
                "latest".into(),
            ]),
            [
                format!("image.tags[2]: {bad_tag}"),
                format!("image.tags[3]: {bad_tag}"),
                "image.tags[4]: duplicate of image.tags[0]".into(),
            ]
        );
    }

    #[test]
    fn registry_basic_auth() {
        assert_eq!(
            problems(|j| j.registry_auth = Some(RegistryAuth::Basic {
                server: Some("https://registry.example.com/v1/".into()),
                username: String::new(),
                password: Secret::new(""),
            })),
            [
                "registry_auth.server: not a valid registry host[:port], such as registry.example.com:5000",
                "registry_auth.username: empty",
                "registry_auth.password: empty",
            ]
        );
        assert!(problems(|j| j.registry_auth = Some(RegistryAuth::Basic {
            server: Some("registry.example.com:5000".into()),
            username: "ci".into(),
            password: Secret::new("pw"),
        }))
        .is_empty());
    }

    #[test]
    fn registry_docker_config() {
        let config = |text: &str| {
            let config = Secret::new(text);
            move |j: &mut Job| j.registry_auth = Some(RegistryAuth::DockerConfig { config })
        };
        let auth = b64("ci:not-a-real-password");
        for fine in [
            format!(r#"{{"auths": {{"registry.example.com:5000": {{"auth": "{auth}"}}}}}}"#),
            format!(r#"{{"registry.example.com": {{"auth": "{auth}"}}}}"#),
            r#"{"auths": {"r.example.com": {"username": "u", "password": "p"}}, "credsStore": "x"}"#
                .into(),
        ] {
            assert!(problems(config(&b64(&fine))).is_empty(), "{fine}");
        }
        // Every case of the config grammar is in grammar::docker_config's
        // tests; these show its reasons reach registry_auth.config.
        let cases = [
            (String::new(), "empty"),
            ("%%%".into(), "not valid base64"),
            (b64(r#"{"auths": {}}"#), "\"auths\" holds no registry"),
        ];
        for (text, reason) in cases {
            rejects(config(&text), &format!("registry_auth.config: {reason}"));
        }
    }

    #[test]
    fn timeout_and_signature() {
        rejects(
            |j| j.timeout_secs = 0,
            "timeout_secs: 0 is out of range; must be between 1 and 86400 (one day)",
        );
        rejects(
            |j| j.timeout_secs = 86_401,
            "timeout_secs: 86401 is out of range; must be between 1 and 86400 (one day)",
        );
        assert!(problems(|j| j.timeout_secs = 86_400).is_empty());
        rejects(
            |j| j.signature = Some("***".into()),
            "signature: not valid base64",
        );
        rejects(
            |j| j.signature = Some(b64([1u8; 32])),
            "signature: decodes to 32 bytes; an ed25519 signature is 64",
        );
        assert!(problems(|j| j.signature = Some(b64([1u8; 64]))).is_empty());
    }

    #[test]
    fn envelope() {
        let good = SignedEnvelope::new(100, 60, "jobs", "reply");
        assert!(problems(|j| j.envelope = Some(good.clone())).is_empty());
        let with = |change: fn(&mut SignedEnvelope)| {
            let mut envelope = good.clone();
            change(&mut envelope);
            move |j: &mut Job| j.envelope = Some(envelope)
        };
        rejects(
            with(|e| e.nonce = "short".into()),
            "envelope.nonce: must be 16 to 128 letters, digits, \"_\" or \"-\"",
        );
        rejects(
            with(|e| e.expires_at = e.issued_at),
            "envelope.expires_at: must be after envelope.issued_at",
        );
        rejects(
            with(|e| e.queue.clear()),
            "envelope.queue: empty; name the queue the job is published to",
        );
        rejects(
            with(|e| e.reply_to.clear()),
            "envelope.reply_to: empty; name the message's reply_to",
        );
    }

    #[test]
    fn every_problem_at_once_in_field_order() {
        let errors = {
            let mut job = job();
            job.version = 3;
            job.repo.revision.clear();
            job.build.dockerfile = "../../etc/passwd".into();
            job.image.tags = vec!["ok".into(), "not a tag".into()];
            job.timeout_secs = 0;
            job.validate().unwrap_err()
        };
        let fields: Vec<&str> = errors.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "version",
                "repo.revision",
                "build.dockerfile",
                "image.tags[1]",
                "timeout_secs"
            ]
        );
        assert_eq!(
            errors.to_string(),
            errors.messages().join("; "),
            "Display joins with \"; \""
        );
        assert!(errors.to_string().starts_with(
            "version: unsupported protocol version 3; this worker speaks 1; repo.revision: empty; "
        ));
    }

    #[test]
    fn reasons_never_contain_secret_values() {
        let secrets = [
            "Zm9vYmFy-ssh-key-SECRET-1",
            "passphrase-SECRET-2",
            "token-SECRET-3",
            "password-SECRET-4",
        ];
        let mut all = Vec::new();
        let mut job = job();
        job.repo.auth = RepoAuth::SshKey {
            private_key: Secret::new(secrets[0]),
            passphrase: Some(Secret::new(secrets[1])),
        };
        job.registry_auth = Some(RegistryAuth::Basic {
            server: Some("bad server".into()),
            username: String::new(),
            password: Secret::new(secrets[3]),
        });
        all.extend(job.validate().unwrap_err().messages());
        job.repo.url = "https://git.example.com/x".into();
        job.repo.auth = RepoAuth::Https {
            username: String::new(),
            token: Secret::new(secrets[2]),
        };
        all.extend(job.validate().unwrap_err().messages());
        // A docker config whose credentials are malformed in every way.
        for config in [
            secrets[3].to_owned(),
            b64(secrets[3]),
            b64(format!(
                r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
                secrets[3]
            )),
            b64(format!(
                r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
                b64(secrets[3])
            )),
        ] {
            job.registry_auth = Some(RegistryAuth::DockerConfig {
                config: Secret::new(config.clone()),
            });
            let messages = job.validate().unwrap_err().messages();
            assert!(messages
                .iter()
                .any(|m| m.starts_with("registry_auth.config")));
            for message in &messages {
                assert!(!message.contains(&config), "{message}");
            }
            all.extend(messages);
        }
        let text = all.join("\n");
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
            assert!(
                !text.contains(&b64(secret)),
                "{secret} leaked (base64) into:\n{text}"
            );
        }
    }
}
