//! Test fixtures for the build context: a checkout exercising every rule,
//! and a tar reader that checks the header fields that must never vary.

use super::{
    resolve_within, write_tar, ContextError, ContextSpec, ContextStats, WalkLimits,
    DOCKERFILE_FIELD,
};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use tar::EntryType;
use tempfile::TempDir;

pub(super) const MTIME: u64 = 1_700_000_000;

/// One entry read back from a tar.
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    pub(super) path: String,
    pub(super) kind: EntryType,
    pub(super) mode: u32,
    pub(super) link: Option<String>,
    pub(super) data: String,
}

pub(super) fn write(root: &Path, rel: &str, data: &str, mode: u32) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

pub(super) fn mkdir(root: &Path, rel: &str) {
    let path = root.join(rel);
    fs::create_dir_all(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

pub(super) fn spec(checkout: &Path, context: &str, dockerfile: &str) -> ContextSpec {
    ContextSpec {
        checkout: checkout.to_owned(),
        context: context.to_owned(),
        dockerfile: dockerfile.to_owned(),
        dockerfile_field: DOCKERFILE_FIELD,
        mtime: MTIME,
        limits: WalkLimits::default(),
    }
}

/// [`super::resolve`] on this thread.
pub(super) fn resolve(spec: &ContextSpec) -> Result<std::path::PathBuf, ContextError> {
    resolve_within(spec, spec.limits)
}

pub(super) fn tar_bytes(spec: &ContextSpec) -> (Vec<u8>, ContextStats) {
    let mut out = Vec::new();
    let stats = write_tar(spec, WalkLimits::default(), &mut out).unwrap();
    (out, stats)
}

/// Every entry of the tar, checking the fields that must not vary.
pub(super) fn entries(tar: &[u8]) -> Vec<Entry> {
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

pub(super) fn dir(path: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryType::Directory,
        mode: 0o755,
        link: None,
        data: String::new(),
    }
}

pub(super) fn file(path: &str, mode: u32, data: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryType::Regular,
        mode,
        link: None,
        data: data.to_owned(),
    }
}

pub(super) fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryType::Symlink,
        mode: 0o777,
        link: Some(target.to_owned()),
        data: String::new(),
    }
}

pub(super) const IGNORE: &str =
    "# build context rules\ndocs\n!docs/keep.md\n**/*.log\ndocker\n.dockerignore\n";

/// A checkout whose context `app` exercises every rule.
pub(super) fn fixture() -> TempDir {
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
