//! Where a worker's jobs check out: `<workspace-dir>/<worker-id>/`, one
//! directory per job inside, removed when the job ends. A worker killed
//! mid-job cannot remove its own, so a worker's start empties its
//! directory: a worker restarted with the same `--worker-id` (after a
//! SIGKILL, an OOM kill, a reboot) leaves nothing of the earlier run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The workspace directory of worker `worker_id` under `dir` (the system
/// temp dir's `buildbot/` when None), created (owner-only) and emptied;
/// returns it with the number of entries removed.
pub(crate) fn prepare(dir: Option<&Path>, worker_id: &str) -> io::Result<(PathBuf, usize)> {
    let parent = dir.map_or_else(|| std::env::temp_dir().join("buildbot"), Path::to_owned);
    let root = parent.join(worker_id);
    fs::DirBuilder::new().recursive(true).create(&root)?;
    restrict(&root)?;
    let mut removed = 0;
    for entry in fs::read_dir(&root)? {
        let entry = entry?;
        // Never followed: a symlink is removed as a link.
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    Ok((root, removed))
}

/// Checkouts hold a tenant's source: only the worker's user may list them.
fn restrict(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
}

/// Whether `worker_id` can name a directory: one path component.
pub(crate) fn check_worker_id(worker_id: &str) -> Result<(), String> {
    let plain = !worker_id.is_empty()
        && worker_id != "."
        && worker_id != ".."
        && !worker_id.contains(['/', '\0']);
    if plain {
        Ok(())
    } else {
        Err("must be non-empty, not . or .., and hold no / (it names the worker's workspace directory)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_empties_the_workers_directory_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, removed) = prepare(Some(dir.path()), "w1").expect("prepare");
        assert_eq!((root.clone(), removed), (dir.path().join("w1"), 0));
        fs::create_dir_all(root.join("buildbot-job-a/src/.git")).expect("a checkout");
        fs::write(root.join("stray"), b"x").expect("a file");
        std::os::unix::fs::symlink(dir.path(), root.join("link")).expect("a link");
        fs::create_dir_all(dir.path().join("w2/buildbot-job-b")).expect("another worker's");
        let (_, removed) = prepare(Some(dir.path()), "w1").expect("prepare");
        assert_eq!(removed, 3);
        assert_eq!(fs::read_dir(&root).expect("read").count(), 0);
        assert!(dir.path().join("w2/buildbot-job-b").is_dir());
    }

    #[test]
    fn worker_ids_are_one_path_component() {
        assert!(check_worker_id("host-1a2b").is_ok());
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(check_worker_id(bad).is_err(), "{bad:?}");
        }
    }
}
