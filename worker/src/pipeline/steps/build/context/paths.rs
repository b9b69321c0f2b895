//! The spec's paths, resolved: the context directory, the Dockerfile and
//! the context's `.dockerignore`, each with every symlink followed and
//! checked to stay inside the checkout, so nothing outside it is read.

use super::{io_error, ContextError, ContextSpec, CONTEXT_FIELD, IGNORE_FILE};
use crate::pipeline::steps::build::dockerignore::DockerIgnore;
use buildbot_protocol::grammar::path::CleanPath;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A checked spec.
pub(super) struct Resolved {
    /// Canonical checkout root.
    checkout: PathBuf,
    /// Canonical context directory.
    pub(super) context_dir: PathBuf,
    /// The Dockerfile's clean path relative to the context, as it appears in
    /// the tar.
    pub(super) dockerfile_rel: String,
    /// The Dockerfile with every symlink resolved.
    pub(super) dockerfile_real: PathBuf,
}

/// Checks the spec's context and Dockerfile (see [`super::resolve`]).
pub(super) fn resolve_paths(spec: &ContextSpec) -> Result<Resolved, ContextError> {
    let checkout = fs::canonicalize(&spec.checkout).map_err(io_error("checkout"))?;
    let context_dir = resolve_inside(
        &checkout,
        &checkout.join(&spec.context),
        CONTEXT_FIELD,
        &spec.context,
    )?;
    if !context_dir.is_dir() {
        return Err(ContextError::NotADirectory {
            field: CONTEXT_FIELD,
            path: spec.context.clone(),
        });
    }
    let dockerfile_clean = CleanPath::new(&spec.dockerfile);
    // The daemon looks the Dockerfile up inside the context, so a path that
    // leaves it cannot be found there (and must not be joined as absolute).
    if dockerfile_clean.levels_above() > 0 || dockerfile_clean.is_absolute() {
        return Err(ContextError::NotFound {
            field: spec.dockerfile_field,
            path: spec.dockerfile.clone(),
        });
    }
    let dockerfile_rel = dockerfile_clean.as_str().to_owned();
    let dockerfile_real = resolve_inside(
        &checkout,
        &context_dir.join(&dockerfile_rel),
        spec.dockerfile_field,
        &spec.dockerfile,
    )?;
    if !dockerfile_real.is_file() {
        return Err(ContextError::NotAFile {
            field: spec.dockerfile_field,
            path: spec.dockerfile.clone(),
        });
    }
    Ok(Resolved {
        checkout,
        context_dir,
        dockerfile_rel,
        dockerfile_real,
    })
}

