//! The jobs running on this worker and how each is stopped early: a cancel
//! message for its id, the drain timeout at shutdown, or the loss of the
//! connection its delivery came on. Also remembers recent cancels, so a job
//! delivered after its cancel is not run, recently finished jobs, so a
//! redelivery whose ack the broker lost is not run twice, and attempts
//! given back without a result, so their redelivery need not wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a cancel or a finished job is remembered for deliveries yet
/// to come: as long as the cancel stream keeps it (`CANCEL_RETENTION`, 2
/// days).
const REMEMBER_IDS: Duration = Duration::from_secs(2 * 24 * 60 * 60);

/// At most this many ids of each kind are remembered (the oldest go
/// first), so a flood of cancels costs a few MiB, not the worker.
const MAX_REMEMBERED_IDS: usize = 100_000;

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
    /// Jobs cancelled recently.
    cancelled: RecentIds,
    /// Jobs whose result was published recently (here or by another
    /// worker): a redelivery of one is an ack the broker lost.
    finished: RecentIds,
    /// Attempts (`<job_id>/<attempt>`) given back without a result: the
    /// next attempt need not wait for a `finished`.
    released: RecentIds,
}

/// Job ids seen recently, bounded in age and number.
#[derive(Default)]
struct RecentIds {
    /// When each arrived, and its entry number in `order`.
    ids: HashMap<String, (Instant, u64)>,
    /// Every remembered id, oldest first, for eviction.
    order: VecDeque<(String, u64, Instant)>,
    next: u64,
}

impl RecentIds {
    /// Remembers `job_id` at `now`, forgetting what is too old or too
    /// many.
    fn remember(&mut self, job_id: &str, now: Instant) {
        let entry = self.next;
        self.next += 1;
        self.ids.insert(job_id.to_owned(), (now, entry));
        self.order.push_back((job_id.to_owned(), entry, now));
        while let Some((oldest, entry, at)) = self.order.front() {
            let expired = now.duration_since(*at) >= REMEMBER_IDS;
            if !expired && self.ids.len() <= MAX_REMEMBERED_IDS {
                break;
            }
            // A later sighting of the same id has its own, newer entry.
            if self.ids.get(oldest).is_some_and(|(_, e)| e == entry) {
                self.ids.remove(oldest);
            }
            self.order.pop_front();
        }
    }

    fn contains(&self, job_id: &str) -> bool {
        self.ids
            .get(job_id)
            .is_some_and(|(at, _)| at.elapsed() < REMEMBER_IDS)
    }
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
        state.cancelled.remember(job_id, Instant::now());
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
        self.lock().cancelled.contains(job_id)
    }

    /// Remembers that `job_id`'s result was published.
    pub(crate) fn finished(&self, job_id: &str) {
        self.lock().finished.remember(job_id, Instant::now());
    }

    /// Whether `job_id`'s result was published recently.
    pub(crate) fn is_finished(&self, job_id: &str) -> bool {
        self.lock().finished.contains(job_id)
    }

    /// Remembers that attempt `attempt` of `job_id` was given back
    /// without a result.
    pub(crate) fn released(&self, job_id: &str, attempt: u32) {
        let key = format!("{job_id}/{attempt}");
        self.lock().released.remember(&key, Instant::now());
    }

    /// Whether attempt `attempt` of `job_id` was given back recently
    /// without a result.
    pub(crate) fn is_released(&self, job_id: &str, attempt: u32) -> bool {
        self.lock()
            .released
            .contains(&format!("{job_id}/{attempt}"))
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

    #[test]
    fn remembered_ids_are_bounded_oldest_first() {
        let mut recent = RecentIds::default();
        let now = Instant::now();
        for n in 0..MAX_REMEMBERED_IDS + 10 {
            recent.remember(&n.to_string(), now);
        }
        assert_eq!(recent.ids.len(), MAX_REMEMBERED_IDS);
        assert!(!recent.contains("0"));
        assert!(recent.contains(&(MAX_REMEMBERED_IDS + 9).to_string()));
        // An id seen again stays, with its newer time.
        recent.remember("20", now);
        for n in 0..30 {
            recent.remember(&format!("x{n}"), now);
        }
        assert!(recent.contains("20"));
        assert!(recent.order.len() <= MAX_REMEMBERED_IDS + 1);
    }

    #[test]
    fn a_released_attempt_says_nothing_of_the_next() {
        let jobs = RunningJobs::default();
        jobs.released("a", 1);
        assert!(jobs.is_released("a", 1));
        assert!(!jobs.is_released("a", 2));
        assert!(!jobs.is_finished("a") && !jobs.is_cancelled("a"));
    }

    #[test]
    fn finished_jobs_are_remembered_apart_from_cancels() {
        let jobs = RunningJobs::default();
        jobs.finished("a");
        assert!(jobs.is_finished("a"));
        assert!(!jobs.is_cancelled("a"));
        assert!(!jobs.is_finished("b"));
    }
}
