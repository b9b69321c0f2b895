//! The jobs running on this worker and how each is stopped early: a cancel
//! message for its id, the drain timeout at shutdown, or the loss of the
//! connection its delivery came on. Also remembers recent cancels, so a job
//! delivered after its cancel is not run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a cancel is remembered for jobs not yet delivered: longer than
/// a job waits in a healthy queue, short enough to stay small.
const REMEMBER_CANCELS: Duration = Duration::from_secs(60 * 60);

/// Why a running job must stop before it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The caller cancelled it: report `cancelled`, do not retry.
    Cancel,
    /// This worker cannot finish it (drain timeout, connection lost):
    /// report nothing, leave it to another delivery.
    Requeue,
}

#[derive(Default)]
struct State {
    next_id: u64,
    running: HashMap<u64, (String, watch::Sender<Option<Stop>>)>,
    cancelled: HashMap<String, Instant>,
}

/// Shared registry of running jobs. Cloning is cheap.
#[derive(Clone, Default)]
pub(crate) struct RunningJobs {
    state: Arc<Mutex<State>>,
}

impl RunningJobs {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single map operation: a panic elsewhere cannot
        // leave the maps half-written, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a job that starts running; it is forgotten when the
    /// returned handle is dropped.
    pub(crate) fn register(&self, job_id: &str) -> JobHandle {
        let (sender, receiver) = watch::channel(None);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.running.insert(id, (job_id.to_owned(), sender));
        JobHandle {
            id,
            jobs: self.clone(),
            stop: receiver,
        }
    }

    /// Cancels job `job_id`: stops it where it runs and remembers the id
    /// for a later delivery. True when it was running here.
    pub(crate) fn cancel(&self, job_id: &str) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        state
            .cancelled
            .retain(|_, at| now.duration_since(*at) < REMEMBER_CANCELS);
        state.cancelled.insert(job_id.to_owned(), now);
        let mut found = false;
        for (id, sender) in state.running.values() {
            if id == job_id {
                sender.send_replace(Some(Stop::Cancel));
                found = true;
            }
        }
        found
    }

    /// Whether a cancel for `job_id` arrived recently.
    pub(crate) fn is_cancelled(&self, job_id: &str) -> bool {
        self.lock().cancelled.contains_key(job_id)
    }

    /// Stops every running job for the same reason.
    pub(crate) fn stop_all(&self, stop: Stop) {
        for (_, sender) in self.lock().running.values() {
            sender.send_if_modified(|current| {
                // A cancel already requested stands: it is the caller's word.
                if current.is_none() {
                    *current = Some(stop);
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Jobs running now.
    pub(crate) fn len(&self) -> usize {
        self.lock().running.len()
    }
}

/// One running job's membership in [`RunningJobs`].
pub(crate) struct JobHandle {
    id: u64,
    jobs: RunningJobs,
    stop: watch::Receiver<Option<Stop>>,
}

impl JobHandle {
    /// Completes when the job must stop, with the reason. Never completes
    /// for a job allowed to finish.
    pub(crate) async fn stopped(&self) -> Stop {
        let mut stop = self.stop.clone();
        let reason = stop.wait_for(Option::is_some).await.map(|r| *r);
        match reason {
            Ok(reason) => reason.unwrap_or(Stop::Requeue),
            // The sender lives in the registry as long as this handle.
            Err(_) => std::future::pending().await,
        }
    }

    /// Completes when the job is cancelled; never for any other stop.
    pub(crate) async fn cancelled(&self) {
        let mut stop = self.stop.clone();
        if stop.wait_for(|s| *s == Some(Stop::Cancel)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.jobs.lock().running.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_reaches_the_running_job_and_is_remembered() {
        let jobs = RunningJobs::default();
        let handle = jobs.register("a");
        let other = jobs.register("b");
        assert!(jobs.cancel("a"));
        assert_eq!(handle.stopped().await, Stop::Cancel);
        handle.cancelled().await;
        assert!(jobs.is_cancelled("a"));
        assert!(!jobs.is_cancelled("b"));
        assert!(other.stop.borrow().is_none());
    }

    #[tokio::test]
    async fn stop_all_keeps_an_earlier_cancel() {
        let jobs = RunningJobs::default();
        let cancelled = jobs.register("a");
        let plain = jobs.register("b");
        jobs.cancel("a");
        jobs.stop_all(Stop::Requeue);
        assert_eq!(cancelled.stopped().await, Stop::Cancel);
        assert_eq!(plain.stopped().await, Stop::Requeue);
    }

    #[test]
    fn dropped_handles_leave_the_registry() {
        let jobs = RunningJobs::default();
        let handle = jobs.register("a");
        assert_eq!(jobs.len(), 1);
        drop(handle);
        assert_eq!(jobs.len(), 0);
        assert!(!jobs.cancel("a"), "nothing runs to cancel");
    }
}
