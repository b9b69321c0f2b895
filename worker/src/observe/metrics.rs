//! The worker's Prometheus metrics: jobs by status, step durations, jobs in
//! flight, log bytes published, broker reconnects and the broker node in
//! use. One [`Metrics`] per
//! process, passed to whoever records; rendered by the HTTP endpoint.

use buildbot_protocol::JobResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

/// A broker node as `host:port`: never its URL, which holds the password.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type StepHistograms = Family<StepLabel, Histogram, fn() -> Histogram>;

/// Every metric the worker exports.
pub(crate) struct Metrics {
    registry: Registry,
    jobs: Family<StatusLabel, Counter>,
    step_seconds: StepHistograms,
    in_flight: Gauge,
    log_bytes: Counter,
    reconnects: Counter,
    nodes: Family<NodeLabel, Gauge>,
    ignored: Counter,
    image_cache_bytes: Gauge,
    image_evictions: Counter,
    disk_free: Gauge,
}

/// 0.1 s to about 27 min in 14 doublings: from a cached no-op step to a
/// long build.
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 14))
}

impl Metrics {
    /// Registers every metric, all at zero.
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("buildbot");
        let jobs = Family::<StatusLabel, Counter>::default();
        registry.register("jobs", "Jobs finished, by result status", jobs.clone());
        let step_seconds: StepHistograms = Family::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "Duration of each pipeline step",
            step_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("jobs_in_flight", "Jobs running now", in_flight.clone());
        let log_bytes = Counter::default();
        registry.register(
            "log_published_bytes",
            "Bytes of log text published in events",
            log_bytes.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "amqp_reconnects",
            "Reconnections to RabbitMQ after a lost or failed connection",
            reconnects.clone(),
        );
        let nodes = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "amqp_connected",
            "1 for the RabbitMQ node (host:port) the worker is connected to, 0 for its other nodes",
            nodes.clone(),
        );
        let ignored = Counter::default();
        registry.register(
            "messages_ignored",
            "Job messages dropped without a reply: not signed by a trusted key for this queue and reply queue, or a replay",
            ignored.clone(),
        );
        let image_cache_bytes = Gauge::default();
        registry.register(
            "image_cache_bytes",
            "Bytes of the images this worker keeps on the Docker Engine as cache, after the last trim (an upper bound: shared layers count once per image)",
            image_cache_bytes.clone(),
        );
        let image_evictions = Counter::default();
        registry.register(
            "image_cache_evictions",
            "Cached images removed to stay within --image-cache-bytes",
            image_evictions.clone(),
        );
        let disk_free = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Free bytes on the fullest of the Docker Engine's data root and the workspace directory, at the last check",
            disk_free.clone(),
        );
        Arc::new(Self {
            disk_free,
            image_cache_bytes,
            image_evictions,
            ignored,
            registry,
            jobs,
            step_seconds,
            in_flight,
            log_bytes,
            reconnects,
            nodes,
        })
    }

    /// Counts a job as running until the returned guard is dropped.
    pub(crate) fn job_running(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight {
            metrics: Arc::clone(self),
        }
    }

    /// Records a finished (or rejected) job and its step durations.
    pub(crate) fn job_finished(&self, result: &JobResult) {
        self.jobs
            .get_or_create(&StatusLabel {
                status: result.status.as_str(),
            })
            .inc();
        for (step, ms) in &result.durations_ms {
            self.step_seconds
                .get_or_create(&StepLabel {
                    step: step.as_str(),
                })
                .observe(*ms as f64 / 1000.0);
        }
    }

    /// Records log text published.
    pub(crate) fn log_published(&self, bytes: usize) {
        self.log_bytes.inc_by(bytes as u64);
    }

    /// Records an image cache trim: what is kept, and how many went.
    pub(crate) fn image_cache_trimmed(&self, kept_bytes: u64, evicted: u64) {
        self.image_cache_bytes
            .set(i64::try_from(kept_bytes).unwrap_or(i64::MAX));
        self.image_evictions.inc_by(evicted);
    }

    /// Records the free disk seen at a check.
    pub(crate) fn disk_free(&self, bytes: u64) {
        self.disk_free.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records a job message dropped without a reply.
    pub(crate) fn job_ignored(&self) {
        self.ignored.inc();
    }

    /// Records a reconnection attempt to RabbitMQ.
    pub(crate) fn reconnecting(&self) {
        self.reconnects.inc();
    }

    /// Records whether the worker is connected to the broker node `node`
    /// (`host:port`).
    pub(crate) fn amqp_node(&self, node: &str, connected: bool) {
        let label = NodeLabel {
            node: node.to_owned(),
        };
        self.nodes.get_or_create(&label).set(i64::from(connected));
    }

    /// The metrics in Prometheus' text format.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A job counted in `jobs_in_flight`.
pub(crate) struct InFlight {
    metrics: Arc<Metrics>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::{JobStatus, StepName};

    fn result(status: JobStatus) -> JobResult {
        JobResult::new(status, "w").with_duration(StepName::Build, 1500)
    }

    #[test]
    fn renders_what_was_recorded() {
        let metrics = Metrics::new();
        let running = metrics.job_running();
        assert!(metrics.render().contains("buildbot_jobs_in_flight 1"));
        drop(running);
        metrics.job_finished(&result(JobStatus::Succeeded));
        metrics.job_finished(&result(JobStatus::TimedOut));
        metrics.log_published(42);
        metrics.reconnecting();
        metrics.amqp_node("rabbit-1:5672", false);
        metrics.amqp_node("rabbit-2:5672", true);
        let text = metrics.render();
        for line in [
            "buildbot_jobs_in_flight 0",
            "buildbot_jobs_total{status=\"succeeded\"} 1",
            "buildbot_jobs_total{status=\"timed_out\"} 1",
            "buildbot_step_duration_seconds_count{step=\"build\"} 2",
            "buildbot_log_published_bytes_total 42",
            "buildbot_amqp_reconnects_total 1",
            "buildbot_amqp_connected{node=\"rabbit-1:5672\"} 0",
            "buildbot_amqp_connected{node=\"rabbit-2:5672\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
