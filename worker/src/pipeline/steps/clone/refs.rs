//! What `repo.revision` names (a commit SHA, or a branch, tag or `refs/...`
//! name), which of the remote's advertised refs means it, and the refspec
//! that fetches that ref into the local repository.

use super::GitError;
use git2::Oid;
use std::fmt;

/// Local ref that keeps a commit fetched by SHA (or `HEAD`).
pub(super) const FETCHED_REF: &str = "refs/buildbot/fetched";
/// Every branch and tag: the last resort for a SHA no ref points at.
pub(super) const ALL_BRANCHES_AND_TAGS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];
/// Hex digits of a SHA-1 object name.
const SHA1_HEX_LEN: usize = 40;
/// Hex digits of a SHA-256 object name.
const SHA256_HEX_LEN: usize = 64;

/// What `repo.revision` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Revision<'a> {
    /// A full SHA-1 commit (or annotated tag) name.
    Sha(Oid),
    /// A branch or tag name, a full `refs/...` name, or `HEAD`.
    Name(&'a str),
}

impl<'a> Revision<'a> {
    pub(super) fn parse(revision: &'a str) -> Result<Self, GitError> {
        let is_hex = !revision.is_empty() && revision.bytes().all(|b| b.is_ascii_hexdigit());
        match revision.len() {
            SHA1_HEX_LEN if is_hex => Oid::from_str(revision)
                .map(Revision::Sha)
                .map_err(|e| GitError::UnknownRevision(e.message().to_owned())),
            SHA256_HEX_LEN if is_hex => Err(GitError::UnknownRevision(format!(
                "revision {revision} is a SHA-256 object name; this worker fetches SHA-1 \
                 repositories only"
            ))),
            _ => Ok(Revision::Name(revision)),
        }
    }
}

impl fmt::Display for Revision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Sha(oid) => write!(f, "{oid}"),
            Revision::Name(name) => f.write_str(name),
        }
    }
}

/// An advertised ref whose tip (or peeled tag) is `oid`, so the commit can
/// be fetched shallowly from any server. A branch is preferred over a tag
/// or `HEAD` pointing at the same commit.
pub(super) fn ref_pointing_at(heads: &[(String, Oid)], oid: Oid) -> Option<String> {
    let is_branch = |name: &str| name.starts_with("refs/heads/");
    let mut matching: Vec<&str> = heads
        .iter()
        .filter(|(name, id)| *id == oid && (name.starts_with("refs/") || name == "HEAD"))
        .map(|(name, _)| name.strip_suffix("^{}").unwrap_or(name))
        .collect();
    matching.sort_by_key(|name| !is_branch(name));
    matching.first().map(|name| (*name).to_owned())
}

/// The full ref name `name` means on the remote: an exact `refs/...` name or
/// `HEAD`, else a branch, else a tag (the order `git clone --branch` uses).
pub(super) fn resolve_name(heads: &[(String, Oid)], name: &str) -> Option<String> {
    let candidates = if name.starts_with("refs/") || name == "HEAD" {
        vec![name.to_owned()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    };
    candidates
        .into_iter()
        .find(|candidate| heads.iter().any(|(head, _)| head == candidate))
}

/// The refspec fetching `full_name`, and the local ref it lands in.
pub(super) fn refspec_for(full_name: &str) -> (String, String) {
    let local = if let Some(branch) = full_name.strip_prefix("refs/heads/") {
        format!("refs/remotes/origin/{branch}")
    } else if full_name.starts_with("refs/tags/") {
        full_name.to_owned()
    } else {
        FETCHED_REF.to_owned()
    };
    (format!("+{full_name}:{local}"), local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_like_git_clone_branch() {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        let heads = vec![
            ("HEAD".to_owned(), oid(1)),
            ("refs/heads/main".to_owned(), oid(1)),
            ("refs/heads/both".to_owned(), oid(2)),
            ("refs/tags/both".to_owned(), oid(3)),
            ("refs/tags/v1".to_owned(), oid(4)),
            ("refs/tags/v1^{}".to_owned(), oid(5)),
        ];
        assert_eq!(
            resolve_name(&heads, "both").as_deref(),
            Some("refs/heads/both")
        );
        assert_eq!(
            resolve_name(&heads, "refs/tags/both").as_deref(),
            Some("refs/tags/both")
        );
        assert_eq!(resolve_name(&heads, "v1").as_deref(), Some("refs/tags/v1"));
        assert_eq!(resolve_name(&heads, "HEAD").as_deref(), Some("HEAD"));
        assert_eq!(resolve_name(&heads, "nope"), None);
        assert_eq!(
            ref_pointing_at(&heads, oid(5)).as_deref(),
            Some("refs/tags/v1")
        );
        assert_eq!(
            ref_pointing_at(&heads, oid(1)).as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(ref_pointing_at(&heads, oid(9)), None);
        assert_eq!(
            refspec_for("refs/heads/main"),
            (
                "+refs/heads/main:refs/remotes/origin/main".into(),
                "refs/remotes/origin/main".into()
            )
        );
        assert_eq!(refspec_for("refs/tags/v1").1, "refs/tags/v1");
        assert_eq!(refspec_for("HEAD").1, FETCHED_REF);
    }
}
