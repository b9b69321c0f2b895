//! The checkout walk: which entries go into the tar, in which order, and
//! as what. Depth-first in byte order of names; `.dockerignore` exclusions
//! and re-inclusions applied (an excluded directory is written only for
//! what is re-included under it); the Dockerfile and the ignore file always
//! sent; symlinks stored as links and never followed, except the Dockerfile,
//! sent as the file it points to; sockets, FIFOs and devices skipped; an
//! entry swapped for another while the walk reads it refused.

use super::archive::{mode_of, ContextTar};
use super::{io_error, ContextError, ContextStats, WalkLimits, IGNORE_FILE};
use crate::pipeline::steps::build::dockerignore::DockerIgnore;
use std::ffi::OsStr;
use std::fs::{self, DirEntry, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The Dockerfile of a context: always sent, and as the file it points to.
#[derive(Clone, Copy)]
pub(super) struct DockerfileEntry<'a> {
    /// Clean path relative to the context, as it appears in the tar.
    pub(super) rel: &'a str,
    /// The file with every symlink resolved.
    pub(super) real: &'a Path,
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

/// A directory being walked: its entries not visited yet, in name order.
struct Frame {
    rel: RelPath,
    entries: std::vec::IntoIter<DirEntry>,
}

/// Walks the context depth-first in name order, writing tar entries.
///
/// The walk is iterative, with its own stack of [`Frame`]s: a repository
/// controls how deep its tree is, and a recursion as deep as the tree
/// would overflow the thread's stack and abort the whole worker, every
/// other tenant's job with it. The stack and everything else the walk
/// holds are bounded by [`WalkLimits`].
pub(super) struct Walker<'a, W: Write> {
    tar: ContextTar<W>,
    ignore: DockerIgnore,
    /// None when packing a whole checkout rather than a build context.
    dockerfile: Option<DockerfileEntry<'a>>,
    /// The directories being walked, outermost first. An excluded one is
    /// written only just before the first entry re-included under it (as
    /// BuildKit does), so it leaves no trace when nothing is.
    pending: Vec<PendingDir>,
    limits: WalkLimits,
    /// What the walk packs (a job field), named in limit errors.
    field: &'static str,
    /// Directory entries read so far, against [`WalkLimits::max_entries`].
    entries: u64,
    /// Only check the limits: walk the same entries but write no file
    /// content (see [`Walker::survey`]).
    survey: bool,
}

impl<'a, W: Write> Walker<'a, W> {
    /// A walker writing to `out`, excluding what `ignore` excludes, every
    /// entry dated `mtime`, refusing a tree beyond `limits` as `field`'s.
    pub(super) fn new(
        out: W,
        ignore: DockerIgnore,
        dockerfile: Option<DockerfileEntry<'a>>,
        mtime: u64,
        limits: WalkLimits,
        field: &'static str,
    ) -> Self {
        Walker {
            tar: ContextTar::new(out, mtime),
            ignore,
            dockerfile,
            pending: Vec::new(),
            limits,
            field,
            entries: 0,
            survey: false,
        }
    }

    /// Packs everything under `root` (not `root` itself) and ends the tar.
    pub(super) fn walk(mut self, root: &Path) -> Result<ContextStats, ContextError> {
        self.walk_tree(root)?;
        self.tar.finish().map_err(io_error("end of archive"))
    }

    /// Walks what [`Walker::walk`] would, reading no file, only to fail
    /// early with a limit error: once the tar streams, an error reaches
    /// the job only as a broken upload.
    pub(super) fn survey(mut self, root: &Path) -> Result<(), ContextError> {
        self.survey = true;
        self.walk_tree(root)
    }

    /// Writes the entries under `root` in name order, descending into each
    /// subdirectory that may hold something to send.
    fn walk_tree(&mut self, root: &Path) -> Result<(), ContextError> {
        let root_rel = RelPath::root();
        let entries = self.read_dir(root, &root_rel)?;
        let mut stack = vec![Frame {
            rel: root_rel,
            entries: entries.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(entry) = frame.entries.next() else {
                stack.pop();
                // Every frame but the root's has its directory pending.
                if !stack.is_empty() {
                    self.pending.pop();
                }
                continue;
            };
            let child = frame.rel.child(&entry.file_name());
            if let Some(frame) = self.visit(&entry, child, stack.len())? {
                stack.push(frame);
            }
        }
        Ok(())
    }

    /// Visits one entry, a directory being the `depth`th level: writes a leaf, or
    /// returns the frame of a directory to go into.
    fn visit(
        &mut self,
        entry: &DirEntry,
        rel: RelPath,
        depth: usize,
    ) -> Result<Option<Frame>, ContextError> {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_error(&rel.text))?;
        if !meta.is_dir() {
            self.visit_leaf(&path, &rel, &meta)?;
            return Ok(None);
        }
        if depth > self.limits.max_depth {
            return Err(ContextError::TooDeep {
                field: self.field,
                limit: self.limits.max_depth,
                path: abbreviated(&rel.text),
            });
        }
        if !self.enter_dir(&rel, &meta)? {
            return Ok(None);
        }
        let entries = self.read_dir(&path, &rel)?;
        Ok(Some(Frame {
            rel,
            entries: entries.into_iter(),
        }))
    }

