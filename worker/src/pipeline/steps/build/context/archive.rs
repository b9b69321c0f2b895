//! The tar entries, written so the archive is reproducible: every header
//! has the same owner (root, no names) and modification time (the
//! commit's), and a file's content is exactly the size its header states.

use super::ContextStats;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tar::{EntryType, Header};

/// A tar being written, counting what goes in.
pub(super) struct ContextTar<W: Write> {
    builder: tar::Builder<W>,
    /// Modification time of every entry.
    mtime: u64,
    stats: ContextStats,
}

impl<W: Write> ContextTar<W> {
    /// An empty tar writing to `out`, every entry dated `mtime`.
    pub(super) fn new(out: W, mtime: u64) -> Self {
        ContextTar {
            builder: tar::Builder::new(out),
            mtime,
            stats: ContextStats::default(),
        }
    }

    /// A directory entry at `path` (the trailing slash is added here).
    pub(super) fn append_dir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        let mut header = header(EntryType::Directory, mode, 0, self.mtime);
        let mut name = OsString::from(path.as_os_str());
        name.push("/");
        self.builder
            .append_data(&mut header, Path::new(&name), io::empty())
    }

    /// A regular file at `path`: `file`'s content, exactly the size `meta`
    /// (read before opening it) states.
    pub(super) fn append_file(
        &mut self,
        path: &Path,
        file: File,
        meta: &Metadata,
    ) -> io::Result<()> {
        let size = meta.len();
        let mut header = header(EntryType::Regular, mode_of(meta), size, self.mtime);
        let data = ExactReader {
            inner: file,
            remaining: size,
        };
        self.builder.append_data(&mut header, path, data)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// A symlink at `path` to `target`, stored as a link.
    pub(super) fn append_symlink(
        &mut self,
        path: &Path,
        target: &Path,
        meta: &Metadata,
    ) -> io::Result<()> {
        let mut header = header(EntryType::Symlink, mode_of(meta), 0, self.mtime);
        self.builder.append_link(&mut header, path, target)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Ends the archive and flushes it; returns what went in.
    pub(super) fn finish(self) -> io::Result<ContextStats> {
        let stats = self.stats;
        let mut out = self.builder.into_inner()?;
        out.flush()?;
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
pub(super) fn mode_of(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
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

#[cfg(test)]
mod tests {
    use super::super::fixture::{fixture, spec, tar_bytes};
    use super::*;

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
    fn file_content_is_exactly_the_size_measured() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        // Grown since it was measured: cut at the measured size.
        let mut grown = ExactReader {
            inner: File::open(&path).unwrap(),
            remaining: 2,
        };
        let mut read = Vec::new();
        grown.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"ab");
        // Shrunk since: an error, never a short entry.
        let mut shrunk = ExactReader {
            inner: File::open(&path).unwrap(),
            remaining: 5,
        };
        let error = shrunk.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
