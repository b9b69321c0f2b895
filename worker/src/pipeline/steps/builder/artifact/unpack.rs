//! Artifact placement: unpacks the tar the Docker Engine sends for a builder
//! container's artifact path into the runtime build context, at the job's
//! `build.builder.artifacts_dest`.
//!
//! The tar comes from a container running the job's own command, so it is
//! untrusted: nothing it holds may land outside the destination. Entry names
//! are checked component by component (no `..`, no absolute paths), nothing
//! is ever written through a symlink (every parent is checked to be a real
//! directory, files are created exclusively), and symlinks in the artifact
//! must point inside it, with `..` only at the start of a target so that no
//! chain of links can climb out (see [`check_link_target`]). Permission bits are kept, minus setuid, setgid and
//! sticky; ownership is the worker's.
//!
//! Its size is the builder's too: [`ArtifactLimits`] bound the bytes of file
//! content, the entries and the directory levels, each checked before
//! anything of the entry is written. Each entry's checks cost the length of
//! its name: directories already created or checked are remembered
//! ([`KnownDirs`]), never walked again.

use crate::pipeline::steps::build::context::grouped;
use crate::pipeline::SizeLimits;
use buildbot_protocol::grammar::path::RelativePath;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;
use thiserror::Error;

/// The job field naming the artifact inside the builder, used in messages.
const ARTIFACTS_FIELD: &str = "build.builder.artifacts";
/// The job field naming the destination in the context, used in messages.
const DEST_FIELD: &str = "build.builder.artifacts_dest";

/// How much of an artifact is unpacked before the job fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArtifactLimits {
    /// Bytes of file content, all files together.
    pub(crate) max_bytes: u64,
    /// Entries of the archive, whatever they are.
    pub(crate) max_entries: u64,
    /// Components of an entry's name below the artifact's own.
    pub(crate) max_depth: usize,
}

impl From<SizeLimits> for ArtifactLimits {
    fn from(limits: SizeLimits) -> Self {
        ArtifactLimits {
            max_bytes: limits.artifact_bytes,
            max_entries: limits.artifact_entries,
            max_depth: limits.artifact_depth,
        }
    }
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        SizeLimits::default().into()
    }
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// Regular files, symlinks and hard links written.
    pub(super) files: u64,
    /// Bytes of file content written.
    pub(super) bytes: u64,
    /// Whether something from the checkout was at the destination and was
    /// replaced by the artifact.
    pub(super) replaced: bool,
}

