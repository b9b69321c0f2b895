//! Slash-separated paths from a job or a build context, cleaned lexically
//! (no file system access): [`CleanPath`] is Go's `filepath.Clean`, as
//! `.dockerignore` matching needs; [`RelativePath`] is a cleaned path that
//! stays inside its base, as `build.context`, `build.dockerfile` and
//! `build.builder.artifacts_dest` (and entries of an artifact) must.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A path cleaned like Go's `filepath.Clean` on `/`: repeated `/`
/// collapsed, `.` elements dropped, `..` resolved against the element
/// before it (`/..` is `/`; a relative path keeps its leading `..`s), no
/// trailing `/`; the empty path is `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CleanPath(String);

impl CleanPath {
    /// Cleans `path`. Never fails: every text is some path.
    pub fn new(path: &str) -> Self {
        let rooted = path.starts_with('/');
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => match parts.last() {
                    Some(&last) if last != ".." => {
                        parts.pop();
                    }
                    _ if rooted => {}
                    _ => parts.push(".."),
                },
                _ => parts.push(part),
            }
        }
        let joined = parts.join("/");
        Self(match (rooted, joined.is_empty()) {
            (true, _) => format!("/{joined}"),
            (false, true) => ".".to_owned(),
            (false, false) => joined,
        })
    }

    /// The cleaned text, e.g. `a/c`, `.`, `../b` or `/a`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the path starts at `/`.
    pub fn is_absolute(&self) -> bool {
        self.0.starts_with('/')
    }

    /// How many leading `..` elements a relative path has: how far it
    /// climbs above where it starts (0 for an absolute path).
    pub fn levels_above(&self) -> usize {
        self.components().take_while(|part| *part == "..").count()
    }

    /// The elements, without the root and without `.`: `/a/b` gives `a`,
    /// `b`; `.` and `/` give none.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
    }
}

