//! One clone: the job's credentials and pins, shared by the main repository
//! and its submodules, and the flow for each repository: create it, fetch
//! the revision from its remote, check the commit out.

use super::checkout::{check_out, init_repository};
use super::credentials::Auth;
use super::refs::Revision;
use super::remote::Remote;
use super::{Checkout, GitError, Policy};
use buildbot_protocol::grammar::KnownHosts;
use git2::Repository;
use std::cell::RefCell;
use std::path::Path;

/// What every fetch of one clone uses.
pub(super) struct Session<'a, 'p> {
    pub(super) auth: Auth<'a>,
    /// `repo.known_hosts`, parsed; `None` when host keys are not pinned.
    pub(super) known_hosts: Option<KnownHosts>,
    pub(super) policy: Policy,
    progress: RefCell<&'p mut dyn FnMut(&str)>,
}

impl<'a, 'p> Session<'a, 'p> {
    pub(super) fn new(
        auth: Auth<'a>,
        known_hosts: Option<KnownHosts>,
        policy: Policy,
        progress: &'p mut dyn FnMut(&str),
    ) -> Self {
        Self {
            auth,
            known_hosts,
            policy,
            progress: RefCell::new(progress),
        }
    }

    /// Shows `line` to the job's author.
    pub(super) fn say(&self, line: &str) {
        (self.progress.borrow_mut())(line);
    }

    /// Creates a repository in `dest`, fetches `revision` from `remote` and
    /// checks it out.
    pub(super) fn fetch_and_check_out(
        &self,
        remote: &Remote,
        revision: &Revision<'_>,
        dest: &Path,
    ) -> Result<(Repository, Checkout), GitError> {
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
        let checkout = check_out(&repo, oid)?;
        self.say(&format!("checked out {}", checkout.commit));
        Ok((repo, checkout))
    }
}