/// Why the artifact could not be placed. Messages name the job's fields and
/// paths inside the artifact or context, never worker paths.
#[derive(Debug, Error)]
pub(crate) enum ArtifactError {
    /// The archive is not a readable tar.
    #[error("{ARTIFACTS_FIELD}: the archive copied out of the builder is unreadable: {0}")]
    Archive(#[source] io::Error),
    /// The archive holds no entry at all.
    #[error("{ARTIFACTS_FIELD}: the archive copied out of the builder is empty")]
    Empty,
    /// An entry would land outside the destination, or is a symlink
    /// pointing outside the artifact.
    #[error("{ARTIFACTS_FIELD}: {entry}: {reason}")]
    Unsafe {
        /// The entry's name in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The files hold more bytes than the worker allows.
    #[error("{ARTIFACTS_FIELD}: the artifact holds more than {} bytes; this worker allows at most {} (--max-artifact-bytes)", grouped(*limit), grouped(*limit))]
    TooLarge { limit: u64 },
    /// The archive has more entries than the worker allows.
    #[error("{ARTIFACTS_FIELD}: the artifact holds more than {} entries; this worker allows at most {} (--max-artifact-entries)", grouped(*limit), grouped(*limit))]
    TooManyEntries { limit: u64 },
    /// An entry lies deeper than the worker allows.
    #[error("{ARTIFACTS_FIELD}: {entry}: more than {limit} directory levels deep; this worker allows at most {limit} (--max-artifact-depth)")]
    TooDeep {
        /// The entry's name, abbreviated.
        entry: String,
        limit: usize,
    },
    /// The destination cannot be used.
    #[error("{DEST_FIELD}: {dest}: {reason}")]
    Dest {
        /// The destination, relative to the context.
        dest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing into the context failed.
    #[error("placing the artifact at {path} in the build context: {source}")]
    Io {
        /// The path being written, relative to the context.
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks `archive` (a Docker archive of one file or directory: every
/// entry under one top-level name) so that the file or directory it holds
/// becomes `context_dir/dest`. `context_dir` is trusted; `dest` is the
/// job's relative path. Whatever the checkout had at `dest` is replaced.
/// An archive beyond `limits` fails at the first entry past one, with
/// what was placed so far left (the workspace goes with the job).
pub(super) fn unpack(
    archive: impl Read,
    context_dir: &Path,
    dest: &str,
    limits: ArtifactLimits,
) -> Result<Unpacked, ArtifactError> {
    let dest_parts = dest_components(dest)?;
    let mut unpacker = Unpacker {
        dest_root: context_dir.join(dest_parts.iter().collect::<PathBuf>()),
        dest_shown: dest_parts.join("/"),
        top: None,
        stats: Unpacked::default(),
        limits,
        entries: 0,
        known: KnownDirs::default(),
    };
    unpacker.stats.replaced = prepare_dest(context_dir, &dest_parts, &unpacker.dest_shown)?;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(ArtifactError::Archive)? {
        unpacker.count_entry()?;
        unpacker.entry(entry.map_err(ArtifactError::Archive)?)?;
    }
    if unpacker.top.is_none() {
        return Err(ArtifactError::Empty);
    }
    Ok(unpacker.stats)
}

/// The destination's components; validation already refused anything
/// else (through the same grammar), this keeps the function safe on its
/// own.
fn dest_components(dest: &str) -> Result<Vec<String>, ArtifactError> {
    let path = RelativePath::parse(dest).map_err(|e| ArtifactError::Dest {
        dest: dest.to_owned(),
        reason: format!("must be a path inside the build context ({e})"),
    })?;
    if path.is_base() {
        return Err(ArtifactError::Dest {
            dest: dest.to_owned(),
            reason: "must name a path inside the build context".into(),
        });
    }
    Ok(path.components().map(str::to_owned).collect())
}

/// Makes the destination's parents real directories (created as needed,
/// never a symlink from the checkout, which could lead anywhere) and
/// removes whatever is at the destination itself. Returns whether
/// something was removed.
fn prepare_dest(context_dir: &Path, parts: &[String], shown: &str) -> Result<bool, ArtifactError> {
    let Some((last, parents)) = parts.split_last() else {
        return Ok(false);
    };
    let mut dir = context_dir.to_owned();
    for (depth, part) in parents.iter().enumerate() {
        dir.push(part);
        let rel = parts[..=depth].join("/");
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ArtifactError::Dest {
                    dest: shown.to_owned(),
                    reason: format!("{rel} in the checkout is not a directory (a file or symlink)"),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(io_error(&rel))?;
            }
            Err(e) => return Err(io_error(&rel)(e)),
        }
    }
    let target = dir.join(last);
    match fs::symlink_metadata(&target) {
        // A symlink is removed as a link, never followed.
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&target).map_err(io_error(shown))?,
        Ok(_) => fs::remove_file(&target).map_err(io_error(shown))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(shown)(e)),
    }
    Ok(true)
}

fn io_error(path: &str) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Directories at or below the destination known to be real directories,
/// created or checked by this unpacking, as a tree of names. None can
/// become a symlink later: the unpacker removes nothing and creates every
/// entry exclusively. So each is checked once, and finding an entry's
/// parents costs the length of its name, not one `lstat` per level for
/// every entry (quadratic in the depth).
#[derive(Default)]
struct KnownDirs {
    /// Whether the destination itself is known.
    root: bool,
    /// Each known directory's known subdirectories by name; index 0 is
    /// the destination.
    children: Vec<HashMap<String, usize>>,
}

impl KnownDirs {
    /// The known subdirectory `name` of directory `parent`.
    fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.children.get(parent)?.get(name).copied()
    }

    /// Records `name` under `parent` as known; returns its index.
    fn insert(&mut self, parent: usize, name: &str) -> usize {
        if self.children.is_empty() {
            self.children.push(HashMap::new());
        }
        if let Some(known) = self.child(parent, name) {
            return known;
        }
        let index = self.children.len();
        self.children.push(HashMap::new());
        self.children[parent].insert(name.to_owned(), index);
        index
    }
}

struct Unpacker {
    /// `context_dir/dest`: where the archive's top-level entry goes.
    dest_root: PathBuf,
    /// `dest`, clean, for messages.
    dest_shown: String,
    /// The archive's top-level name (the artifact's base name), once seen.
    top: Option<String>,
    stats: Unpacked,
    limits: ArtifactLimits,
    /// Archive entries seen so far.
    entries: u64,
    known: KnownDirs,
}

impl Unpacker {
    /// Counts one more entry against the limit.
    fn count_entry(&mut self) -> Result<(), ArtifactError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Counts `size` more bytes of file content against the limit, before
    /// they are written.
    fn count_bytes(&mut self, size: u64) -> Result<(), ArtifactError> {
        let total = self.stats.bytes.saturating_add(size);
        if total > self.limits.max_bytes {
            return Err(ArtifactError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ArtifactError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = self.relative(&name)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(ArtifactError::Archive)? & 0o777;
        let path = self.under_dest(&rel);
        let shown = self.shown(&rel);
        let parent = self.check_parents(&rel, &name)?;
        match kind {
            EntryType::Directory => {
                self.directory(&path, &shown, mode)?;
                self.known_dir(parent, &rel);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous => {
                self.count_bytes(entry.header().size().map_err(ArtifactError::Archive)?)?;
                let file = create_new(&path, mode).map_err(io_error(&shown))?;
                let bytes = copy_into(&mut entry, file, mode).map_err(io_error(&shown))?;
                self.stats.files += 1;
                self.stats.bytes += bytes;
                Ok(())
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ArtifactError::Archive)?
                    .ok_or_else(|| unsafe_entry(&name, "symlink without a target"))?;
                check_link_target(&rel, &target).map_err(|reason| unsafe_entry(&name, reason))?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_error(&shown))?;
                self.stats.files += 1;
                Ok(())
            }
            EntryType::Link => self.hard_link(&mut entry, &path, &name, &shown),
            // Devices, FIFOs and the like: nothing a build context can use.
            _ => Ok(()),
        }
    }

    /// The entry's components below the archive's top-level name; empty
    /// for the top-level entry itself.
    fn relative(&mut self, name: &str) -> Result<Vec<String>, ArtifactError> {
        let mut parts = Vec::new();
        for component in Path::new(name).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(unsafe_entry(name, "a path outside the artifact")),
            }
        }
        if parts.is_empty() {
            return Err(unsafe_entry(name, "an entry without a name"));
        }
        let top = parts.remove(0);
        match &self.top {
            None => self.top = Some(top),
            Some(seen) if *seen == top => {}
            Some(_) => return Err(unsafe_entry(name, "a second top-level entry")),
        }
        if parts.len() > self.limits.max_depth {
            return Err(ArtifactError::TooDeep {
                entry: abbreviated(name),
                limit: self.limits.max_depth,
            });
        }
        Ok(parts)
    }

    /// `rel` under the destination (the destination itself when empty:
    /// joining an empty path would add a trailing slash).
    fn under_dest(&self, rel: &[String]) -> PathBuf {
        let mut path = self.dest_root.clone();
        path.extend(rel);
        path
    }

    fn shown(&self, rel: &[String]) -> String {
        std::iter::once(self.dest_shown.as_str())
            .chain(rel.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every parent of the entry below the destination must be a real
    /// directory (missing ones are created): writing through a symlink the
    /// archive planted earlier could leave the destination. Only parents
    /// not known yet are looked at. Returns the parent's [`KnownDirs`]
    /// index (None for the top-level entry, which has none below the
    /// destination).
    fn check_parents(
        &mut self,
        rel: &[String],
        name: &str,
    ) -> Result<Option<usize>, ArtifactError> {
        let Some((_, parents)) = rel.split_last() else {
            return Ok(None);
        };
        let mut dir = self.dest_root.clone();
        // The destination itself first: the archive may not list it.
        if !self.known.root {
            ensure_real_dir(&dir, name)?;
            self.known.root = true;
        }
        let mut index = 0;
        for part in parents {
            dir.push(part);
            index = match self.known.child(index, part) {
                Some(known) => known,
                None => {
                    ensure_real_dir(&dir, name)?;
                    self.known.insert(index, part)
                }
            };
        }
        Ok(Some(index))
    }

    /// Records the directory entry at `rel`, just created or checked, as
    /// known; `parent` is its parent's index.
    fn known_dir(&mut self, parent: Option<usize>, rel: &[String]) {
        match (parent, rel.last()) {
            (Some(parent), Some(name)) => {
                self.known.insert(parent, name);
            }
            _ => self.known.root = true,
        }
    }

    fn directory(&self, path: &Path, shown: &str, mode: u32) -> Result<(), ArtifactError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(unsafe_entry(shown, "a directory where a file already is")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(path).map_err(io_error(shown))?;
            }
            Err(e) => return Err(io_error(shown)(e)),
        }
        // The worker must still be able to write the entries that follow.
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700)).map_err(io_error(shown))
    }

    /// A hard link to an earlier entry of the artifact.
    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        name: &str,
        shown: &str,
    ) -> Result<(), ArtifactError> {
        let target = entry
            .link_name()
            .map_err(ArtifactError::Archive)?
            .ok_or_else(|| unsafe_entry(name, "hard link without a target"))?;
        let target_rel = self.relative(&target.to_string_lossy())?;
        let source = self.under_dest(&target_rel);
        self.check_parents(&target_rel, name)?;
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_file() => {}
            _ => {
                return Err(unsafe_entry(
                    name,
                    "hard link to something not in the artifact",
                ))
            }
        }
        fs::hard_link(&source, path).map_err(io_error(shown))?;
        self.stats.files += 1;
        Ok(())
    }
}

