//! Which broker node the consumer connects to next, and how long it waits
//! first. A lost or refused connection moves to the next node at once,
//! round the list (the nodes of one cluster share every queue); only when
//! every node failed in a row does the consumer wait, with a backoff.

use buildbot_protocol::amqp::brokers::{BrokerUrl, Brokers};
use std::time::Duration;

/// Longest wait between rounds of reconnects: a broker that comes back is
/// used within this long (a refused TCP connect every few seconds costs
/// the broker nothing).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A connection that lasted this long was healthy: the next loss starts
/// the backoff from its beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// The node in use and the failures since the last healthy connection.
pub(super) struct Failover {
    brokers: Brokers,
    /// Index of the current node, counted round the list.
    current: usize,
    /// Nodes that failed one after the other since the last wait.
    failed_in_a_row: usize,
    backoff: Backoff,
}

impl Failover {
    /// Starts with the first of `brokers`.
    pub(super) fn new(brokers: Brokers) -> Self {
        Self {
            brokers,
            current: 0,
            failed_in_a_row: 0,
            backoff: Backoff::default(),
        }
    }

    /// The node to connect to.
    pub(super) fn current(&self) -> &BrokerUrl {
        self.brokers.cycle(self.current)
    }

    /// Every node, in order.
    pub(super) fn brokers(&self) -> &Brokers {
        &self.brokers
    }

    /// The connection to the current node failed, or was lost after
    /// `lasted`: moves to the next node and says how long to wait before
    /// connecting to it.
    pub(super) fn failed(&mut self, lasted: Duration) -> Duration {
        if lasted > HEALTHY_RUN {
            self.backoff = Backoff::default();
            self.failed_in_a_row = 0;
        }
        self.current = (self.current + 1) % self.brokers.len();
        self.failed_in_a_row += 1;
        if self.failed_in_a_row < self.brokers.len() {
            return Duration::ZERO;
        }
        self.failed_in_a_row = 0;
        self.backoff.next_delay()
    }
}

/// Exponential delay between rounds: 0.5 s doubling up to [`MAX_BACKOFF`].
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(nodes: &str) -> Failover {
        Failover::new(Brokers::parse_list(nodes).expect("valid URLs"))
    }

    #[test]
    fn one_node_backs_off_after_each_failure() {
        let mut one = failover("amqp://a/%2f");
        let delays: Vec<_> = (0..4).map(|_| one.failed(Duration::ZERO)).collect();
        assert_eq!(delays, [500, 1000, 2000, 2000].map(Duration::from_millis));
        assert_eq!(one.current().node(), "a:5672");
    }

    #[test]
    fn the_next_node_is_tried_at_once_and_a_full_round_waits() {
        let mut three = failover("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f");
        assert_eq!(three.failed(Duration::ZERO), Duration::ZERO);
        assert_eq!(three.current().node(), "b:5672");
        assert_eq!(three.failed(Duration::ZERO), Duration::ZERO);
        assert_eq!(three.current().node(), "c:5672");
        assert_eq!(three.failed(Duration::ZERO), Duration::from_millis(500));
        assert_eq!(three.current().node(), "a:5672");
        assert_eq!(three.failed(Duration::ZERO), Duration::ZERO);
        assert_eq!(three.failed(Duration::ZERO), Duration::ZERO);
        assert_eq!(three.failed(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn a_healthy_connection_s_loss_starts_afresh_on_the_next_node() {
        let mut three = failover("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f");
        for _ in 0..6 {
            three.failed(Duration::ZERO);
        }
        // Connected to a for a while, then lost it.
        assert_eq!(three.failed(HEALTHY_RUN * 2), Duration::ZERO);
        assert_eq!(three.current().node(), "b:5672");
        three.failed(Duration::ZERO);
        assert_eq!(three.failed(Duration::ZERO), Duration::from_millis(500));
    }
}
