//! One connection to a remote: the callbacks libgit2 calls while it is open
//! (credentials, host key, transfer progress), the state they share, and
//! the precise [`GitError`] a failed connection ends with. The progress
//! callbacks also enforce the clone's budget: over the byte cap, or once
//! the job is cancelled, they abort the transfer.

use super::credentials::Offered;
use super::host_key::{check_certificate, Verdict};
use super::progress::Throttle;
use super::remote::Remote;
use super::session::Session;
use super::GitError;
use git2::{ErrorClass, ErrorCode, RemoteCallbacks};
use std::cell::{Cell, RefCell};

/// What libgit2 is told when a callback stops the connection; the user
/// sees the error the callback recorded instead.
const STOPPED: &str = "stopped by the buildbot worker";

/// Per-connection state shared by the callbacks.
#[derive(Default)]
pub(super) struct Attempt {
    offered: Offered,
    /// The precise error a callback decided on; libgit2 only sees a code.
    failure: RefCell<Option<GitError>>,
    throttle: RefCell<Throttle>,
    /// Bytes this connection had received at its last progress callback.
    received: Cell<usize>,
}

impl Attempt {
    /// Records `error` for [`Session::classify`] and stops libgit2.
    fn fail(&self, error: GitError) -> git2::Error {
        *self.failure.borrow_mut() = Some(error);
        git2::Error::from_str(STOPPED)
    }

    /// Whether a progress callback lets libgit2 go on; a stop is recorded
    /// first, so [`Session::classify`] reports it instead of libgit2's
    /// generic error.
    fn keep_going(&self, budget: Result<(), GitError>) -> bool {
        match budget {
            Ok(()) => true,
            Err(error) => {
                self.fail(error);
                false
            }
        }
    }
}

impl Session<'_, '_> {
    /// The callbacks of one connection to `remote`.
    pub(super) fn callbacks<'c>(
        &'c self,
        remote: &'c Remote,
        attempt: &'c Attempt,
    ) -> RemoteCallbacks<'c> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |url, user, allowed| {
            self.budget
                .check()
                .and_then(|()| {
                    self.auth
                        .credentials(remote, url, &attempt.offered, user, allowed)
                })
                .map_err(|error| attempt.fail(error))
        });
        callbacks.certificate_check(move |cert, _host| {
            let verdict = self
                .budget
                .check()
                .and_then(|()| check_certificate(&self.host_keys, remote, cert))
                .map_err(|error| attempt.fail(error))?;
            if verdict == Verdict::Unchecked {
                self.note_unchecked_host_key();
            }
            Ok(verdict.status())
        });
        callbacks.transfer_progress(move |stats| self.on_progress(attempt, &stats));
        // The server's own messages ("Counting objects...") come before
        // the pack: a cancel is noticed there too.
        callbacks.sideband_progress(move |_| attempt.keep_going(self.budget.check()));
        callbacks
    }

    /// One transfer progress report: counted against the byte cap, and
    /// shown now and then. `false` aborts the transfer.
    fn on_progress(&self, attempt: &Attempt, stats: &git2::Progress<'_>) -> bool {
        let now = stats.received_bytes();
        let more = now.saturating_sub(attempt.received.replace(now));
        let budget = self.budget.receive(u64::try_from(more).unwrap_or(u64::MAX));
        if !attempt.keep_going(budget) {
            return false;
        }
        if let Some(line) = attempt.throttle.borrow_mut().line(stats) {
            self.say(&line);
        }
        true
    }

    /// Turns a libgit2 failure into the precise error: what a callback
    /// recorded first, else what libgit2's error class says.
    pub(super) fn classify(
        &self,
        error: git2::Error,
        remote: &Remote,
        attempt: &Attempt,
    ) -> GitError {
        if let Some(recorded) = attempt.failure.borrow_mut().take() {
            return recorded;
        }
        let message = explain_timeout(self.auth.scrub(error.message().trim()));
        if let Some(unusable) = self.auth.unusable_key(&attempt.offered, &error, &message) {
            return unusable;
        }
        let url = remote.to_string();
        match error.code() {
            ErrorCode::Auth => GitError::Authentication(format!(
                "the git remote {url} refused authentication: {message}"
            )),
            _ if error.code() == ErrorCode::Certificate || error.class() == ErrorClass::Ssl => {
                GitError::Remote {
                    url,
                    message: format!("TLS with {}: {message}", remote.host_port()),
                }
            }
            _ => GitError::Remote { url, message },
        }
    }
}

/// Says what a read timeout (see `set_network_timeouts`) means: over TLS it
/// surfaces as EAGAIN, over SSH in libssh2's own words.
fn explain_timeout(message: String) -> String {
    if message.contains("Resource temporarily unavailable")
        || message.contains("Timed out waiting on socket")
    {
        format!(
            "timed out: the server sent nothing within the read timeout \
             (--git-read-timeout-secs) ({message})"
        )
    } else {
        message
    }
}
