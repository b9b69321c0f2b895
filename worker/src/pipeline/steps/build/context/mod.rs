//! Build context: the tar stream sent to the Docker daemon, built from the
//! checkout with `.dockerignore` applied and no symlink followed out of it.
//!
//! Owns two things: checking that a job's `build.context` and
//! `build.dockerfile` name a directory and a regular file inside the checkout
//! ([`resolve`]), and packing the context as the uncompressed tar
//! `docker build` would send ([`write_tar`], or [`stream_tar`] for a request
//! body). The same walker packs the whole checkout, nothing ignored, as the
//! source uploaded into a builder container ([`write_source_tar`],
//! [`stream_source_tar`]). The tar is reproducible: entries are sorted by name and every
//! header carries the same owner (root) and modification time (the commit's),
//! so two fresh clones of one commit produce identical bytes and the daemon's
//! layer cache hits.
//!
//! This file holds the spec, the errors and the entry points; the work is
//! done by:
//!
//! - [`paths`]: the spec's paths (context, Dockerfile, `.dockerignore`)
//!   resolved and checked to be inside the checkout.
//! - [`walk`]: the checkout walk, deciding what goes in and how.
//! - [`archive`]: the tar entries with everything that varies fixed.
//! - [`stream`]: a tar written on a thread, streamed in bounded chunks.
//!
//! The checkout is the job's, so its shape is hostile input: the walk is
//! iterative and bounded by [`WalkLimits`] (directory levels, entries
//! read), and [`resolve`] walks the context once without reading files so
//! a tree beyond them fails the job with the limit named, before anything
//! streams.

mod archive;
#[cfg(test)]
mod fixture;
mod paths;
mod stream;
mod walk;

use crate::pipeline::steps::build::dockerignore::{DockerIgnore, PatternError};
use crate::pipeline::SizeLimits;
use bytes::Bytes;
use futures_util::Stream;
use paths::{read_ignore, resolve_paths};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use stream::stream_from;
use thiserror::Error;
use walk::{DockerfileEntry, Walker};

/// The job field naming the context directory, used in messages.
const CONTEXT_FIELD: &str = "build.context";
/// The job field naming the runtime Dockerfile, used in messages.
pub(crate) const DOCKERFILE_FIELD: &str = "build.dockerfile";
/// The job field naming a builder image's Dockerfile, used in messages.
pub(crate) const BUILDER_DOCKERFILE_FIELD: &str = "build.builder.dockerfile";
/// The ignore file, at the context root.
const IGNORE_FILE: &str = ".dockerignore";
/// What the source tar packs, named in its limit errors.
const SOURCE_FIELD: &str = "build.builder (the checkout uploaded into the builder)";

/// How much of a checkout the walk takes on: a repository decides how deep
/// and wide its tree is, and one job must not exhaust the worker that
/// serves every other tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalkLimits {
    /// Directory levels below the walk's root.
    pub(crate) max_depth: usize,
    /// Directory entries read, whatever they are and whether sent or not.
    pub(crate) max_entries: u64,
}

impl From<SizeLimits> for WalkLimits {
    fn from(limits: SizeLimits) -> Self {
        WalkLimits {
            max_depth: limits.context_depth,
            max_entries: limits.context_entries,
        }
    }
}

impl Default for WalkLimits {
    fn default() -> Self {
        SizeLimits::default().into()
    }
}

/// What to pack: a job's context and Dockerfile inside a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContextSpec {
    /// Checkout root (trusted, absolute).
    pub(crate) checkout: PathBuf,
    /// The job's `build.context`, relative to the checkout.
    pub(crate) context: String,
    /// The job's `build.dockerfile`, relative to the context.
    pub(crate) dockerfile: String,
    /// The job field `dockerfile` comes from, named in messages:
    /// [`DOCKERFILE_FIELD`], or [`BUILDER_DOCKERFILE_FIELD`] when building
    /// a builder image (with the checkout as its context).
    pub(crate) dockerfile_field: &'static str,
    /// Modification time written into every tar header (the commit time):
    /// the same in every fresh clone, so the daemon's layer cache hits.
    pub(crate) mtime: u64,
    /// How deep and wide a tree the walk takes on.
    pub(crate) limits: WalkLimits,
}

/// What went into a tar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ContextStats {
    /// Regular files and symlinks written (directories not counted).
    files: u64,
    /// Bytes of file content written.
    bytes: u64,
}

