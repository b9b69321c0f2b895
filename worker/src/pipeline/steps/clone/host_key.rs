//! The SSH host key a server presents, checked against the pin in force:
//! the job's `repo.known_hosts`, else the worker's `--known-hosts` file
//! (both parsed by the protocol's grammar, which owns the OpenSSH matching
//! rules, hashed hosts included). With neither, SSH fails closed unless
//! the worker was started with `--accept-any-host-key`. TLS certificates
//! are left to libgit2's own verification.

use super::remote::Remote;
use super::GitError;
use buildbot_protocol::grammar::{HostKey, KnownHosts, KnownHostsError};
use git2::cert::Cert;
use git2::CertificateCheckStatus;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the worker does with a job that pins no SSH host key.
#[derive(Debug, Clone, Default)]
pub(crate) enum HostKeyDefault {
    /// Refuse to talk SSH: no pin, no clone.
    #[default]
    Refuse,
    /// Check against the worker's `--known-hosts` file.
    Pinned(Arc<KnownHosts>),
    /// Accept any key (`--accept-any-host-key`, an explicit opt-in).
    AcceptAny,
}

/// Why the worker's `--known-hosts` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KnownHostsFileError {
    // The causes are fields, not `source`s: the message already says it
    // all, and an error chain would repeat it.
    #[error("cannot read the --known-hosts file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the --known-hosts file {} is not valid known_hosts text: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: KnownHostsError,
    },
}

impl HostKeyDefault {
    /// The pin of the worker's `--known-hosts` file, parsed once at start.
    pub(crate) fn from_file(path: &Path) -> Result<Self, KnownHostsFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| KnownHostsFileError::Read {
            path: path.to_owned(),
            error,
        })?;
        let known_hosts = KnownHosts::parse(&text).map_err(|error| KnownHostsFileError::Parse {
            path: path.to_owned(),
            error,
        })?;
        Ok(Self::Pinned(Arc::new(known_hosts)))
    }
}

/// Where the pin in force for one clone comes from, as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PinSource {
    Job,
    Worker,
}

impl PinSource {
    fn label(self) -> &'static str {
        match self {
            PinSource::Job => "repo.known_hosts",
            PinSource::Worker => "the worker's --known-hosts file",
        }
    }
}

/// The host key rule of one clone (main repository and submodules alike).
#[derive(Debug, Clone)]
pub(super) enum HostKeyTrust {
    Pinned(Arc<KnownHosts>, PinSource),
    Refuse,
    AcceptAny,
}

impl HostKeyTrust {
    /// The job's pin wins; else the worker's default.
    pub(super) fn resolve(job: Option<KnownHosts>, default: &HostKeyDefault) -> Self {
        match (job, default) {
            (Some(pin), _) => Self::Pinned(Arc::new(pin), PinSource::Job),
            (None, HostKeyDefault::Pinned(pin)) => Self::Pinned(Arc::clone(pin), PinSource::Worker),
            (None, HostKeyDefault::Refuse) => Self::Refuse,
            (None, HostKeyDefault::AcceptAny) => Self::AcceptAny,
        }
    }
}

/// The line each job whose SSH host key goes unchecked gets in its log.
pub(super) const ACCEPTING_ANY_KEY: &str = "WARNING: the SSH host key is not verified: the job \
     has no repo.known_hosts and this worker runs with --accept-any-host-key";

/// What libgit2's certificate check for `remote` decides.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not an SSH host key: libgit2 verifies TLS itself.
    Passthrough,
    /// The key matches the pin.
    Verified,
    /// Accepted unchecked (`--accept-any-host-key`); the job is told.
    Unchecked,
}

/// libgit2's certificate check for `remote`: an SSH host key must match
/// the pin in force; without one it is refused, unless the worker accepts
/// any key.
pub(super) fn check_certificate(
    trust: &HostKeyTrust,
    remote: &Remote,
    cert: &Cert<'_>,
) -> Result<Verdict, GitError> {
    let Some(hostkey) = cert.as_hostkey() else {
        return Ok(Verdict::Passthrough);
    };
    let (known_hosts, source) = match trust {
        HostKeyTrust::Pinned(known_hosts, source) => (known_hosts, *source),
        HostKeyTrust::AcceptAny => return Ok(Verdict::Unchecked),
        HostKeyTrust::Refuse => return Err(not_pinned(remote)),
    };
    let Some(blob) = hostkey.hostkey() else {
        return Err(GitError::HostKeyMismatch(format!(
            "the SSH server {} sent no host key to compare with {}",
            remote.host_port(),
            source.label()
        )));
    };
    check_host_key(known_hosts, source, remote, blob)?;
    Ok(Verdict::Verified)
}

impl Verdict {
    /// libgit2's status for this verdict.
    pub(super) fn status(&self) -> CertificateCheckStatus {
        match self {
            Verdict::Passthrough => CertificateCheckStatus::CertificatePassthrough,
            Verdict::Verified | Verdict::Unchecked => CertificateCheckStatus::CertificateOk,
        }
    }
}

/// The error of an SSH connection with no pin: names both ways to give one.
fn not_pinned(remote: &Remote) -> GitError {
    GitError::HostKeyNotPinned(format!(
        "refusing to trust the SSH host key of {}: the job has no repo.known_hosts and this \
         worker has no --known-hosts file (BUILDBOT_KNOWN_HOSTS); pin the server's key in \
         either, or start the worker with --accept-any-host-key to skip the check",
        remote.host_port()
    ))
}

