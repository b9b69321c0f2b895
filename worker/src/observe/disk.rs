//! Free disk space where a worker writes: the Docker Engine's data root
//! (images, layers, build cache) and the workspace directory (checkouts).
//! Below `--min-free-disk` on either, even after the image cache's trim,
//! the worker stops taking jobs and `/readyz` says why, until space
//! returns.

use rustix::fs::statvfs;
use std::path::PathBuf;

/// The filesystems watched and the free space each must keep.
#[derive(Debug, Clone)]
pub(crate) struct DiskWatch {
    /// Paths on the filesystems to watch (a path this process cannot
    /// see, such as the engine's data root from inside a container, is
    /// skipped).
    paths: Vec<PathBuf>,
    /// Bytes each must keep free; 0 turns the watch off.
    min_free: u64,
}

impl DiskWatch {
    /// Watches `paths` for `min_free` free bytes.
    pub(crate) fn new(paths: Vec<PathBuf>, min_free: u64) -> Self {
        Self { paths, min_free }
    }

    /// The least free space of the watched filesystems, in bytes (None
    /// when none can be seen).
    pub(crate) fn least_free(&self) -> Option<u64> {
        self.paths.iter().filter_map(|path| free_bytes(path)).min()
    }

    /// Why the worker must not take jobs now, or None.
    pub(crate) fn shortage(&self) -> Option<String> {
        if self.min_free == 0 {
            return None;
        }
        self.paths.iter().find_map(|path| {
            let free = free_bytes(path)?;
            (free < self.min_free).then(|| {
                format!(
                    "{} has {} MiB free, below --min-free-disk ({} MiB)",
                    path.display(),
                    free >> 20,
                    self.min_free >> 20
                )
            })
        })
    }
}

/// Bytes an unprivileged writer may still use on `path`'s filesystem.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stats = statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortage_names_the_path_and_both_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        assert_eq!(DiskWatch::new(vec![path.clone()], 0).shortage(), None);
        assert_eq!(DiskWatch::new(vec![path.clone()], 1).shortage(), None);
        let shortage = DiskWatch::new(vec![path.clone()], u64::MAX)
            .shortage()
            .expect("no disk has that much");
        assert!(
            shortage.starts_with(&format!("{} has ", path.display())),
            "{shortage}"
        );
        assert!(
            shortage.ends_with("below --min-free-disk (17592186044415 MiB)"),
            "{shortage}"
        );
        let unseen = DiskWatch::new(vec!["/no/such/dir".into()], u64::MAX);
        assert_eq!(unseen.shortage(), None);
        assert_eq!(unseen.least_free(), None);
        assert!(DiskWatch::new(vec![path], 0)
            .least_free()
            .is_some_and(|free| free > 0));
    }
}
