//! Clone step: fetch exactly one revision of the job's repository with git2
//! and check it out, with credentials held in memory only.
//!
//! This module owns everything between a [`Repo`] and files on disk:
//! resolving the revision (commit SHA, branch, tag) against the remote,
//! fetching it shallowly where the server allows, the credentials callback
//! (SSH private key from memory, HTTPS username and token), pinning the SSH
//! host key to `repo.known_hosts`, the detached checkout, and submodules.
//!
//! Secrets never reach the disk or an error message: the key is handed to
//! libssh2 from memory, and every message built from a libgit2 error has the
//! token and passphrase masked.

use crate::events::Reporter;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use buildbot_protocol::{Job, Repo, RepoAuth, Secret, StepName};
use git2::build::CheckoutBuilder;
use git2::cert::Cert;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, Oid, Progress, Remote, RemoteCallbacks, Repository, Submodule,
};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::path::{Component, Path};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Clones the job's revision into `dest`, on a blocking thread (git2 is
/// synchronous), reporting git's progress as it goes.
pub(crate) async fn run(job: &Job, dest: &Path, reporter: &Reporter) -> Result<Checkout, String> {
    let repo = job.repo.clone();
    let dest = dest.to_owned();
    let progress = reporter.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        fetch_revision(&repo, &dest, &mut |line| {
            progress.system_blocking(StepName::Clone, line)
        })
    })
    .await
    .map_err(|e| format!("clone task failed: {e}"))?;
    let checkout = fetched.map_err(|e| e.to_string())?;
    reporter
        .system(StepName::Clone, format!("revision {}", checkout.commit))
        .await;
    Ok(checkout)
}

/// User name for SSH when the URL names none: what every git host expects.
const DEFAULT_SSH_USER: &str = "git";
/// Local ref that keeps a commit fetched by SHA.
const FETCHED_REF: &str = "refs/buildbot/fetched";
/// Nesting limit for submodules, so a hostile repository cannot keep the
/// worker fetching forever.
const MAX_SUBMODULE_DEPTH: usize = 8;
/// Shortest gap between two transfer progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The commit that was checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkout {
    /// Full hex SHA of the commit.
    pub(crate) commit: String,
    /// The commit's committer time, in seconds since the Unix epoch.
    pub(crate) commit_time: i64,
}

/// Why the clone step failed. `Display` is the message shown to the user;
/// it never contains a key, passphrase or token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    /// The remote refused the credentials, or asked for some the job lacks.
    #[error("{0}")]
    Authentication(String),
    /// The SSH server's host key is not the one pinned in `repo.known_hosts`.
    #[error("{0}")]
    HostKeyMismatch(String),
    /// The revision is not a commit, branch or tag of the remote.
    #[error("{0}")]
    UnknownRevision(String),
    /// The remote could not be reached or broke off the transfer.
    #[error("cannot reach the git remote {url}: {message}")]
    Remote {
        /// The URL, without credentials.
        url: String,
        /// What libgit2 reported, with secrets masked.
        message: String,
    },
    /// The private key (or its passphrase) in `repo.auth` cannot be used.
    #[error("{0}")]
    InvalidKey(String),
    /// The local repository could not be set up or checked out.
    #[error("{0}")]
    Checkout(String),
    /// A submodule could not be fetched or checked out. (The inner error is
    /// a field, not a `source`: `Display` already says it all, and an error
    /// chain would repeat it.)
    #[error("submodule {path}: {error}")]
    Submodule {
        /// Path of the submodule in its parent's checkout.
        path: String,
        /// What went wrong with it.
        error: Box<GitError>,
    },
    /// The checkout directory could not be prepared.
    #[error("{action}: {error}")]
    Io {
        /// What the worker was doing.
        action: String,
        /// The operating system's error.
        error: std::io::Error,
    },
}

/// Fetches `repo.revision` from `repo.url` into `dest` (created if missing),
/// checks it out on a detached HEAD, and with `repo.submodules` also checks
/// out every submodule. `progress` receives human-readable lines.
///
/// Blocking: call it from `spawn_blocking`.
pub(crate) fn fetch_revision(
    repo: &Repo,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Checkout, GitError> {
    fetch_with_policy(repo, dest, progress, Policy::JOB)
}

/// Bounds how long libgit2 waits to connect to a remote and for each read
/// from it, so a stalled server fails the clone instead of holding a
/// blocking thread that the job's timeout cannot interrupt. Process-wide:
/// call once at startup, before any clone runs.
pub(crate) fn set_network_timeouts(connect: Duration, read: Duration) -> Result<(), git2::Error> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: libgit2's global options are plain integers read when a
    // connection opens; git2 marks the setters unsafe only because they are
    // not synchronized, and the caller sets them before any clone runs.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(read))
    }
}

/// What the worker lets a repository's content make it fetch.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// Follow submodule URLs that name a path on the worker's disk. Never in
    /// a job: a hostile `.gitmodules` could copy other checkouts into the
    /// image. Only tests, whose remotes are local, turn it on.
    local_submodules: bool,
}

impl Policy {
    const JOB: Self = Self {
        local_submodules: false,
    };
}

fn fetch_with_policy(
    repo: &Repo,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
    policy: Policy,
) -> Result<Checkout, GitError> {
    let auth = Auth::from_job(&repo.auth)?;
    let main = RemoteUrl::parse(&repo.url);
    let session = Session {
        auth,
        known_hosts: repo.known_hosts.as_deref(),
        credentials_host: main.host.to_ascii_lowercase(),
        policy,
        progress: RefCell::new(progress),
    };
    let revision = Revision::parse(&repo.revision)?;
    let (checked_out, checkout) = session.fetch_and_check_out(&repo.url, &revision, dest)?;
    if repo.submodules {
        session.update_submodules(&checked_out, 0)?;
    }
    Ok(checkout)
}

/// One clone: the job's credentials and pins, shared by the main repository
/// and its submodules.
struct Session<'a, 'p> {
    auth: Auth<'a>,
    known_hosts: Option<&'a str>,
    /// Lowercase host of the job's URL: an HTTPS token goes to this host
    /// only, so a `.gitmodules` naming another host cannot collect it. (An
    /// SSH key may go anywhere: public-key auth reveals no secret.)
    credentials_host: String,
    policy: Policy,
    progress: RefCell<&'p mut dyn FnMut(&str)>,
}

impl Session<'_, '_> {
    fn say(&self, line: &str) {
        (self.progress.borrow_mut())(line);
    }

    /// Creates a repository in `dest`, fetches `revision` and checks it out.
    fn fetch_and_check_out(
        &self,
        url: &str,
        revision: &Revision<'_>,
        dest: &Path,
    ) -> Result<(Repository, Checkout), GitError> {
        std::fs::create_dir_all(dest).map_err(|error| GitError::Io {
            action: format!("cannot create the checkout directory {}", dest.display()),
            error,
        })?;
        let repo = Repository::init(dest).map_err(|e| {
            GitError::Checkout(format!(
                "cannot create a git repository in {}: {}",
                dest.display(),
                e.message()
            ))
        })?;
        let target = self.target(url);
        self.say(&format!(
            "fetching {} from {}",
            revision.text(),
            target.url.display
        ));
        // A named remote, not an anonymous one: libgit2 resolves relative
        // submodule URLs against `origin`.
        let mut remote = repo.remote("origin", url).map_err(|e| GitError::Remote {
            url: target.url.display.clone(),
            message: self.scrub(e.message()),
        })?;
        let oid = match revision {
            Revision::Sha(oid) => self.fetch_sha(&repo, &mut remote, &target, *oid)?,
            Revision::Name(name) => self.fetch_name(&repo, &mut remote, &target, name)?,
        };
        drop(remote);
        let checkout = check_out(&repo, oid)?;
        self.say(&format!("checked out {}", checkout.commit));
        Ok((repo, checkout))
    }

