//! The dashboard's view, built from events alone: the last `max_jobs`
//! jobs, each with its steps, status, result and at most `max_log_bytes`
//! of log. Pure (no I/O), so the bounds are tested without a broker.

use buildbot_protocol::{Event, EventBody, JobResult, StepName, StepState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// How much the view keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Jobs kept; past it the oldest seen is dropped.
    pub(crate) max_jobs: usize,
    /// Log bytes kept per job; later output is counted, not kept.
    pub(crate) max_log_bytes: usize,
}

/// One job as the events told it: its row in the list, and the rest.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    #[serde(flatten)]
    pub(crate) summary: Summary,
    /// Steps in the order they changed: name, state, when.
    pub(crate) steps: Vec<StepChange>,
    pub(crate) result: Option<JobResult>,
    /// Log kept, in `seq` order as it arrived.
    pub(crate) log: String,
    /// Log bytes not kept (past `max_log_bytes`).
    pub(crate) log_dropped: u64,
    /// The attempt's last `seq` seen, to find gaps.
    pub(crate) last_seq: u64,
    /// Events missing between those seen (a gap in `seq`).
    pub(crate) missing: u64,
}

/// A step's change of state.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepChange {
    pub(crate) step: StepName,
    pub(crate) state: StepState,
    pub(crate) at: DateTime<Utc>,
}

/// What one event changed, for the live page: the job's summary, and the
/// log text it added (with the gap before it, if any).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Update {
    pub(crate) job: Summary,
    /// The event's `seq`, so a page that loaded the job's view after this
    /// event was applied does not show it twice.
    pub(crate) seq: u64,
    pub(crate) log: Option<String>,
    pub(crate) missing_before: u64,
}

/// A job's row in the list.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) job_id: String,
    /// From the routing key (`<service>.<job_id>.<kind>`), until the
    /// result says it.
    pub(crate) service_id: String,
    pub(crate) attempt: u32,
    /// `running`, or the result's status.
    pub(crate) status: String,
    /// The step that started last.
    pub(crate) step: Option<StepName>,
    pub(crate) worker: Option<String>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// The attempt has its result.
    pub(crate) finished: bool,
}

/// The jobs seen, newest last.
#[derive(Debug)]
pub(crate) struct Jobs {
    bounds: Bounds,
    jobs: HashMap<String, JobView>,
    order: VecDeque<String>,
    /// Jobs dropped to stay within `max_jobs`.
    pub(crate) evicted: u64,
}

impl Jobs {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            jobs: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Applies `event`, routed with `routing_key`; returns what changed,
    /// nothing for a copy of an event already applied (a worker sends its
    /// last events again when their confirms were lost with a broker node).
    pub(crate) fn apply(&mut self, routing_key: &str, event: Event) -> Option<Update> {
        let service = routing_key.split('.').next().unwrap_or_default();
        let max_log_bytes = self.bounds.max_log_bytes;
        let view = self.view(&event, service);
        // A new attempt starts its `seq` at 1 again.
        if event.attempt > view.summary.attempt {
            view.summary.attempt = event.attempt;
            view.summary.status = "running".to_owned();
            view.summary.finished = false;
            view.last_seq = 0;
            view.result = None;
        } else if event.attempt == view.summary.attempt && event.seq <= view.last_seq {
            return None;
        }
        let seq = event.seq;
        let missing_before = seq.saturating_sub(view.last_seq + 1);
        view.missing += missing_before;
        view.last_seq = view.last_seq.max(event.seq);
        view.summary.updated_at = event.timestamp;
        let log = match event.body {
            EventBody::Step(step) => {
                view.summary.step = Some(step.name);
                let change = StepChange {
                    step: step.name,
                    state: step.state,
                    at: event.timestamp,
                };
                view.steps.push(change);
                None
            }
            EventBody::Log(log) => Some(keep_log(view, log.text, max_log_bytes)),
            EventBody::Result(result) => {
                let summary = &mut view.summary;
                summary.status = status_name(&result);
                summary.worker = Some(result.worker.clone());
                summary.finished = true;
                if let Some(service) = &result.service_id {
                    summary.service_id.clone_from(service);
                }
                view.result = Some(result);
                None
            }
        };
        Some(Update {
            job: view.summary.clone(),
            seq,
            log,
            missing_before,
        })
    }

    /// Every job kept, newest first.
    pub(crate) fn summaries(&self) -> Vec<Summary> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.jobs.get(id))
            .map(|view| view.summary.clone())
            .collect()
    }

    pub(crate) fn get(&self, job_id: &str) -> Option<&JobView> {
        self.jobs.get(job_id)
    }

    /// Jobs whose latest attempt has no result yet.
    pub(crate) fn running(&self) -> usize {
        self.jobs.values().filter(|j| j.result.is_none()).count()
    }

    fn view(&mut self, event: &Event, service: &str) -> &mut JobView {
        if !self.jobs.contains_key(&event.job_id) {
            self.order.push_back(event.job_id.clone());
            while self.order.len() > self.bounds.max_jobs {
                if let Some(oldest) = self.order.pop_front() {
                    self.jobs.remove(&oldest);
                    self.evicted += 1;
                }
            }
        }
        self.jobs
            .entry(event.job_id.clone())
            .or_insert_with(|| JobView {
                summary: Summary {
                    job_id: event.job_id.clone(),
                    service_id: service.to_owned(),
                    attempt: event.attempt,
                    status: "running".to_owned(),
                    step: None,
                    worker: None,
                    started_at: event.timestamp,
                    updated_at: event.timestamp,
                    finished: false,
                },
                steps: Vec::new(),
                result: None,
                log: String::new(),
                log_dropped: 0,
                last_seq: 0,
                missing: 0,
            })
    }
}