impl fmt::Display for CleanPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CleanPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a path is not a [`RelativePath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty")]
    Empty,
    /// The path holds a NUL byte, which no file name can.
    #[error("contains a NUL byte")]
    Nul,
    /// The path starts at `/`.
    #[error("absolute path")]
    Absolute,
    /// After cleaning, the path climbs `levels` directories above its base
    /// (climbing out and back in, `../base/x`, is out too: a job does not
    /// know the name of the directory it is given).
    #[error("escapes its base directory")]
    Escapes {
        /// How many directories above the base it climbs.
        levels: usize,
    },
}

/// A non-empty relative path, cleaned, that stays inside the directory it
/// is relative to. `a/./b/../c` is `a/c`; `.` and `a/..` name the base
/// itself (see [`is_base`](Self::is_base)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(CleanPath);

impl RelativePath {
    /// Parses and cleans `path`.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.contains('\0') {
            return Err(PathError::Nul);
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let clean = CleanPath::new(path);
        match clean.levels_above() {
            0 => Ok(Self(clean)),
            levels => Err(PathError::Escapes { levels }),
        }
    }

    /// The cleaned text: `a/c`, or `.` for the base itself.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The elements from the base down; none for the base itself.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.components()
    }

    /// How many directories below the base the path ends.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// Whether the path names its base directory itself (`.`, `a/..`).
    pub fn is_base(&self) -> bool {
        self.depth() == 0
    }

    /// `path` taken relative to this one, if the result stays inside the
    /// same base: how a symlink target is checked against the directory
    /// the link is in. An absolute `path` is refused.
    pub fn join(&self, path: &str) -> Result<Self, PathError> {
        // Checked on its own first: joined, `/abs` would read as `abs`.
        Self::parse(path).map(|_| ()).or_else(|error| match error {
            PathError::Escapes { .. } => Ok(()),
            other => Err(other),
        })?;
        Self::parse(&format!("{}/{path}", self.as_str()))
    }
}

impl FromStr for RelativePath {
    type Err = PathError;

    fn from_str(path: &str) -> Result<Self, PathError> {
        Self::parse(path)
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl AsRef<str> for RelativePath {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From worker/src/dockerignore.rs (`clean_matches_go`).
    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a//b", "a/b"),
            ("a/./b/", "a/b"),
            ("a/b/../c", "a/c"),
            ("a/..", "."),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b/", "/a/b"),
        ] {
            assert_eq!(CleanPath::new(input).as_str(), want, "clean({input:?})");
        }
    }

    #[test]
    fn clean_path_parts() {
        let path = CleanPath::new("../../x/y");
        assert_eq!(path.levels_above(), 2);
        assert!(!path.is_absolute());
        assert_eq!(
            path.components().collect::<Vec<_>>(),
            ["..", "..", "x", "y"]
        );
        // Depth below `/` of an absolute path (validation of
        // build.builder.workdir and artifacts).
        for (root, depth) in [
            ("/", 0),
            ("//", 0),
            ("/.", 0),
            ("/out/..", 0),
            ("/../..", 0),
        ] {
            let clean = CleanPath::new(root);
            assert!(clean.is_absolute());
            assert_eq!(clean.components().count(), depth, "{root}");
            assert_eq!(clean.levels_above(), 0);
        }
        assert_eq!(CleanPath::new("/../work/./src").components().count(), 2);
    }

    #[test]
    fn relative_paths_stay_inside() {
        for (input, want, depth) in [
            ("a/./b/../c", "a/c", 2),
            ("./Dockerfile", "Dockerfile", 1),
            ("docker//Dockerfile.prod", "docker/Dockerfile.prod", 2),
            ("a/../Dockerfile", "Dockerfile", 1),
            ("a/../b/.", "b", 1),
            (".", ".", 0),
            ("./", ".", 0),
            ("a/..", ".", 0),
        ] {
            let path = RelativePath::parse(input).unwrap();
            assert_eq!(path.as_str(), want, "{input}");
            assert_eq!(path.depth(), depth, "{input}");
            assert_eq!(path.is_base(), depth == 0, "{input}");
        }
        let path = RelativePath::parse("public/site").unwrap();
        assert_eq!(path.components().collect::<Vec<_>>(), ["public", "site"]);
    }

    #[test]
    fn relative_path_errors_name_the_problem() {
        for (input, error) in [
            ("", PathError::Empty),
            ("a\0b", PathError::Nul),
            ("/srv", PathError::Absolute),
            ("/", PathError::Absolute),
            ("../other", PathError::Escapes { levels: 1 }),
            ("../../etc/passwd", PathError::Escapes { levels: 2 }),
            ("../../../Dockerfile", PathError::Escapes { levels: 3 }),
            ("..", PathError::Escapes { levels: 1 }),
            // Out and back in is still out.
            ("../repo/x", PathError::Escapes { levels: 1 }),
            ("a/../../b", PathError::Escapes { levels: 1 }),
        ] {
            assert_eq!(RelativePath::parse(input), Err(error), "{input:?}");
        }
        assert_eq!(PathError::Nul.to_string(), "contains a NUL byte");
    }

    // From worker/src/artifact.rs (`destination_must_stay_inside_the_context`
    // and the entry names it refuses) and context.rs (a Dockerfile path
    // that leaves the context).
    #[test]
    fn artifact_destinations_entries_and_dockerfiles() {
        for dest in ["../x", "/abs", "."] {
            let refused = RelativePath::parse(dest).map_or(true, |path| path.is_base());
            assert!(refused, "{dest}");
        }
        for entry in ["out/../../outside/x", "/etc/x"] {
            assert!(RelativePath::parse(entry).is_err(), "{entry}");
        }
        for (dockerfile, leaves) in [
            ("../Dockerfile", true),
            ("..", true),
            ("/Dockerfile", true),
            ("a/../Dockerfile", false),
            ("docker/Dockerfile", false),
        ] {
            let clean = CleanPath::new(dockerfile);
            let outside = clean.levels_above() > 0 || clean.is_absolute();
            assert_eq!(outside, leaves, "{dockerfile}");
        }
    }

    // From worker/src/artifact.rs: a symlink target, joined to the link's
    // directory below the artifact's top, must not climb above the top.
    #[test]
    fn symlink_targets_checked_by_join() {
        let inside =
            |link_dir: &str, target: &str| RelativePath::parse(link_dir).unwrap().join(target);
        assert_eq!(
            inside(".", "css/site.css").unwrap().as_str(),
            "css/site.css"
        );
        assert_eq!(
            inside("css", "../index.html").unwrap().as_str(),
            "index.html"
        );
        for (dir, target) in [(".", "../x"), ("sub", "../../x"), (".", "a/../../x")] {
            assert!(
                matches!(inside(dir, target), Err(PathError::Escapes { .. })),
                "{dir} {target}"
            );
        }
        assert_eq!(inside("css", "/etc/x"), Err(PathError::Absolute));
        assert_eq!(inside("css", "a\0b"), Err(PathError::Nul));
    }
}
