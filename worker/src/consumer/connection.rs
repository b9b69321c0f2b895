//! The broker connection: a pool that opens connections with a timeout
//! and small frames, and how broker errors are told apart (a retry helps,
//! or the settings disagree with what exists).

use super::ConsumerError;
use buildbot_protocol::amqp::brokers::BrokerUrl;
use deadpool_lapin::{Pool, Runtime};
use std::time::Duration;

/// How long opening (or checking) a broker connection may take: a broker
/// that accepts TCP but never answers must not hang the worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to the node `broker`.
pub(super) fn connection_pool(broker: &BrokerUrl) -> Result<Pool, ConsumerError> {
    let mut pool = deadpool_lapin::PoolConfig::default();
    pool.timeouts.create = Some(CONNECT_TIMEOUT);
    pool.timeouts.recycle = Some(CONNECT_TIMEOUT);
    pool.timeouts.wait = Some(CONNECT_TIMEOUT);
    let pool_config = deadpool_lapin::Config {
        url: Some(with_small_frames(broker.url())),
        pool: Some(pool),
    };
    pool_config
        .create_pool(lapin::ConnectionProperties::default, Runtime::Tokio1)
        .map_err(|e| ConsumerError::Connect(format!("{broker}: {e}")))
}

/// Frame size the worker asks for unless its URL names one.
const FRAME_MAX: u32 = 16 * 1024;

/// `url` asking for [`FRAME_MAX`]-byte frames unless it sets `frame_max`:
/// lapin sizes two I/O buffers per connection from the frame size, and the
/// broker's 128 KiB default keeps about 8 MiB resident per connection
/// (BENCHMARKS.md: idle 19.7 MiB with it, 12.2 MiB with 16 KiB frames, at
/// no cost in latency or log throughput).
fn with_small_frames(url: &str) -> String {
    if url.contains("frame_max=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}frame_max={FRAME_MAX}")
}

pub(super) fn broker(what: &'static str) -> impl Fn(lapin::Error) -> ConsumerError {
    move |e| {
        let what = what.to_owned();
        let message = e.to_string();
        if is_precondition_failed(&e) {
            ConsumerError::Mismatch { what, message }
        } else {
            ConsumerError::Broker { what, message }
        }
    }
}

/// The broker's answer to declaring something that exists with other
/// arguments.
fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_asked_for_unless_the_url_sets_them() {
        assert_eq!(
            with_small_frames("amqp://h/%2f"),
            "amqp://h/%2f?frame_max=16384"
        );
        assert_eq!(
            with_small_frames("amqp://h/%2f?heartbeat=10"),
            "amqp://h/%2f?heartbeat=10&frame_max=16384"
        );
        assert_eq!(
            with_small_frames("amqp://h/%2f?frame_max=131072"),
            "amqp://h/%2f?frame_max=131072"
        );
    }
}
