//! One connection to a remote: the callbacks libgit2 calls while it is open
//! (credentials, host key, transfer progress), the state they share, and
//! the precise [`GitError`] a failed connection ends with.

use super::credentials::Offered;
use super::host_key::check_certificate;
use super::progress::Throttle;
use super::remote::Remote;
use super::session::Session;
use super::GitError;
use git2::{ErrorClass, ErrorCode, RemoteCallbacks};
use std::cell::RefCell;

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
}

impl Attempt {
    /// Records `error` for [`Session::classify`] and stops libgit2.
    fn fail(&self, error: GitError) -> git2::Error {
        *self.failure.borrow_mut() = Some(error);
        git2::Error::from_str(STOPPED)
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
        callbacks.credentials(move |_url, user, allowed| {
            self.auth
                .credentials(remote, &attempt.offered, user, allowed)
                .map_err(|error| attempt.fail(error))
        });
        callbacks.certificate_check(move |cert, _host| {
            check_certificate(self.known_hosts.as_ref(), remote, cert)
                .map_err(|error| attempt.fail(error))
        });
        callbacks.transfer_progress(move |stats| {
            if let Some(line) = attempt.throttle.borrow_mut().line(&stats) {
                self.say(&line);
            }
            true
        });
        callbacks
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