/// `path` with every symlink resolved, if it exists inside `checkout`.
fn resolve_inside(
    checkout: &Path,
    path: &Path,
    field: &'static str,
    shown: &str,
) -> Result<PathBuf, ContextError> {
    match fs::canonicalize(path) {
        Ok(real) if real.starts_with(checkout) => Ok(real),
        Ok(_) => Err(ContextError::EscapesCheckout { field }),
        Err(e) if is_missing(&e) => Err(ContextError::NotFound {
            field,
            path: shown.to_owned(),
        }),
        Err(source) => Err(ContextError::Io {
            path: shown.to_owned(),
            source,
        }),
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads the context's `.dockerignore`; none (or a dangling link, which
/// Docker treats the same) means nothing is excluded.
pub(super) fn read_ignore(resolved: &Resolved) -> Result<DockerIgnore, ContextError> {
    let real = match fs::canonicalize(resolved.context_dir.join(IGNORE_FILE)) {
        Ok(real) => real,
        Err(e) if is_missing(&e) => return Ok(DockerIgnore::default()),
        Err(source) => return Err(io_error(IGNORE_FILE)(source)),
    };
    // Docker follows a symlinked .dockerignore. Follow it only within the
    // checkout: its lines can end up in error messages sent to the caller.
    if !real.starts_with(&resolved.checkout) {
        return Err(ContextError::EscapesCheckout { field: IGNORE_FILE });
    }
    let bytes = fs::read(&real).map_err(io_error(IGNORE_FILE))?;
    Ok(DockerIgnore::parse(&String::from_utf8_lossy(&bytes))?)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{entries, fixture, resolve, spec, tar_bytes, write};
    use super::super::{write_tar, WalkLimits, BUILDER_DOCKERFILE_FIELD};
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn context_through_a_symlink_inside_the_checkout_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "real/Dockerfile", "FROM scratch\n", 0o644);
        symlink("real", root.join("alias")).unwrap();
        let spec = spec(root, "alias", "Dockerfile");
        assert_eq!(
            resolve(&spec).unwrap(),
            fs::canonicalize(root.join("real")).unwrap()
        );
        assert_eq!(entries(&tar_bytes(&spec).0).len(), 1);
    }

    #[test]
    fn context_symlink_outside_the_checkout_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "Dockerfile", "FROM scratch\n", 0o644);
        let tmp = tempfile::tempdir().unwrap();
        symlink(outside.path(), tmp.path().join("app")).unwrap();
        let spec = spec(tmp.path(), "app", "Dockerfile");
        let err = resolve(&spec).unwrap_err();
        assert!(
            matches!(
                err,
                ContextError::EscapesCheckout {
                    field: "build.context"
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "build.context: points outside the checkout"
        );
        assert!(write_tar(&spec, WalkLimits::default(), Vec::new()).is_err());
        let err = resolve(&self::spec(tmp.path(), "..", "Dockerfile")).unwrap_err();
        assert!(
            matches!(err, ContextError::EscapesCheckout { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn dockerfile_symlink_outside_the_checkout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        symlink("/etc/passwd", tmp.path().join("Dockerfile")).unwrap();
        let err = resolve(&spec(tmp.path(), ".", "Dockerfile")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.dockerfile: points outside the checkout"
        );
    }

    #[test]
    fn ignore_file_symlink_outside_the_checkout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        symlink("/etc/passwd", tmp.path().join(".dockerignore")).unwrap();
        let err = write_tar(
            &spec(tmp.path(), ".", "Dockerfile"),
            WalkLimits::default(),
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            ".dockerignore: points outside the checkout"
        );
    }

    #[test]
    fn missing_paths_are_named_by_field() {
        let tmp = fixture();
        let err = resolve(&spec(tmp.path(), "app", "Dockerfile.prod")).unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "build.dockerfile: Dockerfile.prod not found in the context"
        );
        let err = resolve(&spec(tmp.path(), "nope", "Dockerfile")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.context: nope not found in the checkout"
        );
        // The Dockerfile is looked up in the context, not beside it.
        let err = resolve(&spec(tmp.path(), "app", "../secret.txt")).unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
        let err = resolve(&spec(tmp.path(), "app", "/etc/passwd")).unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn builder_dockerfile_is_named_as_its_field_relative_to_the_checkout() {
        let tmp = fixture();
        let builder = ContextSpec {
            dockerfile_field: BUILDER_DOCKERFILE_FIELD,
            ..spec(tmp.path(), ".", "Dockerfile.build")
        };
        let err = resolve(&builder).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.builder.dockerfile: Dockerfile.build not found in the checkout"
        );
        let err = resolve(&ContextSpec {
            dockerfile: "app".into(),
            ..builder
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.builder.dockerfile: app is not a regular file"
        );
    }

    #[test]
    fn wrong_kinds_are_refused() {
        let tmp = fixture();
        let err = resolve(&spec(tmp.path(), "app", "docs")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.dockerfile: docs is not a regular file"
        );
        let err = resolve(&spec(tmp.path(), "secret.txt", "Dockerfile")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build.context: secret.txt is not a directory"
        );
    }

    #[test]
    fn bad_ignore_file_names_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        write(tmp.path(), ".dockerignore", "ok\n[oops\n", 0o644);
        let err = write_tar(
            &spec(tmp.path(), ".", "Dockerfile"),
            WalkLimits::default(),
            Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ContextError::Ignore(_)), "{err:?}");
        assert!(
            err.to_string().starts_with(".dockerignore line 2:"),
            "{err}"
        );
    }
}
