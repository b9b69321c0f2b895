//! One clone: the job's credentials and pins, shared by the main repository
//! and its submodules, and the flow for each repository: create it, fetch
//! the revision from its remote, check the commit out.

use super::checkout::{check_out, init_repository};
use super::credentials::Auth;
use super::host_key::{HostKeyTrust, ACCEPTING_ANY_KEY};
use super::limits::Budget;
use super::refs::Revision;
use super::remote::Remote;
use super::{Checkout, GitError, Policy};
use git2::Repository;
use std::cell::{Cell, RefCell};
use std::path::Path;

/// What every fetch of one clone uses.
pub(super) struct Session<'a, 'p> {
    pub(super) auth: Auth<'a>,
    /// The SSH host key rule: the job's pin, the worker's, or none.
    pub(super) host_keys: HostKeyTrust,
    pub(super) policy: Policy,
    /// Bytes received so far against the cap, and the cancel flag.
    pub(super) budget: &'p Budget,
    progress: RefCell<&'p mut dyn FnMut(&str)>,
    /// Whether the job was told its host key goes unchecked (once).
    warned_unchecked: Cell<bool>,
}

impl<'a, 'p> Session<'a, 'p> {
    pub(super) fn new(
        auth: Auth<'a>,
        host_keys: HostKeyTrust,
        policy: Policy,
        budget: &'p Budget,
        progress: &'p mut dyn FnMut(&str),
    ) -> Self {
        Self {
            auth,
            host_keys,
            policy,
            budget,
            progress: RefCell::new(progress),
            warned_unchecked: Cell::new(false),
        }
    }

    /// Shows `line` to the job's author.
    pub(super) fn say(&self, line: &str) {
        (self.progress.borrow_mut())(line);
    }

    /// Tells the job, once, that an SSH host key was accepted unchecked.
    pub(super) fn note_unchecked_host_key(&self) {
        if !self.warned_unchecked.replace(true) {
            self.say(ACCEPTING_ANY_KEY);
        }
    }

    /// Creates a repository in `dest`, fetches `revision` from `remote` and
    /// checks it out.
    pub(super) fn fetch_and_check_out(
        &self,
        remote: &Remote,
        revision: &Revision<'_>,
        dest: &Path,
    ) -> Result<(Repository, Checkout), GitError> {
        self.budget.check()?;
        let repo = init_repository(dest)?;
        self.say(&format!("fetching {revision} from {remote}"));
        // A named remote, not an anonymous one: libgit2 resolves relative
        // submodule URLs against `origin`.
        let mut origin = repo
            .remote("origin", remote.as_str())
            .map_err(|e| GitError::Remote {
                url: remote.to_string(),
                message: self.auth.scrub(e.message()),
            })?;
        let oid = self.fetch_commit(&repo, &mut origin, remote, revision)?;
        drop(origin);
        // A cancelled job's workspace may be gone: write nothing more.
        self.budget.check()?;
        let checkout = check_out(&repo, oid)?;
        self.say(&format!("checked out {}", checkout.commit));
        Ok((repo, checkout))
    }
}
