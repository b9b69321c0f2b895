//! `build.version_file`: the job's first tag written into the checkout
//! before anything builds it, as the original buildbot wrote `VERSION`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why the version file could not be written. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VersionFileError {
    /// The path leads outside the checkout through a symlink, or is one.
    #[error("build.version_file: {path} leads outside the checkout or is a symlink")]
    Escapes {
        /// The job's path.
        path: String,
    },
    /// Writing failed.
    #[error("build.version_file: cannot write {path}: {source}")]
    Io {
        /// The job's path.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
}

/// Writes `tag` and a newline to `path` (relative, checked by the
/// protocol's path grammar) in `checkout`. The checkout is the job's own
/// content, so a symlink on the way is refused rather than followed.
pub(crate) fn write(checkout: &Path, path: &str, tag: &str) -> Result<PathBuf, VersionFileError> {
    let io_error = |source| VersionFileError::Io {
        path: path.to_owned(),
        source,
    };
    let escapes = || VersionFileError::Escapes {
        path: path.to_owned(),
    };
    let target = checkout.join(path);
    let parent = target.parent().ok_or_else(escapes)?;
    std::fs::create_dir_all(parent).map_err(io_error)?;
    let root = checkout.canonicalize().map_err(io_error)?;
    if !parent.canonicalize().map_err(io_error)?.starts_with(&root) {
        return Err(escapes());
    }
    if target
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(escapes());
    }
    let mut file = std::fs::File::create(&target).map_err(io_error)?;
    writeln!(file, "{tag}").map_err(io_error)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_tag_inside_the_checkout_only() {
        let checkout = tempfile::tempdir().unwrap();
        write(checkout.path(), "app/VERSION", "1.4.2").unwrap();
        let text = std::fs::read_to_string(checkout.path().join("app/VERSION")).unwrap();
        assert_eq!(text, "1.4.2\n");

        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), checkout.path().join("out")).unwrap();
        let error = write(checkout.path(), "out/VERSION", "1").unwrap_err();
        assert!(matches!(error, VersionFileError::Escapes { .. }), "{error}");
        std::os::unix::fs::symlink("/etc/hostname", checkout.path().join("V")).unwrap();
        assert!(matches!(
            write(checkout.path(), "V", "1").unwrap_err(),
            VersionFileError::Escapes { .. }
        ));
    }
}
