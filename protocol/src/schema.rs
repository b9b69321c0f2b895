//! JSON Schema of the job and of the events, generated from the types, so
//! orchestrators in other languages can check what they send and receive.
//!
//! The checked-in copies under `protocol/schema/` are rewritten by
//! `buildbot schema protocol/schema` (or, without building the worker, by
//! `UPDATE_SCHEMA=1 cargo test -p buildbot-protocol --test schema`); that
//! test fails when they are not current. Both write and check through
//! [`write_schema_files`] and [`stale_schema_files`].

use crate::{Event, Job};
use std::path::{Path, PathBuf};

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

/// A schema file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteSchemaError {
    /// The file (or the directory that could not be created).
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Writes every schema file into `dir`, creating it if needed, and returns
/// the paths written.
pub fn write_schema_files(dir: &Path) -> Result<Vec<PathBuf>, WriteSchemaError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteSchemaError {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, content) in schema_files() {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| WriteSchemaError {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The schema files in `dir` that are missing, unreadable or not what the
/// types generate now; empty when every file is current.
pub fn stale_schema_files(dir: &Path) -> Vec<PathBuf> {
    schema_files()
        .into_iter()
        .map(|(name, content)| (dir.join(name), content))
        .filter(|(path, content)| {
            std::fs::read_to_string(path).ok().as_deref() != Some(content.as_str())
        })
        .map(|(path, _)| path)
        .collect()
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
