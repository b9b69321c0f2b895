//! JSON Schema of the job and of the events, generated from the types, so
//! orchestrators in other languages can check what they send and receive.
//!
//! The checked-in copies under `protocol/schema/` are rewritten by
//! `cargo run -p buildbot-protocol --bin buildbot-schema`; a test fails when
//! they are not current.

use crate::{Event, Job};

/// File name of the job schema.
pub const JOB_SCHEMA_FILE: &str = "job.schema.json";
/// File name of the event schema.
pub const EVENT_SCHEMA_FILE: &str = "event.schema.json";

/// JSON Schema (draft 2020-12) of a job message.
pub fn job_schema() -> serde_json::Value {
    schemars::schema_for!(Job).to_value()
}

/// JSON Schema (draft 2020-12) of an event message.
pub fn event_schema() -> serde_json::Value {
    schemars::schema_for!(Event).to_value()
}

/// Each schema file's name and content as checked in: pretty-printed JSON
/// with a final newline.
pub fn schema_files() -> [(&'static str, String); 2] {
    [
        (JOB_SCHEMA_FILE, render(&job_schema())),
        (EVENT_SCHEMA_FILE, render(&event_schema())),
    ]
}

fn render(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(schema)).expect("a schema serializes");
    text.push('\n');
    text
}

/// `value` with every object's keys in sorted order, so the files do not
/// depend on whether some crate in the build enables serde_json's
/// `preserve_order`.
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(object) => {
            let mut entries: Vec<_> = object.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), sorted(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted).collect())
        }
        other => other.clone(),
    }
}