    fn target(&self, url: &str) -> Target {
        let url = RemoteUrl::parse(url);
        let send_credentials = match self.auth {
            Auth::Https { .. } => url.host.eq_ignore_ascii_case(&self.credentials_host),
            Auth::None | Auth::SshKey(_) => true,
        };
        Target {
            url,
            send_credentials,
        }
    }

    /// A commit SHA: fetched through a ref that points at it, else by SHA
    /// (servers that allow it), else with all branches and tags.
    fn fetch_sha(
        &self,
        repo: &Repository,
        remote: &mut Remote<'_>,
        target: &Target,
        oid: Oid,
    ) -> Result<Oid, GitError> {
        let heads = self.list_remote(remote, target)?;
        if let Some(name) = ref_pointing_at(&heads, oid) {
            let (refspec, _) = refspec_for(&name);
            if self.fetch(remote, target, &[refspec], true).is_ok() {
                if let Some(commit) = peel_to_commit(repo, oid) {
                    return Ok(commit);
                }
            }
        }
        let by_sha = format!("+{oid}:{FETCHED_REF}");
        match self.fetch(remote, target, &[by_sha], true) {
            Ok(()) => {
                if let Some(commit) = peel_to_commit(repo, oid) {
                    return Ok(commit);
                }
            }
            Err(e @ (GitError::Authentication(_) | GitError::HostKeyMismatch(_))) => return Err(e),
            // Typically "cannot fetch a specific object": the server does not
            // allow wanting unadvertised SHAs. Fall back to a full fetch.
            Err(_) => {}
        }
        self.say(&format!(
            "the remote did not send {oid} by itself; fetching all branches and tags"
        ));
        let all = [
            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
            "+refs/tags/*:refs/tags/*".to_owned(),
        ];
        self.fetch(remote, target, &all, false)?;
        peel_to_commit(repo, oid).ok_or_else(|| {
            GitError::UnknownRevision(format!(
                "revision {oid} not found in {}",
                target.url.display
            ))
        })
    }

    /// A branch or tag name (or a full `refs/...` name, or `HEAD`), resolved
    /// against the remote's refs and fetched shallowly.
    fn fetch_name(
        &self,
        repo: &Repository,
        remote: &mut Remote<'_>,
        target: &Target,
        name: &str,
    ) -> Result<Oid, GitError> {
        let heads = self.list_remote(remote, target)?;
        let Some(full_name) = resolve_name(&heads, name) else {
            return Err(GitError::UnknownRevision(format!(
                "revision '{name}' is neither a branch nor a tag of {}",
                target.url.display
            )));
        };
        let (refspec, local) = refspec_for(&full_name);
        self.fetch(remote, target, &[refspec], true)?;
        let reference = repo.find_reference(&local).map_err(|e| {
            GitError::Checkout(format!(
                "cannot read the fetched {full_name}: {}",
                e.message()
            ))
        })?;
        let commit = reference.peel_to_commit().map_err(|_| {
            GitError::UnknownRevision(format!(
                "revision '{name}' ({full_name} of {}) does not point to a commit",
                target.url.display
            ))
        })?;
        Ok(commit.id())
    }

    /// The remote's refs, as `git ls-remote` prints them.
    fn list_remote(
        &self,
        remote: &mut Remote<'_>,
        target: &Target,
    ) -> Result<Vec<(String, Oid)>, GitError> {
        let attempt = Attempt::default();
        let listed = remote
            .connect_auth(
                Direction::Fetch,
                Some(self.callbacks(target, &attempt)),
                None,
            )
            .and_then(|connection| {
                let heads = connection.list()?;
                Ok(heads
                    .iter()
                    .map(|head| (head.name().to_owned(), head.oid()))
                    .collect())
            });
        listed.map_err(|e| self.classify(e, target, &attempt))
    }

    fn fetch(
        &self,
        remote: &mut Remote<'_>,
        target: &Target,
        refspecs: &[String],
        shallow: bool,
    ) -> Result<(), GitError> {
        let attempt = Attempt::default();
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks(target, &attempt))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        // libgit2's local transport refuses any depth; only remote ones
        // can be shallow.
        if shallow && target.url.transport != Transport::Local {
            options.depth(1);
        }
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.classify(e, target, &attempt))
    }

    fn callbacks<'c>(&'c self, target: &'c Target, attempt: &'c Attempt) -> RemoteCallbacks<'c> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, user, allowed| {
            self.credentials(target, attempt, user, allowed)
        });
        callbacks
            .certificate_check(move |cert, _host| self.check_certificate(target, attempt, cert));
        callbacks.transfer_progress(move |stats| {
            if let Some(line) = attempt.throttle.borrow_mut().line(&stats) {
                self.say(&line);
            }
            true
        });
        callbacks
    }

    /// Answers libgit2's credential requests: one try per credential, so a
    /// refused key ends the fetch instead of looping.
    fn credentials(
        &self,
        target: &Target,
        attempt: &Attempt,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = user_from_url.unwrap_or(DEFAULT_SSH_USER);
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        let url = &target.url.display;
        if !target.send_credentials {
            return Err(attempt.fail(GitError::Authentication(format!(
                "the git remote {url} asks for credentials, but the token in repo.auth is only \
                 sent to {}",
                self.credentials_host
            ))));
        }
        match &self.auth {
            Auth::SshKey(key) if allowed.contains(CredentialType::SSH_MEMORY) => {
                if attempt.offered_key.replace(true) {
                    return Err(attempt.fail(GitError::Authentication(format!(
                        "the git remote refused the SSH key for {user}@{} (is the key authorized?)",
                        target.url.host_port()
                    ))));
                }
                Cred::ssh_key_from_memory(user, None, key.pem.expose(), key.passphrase)
            }
            Auth::Https { username, token }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                if attempt.offered_password.replace(true) {
                    return Err(attempt.fail(GitError::Authentication(format!(
                        "the git remote refused the HTTPS credentials for {username}"
                    ))));
                }
                Cred::userpass_plaintext(username, token)
            }
            Auth::None => Err(attempt.fail(GitError::Authentication(format!(
                "the git remote {url} asks for credentials, but repo.auth is none"
            )))),
            _ => Err(attempt.fail(GitError::Authentication(format!(
                "the git remote {url} does not accept the kind of credentials in repo.auth \
                 (it accepts: {})",
                describe_credential_types(allowed)
            )))),
        }
    }

    /// Pins the SSH host key to `repo.known_hosts` when it is given; leaves
    /// TLS certificates to libgit2's own verification.
    fn check_certificate(
        &self,
        target: &Target,
        attempt: &Attempt,
        cert: &Cert<'_>,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(known_hosts) = self.known_hosts else {
            return Ok(CertificateCheckStatus::CertificateOk);
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(attempt.fail(GitError::HostKeyMismatch(format!(
                "the SSH server {} sent no host key to compare with repo.known_hosts",
                target.url.host_port()
            ))));
        };
        let port = target.url.port.unwrap_or(22);
        match check_host_key(known_hosts, &target.url.host, port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(problem) => Err(attempt.fail(GitError::HostKeyMismatch(
                problem.message(&target.url.host_port(), key),
            ))),
        }
    }

    /// Turns a libgit2 failure into the precise error: what a callback
    /// recorded first, else what libgit2's error class says.
    fn classify(&self, error: git2::Error, target: &Target, attempt: &Attempt) -> GitError {
        if let Some(recorded) = attempt.failure.borrow_mut().take() {
            return recorded;
        }
        let url = target.url.display.clone();
        let mut message = self.scrub(error.message().trim());
        // How a read timeout (see `set_network_timeouts`) surfaces: over TLS
        // as EAGAIN, over SSH as libssh2's own words.
        if message.contains("Resource temporarily unavailable")
            || message.contains("Timed out waiting on socket")
        {
            message = format!(
                "timed out: the server sent nothing within the read timeout \
                 (--git-read-timeout-secs) ({message})"
            );
        }
        if attempt.offered_key.get() && error.class() == ErrorClass::Ssh {
            if let Auth::SshKey(key) = &self.auth {
                if message.contains("private key") || message.contains("public key") {
                    return key.unusable(&message);
                }
            }
        }
        match error.code() {
            ErrorCode::Auth => GitError::Authentication(format!(
                "the git remote {url} refused authentication: {message}"
            )),
            _ if error.code() == ErrorCode::Certificate || error.class() == ErrorClass::Ssl => {
                GitError::Remote {
                    url,
                    message: format!("TLS with {}: {message}", target.url.host_port()),
                }
            }
            _ => GitError::Remote { url, message },
        }
    }

    /// Masks the token and passphrase, should libgit2 ever echo them.
    fn scrub(&self, message: &str) -> String {
        let secrets: &[&str] = match &self.auth {
            Auth::None => &[],
            Auth::SshKey(key) => &[key.passphrase.unwrap_or("")],
            Auth::Https { token, .. } => &[token],
        };
        secrets
            .iter()
            .filter(|secret| !secret.is_empty())
            .fold(message.to_owned(), |text, secret| {
                text.replace(secret, "[REDACTED]")
            })
    }

    fn update_submodules(&self, repo: &Repository, level: usize) -> Result<(), GitError> {
        let submodules = repo.submodules().map_err(|e| GitError::Submodule {
            path: ".gitmodules".to_owned(),
            error: Box::new(GitError::Checkout(format!(
                "cannot read the submodules: {}",
                e.message()
            ))),
        })?;
        for mut submodule in submodules {
            let path = submodule.path().to_string_lossy().into_owned();
            self.update_submodule(repo, &mut submodule, &path, level)
                .map_err(|error| GitError::Submodule {
                    path,
                    error: Box::new(error),
                })?;
        }
        Ok(())
    }

    /// Fetches the commit the parent records for `submodule` into its path,
    /// with the same credentials and pins, then its own submodules.
    fn update_submodule(
        &self,
        parent: &Repository,
        submodule: &mut Submodule<'_>,
        path: &str,
        level: usize,
    ) -> Result<(), GitError> {
        // Listed in .gitmodules but absent from the commit: git skips it too.
        let Some(oid) = submodule.head_id() else {
            return Ok(());
        };
        if level >= MAX_SUBMODULE_DEPTH {
            return Err(GitError::Checkout(format!(
                "submodules nested deeper than {MAX_SUBMODULE_DEPTH} levels"
            )));
        }
        let workdir = parent
            .workdir()
            .ok_or_else(|| GitError::Checkout("the parent checkout has no work tree".into()))?;
        if !Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(GitError::Checkout(
                "the submodule path leaves the checkout".into(),
            ));
        }
        let url = submodule_url(parent, submodule)?;
        self.check_submodule_url(&url)?;
        let (repo, _) = self.fetch_and_check_out(&url, &Revision::Sha(oid), &workdir.join(path))?;
        self.say(&format!("submodule {path} at {oid}"));
        self.update_submodules(&repo, level + 1)
    }

    /// Submodule URLs come from the repository, not the job, so they get
    /// the checks the job's URL got during validation.
    fn check_submodule_url(&self, url: &str) -> Result<(), GitError> {
        let parsed = RemoteUrl::parse(url);
        let allowed = match parsed.transport {
            Transport::Ssh | Transport::Https => true,
            Transport::Local => self.policy.local_submodules,
            Transport::Other => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(GitError::Remote {
                url: parsed.display,
                message: "submodules are fetched only over ssh:// (or scp-like) and https:// \
                          URLs"
                    .into(),
            })
        }
    }
}