/// Why a build context cannot be produced. Messages name the job's fields,
/// and paths relative to the checkout or context, never worker paths.
#[derive(Debug, Error)]
pub(crate) enum ContextError {
    /// The context directory or the Dockerfile does not exist.
    #[error("{field}: {path} not found in the {}", scope_of(field))]
    NotFound { field: &'static str, path: String },
    /// The path resolves, through a symlink or `..`, outside the checkout.
    #[error("{field}: points outside the checkout")]
    EscapesCheckout { field: &'static str },
    /// The Dockerfile is not a regular file.
    #[error("{field}: {path} is not a regular file")]
    NotAFile { field: &'static str, path: String },
    /// The context is not a directory.
    #[error("{field}: {path} is not a directory")]
    NotADirectory { field: &'static str, path: String },
    /// The `.dockerignore` file has an invalid line.
    #[error(transparent)]
    Ignore(#[from] PatternError),
    /// The tree is deeper than the worker allows.
    #[error("{field}: more than {limit} directory levels (at {path}); this worker allows at most {limit} (--max-context-depth)")]
    TooDeep {
        field: &'static str,
        limit: usize,
        /// Where the limit was met, abbreviated.
        path: String,
    },
    /// The tree has more entries than the worker allows.
    #[error("{field}: more than {} entries; this worker allows at most {} (--max-context-entries)", grouped(*limit), grouped(*limit))]
    TooManyEntries { field: &'static str, limit: u64 },
    /// Reading the checkout or writing the tar failed.
    #[error("build context: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Where a field's path is looked up, for messages: only the runtime
/// Dockerfile is relative to a context; a builder's Dockerfile is relative
/// to the checkout, which is its context.
fn scope_of(field: &str) -> &'static str {
    if field == DOCKERFILE_FIELD {
        "context"
    } else {
        "checkout"
    }
}

/// `1000000` as `1,000,000`, for messages.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn io_error(path: &str) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks the spec (context dir and Dockerfile exist, are inside the
/// checkout after resolving symlinks, the Dockerfile is a regular file, the
/// context is within the job's [`WalkLimits`]) and returns the resolved
/// context dir.
///
/// The limit check walks the context (directories and metadata only, no
/// file read) before the build, on a blocking thread: a limit met while
/// the tar streams would reach the job only as a broken upload, without
/// its reason.
pub(crate) async fn resolve(spec: &ContextSpec) -> Result<PathBuf, ContextError> {
    let (owned, context) = (spec.clone(), spec.context.clone());
    tokio::task::spawn_blocking(move || resolve_within(&owned, owned.limits))
        .await
        .map_err(|e| ContextError::Io {
            path: context,
            source: io::Error::other(e.to_string()),
        })?
}

/// The text of the Dockerfile `spec` names, checked as [`resolve`] checks
/// it (inside the checkout, a regular file), for the images it names.
pub(crate) fn read_dockerfile(spec: &ContextSpec) -> Result<String, ContextError> {
    let resolved = resolve_paths(spec)?;
    std::fs::read_to_string(&resolved.dockerfile_real).map_err(io_error(&spec.dockerfile))
}

/// [`resolve`] with explicit limits.
fn resolve_within(spec: &ContextSpec, limits: WalkLimits) -> Result<PathBuf, ContextError> {
    let resolved = resolve_paths(spec)?;
    let ignore = read_ignore(&resolved)?;
    let dockerfile = Some(DockerfileEntry {
        rel: &resolved.dockerfile_rel,
        real: &resolved.dockerfile_real,
    });
    Walker::new(
        io::sink(),
        ignore,
        dockerfile,
        spec.mtime,
        limits,
        CONTEXT_FIELD,
    )
    .survey(&resolved.context_dir)?;
    Ok(resolved.context_dir)
}

/// Writes the context as an uncompressed tar to `out`.
///
/// What goes in, as `docker build` does it: everything under the context
/// that `.dockerignore` does not exclude (`.git` included), plus the
/// Dockerfile and `.dockerignore` themselves even when excluded (the daemon
/// needs them, and drops them from the context when excluded). Symlinks are stored as links,
/// never followed: the daemon resolves them inside the context. A symlinked
/// Dockerfile is the one exception: it is stored as the regular file it
/// points to (which [`resolve`] has checked is inside the checkout), because
/// the daemon looks it up inside the context, where a link to elsewhere in
/// the checkout would not resolve. Sockets, FIFOs and devices are skipped.
/// A tree beyond `limits` fails with the limit named.
fn write_tar<W: Write>(
    spec: &ContextSpec,
    limits: WalkLimits,
    out: W,
) -> Result<ContextStats, ContextError> {
    let resolved = resolve_paths(spec)?;
    let ignore = read_ignore(&resolved)?;
    let dockerfile = Some(DockerfileEntry {
        rel: &resolved.dockerfile_rel,
        real: &resolved.dockerfile_real,
    });
    Walker::new(out, ignore, dockerfile, spec.mtime, limits, CONTEXT_FIELD)
        .walk(&resolved.context_dir)
}

/// Writes the whole checkout as an uncompressed tar to `out`, the way
/// [`write_tar`] packs a context but with nothing ignored: a builder
/// container gets the source exactly as checked out (`.git` included, for
/// tools that read the history). Symlinks are stored as links, never
/// followed, so nothing outside the checkout is read.
fn write_source_tar<W: Write>(
    checkout: &Path,
    mtime: u64,
    limits: WalkLimits,
    out: W,
) -> Result<ContextStats, ContextError> {
    let checkout = fs::canonicalize(checkout).map_err(io_error("checkout"))?;
    Walker::new(
        out,
        DockerIgnore::default(),
        None,
        mtime,
        limits,
        SOURCE_FIELD,
    )
    .walk(&checkout)
}

/// [`write_tar`] within the job's limits, streamed: a blocking thread writes the tar into a bounded
/// channel and the stream yields chunks as they are produced (for bollard's
/// build body). An error ends the stream with an `io::Error` carrying the
/// [`ContextError`] (as its message and inner error). Dropping the stream
/// stops the thread at its next write.
pub(crate) fn stream_tar(
    spec: ContextSpec,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream_from(move |out| write_tar(&spec, spec.limits, out))
}

/// [`write_source_tar`], streamed as [`stream_tar`] is (for bollard's
/// upload body).
pub(crate) fn stream_source_tar(
    checkout: PathBuf,
    mtime: u64,
    limits: WalkLimits,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream_from(move |out| write_source_tar(&checkout, mtime, limits, out))
}