    /// The entries of `dir`, sorted, counted against the entry limit as
    /// they are read (a huge directory is refused before it is all held).
    fn read_dir(&mut self, dir: &Path, rel: &RelPath) -> Result<Vec<DirEntry>, ContextError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(rel.shown()))? {
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(ContextError::TooManyEntries {
                    field: self.field,
                    limit: self.limits.max_entries,
                });
            }
            entries.push(entry.map_err(io_error(rel.shown()))?);
        }
        // Byte order of names, as Go's filepath.Walk: the tar must not
        // depend on the order the filesystem returns entries in.
        entries.sort_by_key(|entry| entry.file_name());
        Ok(entries)
    }

    /// Whether the walk goes into the directory at `rel`: yes when it is
    /// not excluded (it is written at once), or when something under it
    /// may be re-included (it is written only then). When entering, the
    /// directory is pushed on [`Walker::pending`], popped when its frame
    /// ends. An
    /// error ends the walk.
    fn enter_dir(&mut self, rel: &RelPath, meta: &Metadata) -> Result<bool, ContextError> {
        let excluded = self.is_excluded(rel);
        if excluded && !self.may_reinclude_under(&rel.text) {
            return Ok(false);
        }
        self.pending.push(PendingDir {
            path: rel.path.clone(),
            mode: mode_of(meta),
            written: false,
        });
        if !excluded {
            self.flush_pending(rel)?;
        }
        Ok(true)
    }

    /// Anything but a directory: a file, a symlink, or a special file
    /// (skipped). Written unless excluded.
    fn visit_leaf(
        &mut self,
        path: &Path,
        rel: &RelPath,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        if self.is_excluded(rel) {
            return Ok(());
        }
        if self.survey {
            return Ok(());
        }
        let kind = meta.file_type();
        if kind.is_file() {
            self.flush_pending(rel)?;
            let file = open_unchanged(path, meta).map_err(io_error(&rel.text))?;
            self.tar
                .append_file(&rel.path, file, meta)
                .map_err(io_error(&rel.text))
        } else if let (true, Some(dockerfile)) = (kind.is_symlink(), self.dockerfile_at(rel)) {
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

    /// The Dockerfile, if `rel` is its path.
    fn dockerfile_at(&self, rel: &RelPath) -> Option<DockerfileEntry<'a>> {
        self.dockerfile.filter(|d| d.rel == rel.text)
    }

    /// Whether `.dockerignore` keeps `rel` out; the Dockerfile and the
    /// ignore file themselves are always sent.
    fn is_excluded(&self, rel: &RelPath) -> bool {
        let always = self.dockerfile_at(rel).is_some() || rel.text == IGNORE_FILE;
        !always && self.ignore.is_excluded(&rel.text)
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
            self.tar
                .append_dir(&dir.path, dir.mode)
                .map_err(io_error(rel.shown()))?;
            dir.written = true;
        }
        Ok(())
    }

    fn append_dockerfile(&mut self, rel: &RelPath, real: &Path) -> Result<(), ContextError> {
        // Canonical, so following links here changes nothing.
        let meta = fs::metadata(real).map_err(io_error(&rel.text))?;
        let file = open_unchanged(real, &meta).map_err(io_error(&rel.text))?;
        self.tar
            .append_file(&rel.path, file, &meta)
            .map_err(io_error(&rel.text))
    }

    fn append_symlink(
        &mut self,
        path: &Path,
        rel: &RelPath,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        let target = fs::read_link(path).map_err(io_error(&rel.text))?;
        self.tar
            .append_symlink(&rel.path, &target, meta)
            .map_err(io_error(&rel.text))
    }
}

