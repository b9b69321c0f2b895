//! The local side of a clone: a fresh repository in the checkout directory,
//! and the fetched commit checked out there on a detached HEAD.

use super::{Checkout, GitError};
use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};
use std::path::Path;

/// An empty repository in `dest`, which is created if missing.
pub(super) fn init_repository(dest: &Path) -> Result<Repository, GitError> {
    std::fs::create_dir_all(dest).map_err(|error| GitError::Io {
        action: format!("cannot create the checkout directory {}", dest.display()),
        error,
    })?;
    Repository::init(dest).map_err(|e| {
        GitError::Checkout(format!(
            "cannot create a git repository in {}: {}",
            dest.display(),
            e.message()
        ))
    })
}

/// Detached HEAD at `oid` with every file written.
pub(super) fn check_out(repo: &Repository, oid: Oid) -> Result<Checkout, GitError> {
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