/// The URL libgit2 resolved for a submodule (relative ones against the
/// parent's `origin`).
fn submodule_url(parent: &Repository, submodule: &mut Submodule<'_>) -> Result<String, GitError> {
    let failed =
        |e: git2::Error| GitError::Checkout(format!("cannot read its URL: {}", e.message()));
    submodule.init(false).map_err(failed)?;
    let name = submodule.name().unwrap_or_default().to_owned();
    let config = parent.config().map_err(failed)?;
    match config.get_string(&format!("submodule.{name}.url")) {
        Ok(url) => Ok(url),
        Err(_) => submodule
            .url()
            .ok()
            .flatten()
            .map(str::to_owned)
            .ok_or_else(|| GitError::Checkout("it has no URL in .gitmodules".into())),
    }
}

/// Per-connection state shared by the callbacks.
#[derive(Default)]
struct Attempt {
    offered_key: Cell<bool>,
    offered_password: Cell<bool>,
    /// The precise error a callback decided on; libgit2 only sees a code.
    failure: RefCell<Option<GitError>>,
    throttle: RefCell<Throttle>,
}

impl Attempt {
    fn fail(&self, error: GitError) -> git2::Error {
        *self.failure.borrow_mut() = Some(error);
        git2::Error::from_str("stopped by the buildbot worker")
    }
}