/// A path short enough for a message: a tree deep enough to hit the limit
/// has a path of thousands of characters.
fn abbreviated(path: &str) -> String {
    const SHOWN: usize = 80;
    match path.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &path[..cut]),
        None => path.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::super::fixture::{
        dir, entries, file, fixture, link, mkdir, spec, tar_bytes, write, IGNORE, MTIME,
    };
    use super::super::{grouped, resolve_within, write_source_tar, write_tar, ContextStats};
    use super::*;
    use std::os::unix::fs::symlink;

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
        let stats = write_source_tar(tmp.path(), MTIME, WalkLimits::default(), &mut tar).unwrap();
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

    /// A chain of `depth` directories named `d` under `root`, with a file
    /// at the bottom; returns the chain's path relative to `root`.
    fn chain(root: &Path, depth: usize) -> String {
        let rel = vec!["d"; depth].join("/");
        let mut dir = root.to_owned();
        for _ in 0..depth {
            dir.push("d");
            fs::create_dir(&dir).unwrap();
        }
        fs::write(dir.join("f"), "bottom").unwrap();
        rel
    }

    fn limits(max_depth: usize, max_entries: u64) -> WalkLimits {
        WalkLimits {
            max_depth,
            max_entries,
        }
    }

    /// The source tar of `root` written on a thread with a small stack: a
    /// walk recursing per level would overflow it long before 1,900.
    fn source_tar_on_small_stack(root: &Path, limits: WalkLimits) -> Result<Vec<u8>, ContextError> {
        let root = root.to_owned();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut tar = Vec::new();
                write_source_tar(&root, MTIME, limits, &mut tar).map(|_| tar)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn deep_tree_walks_on_a_small_stack_with_exact_contents() {
        let tmp = tempfile::tempdir().unwrap();
        // About as deep as PATH_MAX lets a tree of one-letter names go.
        let rel = chain(tmp.path(), 1900);
        let tar = source_tar_on_small_stack(tmp.path(), limits(1900, 10_000)).unwrap();
        let found = entries(&tar);
        let mut expected: Vec<_> = (1..=1900)
            .map(|n| dir(&format!("{}/", vec!["d"; n].join("/"))))
            .collect();
        expected.push(file(&format!("{rel}/f"), 0o644, "bottom"));
        assert_eq!(found.len(), expected.len());
        assert!(found == expected, "the deep tar differs");
    }

    #[test]
    fn a_tree_deeper_than_the_limit_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        chain(tmp.path(), 1900);
        let error = source_tar_on_small_stack(tmp.path(), WalkLimits::default()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ContextError::TooDeep { limit: 1024, .. }));
        assert!(
            message.starts_with(
                "build.builder (the checkout uploaded into the builder): more than 1024 directory levels (at d/d/d/"
            ),
            "{message}"
        );
        assert!(message.ends_with("...); this worker allows at most 1024 (--max-context-depth)"));
        // Exactly at the limit is fine.
        source_tar_on_small_stack(tmp.path(), limits(1900, 10_000)).unwrap();
        assert!(source_tar_on_small_stack(tmp.path(), limits(1899, 10_000)).is_err());
    }

    #[test]
    fn a_context_beyond_the_limits_fails_resolve_with_the_limit_named() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        chain(tmp.path(), 40);
        let spec = spec(tmp.path(), ".", "Dockerfile");
        let error = resolve_within(&spec, limits(39, 1000)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("build.context: more than 39 directory levels"),
            "{error}"
        );
        assert!(resolve_within(&spec, limits(40, 1000)).is_ok());
        // An excluded tree is not walked, so not counted either.
        write(tmp.path(), ".dockerignore", "d\n", 0o644);
        assert!(resolve_within(&spec, limits(1, 1000)).is_ok());
    }

    #[test]
    fn a_wide_tree_is_counted_entry_by_entry() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        for d in 0..10 {
            for f in 0..100 {
                write(tmp.path(), &format!("d{d:02}/f{f:03}"), "x", 0o644);
            }
        }
        // 1 Dockerfile + 10 directories + 1,000 files.
        let spec = spec(tmp.path(), ".", "Dockerfile");
        let error = write_tar(&spec, limits(8, 1010), Vec::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "build.context: more than 1,010 entries; this worker allows at most 1,010 (--max-context-entries)"
        );
        assert!(resolve_within(&spec, limits(8, 1010)).is_err());
        let mut tar = Vec::new();
        let stats = write_tar(&spec, limits(8, 1011), &mut tar).unwrap();
        assert_eq!(stats.files, 1001);
        assert_eq!(entries(&tar).len(), 1011);
        assert_eq!(entries(&tar)[2].path, "d00/f000");
    }

    #[test]
    fn numbers_in_messages_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(2_147_483_648), "2,147,483,648");
    }
}
