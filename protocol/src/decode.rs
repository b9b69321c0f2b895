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
        .map_err(|e| DecodeError::Shape(shape_problem(&e, &value)))?;
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

/// Fields whose value is a map with arbitrary keys: their keys are shown as
/// `["key"]`, as validation shows them.
const MAP_FIELDS: [&str; 3] = ["build_args", "labels", "env"];

/// Internally tagged objects: serde reports errors inside them at the
/// object, not at the field.
const TAGGED_OBJECTS: [&[&str]; 2] = [&["repo", "auth"], &["registry_auth"]];

/// Turns serde's error into `field: reason`: the path names the field, and a
/// missing or unknown field's name moves from the message into the path.
fn shape_problem(error: &serde_path_to_error::Error<serde_json::Error>, job: &Value) -> Problem {
    let mut path: Vec<PathPart> = Vec::new();
    for segment in error.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => path.push(PathPart::Index(*index)),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                path.push(PathPart::Key(key.clone()))
            }
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
    let name_field = |path: &mut Vec<PathPart>, name: &str| {
        if path.last() != Some(&PathPart::Key(name.to_owned())) {
            path.push(PathPart::Key(name.to_owned()));
        }
    };
    let reason = if let Some(name) = quoted_after(&message, "missing field `") {
        name_field(&mut path, name);
        "missing field".to_owned()
    } else if let Some(name) = quoted_after(&message, "unknown field `") {
        name_field(&mut path, name);
        match expected_list(&message) {
            Some(list) => format!("unknown field; expected {list}"),
            None => "unknown field".to_owned(),
        }
    } else if let Some(name) = quoted_after(&message, "duplicate field `") {
        name_field(&mut path, name);
        "duplicate field".to_owned()
    } else if let Some(name) = quoted_after(&message, "unknown variant `") {
        match expected_list(&message) {
            Some(list) => format!("unknown variant {name:?}; expected {list}"),
            None => format!("unknown variant {name:?}"),
        }
    } else if let Some((field, kind)) = message
        .starts_with("invalid type")
        .then(|| non_string_field(&path, job))
        .flatten()
    {
        // Every field of the tagged objects is a string: name the one that is not.
        path.push(PathPart::Key(field));
        format!("invalid type: {kind}, expected a string")
    } else {
        message
    };
    Problem::new(render_path(&path), reason)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Key(String),
    Index(usize),
}

fn render_path(path: &[PathPart]) -> String {
    let mut field = String::new();
    let mut in_map = false;
    for part in path {
        match part {
            PathPart::Index(index) => field.push_str(&format!("[{index}]")),
            PathPart::Key(key) if in_map || !is_plain_key(key) => {
                field.push_str(&format!("[{key:?}]"))
            }
            PathPart::Key(key) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
        }
        in_map = matches!(part, PathPart::Key(key) if MAP_FIELDS.contains(&key.as_str()));
    }
    if field.is_empty() {
        field.push_str("job");
    }
    field
}

fn is_plain_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// When `path` is one of the tagged objects, its first field (other than
/// `type`) whose value is not a string, and what it is instead.
fn non_string_field(path: &[PathPart], job: &Value) -> Option<(String, &'static str)> {
    let keys: Vec<&str> = path
        .iter()
        .map(|part| match part {
            PathPart::Key(key) => Some(key.as_str()),
            PathPart::Index(_) => None,
        })
        .collect::<Option<_>>()?;
    if !TAGGED_OBJECTS.contains(&keys.as_slice()) {
        return None;
    }
    let object = keys
        .iter()
        .try_fold(job, |value, key| value.get(key))?
        .as_object()?;
    object
        .iter()
        .find(|(key, value)| *key != "type" && !value.is_string())
        .map(|(key, value)| (key.clone(), kind_of(value)))
}

