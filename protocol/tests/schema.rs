//! The checked-in JSON Schema files are what the types generate.

use buildbot_protocol::schema::{
    schema_files, write_schema_files, EVENT_SCHEMA_FILE, JOB_SCHEMA_FILE,
};
use buildbot_protocol::{event_schema, job_schema};
use std::path::Path;

/// Set to rewrite the checked-in files instead of checking them.
const UPDATE_VAR: &str = "UPDATE_SCHEMA";

#[test]
fn checked_in_schema_files_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    if std::env::var_os(UPDATE_VAR).is_some() {
        write_schema_files(&dir).unwrap();
    }
    for (name, generated) in schema_files() {
        let path = dir.join(name);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is missing or not current: run `{UPDATE_VAR}=1 cargo test -p buildbot-protocol --test schema` \
             (or `buildbot schema protocol/schema`) and commit the result",
            path.display()
        );
    }
}

#[test]
fn job_schema_describes_the_wire_format() {
    let schema = job_schema();
    assert_eq!(schema["title"], "Job");
    assert_eq!(schema["additionalProperties"], false);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in ["version", "job_id", "service_id", "repo", "image"] {
        assert!(required.contains(&field), "{field} is required");
    }
    assert_eq!(schema["properties"]["version"]["const"], 1);
    assert_eq!(schema["properties"]["timeout_secs"]["maximum"], 86400);
    assert_eq!(
        schema["$defs"]["Image"]["properties"]["tags"]["minItems"],
        1
    );
}

#[test]
fn secrets_are_write_only_password_strings() {
    let secret = &job_schema()["$defs"]["Secret"];
    assert_eq!(secret["type"], "string");
    assert_eq!(secret["format"], "password");
    assert_eq!(secret["writeOnly"], true);
    let text = serde_json::to_string(&job_schema()).unwrap();
    assert!(text.contains("\"private_key\":{\"$ref\":\"#/$defs/Secret\""));
}

#[test]
fn event_schema_has_every_kind() {
    let text = serde_json::to_string(&event_schema()).unwrap();
    for kind in ["\"step\"", "\"log\"", "\"result\""] {
        assert!(text.contains(kind), "{kind} missing");
    }
    assert_eq!(event_schema()["title"], "Event");
}

#[test]
fn file_names() {
    assert_eq!(JOB_SCHEMA_FILE, "job.schema.json");
    assert_eq!(EVENT_SCHEMA_FILE, "event.schema.json");
}
