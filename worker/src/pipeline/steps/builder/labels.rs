//! The labels on every builder container and builder image (and the test
//! step's containers): they name the
//! job and the worker, so whatever a run left behind can be found (by the
//! worker's sweep after a crash, and by tests checking that nothing is).

use super::BuilderRun;
use std::collections::HashMap;

/// Label carrying the job id on every builder container and builder image,
/// so whatever a job left behind can be found (and tests can check that
/// nothing is).
const JOB_ID_LABEL: &str = "buildbot.job_id";
/// Label naming what a labelled object is for.
const ROLE_LABEL: &str = "buildbot.role";
/// Label carrying the worker id on every builder container and image, so
/// a worker restarted with the same `--worker-id` removes what it left
/// behind when it crashed.
pub(super) const WORKER_LABEL: &str = "buildbot.worker";
/// [`ROLE_LABEL`]'s value on builder containers and images.
const BUILDER_ROLE: &str = "builder";
/// [`ROLE_LABEL`]'s value on the test step's containers.
pub(crate) const TEST_ROLE: &str = "test";
/// [`ROLE_LABEL`]'s value on cached builder images, which outlive their
/// job (and so carry neither its id nor the worker's).
pub(crate) const BUILDER_CACHE_ROLE: &str = "builder-cache";
/// Label carrying a cached builder image's key.
const CACHE_KEY_LABEL: &str = "buildbot.cache_key";

/// The labels of what `spec`'s run creates.
pub(super) fn builder_labels(spec: &BuilderRun<'_>) -> HashMap<String, String> {
    job_labels(&spec.job.job_id.to_string(), spec.worker_id, BUILDER_ROLE)
}

/// The labels of a container job `job_id` runs on worker `worker_id` as
/// `role`: the worker's sweep after a crash finds it by them.
pub(crate) fn job_labels(job_id: &str, worker_id: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (JOB_ID_LABEL.to_owned(), job_id.to_owned()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
        (WORKER_LABEL.to_owned(), worker_id.to_owned()),
    ])
}

/// The labels of a cached builder image with key `key`.
pub(super) fn cache_labels(key: &str) -> HashMap<String, String> {
    HashMap::from([
        (ROLE_LABEL.to_owned(), BUILDER_CACHE_ROLE.to_owned()),
        (CACHE_KEY_LABEL.to_owned(), key.to_owned()),
    ])
}
