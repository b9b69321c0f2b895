//! How operators watch a worker: Prometheus metrics, and the HTTP endpoint
//! serving them with the health and readiness checks.

pub(crate) mod disk;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod readiness;
