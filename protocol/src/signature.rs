//! Signed jobs: an orchestrator signs a job with an ed25519 key, a worker
//! configured with trusted public keys accepts only jobs whose `signature`
//! verifies — the queue-world form of the original's
//! `SSH_PUBKEY_IN_INITIATE_BUILDS`.
//!
//! What is signed is the job's *canonical form*: the message's JSON object
//! without its `signature` member, serialized with object keys sorted by
//! code point and no whitespace (in Python: `json.dumps(job,
//! sort_keys=True, separators=(",", ":"), ensure_ascii=False)`). The
//! signature is base64 (standard alphabet) of the 64 signature bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a job's signature was not accepted. The messages name the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The message is not a JSON object, so it has no signature to check.
    #[error("signature: the job is not a JSON object")]
    NotAnObject,
    /// The worker accepts only signed jobs.
    #[error("signature: missing; this worker accepts only jobs signed by a trusted key")]
    Missing,
    /// `signature` is not base64 of 64 bytes.
    #[error("signature: not base64 of a 64-byte ed25519 signature")]
    Malformed,
    /// No trusted key verifies the signature over this job.
    #[error("signature: does not verify with any trusted key (forged, or the job was changed after signing)")]
    Invalid,
    /// A configured public key is not base64 of 32 bytes.
    #[error("trusted key {0}: not base64 of a 32-byte ed25519 public key")]
    BadKey(usize),
}

/// Parses base64 ed25519 public keys (32 bytes each), as configured.
pub fn parse_public_keys<'a>(
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<VerifyingKey>, SignatureError> {
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let bytes: [u8; 32] = STANDARD
                .decode(key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(SignatureError::BadKey(i))?;
            VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey(i))
        })
        .collect()
}

/// Base64 of a public key, the form [`parse_public_keys`] reads.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Signs a job message (JSON object): returns it with `signature` set.
pub fn sign_job(job: &Value, key: &SigningKey) -> Result<Value, SignatureError> {
    let Value::Object(fields) = job else {
        return Err(SignatureError::NotAnObject);
    };
    let mut signed = fields.clone();
    signed.remove("signature");
    let signature = key.sign(&canonical(&Value::Object(signed.clone())));
    signed.insert(
        "signature".into(),
        Value::String(STANDARD.encode(signature.to_bytes())),
    );
    Ok(Value::Object(signed))
}

/// Checks that `message` (the raw job bytes, already known to be JSON) is
/// signed by one of `trusted`.
pub fn verify_job(message: &Value, trusted: &[VerifyingKey]) -> Result<(), SignatureError> {
    let Value::Object(fields) = message else {
        return Err(SignatureError::NotAnObject);
    };
    let mut unsigned = fields.clone();
    let signature = match unsigned.remove("signature") {
        None | Some(Value::Null) => return Err(SignatureError::Missing),
        Some(Value::String(text)) => text,
        Some(_) => return Err(SignatureError::Malformed),
    };
    let bytes: [u8; 64] = STANDARD
        .decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    let signature = Signature::from_bytes(&bytes);
    let payload = canonical(&Value::Object(unsigned));
    trusted
        .iter()
        .any(|key| key.verify(&payload, &signature).is_ok())
        .then_some(())
        .ok_or(SignatureError::Invalid)
}

/// The canonical bytes of `value`: keys sorted, no whitespace. Sorted
/// explicitly rather than trusting serde_json's map order, which a crate
/// feature elsewhere in a build can change. Zeroed on drop: they are the
/// whole job, credentials in clear.
fn canonical(value: &Value) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(&fields[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn job() -> Value {
        json!({"version": 1, "image": {"tags": ["a", "b"], "repository": "r"}, "service_id": "s"})
    }

    #[test]
    fn a_signed_job_verifies_with_its_key_only() {
        let signed = sign_job(&job(), &key(1)).unwrap();
        assert_eq!(verify_job(&signed, &[key(1).verifying_key()]), Ok(()));
        assert_eq!(
            verify_job(&signed, &[key(2).verifying_key()]),
            Err(SignatureError::Invalid)
        );
        let both = [key(2).verifying_key(), key(1).verifying_key()];
        assert_eq!(verify_job(&signed, &both), Ok(()));
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter_but_content_does() {
        let signed = sign_job(&job(), &key(1)).unwrap();
        let text = serde_json::to_string_pretty(&signed).unwrap();
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        let trusted = [key(1).verifying_key()];
        assert_eq!(verify_job(&reparsed, &trusted), Ok(()));
        let mut changed = signed.clone();
        changed["image"]["tags"][1] = json!("c");
        assert_eq!(verify_job(&changed, &trusted), Err(SignatureError::Invalid));
    }

    #[test]
    fn canonical_form_matches_pythons_sorted_compact_dump() {
        let value = json!({"b": [1, {"d": "é/\n", "c": null}], "a": true});
        assert_eq!(
            String::from_utf8(canonical(&value).to_vec()).unwrap(),
            r#"{"a":true,"b":[1,{"c":null,"d":"é/\n"}]}"#
        );
    }

    #[test]
    fn unsigned_and_malformed_signatures_are_named() {
        let trusted = [key(1).verifying_key()];
        assert_eq!(verify_job(&job(), &trusted), Err(SignatureError::Missing));
        let mut bad = job();
        bad["signature"] = json!("not base64!");
        assert_eq!(verify_job(&bad, &trusted), Err(SignatureError::Malformed));
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_named() {
        let text = public_key_base64(&key(3).verifying_key());
        assert_eq!(
            parse_public_keys([text.as_str()]).unwrap(),
            [key(3).verifying_key()]
        );
        assert_eq!(
            parse_public_keys([text.as_str(), "short"]),
            Err(SignatureError::BadKey(1))
        );
    }
}
