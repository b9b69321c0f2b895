//! `buildbot schema`: the JSON Schemas of the job and event messages, for
//! orchestrators that want to check what they send and receive. Writes
//! them into a directory, checks that a directory's copies are current, or
//! prints one; the schemas and the files come from
//! [`buildbot_protocol::schema`], the same code as the protocol crate's
//! schema test, so the two never disagree.

use buildbot_protocol::schema::{
    schema_files, stale_schema_files, write_schema_files, WriteSchemaError, EVENT_SCHEMA_FILE,
    JOB_SCHEMA_FILE,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// Settings of `buildbot schema`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SchemaArgs {
    /// Directory for `job.schema.json` and `event.schema.json`; created
    /// when missing.
    #[arg(default_value = ".", env = "BUILDBOT_SCHEMA_DIR", value_name = "DIR")]
    pub(crate) dir: PathBuf,

    /// Write nothing: exit 1 when a schema file in DIR is missing or not
    /// what this version of buildbot generates (for CI).
    #[arg(long, conflicts_with = "print")]
    pub(crate) check: bool,

    /// Print one schema to stdout instead of writing files.
    #[arg(long, value_enum, value_name = "MESSAGE")]
    pub(crate) print: Option<Message>,
}

/// Which message's schema to print.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Message {
    /// The build job an orchestrator publishes.
    Job,
    /// The events a worker streams to the reply queue.
    Event,
}

/// Writes, checks or prints the schemas as `args` say; the exit status is
/// 1 when `--check` finds a stale file.
pub(crate) fn run(args: &SchemaArgs) -> Result<ExitCode, WriteSchemaError> {
    if let Some(message) = args.print {
        let wanted = match message {
            Message::Job => JOB_SCHEMA_FILE,
            Message::Event => EVENT_SCHEMA_FILE,
        };
        // Exactly the file's text, so printing and writing agree.
        for (name, content) in schema_files() {
            if name == wanted {
                print!("{content}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        return Ok(check(args));
    }
    for path in write_schema_files(&args.dir)? {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &SchemaArgs) -> ExitCode {
    let stale = stale_schema_files(&args.dir);
    if stale.is_empty() {
        println!("schema files in {} are current", args.dir.display());
        return ExitCode::SUCCESS;
    }
    for path in &stale {
        eprintln!("{} is missing or not current", path.display());
    }
    eprintln!(
        "run `buildbot schema {}` to rewrite them",
        args.dir.display()
    );
    ExitCode::FAILURE
}
