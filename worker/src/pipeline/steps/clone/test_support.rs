//! Test fixtures of the clone step: bare repositories on disk built commit
//! by commit, and a clone of one into a temporary directory with the lines
//! it reported.

use super::limits::{Budget, CancelFlag};
use super::{fetch_with, Bounds, Checkout, CloneSettings, GitError, HostKeyDefault, Policy};
use buildbot_protocol::{Repo, RepoAuth};
use git2::{FileMode, Oid, Repository, Signature, Time};
use std::path::Path;
use tempfile::TempDir;

/// Commit time of the fixtures' first commits.
pub(super) const T: i64 = 1_700_000_000;

/// Lets tests fetch from their on-disk remotes.
pub(super) const TESTS: Policy = Policy { local_paths: true };

/// One entry of a fixture commit's flat tree.
pub(super) enum Entry<'a> {
    File(&'a str, &'a str),
    Gitlink(&'a str, Oid),
}

/// Commits a flat tree; `time` is both author and committer time.
pub(super) fn commit(repo: &Repository, entries: &[Entry<'_>], parents: &[Oid], time: i64) -> Oid {
    let mut tree = repo.treebuilder(None).unwrap();
    for entry in entries {
        match entry {
            Entry::File(name, text) => {
                let blob = repo.blob(text.as_bytes()).unwrap();
                tree.insert(name, blob, FileMode::Blob.into()).unwrap();
            }
            Entry::Gitlink(name, oid) => {
                tree.insert(name, *oid, FileMode::Commit.into()).unwrap();
            }
        }
    }
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let signature = Signature::new("Test", "test@example.com", &Time::new(time, 0)).unwrap();
    let parents: Vec<_> = parents
        .iter()
        .map(|p| repo.find_commit(*p).unwrap())
        .collect();
    let parents: Vec<_> = parents.iter().collect();
    repo.commit(None, &signature, &signature, "commit", &tree, &parents)
        .unwrap()
}

/// A bare repository `name` under `root`, and its path as a URL.
pub(super) fn bare(root: &Path, name: &str) -> (Repository, String) {
    let path = root.join(name);
    let repo = Repository::init_bare(&path).unwrap();
    (repo, path.to_str().unwrap().to_owned())
}

pub(super) fn job_repo(url: &str, revision: &str) -> Repo {
    Repo {
        url: url.to_owned(),
        revision: revision.to_owned(),
        auth: RepoAuth::None,
        known_hosts: None,
        submodules: false,
    }
}

/// A clone's outcome, its directory and the progress lines it reported.
pub(super) struct Fetched {
    pub(super) dir: TempDir,
    pub(super) result: Result<Checkout, GitError>,
    pub(super) lines: Vec<String>,
}

pub(super) fn fetch_as(repo: &Repo, policy: Policy) -> Fetched {
    fetch_with_settings(
        repo,
        policy,
        &CloneSettings::default(),
        &CancelFlag::default(),
    )
}

/// A clone under the worker's `settings`, stopped once `cancel` is set.
pub(super) fn fetch_with_settings(
    repo: &Repo,
    policy: Policy,
    settings: &CloneSettings,
    cancel: &CancelFlag,
) -> Fetched {
    let dir = TempDir::new().unwrap();
    let mut lines = Vec::new();
    let budget = Budget::new(settings.max_bytes, cancel.clone());
    let bounds = Bounds {
        policy,
        host_keys: &settings.host_keys,
        budget: &budget,
    };
    let result = fetch_with(
        repo,
        &dir.path().join("src"),
        &mut |line| lines.push(line.to_owned()),
        &bounds,
    );
    Fetched { dir, result, lines }
}

/// Worker settings accepting any SSH host key, with `max_bytes`.
pub(super) fn settings(host_keys: HostKeyDefault, max_bytes: u64) -> CloneSettings {
    CloneSettings {
        host_keys,
        max_bytes,
    }
}

pub(super) fn fetch(url: &str, revision: &str) -> Fetched {
    fetch_as(&job_repo(url, revision), TESTS)
}

impl Fetched {
    pub(super) fn checkout(&self) -> &Checkout {
        self.result.as_ref().unwrap()
    }

    pub(super) fn error(&self) -> String {
        match &self.result {
            Ok(checkout) => panic!("expected an error, got {checkout:?}"),
            Err(e) => e.to_string(),
        }
    }

    pub(super) fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("src").join(path)).unwrap()
    }

    pub(super) fn head(&self) -> Oid {
        let repo = Repository::open(self.dir.path().join("src")).unwrap();
        assert!(repo.head_detached().unwrap());
        let head = repo.head().unwrap().target().unwrap();
        head
    }
}
