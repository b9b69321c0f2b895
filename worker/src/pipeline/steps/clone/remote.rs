//! Where a repository is fetched from: a network URL that the protocol's
//! grammar accepts ([`RepoUrl`]: `ssh://`, scp-like, `https://`), or, only
//! under a test [`Policy`], a path on the worker's disk.

use super::Policy;
use buildbot_protocol::grammar::{RepoUrl, RepoUrlError};
use std::fmt;

/// A remote the worker may fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Remote {
    /// Over SSH or HTTPS.
    Network(RepoUrl),
    /// A path or `file://` URL, as given: libgit2 takes it as it is. Only
    /// under `Policy::local_paths`, which jobs never have.
    Local(String),
}

impl Remote {
    /// Parses `text` (the job's URL, or a submodule's as libgit2 resolved
    /// it); a local path is refused unless `policy` allows it.
    pub(super) fn parse(text: &str, policy: Policy) -> Result<Self, RepoUrlError> {
        match RepoUrl::parse(text) {
            Ok(url) => Ok(Remote::Network(url)),
            Err(RepoUrlError::Local) if policy.local_paths => Ok(Remote::Local(text.to_owned())),
            Err(refused) => Err(refused),
        }
    }

    /// The URL or path, for libgit2 and messages (it holds no credential).
    pub(super) fn as_str(&self) -> &str {
        match self {
            Remote::Network(url) => url.as_str(),
            Remote::Local(path) => path,
        }
    }

    /// The host, for a network remote. (The token's check compares whole
    /// origins now; tests still read the host.)
    #[cfg(test)]
    pub(super) fn host(&self) -> Option<&str> {
        match self {
            Remote::Network(url) => Some(url.host()),
            Remote::Local(_) => None,
        }
    }

    /// `host:port` for messages (`[::1]:2222`, default port filled in); a
    /// local path as itself.
    pub(super) fn host_port(&self) -> String {
        match self {
            Remote::Network(url) => url.host_port(),
            Remote::Local(path) => path.clone(),
        }
    }

    /// Whether a fetch may ask for depth 1: libgit2's local transport
    /// refuses any depth.
    pub(super) fn allows_shallow(&self) -> bool {
        matches!(self, Remote::Network(_))
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::TESTS;
    use super::*;

    #[test]
    fn network_urls_are_parsed_by_the_grammar() {
        for text in [
            "ssh://git@127.0.0.1:2222/srv/app.git",
            "git@github.com:team/app.git",
            "https://example.com:8443/app.git",
        ] {
            let remote = Remote::parse(text, Policy::JOB).unwrap();
            assert!(matches!(remote, Remote::Network(_)), "{text}");
            assert_eq!(remote.to_string(), text);
            assert!(remote.allows_shallow());
        }
        let remote = Remote::parse("ssh://me@[::1]:2222/app.git", Policy::JOB).unwrap();
        assert_eq!(remote.host(), Some("::1"));
        assert_eq!(remote.host_port(), "[::1]:2222");
    }

    #[test]
    fn local_paths_only_under_the_test_policy() {
        for local in ["/srv/app.git", "./app", "file:///srv/app.git"] {
            assert_eq!(
                Remote::parse(local, Policy::JOB),
                Err(RepoUrlError::Local),
                "{local}"
            );
            let remote = Remote::parse(local, TESTS).unwrap();
            assert_eq!(remote, Remote::Local(local.to_owned()));
            assert_eq!(remote.host(), None);
            assert!(!remote.allows_shallow());
        }
    }

    #[test]
    fn other_transports_and_credentials_are_refused_under_any_policy() {
        for text in [
            "git://host/app",
            "http://host/app",
            "https://user:tok@example.com/app.git",
        ] {
            assert!(Remote::parse(text, TESTS).is_err(), "{text}");
        }
    }
}
