//! Writes the JSON Schema of the job and event messages, generated from the
//! protocol types, into a directory (default: `protocol/schema`), or with
//! `--check` verifies that the files there are current.
//!
//! ```text
//! cargo run -p buildbot-protocol --bin buildbot-schema [--check] [DIR]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use buildbot_protocol::schema::{stale_schema_files, write_schema_files};

const USAGE: &str = "usage: buildbot-schema [--check] [DIR]\n\
    Writes job.schema.json and event.schema.json into DIR (default: protocol/schema).\n\
    --check  write nothing; exit 1 if a file in DIR is missing or not current";

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with('-') => {
                eprintln!("unknown option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
            path if dir.is_none() => dir = Some(PathBuf::from(path)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schema")));
    if check {
        return check_dir(&dir);
    }
    match write_schema_files(&dir) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_dir(dir: &Path) -> ExitCode {
    let stale = stale_schema_files(dir);
    if stale.is_empty() {
        println!("schema files in {} are current", dir.display());
        return ExitCode::SUCCESS;
    }
    for path in &stale {
        eprintln!("{} is missing or not current", path.display());
    }
    eprintln!("run `cargo run -p buildbot-protocol --bin buildbot-schema` and commit the result");
    ExitCode::FAILURE
}
