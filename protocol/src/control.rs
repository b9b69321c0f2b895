//! Control messages: what an orchestrator sends to every worker through the
//! fanout exchange [`CONTROL_EXCHANGE`](crate::amqp::CONTROL_EXCHANGE),
//! which keeps them in the stream [`CANCEL_STREAM`](crate::amqp::CANCEL_STREAM)
//! so that a worker started later still reads them.

use crate::signature::{sign_job, verify_job, SignatureError, SigningKey, VerifyingKey};
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
        /// Base64 ed25519 signature over the cancel without this field
        /// (the canonical form signed jobs use). Workers with trusted keys
        /// ignore cancels that no trusted key signed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Published by the worker that accepted a signed job: every worker
    /// then refuses another delivery of the same nonce until it expires
    /// (a replay), wherever it is published.
    Admitted {
        /// The job's `envelope.nonce`.
        nonce: String,
        /// Its `envelope.expires_at` (Unix seconds): remembered until then.
        expires_at: u64,
        /// The job's result was published: from then on even the broker's
        /// redelivery of that message (after its worker stopped) is a
        /// replay. Until then a redelivery is the job's own retry.
        #[serde(default)]
        finished: bool,
    },
    /// Published by the worker that finished a job, once its result is
    /// confirmed: a broker that loses the job's ack (a node going down)
    /// redelivers the job, and the worker that gets the redelivery drops
    /// it instead of running it again.
    Finished {
        /// The job that finished.
        job_id: Uuid,
    },
    /// Published by a worker that gave a job back without a result
    /// (drain timeout, lost connection): the worker that gets the
    /// redelivery runs it at once instead of waiting for a `finished`.
    Released {
        /// The job given back.
        job_id: Uuid,
        /// The attempt that ended without a result.
        attempt: u32,
    },
    /// Published by a starting worker into the cancel stream: once it reads
    /// its own checkpoint back, it has read every earlier cancel and may
    /// take jobs. Everyone else ignores it.
    Checkpoint {
        /// Unique to the worker start that published it.
        token: Uuid,
    },
}

impl ControlMessage {
    /// An unsigned cancel of `job_id`, for workers without trusted keys.
    pub fn cancel(job_id: Uuid) -> Self {
        ControlMessage::Cancel {
            job_id,
            signature: None,
        }
    }

    /// A cancel of `job_id` signed with `key`.
    pub fn signed_cancel(job_id: Uuid, key: &SigningKey) -> Self {
        let unsigned = ControlMessage::cancel(job_id);
        let signature = serde_json::to_value(&unsigned)
            .ok()
            .and_then(|value| sign_job(&value, key).ok())
            .and_then(|signed| signed["signature"].as_str().map(str::to_owned));
        ControlMessage::Cancel { job_id, signature }
    }

    /// Whether this cancel is signed by one of `trusted`.
    pub fn verify_cancel(&self, trusted: &[VerifyingKey]) -> Result<(), SignatureError> {
        let value = serde_json::to_value(self).map_err(|_| SignatureError::NotAnObject)?;
        verify_job(&value, trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_has_a_stable_wire_form() {
        let id = Uuid::nil();
        let json = serde_json::to_string(&ControlMessage::cancel(id)).unwrap();
        assert_eq!(
            json,
            r#"{"type":"cancel","job_id":"00000000-0000-0000-0000-000000000000"}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlMessage>(&json).unwrap(),
            ControlMessage::cancel(id)
        );
    }

    #[test]
    fn a_signed_cancel_verifies_only_with_its_key_and_its_job() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let cancel = ControlMessage::signed_cancel(Uuid::nil(), &key);
        assert_eq!(cancel.verify_cancel(&[key.verifying_key()]), Ok(()));
        assert_eq!(
            cancel.verify_cancel(&[other.verifying_key()]),
            Err(SignatureError::Invalid)
        );
        let ControlMessage::Cancel { signature, .. } = cancel else {
            panic!("a cancel");
        };
        let moved = ControlMessage::Cancel {
            job_id: Uuid::from_u128(1),
            signature,
        };
        assert_eq!(
            moved.verify_cancel(&[key.verifying_key()]),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            ControlMessage::cancel(Uuid::nil()).verify_cancel(&[key.verifying_key()]),
            Err(SignatureError::Missing)
        );
    }
}
