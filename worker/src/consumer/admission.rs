//! Signed jobs on a worker with trusted keys: a job is run only when a
//! trusted key signed it, its signed `envelope` names this worker's queue
//! and the message's own `reply_to`, it is within its validity, and no
//! worker accepted its nonce before (a replay).
//!
//! What is not signed, or not signed for this queue and reply queue, is
//! dropped with a log line and no reply ([`Refusal::Ignored`]): its
//! `reply_to` is the sender's choice, so a reply there would let anyone
//! post into another caller's queue. A job signed for this queue and reply
//! queue that is outside its validity is answered as usual
//! ([`Refusal::Rejected`]): its reply queue is the signer's.
//!
//! Accepted nonces go to the cancel stream ([`ControlMessage::Admitted`]),
//! so every worker, also one started later, refuses a replay; again with
//! `finished` once the result is out, after which even the broker's
//! redelivery of the message is refused (before, it is the job's retry
//! after its worker stopped).

use buildbot_protocol::signature::{verify_job, VerifyingKey};
use buildbot_protocol::SignedEnvelope;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a signer's clock may run ahead of the worker's.
const CLOCK_SKEW_SECS: u64 = 60;

/// At most this many nonces are remembered (those expiring first go
/// first): a nonce is only added for a job a trusted key signed, so this
/// bounds memory under legitimate load, at ~100 bytes each.
const MAX_REMEMBERED_NONCES: usize = 200_000;

/// Why a delivery is not run.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Answered with a `rejected` result naming every problem.
    Rejected(Vec<String>),
    /// Dropped without a reply; the reason is logged.
    Ignored(String),
}

/// A signed job's nonce and expiry, remembered once it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) nonce: String,
    pub(crate) expires_at: u64,
}

/// What the checks compare with.
pub(super) struct Expected<'a> {
    pub(super) trusted_keys: &'a [VerifyingKey],
    pub(super) queue: &'a str,
    /// The message's `reply_to` property.
    pub(super) reply_to: Option<&'a str>,
    /// Longest `expires_at - issued_at` accepted.
    pub(super) max_validity: Duration,
    /// The broker redelivers this message (its first worker stopped): its
    /// nonce was accepted for this very message.
    pub(super) redelivered: bool,
    /// Unix seconds.
    pub(super) now: u64,
}

/// Checks the signed job `data` against `expected`; see the module doc.
pub(super) fn admit(
    data: &[u8],
    expected: &Expected<'_>,
    nonces: &AdmittedNonces,
) -> Result<Admission, Refusal> {
    let ignored = |reason: String| Refusal::Ignored(reason);
    let message: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| ignored(format!("not JSON: {e}")))?;
    verify_job(&message, expected.trusted_keys).map_err(|e| ignored(e.to_string()))?;
    let envelope = message
        .get("envelope")
        .cloned()
        .ok_or_else(|| ignored("envelope: missing; a signed job must carry its envelope".into()))
        .and_then(|value| {
            serde_json::from_value::<SignedEnvelope>(value)
                .map_err(|e| ignored(format!("envelope: {e}")))
        })?;
    if expected.reply_to != Some(envelope.reply_to.as_str()) {
        return Err(ignored(format!(
            "envelope.reply_to: signed for {:?}, but the message's reply_to is {:?}",
            envelope.reply_to, expected.reply_to
        )));
    }
    if envelope.queue != expected.queue {
        return Err(ignored(format!(
            "envelope.queue: signed for {:?}, but published to {:?}",
            envelope.queue, expected.queue
        )));
    }
    // A redelivery (its worker stopped) of a job not yet finished is the
    // job's own retry; anything else with a known nonce is a replay.
    match nonces.finished(&envelope.nonce, expected.now) {
        Some(finished) if finished || !expected.redelivered => {
            return Err(ignored(format!(
                "envelope.nonce: {} was accepted before; a replay",
                envelope.nonce
            )));
        }
        _ => {}
    }
    check_validity(&envelope, expected)?;
    Ok(Admission {
        nonce: envelope.nonce,
        expires_at: envelope.expires_at,
    })
}