/// Whether `remote` may present the key `blob` (SSH wire format).
fn check_host_key(
    known_hosts: &KnownHosts,
    source: PinSource,
    remote: &Remote,
    blob: &[u8],
) -> Result<(), GitError> {
    let Remote::Network(url) = remote else {
        // libgit2's local transport has no host key to send.
        return Err(GitError::HostKeyMismatch(format!(
            "{remote} sent an SSH host key, but is not an SSH remote"
        )));
    };
    let key = HostKey::from_blob(blob);
    known_hosts
        .check_host_key(url.host(), url.port_or_default(), &key)
        .map_err(|problem| {
            // The grammar names the job's field; a worker pin says so instead.
            let message = problem.message(&url.host_port(), &key);
            GitError::HostKeyMismatch(message.replace("repo.known_hosts", source.label()))
        })
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;
    use buildbot_protocol::grammar::base64;

    // The grammar's tests cover the matching rules; these pin that a
    // remote's host and port reach them and the message names the server.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";
    const KEY_A_FINGERPRINT: &str = "SHA256:wlyvFlxXco4aYuzSsY34exHH3AKqig4aV3MU839pZ7Y";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIP31+oAJfDvTjXzdCFgXRX6m/UwOxmN4CYDl2RG2V2aH";
    /// `ssh-keygen -H` of `[127.0.0.1]:2222 ssh-ed25519 KEY_A`.
    const HASHED_A: &str = "|1|h82dJEUJ5ACHkKcay+Ddl9TGV08=|MeOpetghJYtPinVKCCK9J3SW2QQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";

    fn check(known_hosts: &str, url: &str, key: &str) -> Result<(), GitError> {
        let known_hosts = KnownHosts::parse(known_hosts).unwrap();
        let remote = Remote::parse(url, Policy::JOB).unwrap();
        let key = base64::decode(key).unwrap();
        check_host_key(&known_hosts, PinSource::Job, &remote, &key)
    }

    #[test]
    fn the_pinned_key_of_the_host_and_port_is_accepted() {
        let url = "ssh://git@127.0.0.1:2222/srv/app.git";
        let plain = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY_A}");
        assert!(check(&plain, url, KEY_A).is_ok());
        assert!(check(HASHED_A, url, KEY_A).is_ok());
        let scp_like = format!("github.com ssh-ed25519 {KEY_A}");
        assert!(check(&scp_like, "git@GitHub.com:team/app.git", KEY_A).is_ok());
    }

    #[test]
    fn another_key_or_port_is_refused_naming_the_server() {
        let error = check(HASHED_A, "ssh://git@127.0.0.1:2222/x", KEY_B).unwrap_err();
        assert!(matches!(error, GitError::HostKeyMismatch(_)));
        assert!(
            error
                .to_string()
                .starts_with("the SSH host key of 127.0.0.1:2222 (ED25519 SHA256:"),
            "{error}"
        );
        let error = check(HASHED_A, "ssh://git@127.0.0.1/x", KEY_A).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the SSH host key of 127.0.0.1:22 (ED25519 {KEY_A_FINGERPRINT}) does not match \
                 repo.known_hosts: repo.known_hosts has no entry for 127.0.0.1"
            )
        );
    }

    #[test]
    fn the_jobs_pin_wins_then_the_workers_then_the_default() {
        let job = KnownHosts::parse(HASHED_A).unwrap();
        let worker = HostKeyDefault::Pinned(Arc::new(KnownHosts::parse(HASHED_A).unwrap()));
        let resolve = HostKeyTrust::resolve;
        assert!(matches!(
            resolve(Some(job), &worker),
            HostKeyTrust::Pinned(_, PinSource::Job)
        ));
        assert!(matches!(
            resolve(None, &worker),
            HostKeyTrust::Pinned(_, PinSource::Worker)
        ));
        assert!(matches!(
            resolve(None, &HostKeyDefault::Refuse),
            HostKeyTrust::Refuse
        ));
        assert!(matches!(
            resolve(None, &HostKeyDefault::AcceptAny),
            HostKeyTrust::AcceptAny
        ));
    }

    #[test]
    fn a_worker_pin_is_named_in_the_message() {
        let known_hosts = KnownHosts::parse(HASHED_A).unwrap();
        let remote = Remote::parse("ssh://git@127.0.0.1:2222/x", Policy::JOB).unwrap();
        let key = base64::decode(KEY_B).unwrap();
        let error = check_host_key(&known_hosts, PinSource::Worker, &remote, &key).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("does not match the worker's --known-hosts file"),
            "{message}"
        );
        assert!(!message.contains("repo.known_hosts"), "{message}");
    }

    #[test]
    fn without_a_pin_the_message_names_both_options() {
        let remote = Remote::parse("ssh://git@127.0.0.1:2222/x", Policy::JOB).unwrap();
        let error = not_pinned(&remote);
        assert!(matches!(error, GitError::HostKeyNotPinned(_)));
        assert_eq!(
            error.to_string(),
            "refusing to trust the SSH host key of 127.0.0.1:2222: the job has no \
             repo.known_hosts and this worker has no --known-hosts file (BUILDBOT_KNOWN_HOSTS); \
             pin the server's key in either, or start the worker with --accept-any-host-key \
             to skip the check"
        );
    }
}
