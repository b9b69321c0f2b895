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

use crate::pipeline::steps::build::dockerignore::{self, DockerIgnore, PatternError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};
use thiserror::Error;
use tokio::sync::mpsc;

/// The job field naming the context directory, used in messages.
const CONTEXT_FIELD: &str = "build.context";
/// The job field naming the runtime Dockerfile, used in messages.
pub(crate) const DOCKERFILE_FIELD: &str = "build.dockerfile";
/// The job field naming a builder image's Dockerfile, used in messages.
pub(crate) const BUILDER_DOCKERFILE_FIELD: &str = "build.builder.dockerfile";
/// The ignore file, at the context root.
const IGNORE_FILE: &str = ".dockerignore";
/// Bytes per chunk of [`stream_tar`]: large enough to keep per-chunk
/// overhead low, small enough to start the upload early.
const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks buffered between the tar writer and the upload: bounds memory when
/// the daemon reads more slowly than the disk.
const CHANNEL_CHUNKS: usize = 4;

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
}

/// What went into a tar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextStats {
    /// Regular files and symlinks written (directories not counted).
    pub(crate) files: u64,
    /// Bytes of file content written.
    pub(crate) bytes: u64,
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

fn io_error(path: &str) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks the spec (context dir and Dockerfile exist, are inside the
/// checkout after resolving symlinks, the Dockerfile is a regular file) and
/// returns the resolved context dir.
pub(crate) fn resolve(spec: &ContextSpec) -> Result<PathBuf, ContextError> {
    resolve_paths(spec).map(|resolved| resolved.context_dir)
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
pub(crate) fn write_tar<W: Write>(
    spec: &ContextSpec,
    out: W,
) -> Result<ContextStats, ContextError> {
    let resolved = resolve_paths(spec)?;
    let ignore = read_ignore(&resolved)?;
    let dockerfile = Some(DockerfileEntry {
        rel: &resolved.dockerfile_rel,
        real: &resolved.dockerfile_real,
    });
    let mut walker = Walker::new(out, ignore, dockerfile, spec.mtime);
    walker.walk_dir(&resolved.context_dir, &RelPath::root())?;
    walker.finish()
}

/// Writes the whole checkout as an uncompressed tar to `out`, the way
/// [`write_tar`] packs a context but with nothing ignored: a builder
/// container gets the source exactly as checked out (`.git` included, for
/// tools that read the history). Symlinks are stored as links, never
/// followed, so nothing outside the checkout is read.
pub(crate) fn write_source_tar<W: Write>(
    checkout: &Path,
    mtime: u64,
    out: W,
) -> Result<ContextStats, ContextError> {
    let checkout = fs::canonicalize(checkout).map_err(io_error("checkout"))?;
    let mut walker = Walker::new(out, DockerIgnore::default(), None, mtime);
    walker.walk_dir(&checkout, &RelPath::root())?;
    walker.finish()
}

/// [`write_tar`], streamed: a blocking thread writes the tar into a bounded
/// channel and the stream yields chunks as they are produced (for bollard's
/// build body). An error ends the stream with an `io::Error` carrying the
/// [`ContextError`] (as its message and inner error). Dropping the stream
/// stops the thread at its next write.
pub(crate) fn stream_tar(
    spec: ContextSpec,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream_from(move |out| write_tar(&spec, out))
}

/// [`write_source_tar`], streamed as [`stream_tar`] is (for bollard's
/// upload body).
pub(crate) fn stream_source_tar(
    checkout: PathBuf,
    mtime: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream_from(move |out| write_source_tar(&checkout, mtime, out))
}

/// Runs `write` on a blocking thread, streaming what it writes.
fn stream_from<F>(write: F) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    F: FnOnce(&mut ChunkWriter) -> Result<ContextStats, ContextError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let on_spawn_error = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("build-context".to_owned())
        .spawn(move || produce(write, tx));
    if let Err(e) = spawned {
        // Nothing has been sent yet, so the channel has room for this.
        let _ = on_spawn_error.try_send(Err(e));
    }
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The body of [`stream_from`]'s thread.
fn produce<F>(write: F, tx: mpsc::Sender<io::Result<Bytes>>)
where
    F: FnOnce(&mut ChunkWriter) -> Result<ContextStats, ContextError>,
{
    let mut writer = ChunkWriter {
        tx: tx.clone(),
        buf: BytesMut::with_capacity(CHUNK_SIZE),
    };
    if let Err(e) = write(&mut writer) {
        // Sending fails only when the stream is gone: nobody to tell.
        let _ = tx.blocking_send(Err(io::Error::other(e)));
    }
}

/// A checked spec.
struct Resolved {
    /// Canonical checkout root.
    checkout: PathBuf,
    /// Canonical context directory.
    context_dir: PathBuf,
    /// The Dockerfile's clean path relative to the context, as it appears in
    /// the tar.
    dockerfile_rel: String,
    /// The Dockerfile with every symlink resolved.
    dockerfile_real: PathBuf,
}

fn resolve_paths(spec: &ContextSpec) -> Result<Resolved, ContextError> {
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
    let dockerfile_rel = dockerignore::clean(&spec.dockerfile);
    // The daemon looks the Dockerfile up inside the context, so a path that
    // leaves it cannot be found there (and must not be joined as absolute).
    if dockerfile_rel == ".."
        || dockerfile_rel.starts_with("../")
        || dockerfile_rel.starts_with('/')
    {
        return Err(ContextError::NotFound {
            field: spec.dockerfile_field,
            path: spec.dockerfile.clone(),
        });
    }
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
fn read_ignore(resolved: &Resolved) -> Result<DockerIgnore, ContextError> {
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

/// A path relative to the context: as text for pattern matching (lossy for
/// a name that is not UTF-8) and as the exact bytes for the tar.
struct RelPath {
    text: String,
    path: PathBuf,
}

impl RelPath {
    fn root() -> Self {
        RelPath {
            text: String::new(),
            path: PathBuf::new(),
        }
    }

    fn child(&self, name: &OsStr) -> Self {
        let name_text = name.to_string_lossy();
        let text = if self.text.is_empty() {
            name_text.into_owned()
        } else {
            format!("{}/{name_text}", self.text)
        };
        RelPath {
            text,
            path: self.path.join(name),
        }
    }

    /// For messages: the context root reads as `.`.
    fn shown(&self) -> &str {
        if self.text.is_empty() {
            "."
        } else {
            &self.text
        }
    }
}

/// An excluded directory being walked because something under it may be
/// re-included.
struct PendingDir {
    path: PathBuf,
    mode: u32,
    written: bool,
}

/// The Dockerfile of a context: always sent, and as the file it points to.
#[derive(Clone, Copy)]
struct DockerfileEntry<'a> {
    /// Clean path relative to the context, as it appears in the tar.
    rel: &'a str,
    /// The file with every symlink resolved.
    real: &'a Path,
}

/// Walks the context depth-first in name order, writing tar entries.
struct Walker<'a, W: Write> {
    tar: tar::Builder<W>,
    ignore: DockerIgnore,
    /// None when packing a whole checkout rather than a build context.
    dockerfile: Option<DockerfileEntry<'a>>,
    mtime: u64,
    /// The directories being walked, outermost first. An excluded one is
    /// written only just before the first entry re-included under it (as
    /// BuildKit does), so it leaves no trace when nothing is.
    pending: Vec<PendingDir>,
    stats: ContextStats,
}

impl<'a, W: Write> Walker<'a, W> {
    fn new(
        out: W,
        ignore: DockerIgnore,
        dockerfile: Option<DockerfileEntry<'a>>,
        mtime: u64,
    ) -> Self {
        Walker {
            tar: tar::Builder::new(out),
            ignore,
            dockerfile,
            mtime,
            pending: Vec::new(),
            stats: ContextStats::default(),
        }
    }

    fn walk_dir(&mut self, dir: &Path, rel: &RelPath) -> Result<(), ContextError> {
        let mut entries = fs::read_dir(dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(io_error(rel.shown()))?;
        // Byte order of names, as Go's filepath.Walk: the tar must not
        // depend on the order the filesystem returns entries in.
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let child = rel.child(&entry.file_name());
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_error(&child.text))?;
            self.visit(&path, &child, &meta)?;
        }
        Ok(())
    }

    fn visit(&mut self, path: &Path, rel: &RelPath, meta: &Metadata) -> Result<(), ContextError> {
        let dockerfile = self.dockerfile.filter(|d| d.rel == rel.text);
        let is_dockerfile = dockerfile.is_some();
        let always = is_dockerfile || rel.text == IGNORE_FILE;
        let excluded = !always && self.ignore.is_excluded(&rel.text);
        let kind = meta.file_type();
        if kind.is_dir() {
            return self.visit_dir(path, rel, meta, excluded);
        }
        if excluded {
            return Ok(());
        }
        if kind.is_file() {
            self.flush_pending(rel)?;
            let file = open_unchanged(path, meta).map_err(io_error(&rel.text))?;
            self.append_file(rel, file, meta)
        } else if let (true, Some(dockerfile)) = (kind.is_symlink(), dockerfile) {
            self.flush_pending(rel)?;
            self.append_dockerfile(rel, dockerfile.real)
        } else if kind.is_symlink() {
            self.flush_pending(rel)?;
            self.append_symlink(path, rel, meta)
        } else {
            // Sockets, FIFOs and devices: nothing a build can use.
            Ok(())
        }
    }

    fn visit_dir(
        &mut self,
        path: &Path,
        rel: &RelPath,
        meta: &Metadata,
        excluded: bool,
    ) -> Result<(), ContextError> {
        if excluded && !self.may_reinclude_under(&rel.text) {
            return Ok(());
        }
        self.pending.push(PendingDir {
            path: rel.path.clone(),
            mode: mode_of(meta),
            written: false,
        });
        let walked = if excluded {
            self.walk_dir(path, rel)
        } else {
            self.flush_pending(rel)
                .and_then(|()| self.walk_dir(path, rel))
        };
        self.pending.pop();
        walked
    }

    /// Whether an excluded directory must still be walked: an exception may
    /// match under it, or the Dockerfile is under it.
    fn may_reinclude_under(&self, dir: &str) -> bool {
        self.ignore.may_reinclude_under(dir)
            || self.dockerfile.is_some_and(|d| {
                d.rel
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// Writes the directories being walked that are not written yet.
    fn flush_pending(&mut self, rel: &RelPath) -> Result<(), ContextError> {
        for dir in self.pending.iter_mut().filter(|dir| !dir.written) {
            let mut header = header(EntryType::Directory, dir.mode, 0, self.mtime);
            let mut name = OsString::from(dir.path.as_os_str());
            name.push("/");
            self.tar
                .append_data(&mut header, Path::new(&name), io::empty())
                .map_err(io_error(rel.shown()))?;
            dir.written = true;
        }
        Ok(())
    }

    fn append_file(
        &mut self,
        rel: &RelPath,
        file: File,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        let size = meta.len();
        let mut header = header(EntryType::Regular, mode_of(meta), size, self.mtime);
        let data = ExactReader {
            inner: file,
            remaining: size,
        };
        self.tar
            .append_data(&mut header, &rel.path, data)
            .map_err(io_error(&rel.text))?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    fn append_dockerfile(&mut self, rel: &RelPath, real: &Path) -> Result<(), ContextError> {
        // Canonical, so following links here changes nothing.
        let meta = fs::metadata(real).map_err(io_error(&rel.text))?;
        let file = open_unchanged(real, &meta).map_err(io_error(&rel.text))?;
        self.append_file(rel, file, &meta)
    }

    fn append_symlink(
        &mut self,
        path: &Path,
        rel: &RelPath,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        let target = fs::read_link(path).map_err(io_error(&rel.text))?;
        let mut header = header(EntryType::Symlink, mode_of(meta), 0, self.mtime);
        self.tar
            .append_link(&mut header, &rel.path, &target)
            .map_err(io_error(&rel.text))?;
        self.stats.files += 1;
        Ok(())
    }

    fn finish(self) -> Result<ContextStats, ContextError> {
        let stats = self.stats;
        let mut out = self.tar.into_inner().map_err(io_error("end of archive"))?;
        out.flush().map_err(io_error("end of archive"))?;
        Ok(stats)
    }
}

/// A header with everything that varies between clones or machines fixed:
/// owner root with no names, the given mtime, no access or change times.
fn header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Permission bits, including the exec, setuid, setgid and sticky bits.
fn mode_of(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Opens the file `meta` was read from (by `lstat`). If the entry has been
/// swapped since, say for a symlink, reading it could leave the checkout:
/// refuse instead.
fn open_unchanged(path: &Path, meta: &Metadata) -> io::Result<File> {
    let file = File::open(path)?;
    let opened = file.metadata()?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(io::Error::other("changed while the context was read"));
    }
    Ok(file)
}

/// Yields exactly the size written in the tar header, or an error: a file
/// that shrank after it was measured would otherwise leave the entry short
/// and corrupt the rest of the archive. (Growth is cut off by the limit.)
struct ExactReader {
    inner: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..limit])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the context was read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Cuts the tar into [`CHUNK_SIZE`] chunks and sends them down the channel.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "build context stream dropped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::os::unix::fs::symlink;
    use std::os::unix::net::UnixListener;
    use tempfile::TempDir;

    const MTIME: u64 = 1_700_000_000;

    /// One entry read back from a tar.
    #[derive(Debug, PartialEq)]
    struct Entry {
        path: String,
        kind: EntryType,
        mode: u32,
        link: Option<String>,
        data: String,
    }

    fn write(root: &Path, rel: &str, data: &str, mode: u32) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mkdir(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn spec(checkout: &Path, context: &str, dockerfile: &str) -> ContextSpec {
        ContextSpec {
            checkout: checkout.to_owned(),
            context: context.to_owned(),
            dockerfile: dockerfile.to_owned(),
            dockerfile_field: DOCKERFILE_FIELD,
            mtime: MTIME,
        }
    }

    fn tar_bytes(spec: &ContextSpec) -> (Vec<u8>, ContextStats) {
        let mut out = Vec::new();
        let stats = write_tar(spec, &mut out).unwrap();
        (out, stats)
    }

    /// Every entry of the tar, checking the fields that must not vary.
    fn entries(tar: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(tar);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(header.mtime().unwrap(), MTIME, "{path}");
            assert_eq!(header.uid().unwrap(), 0, "{path}");
            assert_eq!(header.gid().unwrap(), 0, "{path}");
            assert_eq!(header.username().unwrap(), Some(""), "{path}");
            assert_eq!(header.groupname().unwrap(), Some(""), "{path}");
            let kind = header.entry_type();
            let mode = header.mode().unwrap();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            found.push(Entry {
                path,
                kind,
                mode,
                link,
                data,
            });
        }
        found
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryType::Directory,
            mode: 0o755,
            link: None,
            data: String::new(),
        }
    }

    fn file(path: &str, mode: u32, data: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryType::Regular,
            mode,
            link: None,
            data: data.to_owned(),
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryType::Symlink,
            mode: 0o777,
            link: Some(target.to_owned()),
            data: String::new(),
        }
    }

    const IGNORE: &str =
        "# build context rules\ndocs\n!docs/keep.md\n**/*.log\ndocker\n.dockerignore\n";

    /// A checkout whose context `app` exercises every rule.
    fn fixture() -> TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "secret.txt", "not in the context", 0o644);
        mkdir(root, "app");
        write(root, "app/.dockerignore", IGNORE, 0o644);
        write(root, "app/docker/Dockerfile", "FROM scratch\n", 0o600);
        write(root, "app/docker/notes.txt", "excluded with docker/", 0o644);
        mkdir(root, "app/docs/sub");
        write(root, "app/docs/keep.md", "kept", 0o644);
        write(root, "app/docs/drop.md", "dropped", 0o644);
        write(root, "app/docs/sub/deep.md", "dropped", 0o644);
        mkdir(root, "app/empty");
        mkdir(root, "app/src");
        write(root, "app/src/main.rs", "fn main() {}\n", 0o644);
        write(root, "app/src/run.sh", "#!/bin/sh\n", 0o755);
        write(root, "app/src/debug.log", "excluded", 0o644);
        symlink("src/main.rs", root.join("app/link-inside")).unwrap();
        symlink("/etc/passwd", root.join("app/passwd")).unwrap();
        UnixListener::bind(root.join("app/sock")).unwrap();
        tmp
    }

    #[test]
    fn tar_holds_exactly_the_context() {
        let tmp = fixture();
        let (tar, stats) = tar_bytes(&spec(tmp.path(), "app", "docker/Dockerfile"));
        assert_eq!(
            entries(&tar),
            [
                // Excluded, but always sent.
                file(".dockerignore", 0o644, IGNORE),
                // Excluded, but the Dockerfile is always sent and needs it.
                dir("docker/"),
                file("docker/Dockerfile", 0o600, "FROM scratch\n"),
                // Excluded, written only for what is re-included under it.
                dir("docs/"),
                file("docs/keep.md", 0o644, "kept"),
                dir("empty/"),
                link("link-inside", "src/main.rs"),
                // Stored as a link; its target is never read.
                link("passwd", "/etc/passwd"),
                dir("src/"),
                file("src/main.rs", 0o644, "fn main() {}\n"),
                file("src/run.sh", 0o755, "#!/bin/sh\n"),
            ]
        );
        let content = IGNORE.len() + "FROM scratch\n".len() + 4 + 13 + 10;
        assert_eq!(
            stats,
            ContextStats {
                files: 7,
                bytes: content as u64
            }
        );
    }

    #[test]
    fn tar_is_reproducible() {
        let tmp = fixture();
        let spec = spec(tmp.path(), "app", "docker/Dockerfile");
        let (first, _) = tar_bytes(&spec);
        // A fresh clone has other file times; the tar must not change.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let main = File::options()
            .write(true)
            .open(tmp.path().join("app/src/main.rs"))
            .unwrap();
        main.set_modified(later).unwrap();
        let (second, _) = tar_bytes(&spec);
        assert_eq!(first, second);
    }

    #[test]
    fn git_dir_is_sent_unless_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        write(tmp.path(), ".git/HEAD", "ref: refs/heads/main\n", 0o644);
        let spec = spec(tmp.path(), ".", "./Dockerfile");
        let paths =
            |tar: &[u8]| -> Vec<String> { entries(tar).into_iter().map(|e| e.path).collect() };
        assert_eq!(
            paths(&tar_bytes(&spec).0),
            [".git/", ".git/HEAD", "Dockerfile"]
        );
        write(tmp.path(), ".dockerignore", ".git\n", 0o644);
        assert_eq!(paths(&tar_bytes(&spec).0), [".dockerignore", "Dockerfile"]);
    }

    #[test]
    fn excluded_everything_still_sends_dockerfile_and_ignore_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), ".dockerignore", "*\n", 0o644);
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        write(tmp.path(), "other", "x", 0o644);
        let (tar, _) = tar_bytes(&spec(tmp.path(), ".", "Dockerfile"));
        let paths: Vec<_> = entries(&tar).into_iter().map(|e| e.path).collect();
        assert_eq!(paths, [".dockerignore", "Dockerfile"]);
    }

    #[test]
    fn symlinked_dockerfile_is_sent_as_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "shared/Dockerfile", "FROM shared\n", 0o640);
        mkdir(root, "app");
        symlink("../shared/Dockerfile", root.join("app/Dockerfile")).unwrap();
        let (tar, _) = tar_bytes(&spec(root, "app", "Dockerfile"));
        assert_eq!(entries(&tar), [file("Dockerfile", 0o640, "FROM shared\n")]);
    }

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
        assert!(write_tar(&spec, Vec::new()).is_err());
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
        let err = write_tar(&spec(tmp.path(), ".", "Dockerfile"), Vec::new()).unwrap_err();
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
        let err = write_tar(&spec(tmp.path(), ".", "Dockerfile"), Vec::new()).unwrap_err();
        assert!(matches!(err, ContextError::Ignore(_)), "{err:?}");
        assert!(
            err.to_string().starts_with(".dockerignore line 2:"),
            "{err}"
        );
    }

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        let name = OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(tmp.path().join(name), "x").unwrap();
        let (tar, _) = tar_bytes(&spec(tmp.path(), ".", "Dockerfile"));
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, [b"Dockerfile".to_vec(), b"caf\xe9.txt".to_vec()]);
    }

    #[test]
    fn source_tar_holds_the_whole_checkout_with_links_as_links() {
        let tmp = fixture();
        write(tmp.path(), ".git/HEAD", "ref: refs/heads/main\n", 0o644);
        let mut tar = Vec::new();
        let stats = write_source_tar(tmp.path(), MTIME, &mut tar).unwrap();
        let paths: Vec<String> = entries(&tar).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                ".git/",
                ".git/HEAD",
                // .dockerignore rules are for build contexts, not the
                // builder's source: everything is sent.
                "app/",
                "app/.dockerignore",
                "app/docker/",
                "app/docker/Dockerfile",
                "app/docker/notes.txt",
                "app/docs/",
                "app/docs/drop.md",
                "app/docs/keep.md",
                "app/docs/sub/",
                "app/docs/sub/deep.md",
                "app/empty/",
                "app/link-inside",
                "app/passwd",
                "app/src/",
                "app/src/debug.log",
                "app/src/main.rs",
                "app/src/run.sh",
                "secret.txt",
            ]
        );
        let passwd = entries(&tar).into_iter().find(|e| e.path == "app/passwd");
        assert_eq!(passwd, Some(link("app/passwd", "/etc/passwd")));
        assert_eq!(stats.files, 13);
    }

    #[tokio::test]
    async fn source_stream_yields_the_same_bytes() {
        let tmp = fixture();
        let mut expected = Vec::new();
        write_source_tar(tmp.path(), MTIME, &mut expected).unwrap();
        let streamed: Vec<Bytes> = stream_source_tar(tmp.path().to_owned(), MTIME)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        assert_eq!(streamed.concat(), expected);
    }

    async fn collect(spec: ContextSpec) -> (Vec<Bytes>, Option<io::Error>) {
        let mut stream = Box::pin(stream_tar(spec));
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(e) => return (chunks, Some(e)),
            }
        }
        (chunks, None)
    }

    #[tokio::test]
    async fn stream_yields_the_same_bytes() {
        let tmp = fixture();
        let spec = spec(tmp.path(), "app", "docker/Dockerfile");
        let (expected, _) = tar_bytes(&spec);
        let (chunks, error) = collect(spec).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn large_file_streams_in_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        fs::write(tmp.path().join("big.bin"), &big).unwrap();
        let spec = spec(tmp.path(), ".", "Dockerfile");
        let (expected, stats) = tar_bytes(&spec);
        assert_eq!(stats.bytes, big.len() as u64 + 13);
        let (chunks, error) = collect(spec).await;
        assert!(error.is_none(), "{error:?}");
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn stream_ends_with_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (chunks, error) = collect(spec(tmp.path(), ".", "Dockerfile")).await;
        assert!(chunks.is_empty());
        let error = error.unwrap();
        assert_eq!(
            error.to_string(),
            "build.dockerfile: Dockerfile not found in the context"
        );
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ContextError>());
        assert!(matches!(inner, Some(ContextError::NotFound { .. })));
    }
}