/// Makes `dir` a real directory: kept if it is one, created if missing,
/// refused if it is a file or symlink (`name` is the entry under it).
fn ensure_real_dir(dir: &Path, name: &str) -> Result<(), ArtifactError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(unsafe_entry(name, "lies under a file or symlink")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(dir).map_err(io_error(name))
        }
        Err(e) => Err(io_error(name)(e)),
    }
}

/// A name short enough for a message: an entry deep enough to meet the
/// limit has a name of thousands of characters.
fn abbreviated(name: &str) -> String {
    const SHOWN: usize = 80;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_owned(),
    }
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> ArtifactError {
    ArtifactError::Unsafe {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// A symlink at `rel` (below the artifact's top) may point only inside the
/// artifact, by a relative path that never climbs above it, with every `..`
/// at its start.
///
/// The textual check alone is not enough: `..` after a name climbs from
/// wherever that name leads on disk, and if the name is another link of the
/// artifact (`self -> .`, then `self/self/../..`) that is not its lexical
/// parent. Leading `..`s climb only the link's own parents, real
/// directories (every entry's parents are checked), and the names after
/// them only descend, through directories or through links held to the
/// same rule. So every link resolves inside the artifact, whatever order
/// the links come in, without tracking the links already unpacked.
fn check_link_target(rel: &[String], target: &Path) -> Result<(), String> {
    let outside = || {
        format!(
            "symlink pointing outside the artifact (to {})",
            target.display()
        )
    };
    // The top-level entry's directory is outside the artifact already.
    let (_link, dir) = rel.split_last().ok_or_else(outside)?;
    let dir = if dir.is_empty() {
        ".".to_owned()
    } else {
        dir.join("/")
    };
    let target = target.to_str().ok_or_else(outside)?;
    RelativePath::parse(&dir)
        .and_then(|dir| dir.join(target))
        .map_err(|_| outside())?;
    if climbs_after_a_name(target) {
        return Err(format!(
            "symlink climbing (..) after a name, which may be another symlink (to {target}); only leading .. are allowed"
        ));
    }
    Ok(())
}

/// Whether `target` has a `..` anywhere after its first name (`a/..`).
fn climbs_after_a_name(target: &str) -> bool {
    target
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .skip_while(|part| *part == "..")
        .any(|part| part == "..")
}

/// Creates a file that did not exist: never follows a symlink, never
/// truncates something already placed.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode | 0o600)
        .open(path)
}

/// Copies the entry's content, then sets the entry's exact mode (creation
/// is subject to the umask and needed write permission).
fn copy_into(entry: &mut impl Read, mut file: File, mode: u32) -> io::Result<u64> {
    let bytes = io::copy(entry, &mut file)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    /// Builds tars with any entry name, `..` and absolute ones included
    /// (the tar crate's own path setter refuses those).
    struct Tar {
        builder: tar::Builder<Vec<u8>>,
    }

    impl Tar {
        fn new() -> Self {
            Self {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn entry(
            mut self,
            name: &str,
            kind: EntryType,
            mode: u32,
            data: &[u8],
            link: &str,
        ) -> Self {
            let mut header = tar::Header::new_old();
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            let link = link.as_bytes();
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_cksum();
            self.builder.append(&header, data).unwrap();
            self
        }

        fn dir(self, name: &str) -> Self {
            self.entry(name, EntryType::Directory, 0o755, b"", "")
        }

        fn file(self, name: &str, data: &str) -> Self {
            self.entry(name, EntryType::Regular, 0o644, data.as_bytes(), "")
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.entry(name, EntryType::Symlink, 0o777, b"", target)
        }

        fn bytes(self) -> Vec<u8> {
            self.builder.into_inner().unwrap()
        }
    }

    /// A checkout-like context dir plus a sibling dir standing for the
    /// rest of the worker's filesystem.
    struct Fixture {
        _tmp: TempDir,
        context: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let context = tmp.path().join("context");
        let outside = tmp.path().join("outside");
        fs::create_dir(&context).unwrap();
        fs::create_dir(&outside).unwrap();
        Fixture {
            _tmp: tmp,
            context,
            outside,
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn error(fx: &Fixture, tar: Tar, dest: &str) -> String {
        unpack(
            tar.bytes().as_slice(),
            &fx.context,
            dest,
            ArtifactLimits::default(),
        )
        .unwrap_err()
        .to_string()
    }

    fn assert_outside_untouched(fx: &Fixture) {
        let left: Vec<_> = fs::read_dir(&fx.outside).unwrap().collect();
        assert!(left.is_empty(), "written outside: {left:?}");
    }

    #[test]
    fn directory_becomes_the_destination() {
        let fx = fixture();
        let tar = Tar::new()
            .dir("out/")
            .file("out/index.html", "<h1>hi</h1>\n")
            .dir("out/css/")
            .entry("out/css/site.css", EntryType::Regular, 0o640, b"body{}", "")
            .entry("out/run.sh", EntryType::Regular, 0o4755, b"#!/bin/sh\n", "")
            .symlink("out/home.html", "index.html")
            .symlink("out/css/up.html", "../index.html")
            .entry(
                "out/copy.html",
                EntryType::Link,
                0o644,
                b"",
                "out/index.html",
            );
        let stats = unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "public/site",
            ArtifactLimits::default(),
        )
        .unwrap();
        assert_eq!(
            stats,
            Unpacked {
                files: 6,
                bytes: 12 + 6 + 10,
                replaced: false
            }
        );
        let site = fx.context.join("public/site");
        assert_eq!(read(&site.join("index.html")), "<h1>hi</h1>\n");
        assert_eq!(read(&site.join("home.html")), "<h1>hi</h1>\n");
        assert_eq!(read(&site.join("css/up.html")), "<h1>hi</h1>\n");
        assert_eq!(read(&site.join("copy.html")), "<h1>hi</h1>\n");
        assert_eq!(mode(&site.join("css/site.css")), 0o640);
        // setuid is not the artifact's to set on the worker's disk.
        assert_eq!(mode(&site.join("run.sh")), 0o755);
        assert!(fs::symlink_metadata(site.join("home.html"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn single_file_becomes_the_destination() {
        let fx = fixture();
        let tar = Tar::new().file("app.jar", "PK");
        let stats = unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "dist/app.jar",
            ArtifactLimits::default(),
        )
        .unwrap();
        assert_eq!(stats.files, 1);
        assert_eq!(read(&fx.context.join("dist/app.jar")), "PK");
    }

    #[test]
    fn entries_without_their_directories_still_land_inside() {
        let fx = fixture();
        let tar = Tar::new().file("out/a/b.txt", "b");
        unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "artifact",
            ArtifactLimits::default(),
        )
        .unwrap();
        assert_eq!(read(&fx.context.join("artifact/a/b.txt")), "b");
    }

    #[test]
    fn what_the_checkout_had_at_the_destination_is_replaced() {
        let fx = fixture();
        fs::create_dir_all(fx.context.join("artifact/old")).unwrap();
        fs::write(fx.context.join("artifact/old/stale.txt"), "stale").unwrap();
        let tar = Tar::new().dir("out/").file("out/new.txt", "new");
        let stats = unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "artifact",
            ArtifactLimits::default(),
        )
        .unwrap();
        assert!(stats.replaced);
        assert!(!fx.context.join("artifact/old").exists());
        assert_eq!(read(&fx.context.join("artifact/new.txt")), "new");
    }

    #[test]
    fn destination_symlink_in_the_checkout_is_replaced_not_followed() {
        let fx = fixture();
        symlink(&fx.outside, fx.context.join("artifact")).unwrap();
        let tar = Tar::new().dir("out/").file("out/x.txt", "x");
        let stats = unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "artifact",
            ArtifactLimits::default(),
        )
        .unwrap();
        assert!(stats.replaced);
        assert!(fs::symlink_metadata(fx.context.join("artifact"))
            .unwrap()
            .is_dir());
        assert_outside_untouched(&fx);
    }

    #[test]
    fn destination_under_a_checkout_symlink_is_refused() {
        let fx = fixture();
        symlink(&fx.outside, fx.context.join("www")).unwrap();
        let tar = Tar::new().dir("out/").file("out/x.txt", "x");
        assert_eq!(
            error(&fx, tar, "www/site"),
            "build.builder.artifacts_dest: www/site: www in the checkout is not a directory (a file or symlink)"
        );
        assert_outside_untouched(&fx);
    }

    #[test]
    fn entries_leaving_the_destination_are_refused() {
        let fx = fixture();
        let tar = Tar::new().dir("out/").file("out/../../outside/x", "x");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: out/../../outside/x: a path outside the artifact"
        );
        let tar = Tar::new().file("/etc/x", "x");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: /etc/x: a path outside the artifact"
        );
        assert_outside_untouched(&fx);
    }

    #[test]
    fn symlinks_pointing_outside_the_artifact_are_refused() {
        let fx = fixture();
        let outside = fx.outside.to_str().unwrap().to_owned();
        for (name, target) in [
            ("out/abs", outside.as_str()),
            ("out/up", "../x"),
            ("out/sub/up2", "../../x"),
            ("out/down-up", "a/../../x"),
        ] {
            let tar = Tar::new().dir("out/").dir("out/sub/").symlink(name, target);
            assert_eq!(
                error(&fx, tar, "artifact"),
                format!(
                    "build.builder.artifacts: {name}: symlink pointing outside the artifact (to {target})"
                )
            );
        }
        // The artifact itself being a symlink points outside by definition.
        let tar = Tar::new().symlink("out", "/real/out");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: out: symlink pointing outside the artifact (to /real/out)"
        );
        assert_outside_untouched(&fx);
    }

    /// A secret beside the context, and what an escaping link would show
    /// of it: `artifact` is `context/artifact`, so two climbs above the
    /// artifact reach the fixture's `outside`.
    fn plant_secret(fx: &Fixture) {
        fs::write(fx.outside.join("secret"), "secret").unwrap();
    }

    fn assert_refused_chain(fx: &Fixture, tar: Tar, entry: &str, target: &str) {
        assert_eq!(
            error(fx, tar, "artifact"),
            format!(
                "build.builder.artifacts: {entry}: symlink climbing (..) after a name, which may be another symlink (to {target}); only leading .. are allowed"
            )
        );
        let link = fx
            .context
            .join("artifact")
            .join(entry.trim_start_matches("out/"));
        assert!(fs::symlink_metadata(link).is_err(), "{entry} was created");
    }

    #[test]
    fn a_link_through_a_link_to_itself_cannot_climb_out() {
        // Lexically self/self/../.. is `.`; on disk each `self` is the
        // artifact's top, so each `..` climbs above it.
        let fx = fixture();
        plant_secret(&fx);
        let target = "self/self/../../outside/secret";
        let tar = Tar::new()
            .dir("out/")
            .symlink("out/self", ".")
            .symlink("out/esc", target);
        assert_refused_chain(&fx, tar, "out/esc", target);
    }

    #[test]
    fn a_link_listed_before_the_link_it_climbs_through_is_refused_too() {
        let fx = fixture();
        plant_secret(&fx);
        let target = "self/self/../../outside/secret";
        let tar = Tar::new()
            .dir("out/")
            .symlink("out/esc", target)
            .symlink("out/self", ".");
        assert_refused_chain(&fx, tar, "out/esc", target);
    }

    #[test]
    fn a_link_to_a_link_to_a_parent_cannot_climb_out() {
        // sub/alias -> up -> .. is the artifact's top, not `sub`.
        let fx = fixture();
        plant_secret(&fx);
        let target = "sub/alias/../../outside/secret";
        let tar = Tar::new()
            .dir("out/")
            .dir("out/sub/")
            .symlink("out/sub/up", "..")
            .symlink("out/sub/alias", "up")
            .symlink("out/esc", target);
        assert_refused_chain(&fx, tar, "out/esc", target);
    }

    #[test]
    fn a_link_through_a_directory_link_then_up_cannot_climb_out() {
        // a/b/c/top is the artifact's top, so `..` from it is not a/b/c.
        let fx = fixture();
        plant_secret(&fx);
        let target = "a/b/c/top/../../outside/secret";
        let tar = Tar::new()
            .dir("out/")
            .dir("out/a/")
            .dir("out/a/b/")
            .dir("out/a/b/c/")
            .symlink("out/a/b/c/top", "../../..")
            .symlink("out/esc", target);
        assert_refused_chain(&fx, tar, "out/esc", target);
    }

    #[test]
    fn leading_climbs_then_names_through_links_stay_allowed() {
        let fx = fixture();
        let tar = Tar::new()
            .dir("out/")
            .file("out/index.html", "hi")
            .dir("out/sub/")
            .symlink("out/sub/up", "..")
            .symlink("out/sub/alias", "up")
            .symlink("out/sub/page", "../sub/alias/index.html")
            .symlink("out/dot", "./sub/./up/");
        unpack(
            tar.bytes().as_slice(),
            &fx.context,
            "artifact",
            ArtifactLimits::default(),
        )
        .unwrap();
        let artifact = fx.context.join("artifact");
        assert_eq!(read(&artifact.join("sub/page")), "hi");
        assert_eq!(read(&artifact.join("dot/index.html")), "hi");
    }

    #[test]
    fn nothing_is_written_through_a_planted_symlink() {
        let fx = fixture();
        // An inside link, then an entry through it: refused even though
        // this one would stay inside, since no link is ever followed.
        let tar = Tar::new()
            .dir("out/")
            .dir("out/sub/")
            .symlink("out/link", "sub")
            .file("out/link/x", "x");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: out/link/x: lies under a file or symlink"
        );
        // A file entry cannot overwrite the link either.
        let tar = Tar::new()
            .dir("out/")
            .symlink("out/link", "x")
            .file("out/link", "y");
        assert!(error(&fx, tar, "artifact").contains("artifact/link"));
    }

    #[test]
    fn a_second_top_level_entry_or_an_empty_archive_is_refused() {
        let fx = fixture();
        let tar = Tar::new().dir("out/").file("other/x", "x");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: other/x: a second top-level entry"
        );
        assert_eq!(
            error(&fx, Tar::new(), "artifact"),
            "build.builder.artifacts: the archive copied out of the builder is empty"
        );
    }

    #[test]
    fn destination_must_stay_inside_the_context() {
        let fx = fixture();
        for dest in ["../x", "/abs", "."] {
            let message = error(&fx, Tar::new().file("a", "a"), dest);
            assert!(
                message.starts_with("build.builder.artifacts_dest: "),
                "{message}"
            );
        }
        assert_outside_untouched(&fx);
    }

    fn limits(max_bytes: u64, max_entries: u64, max_depth: usize) -> ArtifactLimits {
        ArtifactLimits {
            max_bytes,
            max_entries,
            max_depth,
        }
    }

    fn error_within(fx: &Fixture, tar: Vec<u8>, limits: ArtifactLimits) -> ArtifactError {
        unpack(tar.as_slice(), &fx.context, "artifact", limits).unwrap_err()
    }

    /// A tar of long names (GNU extensions): `dirs` nested directories
    /// under `out/`, then `files` files in the deepest.
    fn deep_tar(dirs: usize, files: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut path = String::from("out");
        let mut append = |path: &str, kind: EntryType, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(0o755);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data).unwrap();
        };
        append(&path, EntryType::Directory, b"");
        for _ in 0..dirs {
            path.push_str("/d");
            append(&path, EntryType::Directory, b"");
        }
        for n in 0..files {
            append(&format!("{path}/{n}"), EntryType::Regular, b"x");
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn more_bytes_than_the_limit_are_refused_before_written() {
        let fx = fixture();
        let big = vec![b'x'; 600];
        let tar = || {
            Tar::new()
                .dir("out/")
                .entry("out/a", EntryType::Regular, 0o644, &big, "")
                .entry("out/b", EntryType::Regular, 0o644, &big, "")
                .bytes()
        };
        let error = error_within(&fx, tar(), limits(1000, 100, 8));
        assert!(matches!(error, ArtifactError::TooLarge { limit: 1000 }));
        assert_eq!(
            error.to_string(),
            "build.builder.artifacts: the artifact holds more than 1,000 bytes; this worker allows at most 1,000 (--max-artifact-bytes)"
        );
        assert!(!fx.context.join("artifact/b").exists());
        let fx = fixture();
        let stats = unpack(
            tar().as_slice(),
            &fx.context,
            "artifact",
            limits(1200, 100, 8),
        );
        assert_eq!(stats.unwrap().bytes, 1200);
    }

    #[test]
    fn more_entries_than_the_limit_are_refused() {
        let fx = fixture();
        let mut tar = Tar::new().dir("out/");
        for n in 0..10 {
            tar = tar.file(&format!("out/{n}"), "x");
        }
        let error = error_within(&fx, tar.bytes(), limits(1000, 10, 8));
        assert_eq!(
            error.to_string(),
            "build.builder.artifacts: the artifact holds more than 10 entries; this worker allows at most 10 (--max-artifact-entries)"
        );
        assert!(!fx.context.join("artifact/9").exists());
    }

    #[test]
    fn entries_deeper_than_the_limit_are_refused() {
        let fx = fixture();
        let error = error_within(&fx, deep_tar(3, 1), limits(1000, 100, 3));
        assert_eq!(
            error.to_string(),
            "build.builder.artifacts: out/d/d/d/0: more than 3 directory levels deep; this worker allows at most 3 (--max-artifact-depth)"
        );
        let fx = fixture();
        let stats = unpack(
            deep_tar(3, 1).as_slice(),
            &fx.context,
            "artifact",
            limits(1000, 100, 4),
        );
        assert_eq!(stats.unwrap().files, 1);
        assert_eq!(read(&fx.context.join("artifact/d/d/d/0")), "x");
    }

    #[test]
    fn many_files_deep_down_unpack_or_are_refused_by_depth() {
        // Once O(depth^2) lstat calls per entry: 70 s of CPU for this.
        let tar = deep_tar(900, 3000);
        let fx = fixture();
        let stats = unpack(
            tar.as_slice(),
            &fx.context,
            "artifact",
            limits(1 << 20, 10_000, 1000),
        );
        assert_eq!(stats.unwrap().files, 3000);
        let bottom: PathBuf = std::iter::once("artifact")
            .chain(std::iter::repeat_n("d", 900))
            .collect();
        assert_eq!(read(&fx.context.join(bottom).join("2999")), "x");
        let fx = fixture();
        let error = error_within(&fx, tar, ArtifactLimits::default());
        assert!(matches!(error, ArtifactError::TooDeep { limit: 256, .. }));
        assert!(error.to_string().contains("d/d/d/..."), "{error}");
    }

    #[test]
    fn a_planted_symlink_is_refused_even_under_known_directories() {
        // Remembering checked directories must not let a link through: a
        // link where a directory is expected is never known.
        let fx = fixture();
        let tar = Tar::new()
            .dir("out/")
            .dir("out/a/")
            .file("out/a/x", "x")
            .symlink("out/b", "a")
            .file("out/b/y", "y");
        assert_eq!(
            error(&fx, tar, "artifact"),
            "build.builder.artifacts: out/b/y: lies under a file or symlink"
        );
    }
}
