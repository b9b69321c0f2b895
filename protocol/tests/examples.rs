//! Every example job under `protocol/examples/` decodes and validates, and
//! every job under `protocol/examples/invalid/` is rejected with exactly the
//! problems listed in its `.problems` file (one `field: reason` per line).

use buildbot_protocol::{decode_job, Job};
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The `.json` files directly in `dir`, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_job_is_valid() {
    let files = json_files(&examples_dir());
    assert!(files.len() >= 4, "examples are missing: {files:?}");
    let mut ids = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let job = decode_job(&bytes)
            .unwrap_or_else(|e| panic!("{}:\n  {}", path.display(), e.problems().join("\n  ")));
        job.validate().unwrap();
        // What a worker re-encodes is the same job.
        let encoded = serde_json::to_vec(&job).unwrap();
        let again: Job = decode_job(&encoded).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&job).unwrap(),
            "{}",
            path.display()
        );
        ids.push(job.job_id);
    }
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "every example has its own job_id");
}

#[test]
fn every_invalid_example_is_rejected_with_its_problems() {
    let files = json_files(&examples_dir().join("invalid"));
    assert!(files.len() >= 4, "invalid examples are missing: {files:?}");
    for path in files {
        let expected_path = path.with_extension("problems");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        let bytes = std::fs::read(&path).unwrap();
        let problems = match decode_job(&bytes) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.problems(),
        };
        assert_eq!(problems, expected, "{}", path.display());
    }
}

#[test]
fn rejections_do_not_echo_the_example_credentials() {
    let path = examples_dir().join("invalid/many-problems.json");
    let problems = decode_job(&std::fs::read(path).unwrap())
        .unwrap_err()
        .problems()
        .join("\n");
    for secret in ["hunter2", "ci:hunter2", "not base64!"] {
        assert!(!problems.contains(secret), "{secret} in:\n{problems}");
    }
}
