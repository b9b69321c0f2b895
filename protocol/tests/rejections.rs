//! What a rejection says: every problem of a job in one pass (shape and
//! rules), bounded in number and length, and what can still be read from
//! the job to route the rejection.

use buildbot_protocol::{
    decode_job, read_envelope, DecodeError, JobEnvelope, MAX_JOB_BYTES, MAX_PROBLEMS,
};
use serde_json::{json, Value};
use uuid::Uuid;

const JOB_ID: &str = "0b0f5b8e-3f1e-4a55-9a51-6a1b0c1d2e3f";

/// A valid job to break.
fn job() -> Value {
    json!({
        "version": 1,
        "job_id": JOB_ID,
        "service_id": "hello",
        "repo": {
            "url": "ssh://git@git.example.com/team/hello.git",
            "revision": "main",
            "auth": {"type": "ssh_key", "private_key": "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0KQUFBQQotLS0tLUVORCBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K"}
        },
        "build": {
            "builder": {
                "image": "debian:bookworm-slim",
                "command": ["make"],
                "env": {"CI": "1"},
                "artifacts": "dist"
            }
        },
        "image": {"repository": "localhost:5000/team/hello", "tags": ["latest", "v1", "v2"]}
    })
}

fn problems_of(value: &Value) -> Vec<String> {
    decode_job(value.to_string().as_bytes())
        .unwrap_err()
        .problems()
}

#[test]
fn the_job_to_break_is_valid() {
    decode_job(job().to_string().as_bytes()).unwrap();
}