/// `issued_at` not ahead of the worker's clock (beyond the skew),
/// `expires_at` not passed, and the window within `max_validity`.
fn check_validity(envelope: &SignedEnvelope, expected: &Expected<'_>) -> Result<(), Refusal> {
    let now = expected.now;
    let mut problems = Vec::new();
    if envelope.expires_at <= now {
        problems.push(format!(
            "envelope.expires_at: the job expired at {}, {} s ago; sign it again",
            envelope.expires_at,
            now - envelope.expires_at
        ));
    }
    if envelope.issued_at > now + CLOCK_SKEW_SECS {
        problems.push(format!(
            "envelope.issued_at: {} is {} s ahead of this worker's clock (more than {CLOCK_SKEW_SECS} s)",
            envelope.issued_at,
            envelope.issued_at - now
        ));
    }
    let window = envelope.expires_at.saturating_sub(envelope.issued_at);
    let max = expected.max_validity.as_secs();
    if window > max {
        problems.push(format!(
            "envelope.expires_at: valid for {window} s; this worker accepts at most {max} s (--max-signed-validity-secs)"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refusal::Rejected(problems))
    }
}

/// Unix seconds now.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Nonces of signed jobs some worker accepted, each until it expires.
/// Cloning is cheap.
#[derive(Clone, Default)]
pub(crate) struct AdmittedNonces {
    state: Arc<Mutex<Nonces>>,
}

#[derive(Default)]
struct Nonces {
    /// Each nonce's expiry, and whether its job finished.
    expiry: HashMap<String, (u64, bool)>,
    /// (expires_at, nonce), soonest first, for eviction.
    by_expiry: BTreeSet<(u64, String)>,
}

impl AdmittedNonces {
    fn lock(&self) -> MutexGuard<'_, Nonces> {
        // Each update leaves both maps consistent before any panic point.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `nonce` until `expires_at` (and that its job `finished`,
    /// once it did), forgetting what expired by `now` and, past the bound,
    /// what expires first.
    pub(crate) fn remember(&self, nonce: &str, expires_at: u64, finished: bool, now: u64) {
        let mut state = self.lock();
        let was_finished = state.expiry.get(nonce).is_some_and(|(_, f)| *f);
        let entry = (expires_at, finished || was_finished);
        if let Some((old, _)) = state.expiry.insert(nonce.to_owned(), entry) {
            state.by_expiry.remove(&(old, nonce.to_owned()));
        }
        state.by_expiry.insert((expires_at, nonce.to_owned()));
        while let Some((at, oldest)) = state.by_expiry.first().cloned() {
            if at > now && state.expiry.len() <= MAX_REMEMBERED_NONCES {
                break;
            }
            state.by_expiry.pop_first();
            state.expiry.remove(&oldest);
        }
    }

    /// Whether `nonce` was accepted (and not expired by `now`): then
    /// whether its job finished.
    fn finished(&self, nonce: &str, now: u64) -> Option<bool> {
        self.lock()
            .expiry
            .get(nonce)
            .filter(|(expires_at, _)| *expires_at > now)
            .map(|(_, finished)| *finished)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().expiry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::signature::{sign_job, SigningKey};
    use buildbot_protocol::Job;

    const NOW: u64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn signed(envelope: SignedEnvelope) -> Vec<u8> {
        let job = Job::new(
            "app",
            "https://git.example.com/a.git",
            "main",
            "r.example.com/a",
            ["1"],
        )
        .with_envelope(envelope);
        let value = serde_json::to_value(&job).expect("JSON");
        serde_json::to_vec(&sign_job(&value, &key()).expect("signs")).expect("JSON")
    }

    fn envelope() -> SignedEnvelope {
        SignedEnvelope::new(NOW, 600, "jobs", "reply.1")
    }

    fn expected(trusted: &[VerifyingKey]) -> Expected<'_> {
        Expected {
            trusted_keys: trusted,
            queue: "jobs",
            reply_to: Some("reply.1"),
            max_validity: Duration::from_secs(3600),
            redelivered: false,
            now: NOW + 10,
        }
    }

    fn is_ignored(outcome: Result<Admission, Refusal>, reason: &str) {
        match outcome {
            Err(Refusal::Ignored(text)) => assert!(text.contains(reason), "{text}"),
            other => panic!("expected an ignored message about {reason:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_signed_job_for_this_queue_and_reply_queue_is_admitted_once() {
        let trusted = [key().verifying_key()];
        let nonces = AdmittedNonces::default();
        let data = signed(envelope());
        let admission = admit(&data, &expected(&trusted), &nonces).expect("admitted");
        nonces.remember(&admission.nonce, admission.expires_at, false, NOW);
        is_ignored(admit(&data, &expected(&trusted), &nonces), "a replay");
        // The broker giving the message back while its job had not
        // finished is the job's retry; once it finished, a replay.
        let again = Expected {
            redelivered: true,
            ..expected(&trusted)
        };
        assert!(admit(&data, &again, &nonces).is_ok());
        nonces.remember(&admission.nonce, admission.expires_at, true, NOW);
        is_ignored(admit(&data, &again, &nonces), "a replay");
        nonces.remember(&admission.nonce, admission.expires_at, false, NOW);
        is_ignored(admit(&data, &again, &nonces), "a replay");
    }

    #[test]
    fn what_is_not_bound_to_this_caller_gets_no_reply() {
        let trusted = [key().verifying_key()];
        let nonces = AdmittedNonces::default();
        let data = signed(envelope());
        let elsewhere = Expected {
            reply_to: Some("attacker"),
            ..expected(&trusted)
        };
        is_ignored(admit(&data, &elsewhere, &nonces), "envelope.reply_to");
        let other_queue = Expected {
            queue: "other",
            ..expected(&trusted)
        };
        is_ignored(admit(&data, &other_queue, &nonces), "envelope.queue");
        let other_key = [SigningKey::from_bytes(&[4; 32]).verifying_key()];
        is_ignored(admit(&data, &expected(&other_key), &nonces), "signature");
        let mut job =
            serde_json::to_value(Job::new("a", "u", "r", "r.example.com/a", ["1"])).expect("JSON");
        job = sign_job(&job, &key()).expect("signs");
        let no_envelope = serde_json::to_vec(&job).expect("JSON");
        is_ignored(
            admit(&no_envelope, &expected(&trusted), &nonces),
            "envelope: missing",
        );
        is_ignored(admit(b"{", &expected(&trusted), &nonces), "not JSON");
    }

    #[test]
    fn a_bound_job_outside_its_validity_is_rejected_with_reasons() {
        let trusted = [key().verifying_key()];
        let nonces = AdmittedNonces::default();
        let late = Expected {
            now: NOW + 601,
            ..expected(&trusted)
        };
        let outcome = admit(&signed(envelope()), &late, &nonces);
        assert_eq!(
            outcome,
            Err(Refusal::Rejected(vec![
                "envelope.expires_at: the job expired at 1800000600, 1 s ago; sign it again".into()
            ]))
        );
        let long = SignedEnvelope::new(NOW + 3600, 7200, "jobs", "reply.1");
        let Err(Refusal::Rejected(problems)) = admit(&signed(long), &expected(&trusted), &nonces)
        else {
            panic!("rejected");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("ahead of this worker's clock"));
        assert!(problems[1].contains("at most 3600 s"));
    }

    #[test]
    fn nonces_are_forgotten_when_they_expire_and_bounded() {
        let nonces = AdmittedNonces::default();
        nonces.remember("a", NOW + 5, false, NOW);
        assert_eq!(nonces.finished("a", NOW), Some(false));
        assert_eq!(nonces.finished("a", NOW + 5), None);
        nonces.remember("b", NOW + 100, false, NOW + 10);
        assert_eq!(nonces.len(), 1, "a expired and went");
        for i in 0..=MAX_REMEMBERED_NONCES {
            nonces.remember(&i.to_string(), NOW + 1000 + i as u64, false, NOW);
        }
        assert_eq!(nonces.len(), MAX_REMEMBERED_NONCES);
        assert!(
            nonces.finished("b", NOW).is_none(),
            "the soonest to expire went first"
        );
    }
}
