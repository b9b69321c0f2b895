//! Readiness: whether this worker can take jobs now. The consumer sets it;
//! `/readyz` reads it (together with a ping of the Docker Engine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether the worker can take jobs; shared with the consumer.
#[derive(Default)]
pub(crate) struct Readiness {
    consuming: AtomicBool,
    /// Why the worker paused taking jobs for lack of disk, if it did.
    disk_shortage: Mutex<Option<String>>,
}

impl Readiness {
    /// The consumer is (or is no longer) attached to the job queue.
    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    pub(super) fn consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// The worker paused for lack of disk (`Some(why)`), or resumed.
    pub(crate) fn set_disk_shortage(&self, shortage: Option<String>) {
        *self.disk_shortage.lock().unwrap_or_else(|p| p.into_inner()) = shortage;
    }

    pub(crate) fn disk_shortage(&self) -> Option<String> {
        self.disk_shortage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
