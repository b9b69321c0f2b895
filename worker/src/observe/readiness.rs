//! Readiness: whether this worker can take jobs now. The consumer sets it;
//! `/readyz` reads it (together with a ping of the Docker Engine).

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the worker can take jobs; shared with the consumer.
#[derive(Default)]
pub(crate) struct Readiness {
    consuming: AtomicBool,
}

impl Readiness {
    /// The consumer is (or is no longer) attached to the job queue.
    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    pub(super) fn consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }
}