/// Limits transfer progress to about a line per second, a line per quarter
/// after the first second, and one final line.
struct Throttle {
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
    fn line(&mut self, stats: &Progress<'_>) -> Option<String> {
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

/// A remote plus whether the job's credentials may be sent to it.
struct Target {
    url: RemoteUrl,
    send_credentials: bool,
}

/// What `repo.revision` names.
enum Revision<'a> {
    Sha(Oid),
    Name(&'a str),
}

impl<'a> Revision<'a> {
    fn parse(revision: &'a str) -> Result<Self, GitError> {
        let is_hex = !revision.is_empty() && revision.bytes().all(|b| b.is_ascii_hexdigit());
        match revision.len() {
            40 if is_hex => Oid::from_str(revision)
                .map(Revision::Sha)
                .map_err(|e| GitError::UnknownRevision(e.message().to_owned())),
            64 if is_hex => Err(GitError::UnknownRevision(format!(
                "revision {revision} is a SHA-256 object name; this worker fetches SHA-1 \
                 repositories only"
            ))),
            _ => Ok(Revision::Name(revision)),
        }
    }

    fn text(&self) -> String {
        match self {
            Revision::Sha(oid) => oid.to_string(),
            Revision::Name(name) => (*name).to_owned(),
        }
    }
}

/// An advertised ref whose tip (or peeled tag) is `oid`, so the commit can
/// be fetched shallowly from any server.
fn ref_pointing_at(heads: &[(String, Oid)], oid: Oid) -> Option<String> {
    let preferred = |name: &str| !name.starts_with("refs/heads/");
    let mut matching: Vec<&str> = heads
        .iter()
        .filter(|(name, id)| *id == oid && (name.starts_with("refs/") || name == "HEAD"))
        .map(|(name, _)| name.strip_suffix("^{}").unwrap_or(name))
        .collect();
    matching.sort_by_key(|name| preferred(name));
    matching.first().map(|name| (*name).to_owned())
}

/// The full ref name `name` means on the remote: an exact `refs/...` name or
/// `HEAD`, else a branch, else a tag (the order `git clone --branch` uses).
fn resolve_name(heads: &[(String, Oid)], name: &str) -> Option<String> {
    let candidates = if name.starts_with("refs/") || name == "HEAD" {
        vec![name.to_owned()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    };
    candidates
        .into_iter()
        .find(|candidate| heads.iter().any(|(head, _)| head == candidate))
}

/// The refspec fetching `full_name`, and the local ref it lands in.
fn refspec_for(full_name: &str) -> (String, String) {
    let local = if let Some(branch) = full_name.strip_prefix("refs/heads/") {
        format!("refs/remotes/origin/{branch}")
    } else if full_name.starts_with("refs/tags/") {
        full_name.to_owned()
    } else {
        FETCHED_REF.to_owned()
    };
    (format!("+{full_name}:{local}"), local)
}

/// The commit `oid` names (peeling an annotated tag), if the repository
/// has it.
fn peel_to_commit(repo: &Repository, oid: Oid) -> Option<Oid> {
    let object = repo.find_object(oid, None).ok()?;
    object.peel_to_commit().ok().map(|commit| commit.id())
}

/// Detached HEAD at `oid` with every file written.
fn check_out(repo: &Repository, oid: Oid) -> Result<Checkout, GitError> {
    let failed =
        |e: git2::Error| GitError::Checkout(format!("cannot check out {oid}: {}", e.message()));
    let commit = repo.find_commit(oid).map_err(failed)?;
    let mut options = CheckoutBuilder::new();
    options.force();
    repo.checkout_tree(commit.as_object(), Some(&mut options))
        .map_err(failed)?;
    repo.set_head_detached(oid).map_err(failed)?;
    Ok(Checkout {
        commit: oid.to_string(),
        commit_time: commit.time().seconds(),
    })
}

fn describe_credential_types(allowed: CredentialType) -> String {
    let names = [
        (CredentialType::SSH_KEY, "SSH key"),
        (CredentialType::USER_PASS_PLAINTEXT, "username and password"),
        (CredentialType::SSH_INTERACTIVE, "keyboard-interactive"),
        (CredentialType::DEFAULT, "Negotiate/NTLM"),
    ];
    let listed: Vec<&str> = names
        .iter()
        .filter(|(kind, _)| allowed.intersects(*kind))
        .map(|(_, name)| *name)
        .collect();
    if listed.is_empty() {
        "nothing this worker can offer".to_owned()
    } else {
        listed.join(", ")
    }
}

/// The job's credentials, decoded once before any connection.
enum Auth<'a> {
    None,
    SshKey(SshKey<'a>),
    Https { username: &'a str, token: &'a str },
}

impl<'a> Auth<'a> {
    fn from_job(auth: &'a RepoAuth) -> Result<Self, GitError> {
        Ok(match auth {
            RepoAuth::None => Auth::None,
            RepoAuth::SshKey {
                private_key,
                passphrase,
            } => Auth::SshKey(SshKey::decode(
                private_key,
                passphrase.as_ref().map(Secret::expose),
            )?),
            RepoAuth::Https { username, token } => Auth::Https {
                username,
                token: token.expose(),
            },
        })
    }
}

/// A private key decoded from the job, in memory only.
struct SshKey<'a> {
    /// The PEM/OpenSSH text; zeroed on drop.
    pem: Secret,
    passphrase: Option<&'a str>,
    encrypted: bool,
}

impl<'a> SshKey<'a> {
    fn decode(private_key: &Secret, passphrase: Option<&'a str>) -> Result<Self, GitError> {
        let invalid = |why: &str| GitError::InvalidKey(format!("repo.auth.private_key: {why}"));
        let compact: Zeroizing<String> = Zeroizing::new(
            private_key
                .expose()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        let bytes = Zeroizing::new(
            STANDARD
                .decode(compact.as_bytes())
                .map_err(|_| invalid("not valid base64"))?,
        );
        let text = std::str::from_utf8(&bytes)
            .ok()
            .filter(|text| !text.contains('\0'))
            .ok_or_else(|| invalid("not base64 of a text (PEM or OpenSSH) private key"))?;
        if !text.contains("PRIVATE KEY-----") {
            return Err(invalid(
                "not base64 of a private key (expected \"-----BEGIN ... PRIVATE KEY-----\")",
            ));
        }
        let encrypted = is_encrypted_key(text);
        let passphrase = passphrase.filter(|p| !p.is_empty());
        if encrypted && passphrase.is_none() {
            return Err(GitError::InvalidKey(
                "repo.auth.private_key is encrypted, but repo.auth.passphrase is not set".into(),
            ));
        }
        Ok(Self {
            // `to_owned` allocates exactly the length, so the secret's buffer
            // is the only copy left once `bytes` is zeroed.
            pem: Secret::new(text.to_owned()),
            passphrase,
            encrypted,
        })
    }

    /// libssh2 could not load the key: say which part of `repo.auth` to fix.
    fn unusable(&self, libssh2_message: &str) -> GitError {
        GitError::InvalidKey(if self.encrypted {
            "repo.auth.passphrase does not decrypt repo.auth.private_key (wrong passphrase?)"
                .to_owned()
        } else {
            format!(
                "repo.auth.private_key: the SSH library cannot use this key ({libssh2_message})"
            )
        })
    }
}

/// Whether a PEM or OpenSSH private key text is passphrase-protected.
fn is_encrypted_key(text: &str) -> bool {
    if text.contains("Proc-Type: 4,ENCRYPTED") || text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return true;
    }
    let Some(body) = pem_body(text, "OPENSSH PRIVATE KEY") else {
        return false;
    };
    // openssh-key-v1: magic, then the cipher name as an SSH string.
    let Some(rest) = body.strip_prefix(b"openssh-key-v1\0".as_slice()) else {
        return false;
    };
    ssh_string(rest).is_some_and(|(cipher, _)| cipher != b"none")
}

/// The base64-decoded body between `-----BEGIN <label>-----` and `-----END`.
fn pem_body(text: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let start = text.find(&begin)? + begin.len();
    let end = start + text[start..].find("-----END")?;
    let compact: Zeroizing<String> = Zeroizing::new(
        text[start..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD.decode(compact.as_bytes()).ok().map(Zeroizing::new)
}

/// Splits one SSH wire-format string (u32 length, bytes) off `data`.
fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let value = data.get(4..4 + len)?;
    Some((value, &data[4 + len..]))
}

/// How a remote is reached: decides shallow fetching, credentials, pins and
/// which submodule URLs are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Ssh,
    Https,
    Local,
    Other,
}

/// The parts of a clone URL the worker needs. Parsing is lenient: the job's
/// URL was validated already, and libgit2 has the final word.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteUrl {
    transport: Transport,
    user: Option<String>,
    /// Host without brackets, as written.
    host: String,
    port: Option<u16>,
    /// The URL without any password or token, for messages.
    display: String,
}

impl RemoteUrl {
    fn parse(url: &str) -> Self {
        if let Some((scheme, rest)) = url.split_once("://") {
            return Self::parse_with_scheme(scheme, rest);
        }
        let local = Self {
            transport: Transport::Local,
            user: None,
            host: String::new(),
            port: None,
            display: url.to_owned(),
        };
        // scp-like `[user@]host:path`; with a `/` before the `:` (or no `:`)
        // git treats it as a local path.
        let Some((user_host, path)) = url.split_once(':') else {
            return local;
        };
        if user_host.contains('/') || url.starts_with(['/', '.', '~']) {
            return local;
        }
        let (user, host) = match user_host.rsplit_once('@') {
            // A `:password` cannot appear here: the first `:` ends the host.
            Some((user, host)) => (Some(user.to_owned()), host),
            None => (None, user_host),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let display = match &user {
            Some(user) => format!("{user}@{}:{path}", bracket(&host)),
            None => format!("{}:{path}", bracket(&host)),
        };
        Self {
            transport: Transport::Ssh,
            user,
            host,
            port: None,
            display,
        }
    }

    fn parse_with_scheme(scheme: &str, rest: &str) -> Self {
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "https" => Transport::Https,
            "file" => Transport::Local,
            _ => Transport::Other,
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        // Only an SSH user name is kept: over HTTPS the user part is often
        // the token itself.
        let user = userinfo
            .filter(|_| transport == Transport::Ssh)
            .map(|info| info.split(':').next().unwrap_or_default().to_owned());
        let (host, port) = split_host_port(host_port);
        let shown_user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        Self {
            transport,
            display: format!("{scheme}://{shown_user}{host_port}{path}"),
            user,
            host,
            port,
        }
    }

    /// `host:port` for messages (port 22 when the URL has none).
    fn host_port(&self) -> String {
        let default = if self.transport == Transport::Https {
            443
        } else {
            22
        };
        format!("{}:{}", bracket(&self.host), self.port.unwrap_or(default))
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(host_port: &str) -> (String, Option<u16>) {
    if let Some(inner) = host_port.strip_prefix('[') {
        let (host, after) = inner.split_once(']').unwrap_or((inner, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_owned(), port);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (host.to_owned(), port.parse().ok())
        }
        _ => (host_port.to_owned(), None),
    }
}

/// Why a host key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKeyProblem {
    /// No line's host patterns match the host.
    NoEntry { name: String },
    /// Lines match the host, but none holds this key.
    Mismatch { listed_types: Vec<String> },
    /// The key is listed as `@revoked`.
    Revoked,
}

impl HostKeyProblem {
    fn message(&self, host_port: &str, key: &[u8]) -> String {
        let head = format!("the SSH host key of {host_port} ({})", describe_key(key));
        match self {
            Self::NoEntry { name } => format!(
                "{head} does not match repo.known_hosts: repo.known_hosts has no entry for {name}"
            ),
            Self::Mismatch { listed_types } => {
                let server_type = key_type_label(&key_type_name(key));
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

/// Checks a server's host key blob (SSH wire format) against OpenSSH
/// `known_hosts` text, as `ssh` with `StrictHostKeyChecking yes` would:
/// plain, wildcard, negated and hashed (`|1|`) host patterns; the name is
/// `host` on port 22 and `[host]:port` otherwise. `@cert-authority` lines
/// are ignored (libssh2 does not hand over host certificates).
fn check_host_key(
    known_hosts: &str,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), HostKeyProblem> {
    let name = known_hosts_name(host, port);
    let mut listed_types = Vec::new();
    let mut accepted = false;
    for line in known_hosts.lines().filter_map(KnownHostLine::parse) {
        if !hosts_match(line.hosts, &name) {
            continue;
        }
        let same_key = line.key.as_deref() == Some(key);
        match line.marker {
            Some("@revoked") if same_key => return Err(HostKeyProblem::Revoked),
            Some(_) => {}
            None => {
                accepted |= same_key;
                if !listed_types.iter().any(|t| t == &line.key_type) {
                    listed_types.push(line.key_type.clone());
                }
            }
        }
    }
    if accepted {
        Ok(())
    } else if listed_types.is_empty() {
        Err(HostKeyProblem::NoEntry { name })
    } else {
        let listed_types = listed_types.iter().map(|t| key_type_label(t)).collect();
        Err(HostKeyProblem::Mismatch { listed_types })
    }
}

/// The name a known_hosts line must match for `host` on `port`.
fn known_hosts_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// One `[@marker] hosts key-type base64-key [comment]` line.
struct KnownHostLine<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key_type: String,
    /// Decoded key blob; `None` when the base64 is broken (never matches).
    key: Option<Vec<u8>>,
}

impl<'a> KnownHostLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        let (marker, hosts) = if first.starts_with('@') {
            (Some(first), fields.next()?)
        } else {
            (None, first)
        };
        let key_type = fields.next()?.to_owned();
        let key = STANDARD.decode(fields.next()?).ok();
        Some(Self {
            marker,
            hosts,
            key_type,
            key,
        })
    }
}

/// OpenSSH's rule: some pattern matches and no negated (`!`) one does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if pattern_matches(negated, name) {
                return false;
            }
        } else if pattern_matches(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    glob_matches(
        pattern.to_ascii_lowercase().as_bytes(),
        name.to_ascii_lowercase().as_bytes(),
    )
}

/// `|1|salt|hash`: base64 HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
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

/// `ED25519 SHA256:<base64>` as `ssh-keygen -l` prints it.
fn describe_key(key: &[u8]) -> String {
    let fingerprint = STANDARD_NO_PAD.encode(Sha256::digest(key));
    format!(
        "{} SHA256:{fingerprint}",
        key_type_label(&key_type_name(key))
    )
}

/// The type name a key blob starts with, e.g. `ssh-ed25519`.
fn key_type_name(key: &[u8]) -> String {
    ssh_string(key)
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_default()
}

fn key_type_label(key_type: &str) -> String {
    match key_type {
        "ssh-ed25519" => "ED25519".to_owned(),
        "ssh-rsa" => "RSA".to_owned(),
        "ssh-dss" => "DSA".to_owned(),
        t if t.starts_with("ecdsa-sha2-") => "ECDSA".to_owned(),
        "" => "unknown type".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{FileMode, Signature, Time};
    use tempfile::TempDir;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";
    const KEY_A_FINGERPRINT: &str = "SHA256:wlyvFlxXco4aYuzSsY34exHH3AKqig4aV3MU839pZ7Y";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIP31+oAJfDvTjXzdCFgXRX6m/UwOxmN4CYDl2RG2V2aH";
    const KEY_C: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJQAYgzu1giOcfHr7ohIW7NRMYD0OJpTsRuUacVLnUlO/8bvv+U9KlfF8EOvFNP7PPzBDiM8JDR1cmhZClC1wtM=";
    /// `ssh-keygen -H` of `[127.0.0.1]:2222 ssh-ed25519 KEY_A`.
    const HASHED_A: &str = "|1|h82dJEUJ5ACHkKcay+Ddl9TGV08=|MeOpetghJYtPinVKCCK9J3SW2QQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";

    fn blob(key: &str) -> Vec<u8> {
        STANDARD.decode(key).unwrap()
    }

    enum Entry<'a> {
        File(&'a str, &'a str),
        Gitlink(&'a str, Oid),
    }

    /// Commits a flat tree; `time` is both author and committer time.
    fn commit(repo: &Repository, entries: &[Entry<'_>], parents: &[Oid], time: i64) -> Oid {
        let mut tree = repo.treebuilder(None).unwrap();
        for entry in entries {
            match entry {
                Entry::File(name, text) => {
                    let blob = repo.blob(text.as_bytes()).unwrap();
                    tree.insert(name, blob, FileMode::Blob.into()).unwrap();
                }
                Entry::Gitlink(name, oid) => {
                    tree.insert(name, *oid, FileMode::Commit.into()).unwrap();
                }
            }
        }
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let signature = Signature::new("Test", "test@example.com", &Time::new(time, 0)).unwrap();
        let parents: Vec<_> = parents
            .iter()
            .map(|p| repo.find_commit(*p).unwrap())
            .collect();
        let parents: Vec<_> = parents.iter().collect();
        repo.commit(None, &signature, &signature, "commit", &tree, &parents)
            .unwrap()
    }

    fn bare(root: &Path, name: &str) -> (Repository, String) {
        let path = root.join(name);
        let repo = Repository::init_bare(&path).unwrap();
        (repo, path.to_str().unwrap().to_owned())
    }

    /// main: c0 <- c1 <- c2; feature: c1 <- c3; tags: light -> c1, v1
    /// (annotated) -> c2. c0 is the tip of nothing.
    struct Upstream {
        _dir: TempDir,
        url: String,
        c: [Oid; 4],
        v1_tag: Oid,
    }

    const T: i64 = 1_700_000_000;

    fn upstream() -> Upstream {
        let dir = TempDir::new().unwrap();
        let (repo, url) = bare(dir.path(), "upstream.git");
        let c0 = commit(&repo, &[Entry::File("README", "zero")], &[], T);
        let c1 = commit(&repo, &[Entry::File("README", "one")], &[c0], T + 10);
        let c2 = commit(&repo, &[Entry::File("README", "two")], &[c1], T + 20);
        let c3 = commit(
            &repo,
            &[
                Entry::File("README", "one"),
                Entry::File("feature.txt", "f"),
            ],
            &[c1],
            T + 30,
        );
        repo.reference("refs/heads/main", c2, true, "").unwrap();
        repo.reference("refs/heads/feature", c3, true, "").unwrap();
        repo.set_head("refs/heads/main").unwrap();
        repo.reference("refs/tags/light", c1, true, "").unwrap();
        let tagger = Signature::new("Test", "test@example.com", &Time::new(T, 0)).unwrap();
        let target = repo.find_object(c2, None).unwrap();
        let v1_tag = repo.tag("v1", &target, &tagger, "release", false).unwrap();
        Upstream {
            _dir: dir,
            url,
            c: [c0, c1, c2, c3],
            v1_tag,
        }
    }

    fn job_repo(url: &str, revision: &str) -> Repo {
        Repo {
            url: url.to_owned(),
            revision: revision.to_owned(),
            auth: RepoAuth::None,
            known_hosts: None,
            submodules: false,
        }
    }

    struct Fetched {
        dir: TempDir,
        result: Result<Checkout, GitError>,
        lines: Vec<String>,
    }

    fn fetch_as(repo: &Repo, policy: Policy) -> Fetched {
        let dir = TempDir::new().unwrap();
        let mut lines = Vec::new();
        let result = fetch_with_policy(
            repo,
            &dir.path().join("src"),
            &mut |line| lines.push(line.to_owned()),
            policy,
        );
        Fetched { dir, result, lines }
    }

    const TESTS: Policy = Policy {
        local_submodules: true,
    };

    fn fetch(url: &str, revision: &str) -> Fetched {
        fetch_as(&job_repo(url, revision), TESTS)
    }

    impl Fetched {
        fn checkout(&self) -> &Checkout {
            self.result.as_ref().unwrap()
        }

        fn error(&self) -> String {
            match &self.result {
                Ok(checkout) => panic!("expected an error, got {checkout:?}"),
                Err(e) => e.to_string(),
            }
        }

        fn read(&self, path: &str) -> String {
            std::fs::read_to_string(self.dir.path().join("src").join(path)).unwrap()
        }

        fn head(&self) -> Oid {
            let repo = Repository::open(self.dir.path().join("src")).unwrap();
            assert!(repo.head_detached().unwrap());
            let head = repo.head().unwrap().target().unwrap();
            head
        }
    }

    #[test]
    fn fetches_the_tip_by_sha_with_its_commit_time() {
        let up = upstream();
        let sha = up.c[2].to_string();
        let fetched = fetch(&up.url, &sha);
        assert_eq!(
            fetched.checkout(),
            &Checkout {
                commit: sha.clone(),
                commit_time: T + 20
            }
        );
        assert_eq!(fetched.read("README"), "two");
        assert_eq!(fetched.head(), up.c[2]);
        assert_eq!(
            fetched.lines.first().unwrap(),
            &format!("fetching {sha} from {}", up.url)
        );
        assert_eq!(fetched.lines.last().unwrap(), &format!("checked out {sha}"));
    }

    #[test]
    fn fetches_a_commit_no_ref_points_at() {
        let up = upstream();
        let fetched = fetch(&up.url, &up.c[0].to_string());
        assert_eq!(fetched.checkout().commit, up.c[0].to_string());
        assert_eq!(fetched.checkout().commit_time, T);
        assert_eq!(fetched.read("README"), "zero");
        assert_eq!(fetched.head(), up.c[0]);
    }

    #[test]
    fn fetches_branches_by_short_and_full_name() {
        let up = upstream();
        for (revision, commit) in [
            ("feature", up.c[3]),
            ("refs/heads/feature", up.c[3]),
            ("main", up.c[2]),
            ("HEAD", up.c[2]),
        ] {
            let fetched = fetch(&up.url, revision);
            assert_eq!(fetched.checkout().commit, commit.to_string(), "{revision}");
            assert_eq!(fetched.head(), commit, "{revision}");
        }
        assert_eq!(fetch(&up.url, "feature").read("feature.txt"), "f");
    }

    #[test]
    fn fetches_lightweight_and_annotated_tags_as_commits() {
        let up = upstream();
        for (revision, commit) in [
            ("light".to_owned(), up.c[1]),
            ("v1".to_owned(), up.c[2]),
            ("refs/tags/v1".to_owned(), up.c[2]),
            (up.v1_tag.to_string(), up.c[2]),
        ] {
            let fetched = fetch(&up.url, &revision);
            assert_eq!(fetched.checkout().commit, commit.to_string(), "{revision}");
            assert_eq!(fetched.head(), commit, "{revision}");
        }
    }

    #[test]
    fn unknown_sha_is_an_unknown_revision() {
        let up = upstream();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let fetched = fetch(&up.url, sha);
        assert!(matches!(fetched.result, Err(GitError::UnknownRevision(_))));
        assert_eq!(
            fetched.error(),
            format!("revision {sha} not found in {}", up.url)
        );
    }

    #[test]
    fn unknown_name_is_an_unknown_revision() {
        let up = upstream();
        let fetched = fetch(&up.url, "no-such-branch");
        assert!(matches!(fetched.result, Err(GitError::UnknownRevision(_))));
        assert_eq!(
            fetched.error(),
            format!(
                "revision 'no-such-branch' is neither a branch nor a tag of {}",
                up.url
            )
        );
    }

    #[test]
    fn sha256_revisions_are_refused_up_front() {
        let fetched = fetch("/nonexistent", &"ab".repeat(32));
        assert!(fetched.error().contains("SHA-256"), "{}", fetched.error());
    }

    #[test]
    fn unreachable_remote_names_the_url() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing.git");
        let fetched = fetch(missing.to_str().unwrap(), "main");
        assert!(matches!(fetched.result, Err(GitError::Remote { .. })));
        assert!(
            fetched.error().starts_with(&format!(
                "cannot reach the git remote {}: ",
                missing.display()
            )),
            "{}",
            fetched.error()
        );
    }

    /// A server that accepts connections and never says a word.
    fn silent_server() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            // Held, never answered, until the test process ends.
            let held: Vec<_> = listener.incoming().take(8).collect();
            std::thread::sleep(Duration::from_secs(600));
            drop(held);
        });
        addr
    }

    /// libgit2's timeouts are process-wide: tests that set them take turns,
    /// or one test's 300 s read timeout lands in the middle of another's.
    static GIT_TIMEOUTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_silent_server_fails_the_clone_at_the_read_timeout() {
        let _turn = GIT_TIMEOUTS.lock().unwrap_or_else(|e| e.into_inner());
        let read_timeout = Duration::from_secs(1);
        set_network_timeouts(Duration::from_secs(5), read_timeout).unwrap();
        let addr = silent_server();
        for url in [
            format!("ssh://git@{addr}/repo.git"),
            format!("https://{addr}/repo.git"),
        ] {
            let started = Instant::now();
            let fetched = fetch_as(&job_repo(&url, "main"), Policy::JOB);
            let error = fetched.error();
            assert!(
                matches!(fetched.result, Err(GitError::Remote { .. })),
                "{url}: {error}"
            );
            assert!(error.contains("timed out"), "{url}: {error}");
            // Not a speed target: without the timeout this never returns.
            assert!(started.elapsed() < Duration::from_secs(30), "{url}");
        }
    }

    /// parent.git has `deps/lib` -> sub.git (relative URL) at an old commit;
    /// sub.git has `leaf` -> leaf.git (absolute URL).
    struct Nested {
        _dir: TempDir,
        parent_url: String,
        parent: Oid,
        sub: Oid,
        leaf: Oid,
    }

    fn nested() -> Nested {
        let dir = TempDir::new().unwrap();
        let (leaf_repo, leaf_url) = bare(dir.path(), "leaf.git");
        let leaf = commit(&leaf_repo, &[Entry::File("leaf.txt", "leaf")], &[], T);
        leaf_repo
            .reference("refs/heads/main", leaf, true, "")
            .unwrap();

        let (sub_repo, _) = bare(dir.path(), "sub.git");
        let sub_modules = format!("[submodule \"leaf\"]\n\tpath = leaf\n\turl = {leaf_url}\n");
        let sub = commit(
            &sub_repo,
            &[
                Entry::File(".gitmodules", &sub_modules),
                Entry::File("lib.txt", "old lib"),
                Entry::Gitlink("leaf", leaf),
            ],
            &[],
            T,
        );
        let newer = commit(
            &sub_repo,
            &[Entry::File("lib.txt", "new lib")],
            &[sub],
            T + 5,
        );
        sub_repo
            .reference("refs/heads/main", newer, true, "")
            .unwrap();

        let (parent_repo, parent_url) = bare(dir.path(), "parent.git");
        let modules = "[submodule \"lib\"]\n\tpath = deps/lib\n\turl = ../sub.git\n";
        let mut deps = parent_repo.treebuilder(None).unwrap();
        deps.insert("lib", sub, FileMode::Commit.into()).unwrap();
        let deps = deps.write().unwrap();
        let mut root = parent_repo.treebuilder(None).unwrap();
        let modules_blob = parent_repo.blob(modules.as_bytes()).unwrap();
        root.insert(".gitmodules", modules_blob, FileMode::Blob.into())
            .unwrap();
        root.insert("deps", deps, FileMode::Tree.into()).unwrap();
        let tree = parent_repo.find_tree(root.write().unwrap()).unwrap();
        let signature = Signature::new("Test", "test@example.com", &Time::new(T, 0)).unwrap();
        let parent = parent_repo
            .commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                "p",
                &tree,
                &[],
            )
            .unwrap();
        Nested {
            _dir: dir,
            parent_url,
            parent,
            sub,
            leaf,
        }
    }

    #[test]
    fn checks_out_submodules_recursively_at_their_recorded_commits() {
        let n = nested();
        let mut repo = job_repo(&n.parent_url, "main");
        repo.submodules = true;
        let fetched = fetch_as(&repo, TESTS);
        assert_eq!(fetched.checkout().commit, n.parent.to_string());
        assert_eq!(fetched.read("deps/lib/lib.txt"), "old lib");
        assert_eq!(fetched.read("deps/lib/leaf/leaf.txt"), "leaf");
        let sub = format!("submodule deps/lib at {}", n.sub);
        let leaf = format!("submodule leaf at {}", n.leaf);
        assert!(fetched.lines.contains(&sub), "{:?}", fetched.lines);
        assert!(fetched.lines.contains(&leaf), "{:?}", fetched.lines);
    }

    #[test]
    fn submodules_are_skipped_unless_asked_for() {
        let n = nested();
        let fetched = fetch(&n.parent_url, "main");
        assert_eq!(fetched.checkout().commit, n.parent.to_string());
        let lib = fetched.dir.path().join("src/deps/lib/lib.txt");
        assert!(!lib.exists());
    }

    #[test]
    fn jobs_never_follow_submodules_to_local_paths() {
        let n = nested();
        let mut repo = job_repo(&n.parent_url, "main");
        repo.submodules = true;
        let fetched = fetch_as(&repo, Policy::JOB);
        let GitError::Submodule { path, .. } = fetched.result.as_ref().unwrap_err() else {
            panic!("{}", fetched.error());
        };
        assert_eq!(path, "deps/lib");
        assert!(
            fetched
                .error()
                .contains("submodules are fetched only over ssh://"),
            "{}",
            fetched.error()
        );
    }

    /// Base64 of an unencrypted or encrypted OpenSSH private key container
    /// (the key material itself is irrelevant here).
    fn openssh_key(cipher: &str) -> String {
        let mut body = b"openssh-key-v1\0".to_vec();
        for field in [cipher, "none", ""] {
            body.extend_from_slice(&(field.len() as u32).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        let pem = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            STANDARD.encode(body)
        );
        STANDARD.encode(pem)
    }

    fn ssh_auth(key: String, passphrase: Option<&str>) -> RepoAuth {
        RepoAuth::SshKey {
            private_key: Secret::new(key),
            passphrase: passphrase.map(Secret::new),
        }
    }

    #[test]
    fn private_key_must_be_base64_of_a_key() {
        let error = |key: &str| {
            let Err(e) = Auth::from_job(&ssh_auth(key.to_owned(), None)) else {
                panic!("{key} accepted");
            };
            assert!(matches!(e, GitError::InvalidKey(_)));
            e.to_string()
        };
        assert_eq!(
            error("not base64!"),
            "repo.auth.private_key: not valid base64"
        );
        assert!(error(&STANDARD.encode("hello")).contains("not base64 of a private key"));
        assert!(error(&STANDARD.encode([0xff, 0xfe])).contains("not base64 of a text"));
    }

    #[test]
    fn encrypted_keys_need_a_passphrase() {
        let Err(e) = Auth::from_job(&ssh_auth(openssh_key("aes256-ctr"), None)) else {
            panic!("accepted");
        };
        assert_eq!(
            e.to_string(),
            "repo.auth.private_key is encrypted, but repo.auth.passphrase is not set"
        );
        let encrypted = ssh_auth(openssh_key("aes256-ctr"), Some("pw"));
        let Ok(Auth::SshKey(key)) = Auth::from_job(&encrypted) else {
            panic!("refused");
        };
        assert!(key.encrypted);
        let plain = ssh_auth(openssh_key("none"), None);
        let Ok(Auth::SshKey(key)) = Auth::from_job(&plain) else {
            panic!("refused");
        };
        assert!(!key.encrypted);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(is_encrypted_key(pem));
        assert!(is_encrypted_key(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
        ));
        assert!(!is_encrypted_key(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
        ));
    }

    #[test]
    fn errors_never_contain_secrets() {
        let token = "tok-3f9a-very-secret";
        let passphrase = "pass-8c1d-very-secret";
        let cases = [
            (
                "https://127.0.0.1:1/team/app.git",
                RepoAuth::Https {
                    username: "ci".into(),
                    token: Secret::new(token),
                },
            ),
            (
                "ssh://git@127.0.0.1:1/team/app.git",
                ssh_auth(openssh_key("aes256-ctr"), Some(passphrase)),
            ),
        ];
        for (url, auth) in cases {
            let mut repo = job_repo(url, "main");
            repo.auth = auth;
            let fetched = fetch_as(&repo, Policy::JOB);
            let message = fetched.error();
            assert!(
                matches!(fetched.result, Err(GitError::Remote { .. })),
                "{message}"
            );
            assert!(
                message.starts_with(&format!("cannot reach the git remote {url}")),
                "{message}"
            );
            for secret in [token, passphrase, &openssh_key("aes256-ctr")] {
                assert!(!message.contains(secret), "{message}");
                assert!(!format!("{:?}", fetched.result).contains(secret));
            }
        }
    }

    #[test]
    fn scrub_masks_the_token() {
        let auth = RepoAuth::Https {
            username: "ci".into(),
            token: Secret::new("s3cr3t-token"),
        };
        let mut progress = |_: &str| {};
        let session = Session {
            auth: Auth::from_job(&auth).unwrap(),
            known_hosts: None,
            credentials_host: "example.com".into(),
            policy: Policy::JOB,
            progress: RefCell::new(&mut progress),
        };
        assert_eq!(
            session.scrub("bad url https://ci:s3cr3t-token@example.com/"),
            "bad url https://ci:[REDACTED]@example.com/"
        );
    }

    #[test]
    fn parses_clone_urls_and_drops_credentials_from_display() {
        let url = RemoteUrl::parse("ssh://git@127.0.0.1:2222/srv/app.git");
        assert_eq!(url.transport, Transport::Ssh);
        assert_eq!(url.user.as_deref(), Some("git"));
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", Some(2222)));
        assert_eq!(url.host_port(), "127.0.0.1:2222");

        let url = RemoteUrl::parse("git@github.com:team/app.git");
        assert_eq!(url.transport, Transport::Ssh);
        assert_eq!((url.host.as_str(), url.port), ("github.com", None));
        assert_eq!(url.display, "git@github.com:team/app.git");
        assert_eq!(url.host_port(), "github.com:22");

        let url = RemoteUrl::parse("https://user:tok@example.com:8443/app.git");
        assert_eq!(url.transport, Transport::Https);
        assert_eq!(url.display, "https://example.com:8443/app.git");
        assert_eq!(url.user, None);

        let url = RemoteUrl::parse("ssh://me:pw@[::1]:2222/app.git");
        assert_eq!(url.display, "ssh://me@[::1]:2222/app.git");
        assert_eq!((url.host.as_str(), url.port), ("::1", Some(2222)));
        assert_eq!(url.host_port(), "[::1]:2222");

        for local in [
            "/srv/app.git",
            "./app",
            "file:///srv/app.git",
            "dir/with:colon",
        ] {
            assert_eq!(
                RemoteUrl::parse(local).transport,
                Transport::Local,
                "{local}"
            );
        }
        assert_eq!(
            RemoteUrl::parse("git://host/app").transport,
            Transport::Other
        );
        assert_eq!(
            RemoteUrl::parse("http://host/app").transport,
            Transport::Other
        );
    }

    #[test]
    fn resolves_names_like_git_clone_branch() {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        let heads = vec![
            ("HEAD".to_owned(), oid(1)),
            ("refs/heads/main".to_owned(), oid(1)),
            ("refs/heads/both".to_owned(), oid(2)),
            ("refs/tags/both".to_owned(), oid(3)),
            ("refs/tags/v1".to_owned(), oid(4)),
            ("refs/tags/v1^{}".to_owned(), oid(5)),
        ];
        assert_eq!(
            resolve_name(&heads, "both").as_deref(),
            Some("refs/heads/both")
        );
        assert_eq!(
            resolve_name(&heads, "refs/tags/both").as_deref(),
            Some("refs/tags/both")
        );
        assert_eq!(resolve_name(&heads, "v1").as_deref(), Some("refs/tags/v1"));
        assert_eq!(resolve_name(&heads, "HEAD").as_deref(), Some("HEAD"));
        assert_eq!(resolve_name(&heads, "nope"), None);
        assert_eq!(
            ref_pointing_at(&heads, oid(5)).as_deref(),
            Some("refs/tags/v1")
        );
        assert_eq!(
            ref_pointing_at(&heads, oid(1)).as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(ref_pointing_at(&heads, oid(9)), None);
        assert_eq!(
            refspec_for("refs/heads/main"),
            (
                "+refs/heads/main:refs/remotes/origin/main".into(),
                "refs/remotes/origin/main".into()
            )
        );
        assert_eq!(refspec_for("refs/tags/v1").1, "refs/tags/v1");
        assert_eq!(refspec_for("HEAD").1, FETCHED_REF);
    }

    #[test]
    fn known_hosts_accepts_the_pinned_key_for_the_host_and_port() {
        let known = format!("# pinned\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n");
        assert_eq!(
            check_host_key(&known, "127.0.0.1", 2222, &blob(KEY_A)),
            Ok(())
        );
        let known = format!("github.com,gitlab.com ssh-ed25519 {KEY_A} comment here");
        assert_eq!(
            check_host_key(&known, "GitLab.com", 22, &blob(KEY_A)),
            Ok(())
        );
        let known = format!("*.example.com,!evil.example.com ssh-ed25519 {KEY_A}");
        assert_eq!(
            check_host_key(&known, "git.example.com", 22, &blob(KEY_A)),
            Ok(())
        );
        assert_eq!(
            check_host_key(&known, "evil.example.com", 22, &blob(KEY_A)),
            Err(HostKeyProblem::NoEntry {
                name: "evil.example.com".into()
            })
        );
        assert_eq!(
            check_host_key(HASHED_A, "127.0.0.1", 2222, &blob(KEY_A)),
            Ok(())
        );
        let known = format!("[127.0.0.1]:2222 ecdsa-sha2-nistp256 {KEY_C}\n{HASHED_A}");
        assert_eq!(
            check_host_key(&known, "127.0.0.1", 2222, &blob(KEY_A)),
            Ok(())
        );
    }

    #[test]
    fn known_hosts_rejects_other_keys_hosts_and_ports() {
        let known = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY_A}");
        assert_eq!(
            check_host_key(&known, "127.0.0.1", 2222, &blob(KEY_B)),
            Err(HostKeyProblem::Mismatch {
                listed_types: vec!["ED25519".into()]
            })
        );
        assert_eq!(
            check_host_key(&known, "127.0.0.1", 22, &blob(KEY_A)),
            Err(HostKeyProblem::NoEntry {
                name: "127.0.0.1".into()
            })
        );
        assert_eq!(
            check_host_key(HASHED_A, "127.0.0.2", 2222, &blob(KEY_A)),
            Err(HostKeyProblem::NoEntry {
                name: "[127.0.0.2]:2222".into()
            })
        );
        let known = format!("127.0.0.1 ssh-ed25519 {KEY_A}");
        assert!(check_host_key(&known, "127.0.0.1", 2222, &blob(KEY_A)).is_err());
        let known = format!("@cert-authority * ssh-ed25519 {KEY_A}");
        assert!(check_host_key(&known, "127.0.0.1", 22, &blob(KEY_A)).is_err());
        let known = format!("* ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}");
        assert_eq!(
            check_host_key(&known, "127.0.0.1", 22, &blob(KEY_A)),
            Err(HostKeyProblem::Revoked)
        );
    }

    #[test]
    fn host_key_messages_name_host_type_and_fingerprint() {
        let mismatch = HostKeyProblem::Mismatch {
            listed_types: vec!["ECDSA".into()],
        };
        assert_eq!(
            mismatch.message("127.0.0.1:2222", &blob(KEY_A)),
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
            .message("127.0.0.1:2222", &blob(KEY_A))
            .ends_with("(it lists ED25519 for this host)"));
        let none = HostKeyProblem::NoEntry {
            name: "[127.0.0.1]:2222".into(),
        };
        assert_eq!(
            none.message("127.0.0.1:2222", &blob(KEY_A)),
            format!(
                "the SSH host key of 127.0.0.1:2222 (ED25519 {KEY_A_FINGERPRINT}) does not match \
                 repo.known_hosts: repo.known_hosts has no entry for [127.0.0.1]:2222"
            )
        );
        assert!(describe_key(&blob(KEY_C)).starts_with("ECDSA SHA256:"));
    }

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

    #[test]
    fn network_timeouts_reach_libgit2() {
        let _turn = GIT_TIMEOUTS.lock().unwrap_or_else(|e| e.into_inner());
        set_network_timeouts(Duration::from_secs(30), Duration::from_secs(300)).unwrap();
        // SAFETY: reads of libgit2's integer options.
        let (connect, read) = unsafe {
            (
                git2::opts::get_server_connect_timeout_in_milliseconds().unwrap(),
                git2::opts::get_server_timeout_in_milliseconds().unwrap(),
            )
        };
        assert_eq!((connect, read), (30_000, 300_000));
    }

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
}
