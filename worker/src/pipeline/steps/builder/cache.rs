//! The builder-image cache. A builder image built from the repository's
//! `build.builder.dockerfile` is kept on the engine, tagged
//! `buildbot-builder:<key>`, where the key is a digest of everything the
//! build reads: the Dockerfile's path and text, the ids of the images it
//! starts from, and the content, mode and names of the files its `COPY`
//! and `ADD` take from the checkout (never their mtimes, which change with
//! every commit). A later job whose key is the same runs that image
//! without building it again.
//!
//! A source with a wildcard is covered by hashing every file of the
//! checkout; an `ADD` of a URL, or a source outside the checkout, makes
//! the image uncacheable (built per job, and removed with it).

use crate::pipeline::images::dockerfile::{context_sources, DockerfileError};
use buildbot_protocol::grammar::CleanPath;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Bumped when what the key covers changes.
const KEY_VERSION: &str = "buildbot builder cache v1";

/// Hex digits of the digest kept in the tag: 128 bits.
const KEY_CHARS: usize = 32;

/// Why the key could not be computed (the build then goes on uncached).
#[derive(Debug, thiserror::Error)]
pub(super) enum CacheKeyError {
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What a builder image is built from.
pub(super) struct BuilderInputs<'a> {
    /// The checkout, the build's context.
    pub(super) checkout: &'a Path,
    /// `build.builder.dockerfile`, relative to the checkout.
    pub(super) dockerfile: &'a str,
    pub(super) dockerfile_text: &'a str,
    /// Ids of the images it starts from, in the Dockerfile's order.
    pub(super) base_image_ids: &'a [String],
}

/// The key of a builder image built from `inputs`, or None when it cannot
/// be cached. Reads files: call it on a blocking thread.
pub(super) fn key(inputs: &BuilderInputs<'_>) -> Result<Option<String>, CacheKeyError> {
    let Some(sources) = context_sources(inputs.dockerfile_text)? else {
        return Ok(None);
    };
    let mut hasher = Sha256::new();
    for part in [KEY_VERSION, inputs.dockerfile, inputs.dockerfile_text] {
        field(&mut hasher, part.as_bytes());
    }
    for id in inputs.base_image_ids {
        field(&mut hasher, id.as_bytes());
    }
    if sources.iter().any(|s| s.contains(['*', '?', '['])) {
        hash_tree(&mut hasher, inputs.checkout, "")?;
    } else {
        for source in &sources {
            let clean = CleanPath::new(source.trim_start_matches('/'));
            if clean.levels_above() > 0 {
                return Ok(None);
            }
            hash_tree(
                &mut hasher,
                &inputs.checkout.join(clean.as_str()),
                clean.as_str(),
            )?;
        }
    }
    let digest = format!("{:x}", hasher.finalize());
    Ok(Some(digest[..KEY_CHARS].to_owned()))
}

/// A length-prefixed field, so no two inputs hash alike by concatenation.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Every entry under `path` (named `rel`), in name order, without
/// following symlinks: names, kinds, modes, link targets and file bytes.
/// Iterative: the checkout's depth was already bounded by the context
/// walk, but nothing here recurses on input.
fn hash_tree(hasher: &mut Sha256, path: &Path, rel: &str) -> Result<(), CacheKeyError> {
    let mut pending = vec![(path.to_owned(), rel.to_owned())];
    while let Some((path, rel)) = pending.pop() {
        let io_error = |source| CacheKeyError::Io {
            path: rel.clone(),
            source,
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                field(hasher, format!("missing {rel}").as_bytes());
                continue;
            }
            Err(e) => return Err(io_error(e)),
        };
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_error)?;
            field(
                hasher,
                format!("link {rel} {}", target.display()).as_bytes(),
            );
        } else if meta.is_dir() {
            field(hasher, format!("dir {rel} {mode:o}").as_bytes());
            let mut names: Vec<_> = fs::read_dir(&path)
                .map_err(io_error)?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_error)?;
            // Popped last-first: pushed in reverse name order.
            names.sort_by(|a, b| b.cmp(a));
            for name in names {
                let name = name.to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                pending.push((path.join(&name), child_rel));
            }
        } else {
            field(
                hasher,
                format!("file {rel} {mode:o} {}", meta.len()).as_bytes(),
            );
            hash_file(hasher, &path).map_err(io_error)?;
        }
    }
    Ok(())
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(checkout: &Path, text: &str, ids: &[&str]) -> Option<String> {
        let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        key(&BuilderInputs {
            checkout,
            dockerfile: "Dockerfile.build",
            dockerfile_text: text,
            base_image_ids: &ids,
        })
        .expect("a key")
    }

    #[test]
    fn the_key_follows_what_the_build_reads_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::write(root.join("package.json"), "{}").expect("write");
        fs::write(root.join("app.js"), "1").expect("write");
        let text = "FROM node\nCOPY package.json ./\nRUN npm ci\n";
        let first = key_of(root, text, &["sha256:a"]).expect("cacheable");
        assert_eq!(first.len(), KEY_CHARS);
        // Another commit of the app's code: the same builder.
        fs::write(root.join("app.js"), "2").expect("write");
        assert_eq!(key_of(root, text, &["sha256:a"]).as_ref(), Some(&first));
        // What it copies, its base, its text: another builder.
        fs::write(root.join("package.json"), "{\"a\":1}").expect("write");
        let copied = key_of(root, text, &["sha256:a"]).expect("cacheable");
        assert_ne!(copied, first);
        assert_ne!(key_of(root, text, &["sha256:b"]).as_ref(), Some(&copied));
        assert_ne!(
            key_of(
                root,
                "FROM node\nCOPY package.json ./\nRUN npm i\n",
                &["sha256:a"]
            )
            .as_ref(),
            Some(&copied)
        );
    }

    #[test]
    fn directories_and_wildcards_cover_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("tools/bin")).expect("mkdir");
        fs::write(root.join("tools/bin/gen"), "v1").expect("write");
        let text = "FROM a\nCOPY tools/ /opt/\n";
        let before = key_of(root, text, &[]);
        fs::write(root.join("tools/bin/gen"), "v2").expect("write");
        assert_ne!(key_of(root, text, &[]), before);
        let glob = "FROM a\nCOPY *.txt /opt/\n";
        let before = key_of(root, glob, &[]);
        fs::write(root.join("other"), "x").expect("write");
        assert_ne!(
            key_of(root, glob, &[]),
            before,
            "a wildcard hashes the whole checkout"
        );
    }

    #[test]
    fn urls_and_sources_outside_the_checkout_are_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            key_of(dir.path(), "FROM a\nADD https://x.example/t.tgz /\n", &[]),
            None
        );
        assert_eq!(key_of(dir.path(), "FROM a\nCOPY ../secret /\n", &[]), None);
    }
}