/// Keeps what fits of `text` in the job's log; returns the text kept,
/// or the notice that output is being dropped.
fn keep_log(view: &mut JobView, text: String, max_bytes: usize) -> String {
    let room = max_bytes.saturating_sub(view.log.len());
    if text.len() <= room {
        view.log.push_str(&text);
        return text;
    }
    let mut cut = room;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let first_drop = view.log_dropped == 0;
    view.log_dropped += (text.len() - cut) as u64;
    let kept = &text[..cut];
    view.log.push_str(kept);
    let mut shown = kept.to_owned();
    if first_drop {
        shown.push_str(&format!(
            "\n[dashboard: this job's log passed {max_bytes} bytes; later lines are not kept here]\n"
        ));
        view.log.push_str(&shown[kept.len()..]);
    }
    shown
}

fn status_name(result: &JobResult) -> String {
    serde_json::to_value(result.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", result.status).to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::{JobStatus, LogEvent, LogStream, StepEvent};

    fn event(job: &str, seq: u64, body: EventBody) -> Event {
        Event {
            job_id: job.into(),
            attempt: 1,
            seq,
            timestamp: Utc::now(),
            body,
        }
    }

    fn log(job: &str, seq: u64, text: &str) -> Event {
        event(
            job,
            seq,
            EventBody::Log(LogEvent {
                step: StepName::Build,
                stream: LogStream::Stdout,
                text: text.into(),
            }),
        )
    }

    fn bounds(max_jobs: usize, max_log_bytes: usize) -> Bounds {
        Bounds {
            max_jobs,
            max_log_bytes,
        }
    }

    #[test]
    fn a_job_is_followed_from_its_steps_to_its_result() {
        let mut jobs = Jobs::new(bounds(10, 1024));
        let started = StepEvent {
            name: StepName::Clone,
            state: StepState::Started,
        };
        jobs.apply("web.j1.step", event("j1", 1, EventBody::Step(started)));
        jobs.apply("web.j1.log", log("j1", 2, "hello\n"));
        let mut result = JobResult::new(JobStatus::Succeeded, "w1");
        result.service_id = Some("web".into());
        let update = jobs
            .apply("web.j1.result", event("j1", 3, EventBody::Result(result)))
            .expect("applied");
        assert_eq!(update.job.status, "succeeded");
        assert_eq!(update.job.worker.as_deref(), Some("w1"));
        let view = jobs.get("j1").expect("kept");
        assert_eq!(
            (view.summary.service_id.as_str(), view.log.as_str()),
            ("web", "hello\n")
        );
        assert_eq!(view.steps.len(), 1);
        assert_eq!(view.missing, 0);
    }

    #[test]
    fn a_gap_in_seq_is_counted() {
        let mut jobs = Jobs::new(bounds(10, 1024));
        jobs.apply("s.j.log", log("j", 1, "a\n"));
        let update = jobs.apply("s.j.log", log("j", 4, "d\n")).expect("applied");
        assert_eq!(update.missing_before, 2);
        assert_eq!(jobs.get("j").expect("kept").missing, 2);
    }

    #[test]
    fn an_event_sent_again_is_applied_once() {
        let mut jobs = Jobs::new(bounds(10, 1024));
        jobs.apply("s.j.log", log("j", 1, "a\n"));
        jobs.apply("s.j.log", log("j", 2, "b\n"));
        assert!(jobs.apply("s.j.log", log("j", 2, "b\n")).is_none());
        assert!(jobs.apply("s.j.log", log("j", 1, "a\n")).is_none());
        let view = jobs.get("j").expect("kept");
        assert_eq!((view.log.as_str(), view.missing), ("a\nb\n", 0));
    }

    #[test]
    fn more_jobs_than_the_bound_evict_the_oldest() {
        let mut jobs = Jobs::new(bounds(2, 1024));
        for id in ["a", "b", "c"] {
            jobs.apply(&format!("s.{id}.log"), log(id, 1, "x\n"));
        }
        assert!(jobs.get("a").is_none());
        let ids: Vec<String> = jobs.summaries().into_iter().map(|s| s.job_id).collect();
        assert_eq!(ids, ["c", "b"]);
        assert_eq!(jobs.evicted, 1);
    }

    #[test]
    fn a_log_past_its_bound_is_cut_with_one_notice() {
        let mut jobs = Jobs::new(bounds(10, 8));
        jobs.apply("s.j.log", log("j", 1, "12345\n"));
        let update = jobs
            .apply("s.j.log", log("j", 2, "67890\n"))
            .expect("applied");
        assert!(update.log.expect("text").starts_with("67\n[dashboard:"));
        jobs.apply("s.j.log", log("j", 3, "more\n"));
        let view = jobs.get("j").expect("kept");
        assert_eq!(view.log_dropped, 4 + 5);
        assert_eq!(view.log.matches("[dashboard:").count(), 1);
    }
}
