//! What stops a clone's transfer early: the worker's byte cap
//! (`--max-clone-bytes`), counted over the main repository and every
//! submodule, and a cancellation flag the async side sets when the job is
//! cancelled or times out. libgit2 runs on a blocking thread that dropping
//! the clone future does not stop, so its callbacks check both and abort
//! the transfer (they return `false`), before it writes on into a
//! workspace the pipeline has already removed.

use super::GitError;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Default of `--max-clone-bytes`: 2 GiB.
pub(crate) const DEFAULT_MAX_CLONE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Set once the job no longer wants the clone; shared with the blocking
/// thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the clone to stop at its next callback.
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancels its flag when dropped: held by the async clone, so a timeout or
/// cancel that drops the clone future also stops the git thread.
pub(super) struct CancelOnDrop(pub(super) CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One clone's transfer budget: the bytes received so far against the cap,
/// and the cancellation flag.
pub(super) struct Budget {
    max_bytes: u64,
    received: Cell<u64>,
    cancel: CancelFlag,
}

impl Budget {
    pub(super) fn new(max_bytes: u64, cancel: CancelFlag) -> Self {
        Self {
            max_bytes,
            received: Cell::new(0),
            cancel,
        }
    }

    /// Whether the clone may go on: not cancelled.
    pub(super) fn check(&self) -> Result<(), GitError> {
        if self.cancel.is_cancelled() {
            return Err(GitError::Cancelled);
        }
        Ok(())
    }

    /// Counts `more` received bytes; an error once the total is over the
    /// cap (or the clone was cancelled).
    pub(super) fn receive(&self, more: u64) -> Result<(), GitError> {
        self.check()?;
        let total = self.received.get().saturating_add(more);
        self.received.set(total);
        if total > self.max_bytes {
            return Err(GitError::TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_every_fetch_of_the_clone() {
        let budget = Budget::new(100, CancelFlag::default());
        assert!(budget.receive(60).is_ok());
        assert!(budget.receive(40).is_ok());
        let error = budget.receive(1).unwrap_err();
        assert!(matches!(error, GitError::TooLarge { max_bytes: 100 }));
        assert!(error.to_string().contains("--max-clone-bytes"), "{error}");
    }

    #[test]
    fn dropping_the_guard_cancels_the_clone() {
        let flag = CancelFlag::default();
        let budget = Budget::new(u64::MAX, flag.clone());
        let guard = CancelOnDrop(flag);
        assert!(budget.check().is_ok());
        drop(guard);
        assert!(matches!(budget.check(), Err(GitError::Cancelled)));
        assert!(matches!(budget.receive(0), Err(GitError::Cancelled)));
    }
}
