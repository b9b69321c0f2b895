//! Control messages: what an orchestrator sends to every worker through the
//! fanout exchange [`CONTROL_EXCHANGE`](crate::amqp::CONTROL_EXCHANGE),
//! which keeps them in the stream [`CANCEL_STREAM`](crate::amqp::CANCEL_STREAM)
//! so that a worker started later still reads them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message on the control exchange. Every worker receives every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Stop the job with this id: the worker running it stops its build or
    /// builder container and reports `cancelled`; a worker that receives the
    /// job later (still queued, or redelivered) reports `cancelled` without
    /// running it.
    Cancel {
        /// The job to stop.
        job_id: Uuid,
    },
    /// Published by a starting worker into the cancel stream: once it reads
    /// its own checkpoint back, it has read every earlier cancel and may
    /// take jobs. Everyone else ignores it.
    Checkpoint {
        /// Unique to the worker start that published it.
        token: Uuid,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_has_a_stable_wire_form() {
        let id = Uuid::nil();
        let json = serde_json::to_string(&ControlMessage::Cancel { job_id: id }).unwrap();
        assert_eq!(
            json,
            r#"{"type":"cancel","job_id":"00000000-0000-0000-0000-000000000000"}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlMessage>(&json).unwrap(),
            ControlMessage::Cancel { job_id: id }
        );
    }
}