#[test]
fn a_job_of_only_version_and_id_lists_every_missing_field() {
    let error =
        decode_job(format!(r#"{{"version": 1, "job_id": "{JOB_ID}"}}"#).as_bytes()).unwrap_err();
    assert!(matches!(error, DecodeError::Shape(_)), "{error:?}");
    assert_eq!(
        error.problems(),
        [
            "image: missing field",
            "repo: missing field",
            "service_id: missing field",
        ]
    );
}

#[test]
fn unknown_missing_and_wrong_types_at_several_depths_at_once() {
    let mut value = job();
    value["colour"] = json!("blue");
    value["repo"]["auth"]["private_key"] = json!(12345);
    value["repo"]["auth"]["passphrase_"] = json!("x");
    value["repo"].as_object_mut().unwrap().remove("revision");
    value["image"]["tags"][2] = json!({"name": "v2"});
    value["build"]["builder"]["env"]["X"] = json!(["a"]);
    value["build"]["builder"]
        .as_object_mut()
        .unwrap()
        .remove("artifacts");
    value["build"]["no_cache"] = json!("yes");
    // Rule problems in parts whose shape is right are not hidden.
    value["image"]["tags"][0] = json!("-bad");
    value["service_id"] = json!("hello world");
    value["timeout_secs"] = json!(0);
    assert_eq!(
        problems_of(&value),
        [
            "build.builder.artifacts: missing field",
            "build.builder.env[\"X\"]: expected a string, found an array",
            "build.no_cache: expected a boolean, found a string \"yes\"",
            "colour: unknown field; expected one of build, envelope, image, job_id, registry_auth, repo, service_id, signature, test, timeout_secs, version",
            "image.tags[2]: expected a string, found an object",
            "repo.auth.passphrase_: unknown field; expected passphrase or private_key",
            "repo.auth.private_key: expected a string, found a number",
            "repo.revision: missing field",
            "service_id: only letters, digits, \".\", \"_\" and \"-\" are allowed",
            "image.tags[0]: not a valid tag; a tag is up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\"",
            "timeout_secs: 0 is out of range; must be between 1 and 86400 (one day)",
        ]
    );
}

/// A job of `tags` as its image tags (JSON text, without the brackets).
fn job_with_tags(tags: &str) -> Vec<u8> {
    let mut text = job().to_string();
    let at = text.find(r#"["latest","v1","v2"]"#).unwrap();
    text.replace_range(
        at..at + r#"["latest","v1","v2"]"#.len(),
        &format!("[{tags}]"),
    );
    text.into_bytes()
}

fn assert_bounded(problems: &[String], total: usize) {
    assert_eq!(problems.len(), MAX_PROBLEMS + 1);
    assert_eq!(
        problems[MAX_PROBLEMS],
        format!("… and {} more problems", total - MAX_PROBLEMS)
    );
    let size: usize = problems.iter().map(String::len).sum();
    assert!(size < 20_000, "{size} bytes of problems");
}

#[test]
fn two_hundred_thousand_bad_tags_give_a_small_rejection() {
    let count = 200_000;
    let bad_tags = vec![r#"" ""#; count].join(",");
    let bytes = job_with_tags(&bad_tags);
    assert!(bytes.len() > 790_000 && bytes.len() <= MAX_JOB_BYTES);
    let error = decode_job(&bytes).unwrap_err();
    let DecodeError::Invalid(list) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(list.len(), count);
    let problems = error.problems();
    assert_bounded(&problems, count);
    assert!(problems[0].starts_with("image.tags[0]: not a valid tag"));
    assert!(problems[99].starts_with("image.tags[99]: "));
}

#[test]
fn two_hundred_thousand_wrong_typed_tags_give_a_small_rejection() {
    let count = 200_000;
    let bytes = job_with_tags(&vec!["0"; count].join(","));
    let error = decode_job(&bytes).unwrap_err();
    assert!(matches!(error, DecodeError::Shape(_)), "{error:?}");
    let problems = error.problems();
    // Beyond the bound the rules wait for the shape to be fixed: the count
    // is of shape problems.
    assert_bounded(&problems, count);
    assert_eq!(
        problems[0],
        "image.tags[0]: expected a string, found a number 0"
    );
}

#[test]
fn eighty_thousand_unknown_fields_give_a_small_rejection() {
    let count = 80_000;
    let mut text = job().to_string();
    text.pop();
    for i in 0..count {
        text.push_str(&format!(",\"f{i}\":0"));
    }
    text.push('}');
    assert!(text.len() <= MAX_JOB_BYTES);
    let problems = decode_job(text.as_bytes()).unwrap_err().problems();
    assert_bounded(&problems, count);
    assert!(problems[0].starts_with("f0: unknown field; expected one of build,"));
}

#[test]
fn the_count_beyond_the_bound_includes_the_rules() {
    // 60 wrong-typed tags, then 60 bad ones: the list holds the 60 shape
    // problems and the first 40 rule problems; 20 more are counted.
    let tags = [vec!["0"; 60], vec![r#""-bad""#; 60]].concat().join(",");
    let error = decode_job(&job_with_tags(&tags)).unwrap_err();
    let problems = error.problems();
    assert_bounded(&problems, 120);
    assert_eq!(
        problems[59],
        "image.tags[59]: expected a string, found a number 0"
    );
    assert!(problems[60].starts_with("image.tags[60]: not a valid tag"));
}

#[test]
fn long_input_is_not_echoed() {
    let long = "x".repeat(100_000);
    let mut value = job();
    value["image"]["tags"] = json!(long);
    value["build"]["build_args"] = json!({ format!("{long}\u{0}"): "v" });
    value["build"]["cache_from"] = json!([format!("registry.example.com/{long}X")]);
    value["build"]["builder"]["env"] = json!({ "OK": long });
    value["repo"]["revision"] = json!(format!("{long}.."));
    value[long.as_str()] = json!(1);
    // The text grammars quote only a short part of what they refuse; every
    // line is cut to a few hundred characters in any case.
    value["repo"]["url"] = json!(format!("{long}://git.example.com/x.git"));
    let problems = problems_of(&value);
    assert_eq!(problems.len(), 6, "{problems:#?}");
    for problem in &problems {
        assert!(
            problem.len() < 500,
            "{} bytes: {}…",
            problem.len(),
            &problem[..200]
        );
    }
    let quoted = format!("\"{}\"…", "x".repeat(64));
    assert_eq!(
        problems[0],
        format!("image.tags: expected an array, found a string {quoted}")
    );
    assert!(problems[1].starts_with(&format!("[{quoted}]: unknown field")));
    assert!(problems[2].starts_with("repo.url: unsupported scheme"));
    assert_eq!(
        problems[4],
        format!("build.build_args[{quoted}]: name contains a NUL byte")
    );
}

#[test]
fn envelope_of_a_valid_job() {
    let envelope = read_envelope(job().to_string().as_bytes());
    assert_eq!(
        envelope,
        JobEnvelope {
            job_id: Some(Uuid::parse_str(JOB_ID).unwrap()),
            service_id: Some("hello".into()),
        }
    );
}

#[test]
fn envelope_of_an_invalid_job() {
    let only_ids = format!(r#"{{"job_id": "{JOB_ID}", "service_id": "hello", "image": 5}}"#);
    let envelope = read_envelope(only_ids.as_bytes());
    assert_eq!(envelope.job_id, Some(Uuid::parse_str(JOB_ID).unwrap()));
    assert_eq!(envelope.service_id.as_deref(), Some("hello"));
    // Of a later protocol, or missing the version: still read.
    let future = format!(r#"{{"version": 9, "job_id": "{JOB_ID}", "service_id": "a.b-c_d"}}"#);
    assert_eq!(
        read_envelope(future.as_bytes()).service_id.as_deref(),
        Some("a.b-c_d")
    );
    // One field malformed: the other is still read.
    let bad_id = r#"{"job_id": 17, "service_id": "hello"}"#;
    assert_eq!(
        read_envelope(bad_id.as_bytes()),
        JobEnvelope {
            job_id: None,
            service_id: Some("hello".into())
        }
    );
    let nested = format!(r#"{{"job_id": "{JOB_ID}", "service_id": {{"name": "hello"}}}}"#);
    assert_eq!(read_envelope(nested.as_bytes()).service_id, None);
    assert!(read_envelope(nested.as_bytes()).job_id.is_some());
}

#[test]
fn envelope_fields_must_be_well_formed() {
    let read = |job_id: &str, service_id: &str| {
        read_envelope(
            json!({"job_id": job_id, "service_id": service_id})
                .to_string()
                .as_bytes(),
        )
    };
    for bad_id in [
        "",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "0b0f5b8e-3f1e-4a55-9a51-6a1b0c1d2e3f.x",
    ] {
        assert_eq!(read(bad_id, "hello").job_id, None, "{bad_id}");
    }
    let long = "a".repeat(129);
    for bad_service in [
        "",
        "hello world",
        "svc.*.#",
        "hëllo",
        "a\nb",
        "web/app",
        long.as_str(),
    ] {
        assert_eq!(
            read(JOB_ID, bad_service).service_id,
            None,
            "{bad_service:?}"
        );
    }
    assert_eq!(
        read(JOB_ID, &"a".repeat(128)).service_id,
        Some("a".repeat(128))
    );
    // Another spelling of the same UUID is read as that UUID.
    let upper = JOB_ID.to_uppercase();
    assert_eq!(
        read(&upper, "x").job_id,
        Some(Uuid::parse_str(JOB_ID).unwrap())
    );
}

#[test]
fn envelope_of_what_is_not_a_json_object_is_empty() {
    for bytes in [
        &b""[..],
        b"not json",
        b"\xff\xfe",
        b"[\"0b0f5b8e-3f1e-4a55-9a51-6a1b0c1d2e3f\", \"hello\"]",
        b"\"hello\"",
        b"null",
        // Truncated, and followed by more.
        b"{\"job_id\": \"0b0f5b8e-3f1e-4a55-9a51-6a1b0c1d2e3f\", \"service_id\": \"hello\"",
        b"{\"service_id\": \"hello\"} {\"service_id\": \"other\"}",
    ] {
        assert_eq!(read_envelope(bytes), JobEnvelope::default(), "{bytes:?}");
    }
}

#[test]
fn envelope_of_hostile_input() {
    // A field given twice is ambiguous: neither value is trusted.
    let twice =
        format!(r#"{{"job_id": "{JOB_ID}", "service_id": "hello", "service_id": "other"}}"#);
    let envelope = read_envelope(twice.as_bytes());
    assert_eq!(envelope.service_id, None);
    assert!(envelope.job_id.is_some());
    // Deep nesting is skipped without recursion (serde_json ignores a value
    // with a loop), so it neither overflows the stack nor hides the fields.
    let deep = format!(
        r#"{{"x": {}{}, "service_id": "hello"}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        read_envelope(deep.as_bytes()).service_id.as_deref(),
        Some("hello")
    );
    let deep_id = format!(
        r#"{{"job_id": {}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(read_envelope(deep_id.as_bytes()), JobEnvelope::default());
    // Huge values are skipped, not kept.
    let huge = json!({
        "job_id": "a".repeat(5_000_000),
        "service_id": "hello",
        "image": {"tags": vec!["x"; 100_000]},
    });
    let envelope = read_envelope(huge.to_string().as_bytes());
    assert_eq!(envelope.job_id, None);
    assert_eq!(envelope.service_id.as_deref(), Some("hello"));
    // Escapes decode before the check.
    let escaped = r#"{"service_id": "hel\u006co"}"#;
    assert_eq!(
        read_envelope(escaped.as_bytes()).service_id.as_deref(),
        Some("hello")
    );
    let escaped_dot = r#"{"service_id": "a\u0000b"}"#;
    assert_eq!(read_envelope(escaped_dot.as_bytes()).service_id, None);
}
