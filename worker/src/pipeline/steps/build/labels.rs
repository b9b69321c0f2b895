//! The labels every image the worker builds carries: the job's own, and
//! the OCI annotations naming where it came from.

use buildbot_protocol::Job;
use std::collections::HashMap;

/// The job's labels plus `org.opencontainers.image.{revision,source,created}`.
pub(super) fn image_labels(job: &Job, commit: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = job.build.labels.clone().into_iter().collect();
    labels.insert(
        "org.opencontainers.image.revision".into(),
        commit.to_owned(),
    );
    labels.insert(
        "org.opencontainers.image.source".into(),
        job.repo.url.clone(),
    );
    labels.insert(
        "org.opencontainers.image.created".into(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    labels
}
