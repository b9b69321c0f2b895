//! Decoding a job message: size limit, JSON syntax, protocol version, shape
//! (with the path of the offending field), then [`Job::validate`].

use serde_json::Value;
use thiserror::Error;

use crate::validate::unsupported_version;
use crate::{Job, Problem, ValidationErrors, PROTOCOL_VERSION};

/// Largest job message a worker accepts, in bytes (1 MiB).
pub const MAX_JOB_BYTES: usize = 1024 * 1024;

/// Why a job message was not accepted. Every variant names the field at
/// fault; none holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The message is larger than the limit.
    #[error("job: {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The message is not UTF-8 JSON; the text says where it breaks.
    #[error("job: not valid JSON: {0}")]
    NotJson(String),
    /// The message is JSON, but not an object.
    #[error("job: expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// `version` is missing or not the version this crate speaks. Checked
    /// before anything else, so a job of a later protocol is reported as
    /// such rather than by whichever field changed shape.
    #[error(transparent)]
    Version(Problem),
    /// A field is missing, unknown or of the wrong type.
    #[error(transparent)]
    Shape(Problem),
    /// The job has the right shape but breaks one or more rules.
    #[error(transparent)]
    Invalid(ValidationErrors),
}

impl DecodeError {
    /// Every problem, each as `field: reason`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            DecodeError::Version(problem) | DecodeError::Shape(problem) => {
                vec![problem.to_string()]
            }
            DecodeError::Invalid(errors) => errors.messages(),
            other => vec![other.to_string()],
        }
    }
}

/// Decodes and validates a job message of at most [`MAX_JOB_BYTES`].
pub fn decode_job(bytes: &[u8]) -> Result<Job, DecodeError> {
    decode_job_with_limit(bytes, MAX_JOB_BYTES)
}

/// [`decode_job`] with another size limit, for a worker configured to accept
/// larger (or only smaller) messages.
pub fn decode_job_with_limit(bytes: &[u8], limit: usize) -> Result<Job, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DecodeError::NotJson(format!(
            "not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(DecodeError::NotAnObject(kind_of(&value)));
    };
    check_version(object.get("version")).map_err(DecodeError::Version)?;
    // Parsed again from the bytes (not from `value`) so that a duplicated
    // field is an error rather than silently the last one wins.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let job: Job = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| DecodeError::Shape(shape_problem(&e)))?;
    job.validate().map_err(DecodeError::Invalid)?;
    Ok(job)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_version(version: Option<&Value>) -> Result<(), Problem> {
    match version {
        None => Err(Problem::new("version", "missing")),
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => Ok(()),
        Some(Value::Number(n)) => Err(Problem::new("version", unsupported_version(n))),
        Some(other) => Err(Problem::new(
            "version",
            format!(
                "expected the integer {PROTOCOL_VERSION}, found {}",
                kind_of(other)
            ),
        )),
    }
}

/// Turns serde's error into `field: reason`: the path names the field, and a
/// missing or unknown field's name moves from the message into the path.
fn shape_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let mut field = String::new();
    for segment in error.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                field.push_str(&format!("[{index}]"));
            }
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => push_key(&mut field, key),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let inner = error.inner();
    let mut message = inner.to_string();
    // serde_json appends the position; the path says it better.
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    if let Some(stripped) = message.strip_suffix(&position) {
        message = stripped.to_owned();
    }
    let reason = if let Some(name) = quoted_after(&message, "missing field `") {
        push_key(&mut field, name);
        "missing field".to_owned()
    } else if let Some(name) = quoted_after(&message, "unknown field `") {
        let expected = expected_list(&message);
        push_key(&mut field, name);
        match expected {
            Some(list) => format!("unknown field; expected one of {list}"),
            None => "unknown field".to_owned(),
        }
    } else if let Some(name) = quoted_after(&message, "duplicate field `") {
        push_key(&mut field, name);
        "duplicate field".to_owned()
    } else {
        message
    };
    if field.is_empty() {
        field.push_str("job");
    }
    Problem::new(field, reason)
}

/// `name` in `` prefix`name`... `` when the message starts with `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// `a, b, c` from serde's ``expected one of `a`, `b`, `c` ``.
fn expected_list(message: &str) -> Option<String> {
    let (_, list) = message.split_once("expected one of ")?;
    Some(list.replace('`', ""))
}

fn push_key(field: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(key);
    } else {
        field.push_str(&format!("[{key:?}]"));
    }
}