/// `name` in `` prefix`name`... `` when the message starts with `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// `one of a, b, c` from serde's ``, expected one of `a`, `b`, `c` `` (or
/// `a or b` from ``expected `a` or `b` ``).
fn expected_list(message: &str) -> Option<String> {
    let (_, list) = message.split_once(", expected ")?;
    list.trim_start_matches("one of ")
        .starts_with('`')
        .then(|| list.replace('`', ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{b64, job_json, FAKE_KEY_TEXT};
    use serde_json::json;

    fn decode(value: &Value) -> Result<Job, DecodeError> {
        decode_job(&serde_json::to_vec(value).unwrap())
    }

    fn problems_of(value: &Value) -> Vec<String> {
        decode(value).unwrap_err().problems()
    }

    /// The fixture with `pointer` (a JSON pointer) set to `new`, or removed.
    fn with(pointer: &str, new: Option<Value>) -> Value {
        let mut value = job_json();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let object = value.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match new {
            Some(new) => object.insert(key.to_owned(), new),
            None => object.remove(key),
        };
        value
    }

    #[test]
    fn decodes_the_fixture() {
        let job = decode(&job_json()).unwrap();
        assert_eq!(job.service_id, "web-app");
        assert_eq!(job.timeout_secs, 1800);
    }

    #[test]
    fn job_round_trips_through_json() {
        let original = job_json();
        let job = decode(&original).unwrap();
        let encoded = serde_json::to_value(&job).unwrap();
        assert_eq!(encoded, original);
        let again = serde_json::to_value(decode(&encoded).unwrap()).unwrap();
        assert_eq!(again, encoded);
    }

    #[test]
    fn defaults_are_filled_in_and_serialized() {
        let minimal = json!({
            "version": 1,
            "job_id": "6f1c2a3e-9b7d-4c1e-8f00-0123456789ab",
            "service_id": "app",
            "repo": {"url": "https://git.example.com/app.git", "revision": "main"},
            "image": {"repository": "localhost:5000/app", "tags": ["latest"]}
        });
        let job = decode(&minimal).unwrap();
        assert_eq!(job.build.context, ".");
        assert_eq!(job.build.dockerfile, "Dockerfile");
        assert!(job.image.push);
        assert_eq!(job.timeout_secs, crate::DEFAULT_TIMEOUT_SECS);
        let encoded = serde_json::to_value(&job).unwrap();
        assert_eq!(encoded["repo"]["auth"], json!({"type": "none"}));
        assert_eq!(decode(&encoded).unwrap().build.context, ".");
    }

    #[test]
    fn unknown_version_is_reported_before_the_shape() {
        // A later protocol may change everything else; the version is what
        // the author needs to hear about.
        let future = json!({"version": 2, "job": {"something": "else"}});
        assert_eq!(
            problems_of(&future),
            ["version: unsupported protocol version 2; this worker speaks 1"]
        );
        assert!(matches!(decode(&future), Err(DecodeError::Version(_))));
        assert_eq!(problems_of(&json!({"job_id": "x"})), ["version: missing"]);
        assert_eq!(
            problems_of(&with("/version", Some(json!("1")))),
            ["version: expected the integer 1, found a string"]
        );
        assert_eq!(
            problems_of(&with("/version", Some(json!(0)))),
            ["version: unsupported protocol version 0; this worker speaks 1"]
        );
    }

    #[test]
    fn size_limit() {
        let big = vec![b' '; MAX_JOB_BYTES + 1];
        assert_eq!(
            decode_job(&big).unwrap_err().problems(),
            ["job: 1048577 bytes exceeds the 1048576-byte limit"]
        );
        let bytes = serde_json::to_vec(&job_json()).unwrap();
        assert_eq!(
            decode_job_with_limit(&bytes, 10).unwrap_err(),
            DecodeError::TooLarge {
                size: bytes.len(),
                limit: 10
            }
        );
        assert!(decode_job_with_limit(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn not_json() {
        assert_eq!(
            decode_job(b"{\"version\": 1,\n  \"job_id\": }")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: expected value at line 2 column 13"]
        );
        assert_eq!(
            decode_job(b"{\"version\": 1} trailing")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: trailing characters at line 1 column 16"]
        );
        assert_eq!(
            decode_job(b"{\"service_id\": \"\xff\"}")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: not UTF-8 (invalid byte at offset 16)"]
        );
        assert_eq!(
            decode_job(b"").unwrap_err().problems(),
            ["job: not valid JSON: EOF while parsing a value at line 1 column 0"]
        );
        for (text, kind) in [
            ("[]", "an array"),
            ("\"job\"", "a string"),
            ("1", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            assert_eq!(
                decode_job(text.as_bytes()).unwrap_err().problems(),
                [format!("job: expected a JSON object, found {kind}")]
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (
                with("/repo/revision", None),
                "repo.revision: missing field",
            ),
            (with("/image", None), "image: missing field"),
            (
                with("/build/dockerfil", Some(json!("Dockerfile"))),
                "build.dockerfil: unknown field; expected one of context, dockerfile, build_args, target, labels, no_cache, pull, cache_from, builder",
            ),
            (
                with("/extra", Some(json!(1))),
                "extra: unknown field; expected one of version, job_id, service_id, repo, build, image, registry_auth, timeout_secs, signature",
            ),
            (
                with("/image/tags", Some(json!("x"))),
                "image.tags: invalid type: string \"x\", expected a sequence",
            ),
            (
                with("/image/tags", Some(json!(["a", 2]))),
                "image.tags[1]: invalid type: integer `2`, expected a string",
            ),
            (
                with("/repo/auth", Some(json!({"type": "sshkey"}))),
                "repo.auth.type: unknown variant \"sshkey\"; expected one of none, ssh_key, https",
            ),
            (
                with("/repo/auth", Some(json!({"private_key": "x"}))),
                "repo.auth.type: missing field",
            ),
            (
                with("/repo/auth", Some(json!({"type": "ssh_key"}))),
                "repo.auth.private_key: missing field",
            ),
            (
                with("/repo/auth", Some(json!({"type": "ssh_key", "private_key": "x", "pasphrase": "y"}))),
                "repo.auth.pasphrase: unknown field; expected private_key or passphrase",
            ),
            (
                with("/registry_auth", Some(json!({"type": "basic", "username": "u"}))),
                "registry_auth.password: missing field",
            ),
            (
                with("/job_id", Some(json!("not-a-uuid"))),
                "job_id: UUID parsing failed: invalid character: found `n` at 0",
            ),
            (
                with("/timeout_secs", Some(json!(-1))),
                "timeout_secs: invalid value: integer `-1`, expected u64",
            ),
            (
                with("/build/build_args", Some(json!({"A": 1}))),
                "build.build_args[\"A\"]: invalid type: integer `1`, expected a string",
            ),
            (
                with("/build/builder", Some(json!({"command": "make", "artifacts": "dist"}))),
                "build.builder.command: invalid type: string \"make\", expected a sequence",
            ),
            (
                with("/repo/submodules", Some(json!("yes"))),
                "repo.submodules: invalid type: string \"yes\", expected a boolean",
            ),
        ];
        for (value, expected) in cases {
            let error = decode(&value).unwrap_err();
            assert!(matches!(error, DecodeError::Shape(_)), "{error:?}");
            assert_eq!(error.problems(), [expected]);
        }
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let text = serde_json::to_string(&job_json()).unwrap().replacen(
            "\"service_id\":\"web-app\"",
            "\"service_id\":\"web-app\",\"service_id\":\"other\"",
            1,
        );
        assert_eq!(
            decode_job(text.as_bytes()).unwrap_err().problems(),
            ["service_id: duplicate field"]
        );
    }

    #[test]
    fn wrong_typed_secrets_are_not_echoed() {
        let secret = 987_654_321_u64;
        for value in [
            with(
                "/repo/auth",
                Some(json!({"type": "ssh_key", "private_key": secret})),
            ),
            with(
                "/repo/auth",
                Some(
                    json!({"type": "ssh_key", "private_key": b64(FAKE_KEY_TEXT), "passphrase": secret}),
                ),
            ),
            with(
                "/repo/auth",
                Some(json!({"type": "https", "username": "u", "token": secret})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "basic", "username": "u", "password": secret})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "docker_config", "config": [secret]})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "docker_config", "config": {"auths": secret}})),
            ),
        ] {
            let problems = decode(&value).unwrap_err().problems();
            assert_eq!(problems.len(), 1);
            assert!(!problems[0].contains(&secret.to_string()), "{problems:?}");
            assert!(problems[0].contains("invalid type"), "{problems:?}");
        }
        assert_eq!(
            problems_of(&with(
                "/repo/auth",
                Some(json!({"type": "https", "username": "u", "token": secret}))
            )),
            ["repo.auth.token: invalid type: a number, expected a string"]
        );
        assert_eq!(
            problems_of(&with(
                "/registry_auth",
                Some(json!({"type": "basic", "username": "u", "password": true}))
            )),
            ["registry_auth.password: invalid type: a boolean, expected a string"]
        );
    }

    #[test]
    fn validation_problems_come_after_a_good_shape() {
        let mut value = job_json();
        value["repo"]["revision"] = json!("");
        value["image"]["tags"] = json!(["ok", "not a tag"]);
        value["build"]["dockerfile"] = json!("../../../etc/passwd");
        let error = decode(&value).unwrap_err();
        let DecodeError::Invalid(errors) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(errors.0.len(), 3);
        let problems = error.problems();
        assert_eq!(problems[0], "repo.revision: empty");
        assert_eq!(problems[1], "build.dockerfile: escapes the checkout");
        assert!(problems[2].starts_with("image.tags[1]: not a valid tag"));
        assert_eq!(error.to_string(), problems.join("; "));
    }
}
