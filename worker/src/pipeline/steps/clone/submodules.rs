//! Submodules, recursively: each at the commit its parent records, fetched
//! with the job's credentials and pins. Their URLs come from the
//! repository, not the job, so they get the checks the job's URL got
//! during validation, and the nesting is bounded.

use super::refs::Revision;
use super::remote::Remote;
use super::session::Session;
use super::GitError;
use git2::{Repository, Submodule};
use std::path::{Component, Path};

/// Nesting limit for submodules, so a hostile repository cannot keep the
/// worker fetching forever.
const MAX_SUBMODULE_DEPTH: usize = 8;

impl Session<'_, '_> {
    /// Checks out every submodule of `repo`, which is `level` deep.
    pub(super) fn update_submodules(
        &self,
        repo: &Repository,
        level: usize,
    ) -> Result<(), GitError> {
        let submodules = repo.submodules().map_err(|e| GitError::Submodule {
            path: ".gitmodules".to_owned(),
            error: Box::new(GitError::Checkout(format!(
                "cannot read the submodules: {}",
                e.message()
            ))),
        })?;
        for mut submodule in submodules {
            let path = submodule.path().to_string_lossy().into_owned();
            self.update_submodule(repo, &mut submodule, &path, level)
                .map_err(|error| GitError::Submodule {
                    path,
                    error: Box::new(error),
                })?;
        }
        Ok(())
    }

    /// Fetches the commit the parent records for `submodule` into its path,
    /// with the same credentials and pins, then its own submodules.
    fn update_submodule(
        &self,
        parent: &Repository,
        submodule: &mut Submodule<'_>,
        path: &str,
        level: usize,
    ) -> Result<(), GitError> {
        // Listed in .gitmodules but absent from the commit: git skips it too.
        let Some(oid) = submodule.head_id() else {
            return Ok(());
        };
        if level >= MAX_SUBMODULE_DEPTH {
            return Err(GitError::Checkout(format!(
                "submodules nested deeper than {MAX_SUBMODULE_DEPTH} levels"
            )));
        }
        let workdir = parent
            .workdir()
            .ok_or_else(|| GitError::Checkout("the parent checkout has no work tree".into()))?;
        check_path(path)?;
        let url = submodule_url(parent, submodule)?;
        let remote = Remote::parse(&url, self.policy).map_err(GitError::SubmoduleUrl)?;
        let (repo, _) =
            self.fetch_and_check_out(&remote, &Revision::Sha(oid), &workdir.join(path))?;
        self.say(&format!("submodule {path} at {oid}"));
        self.update_submodules(&repo, level + 1)
    }
}

/// A submodule's path must stay inside its parent's checkout.
fn check_path(path: &str) -> Result<(), GitError> {
    let inside = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(GitError::Checkout(
            "the submodule path leaves the checkout".into(),
        ))
    }
}

/// The URL libgit2 resolved for a submodule (relative ones against the
/// parent's `origin`).
fn submodule_url(parent: &Repository, submodule: &mut Submodule<'_>) -> Result<String, GitError> {
    let failed =
        |e: git2::Error| GitError::Checkout(format!("cannot read its URL: {}", e.message()));
    submodule.init(false).map_err(failed)?;
    let name = submodule.name().unwrap_or_default().to_owned();
    let config = parent.config().map_err(failed)?;
    match config.get_string(&format!("submodule.{name}.url")) {
        Ok(url) => Ok(url),
        Err(_) => submodule
            .url()
            .ok()
            .flatten()
            .map(str::to_owned)
            .ok_or_else(|| GitError::Checkout("it has no URL in .gitmodules".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::Auth;
    use super::super::host_key::HostKeyTrust;
    use super::super::limits::{Budget, CancelFlag};
    use super::super::test_support::{bare, commit, fetch, fetch_as, job_repo, Entry, T, TESTS};
    use super::super::Policy;
    use super::*;
    use git2::{FileMode, Oid, Signature, Time};
    use tempfile::TempDir;

    /// parent.git has `deps/lib` -> sub.git (relative URL) at an old commit;
    /// sub.git has `leaf` -> leaf.git (absolute URL).
    struct Nested {
        _dir: TempDir,
        parent_url: String,
        parent: Oid,
        sub: Oid,
        leaf: Oid,
    }

    fn nested() -> Nested {
        let dir = TempDir::new().unwrap();
        let (leaf_repo, leaf_url) = bare(dir.path(), "leaf.git");
        let leaf = commit(&leaf_repo, &[Entry::File("leaf.txt", "leaf")], &[], T);
        leaf_repo
            .reference("refs/heads/main", leaf, true, "")
            .unwrap();

        let (sub_repo, _) = bare(dir.path(), "sub.git");
        let sub_modules = format!("[submodule \"leaf\"]\n\tpath = leaf\n\turl = {leaf_url}\n");
        let sub = commit(
            &sub_repo,
            &[
                Entry::File(".gitmodules", &sub_modules),
                Entry::File("lib.txt", "old lib"),
                Entry::Gitlink("leaf", leaf),
            ],
            &[],
            T,
        );
        let newer = commit(
            &sub_repo,
            &[Entry::File("lib.txt", "new lib")],
            &[sub],
            T + 5,
        );
        sub_repo
            .reference("refs/heads/main", newer, true, "")
            .unwrap();

        let (parent_repo, parent_url) = bare(dir.path(), "parent.git");
        let modules = "[submodule \"lib\"]\n\tpath = deps/lib\n\turl = ../sub.git\n";
        let mut deps = parent_repo.treebuilder(None).unwrap();
        deps.insert("lib", sub, FileMode::Commit.into()).unwrap();
        let deps = deps.write().unwrap();
        let mut root = parent_repo.treebuilder(None).unwrap();
        let modules_blob = parent_repo.blob(modules.as_bytes()).unwrap();
        root.insert(".gitmodules", modules_blob, FileMode::Blob.into())
            .unwrap();
        root.insert("deps", deps, FileMode::Tree.into()).unwrap();
        let tree = parent_repo.find_tree(root.write().unwrap()).unwrap();
        let signature = Signature::new("Test", "test@example.com", &Time::new(T, 0)).unwrap();
        let parent = parent_repo
            .commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                "p",
                &tree,
                &[],
            )
            .unwrap();
        Nested {
            _dir: dir,
            parent_url,
            parent,
            sub,
            leaf,
        }
    }

    #[test]
    fn checks_out_submodules_recursively_at_their_recorded_commits() {
        let n = nested();
        let mut repo = job_repo(&n.parent_url, "main");
        repo.submodules = true;
        let fetched = fetch_as(&repo, TESTS);
        assert_eq!(fetched.checkout().commit, n.parent.to_string());
        assert_eq!(fetched.read("deps/lib/lib.txt"), "old lib");
        assert_eq!(fetched.read("deps/lib/leaf/leaf.txt"), "leaf");
        let sub = format!("submodule deps/lib at {}", n.sub);
        let leaf = format!("submodule leaf at {}", n.leaf);
        assert!(fetched.lines.contains(&sub), "{:?}", fetched.lines);
        assert!(fetched.lines.contains(&leaf), "{:?}", fetched.lines);
    }

    #[test]
    fn submodules_are_skipped_unless_asked_for() {
        let n = nested();
        let fetched = fetch(&n.parent_url, "main");
        assert_eq!(fetched.checkout().commit, n.parent.to_string());
        let lib = fetched.dir.path().join("src/deps/lib/lib.txt");
        assert!(!lib.exists());
    }

    #[test]
    fn jobs_never_follow_submodules_to_local_paths() {
        let n = nested();
        // The parent's remote is on disk, so only the test policy fetches
        // it; its submodules are then followed under a job's policy.
        let parent = fetch(&n.parent_url, "main");
        let checked_out = Repository::open(parent.dir.path().join("src")).unwrap();
        let mut progress = |_: &str| {};
        let budget = Budget::new(u64::MAX, CancelFlag::default());
        let session = Session::new(
            Auth::None,
            HostKeyTrust::Refuse,
            Policy::JOB,
            &budget,
            &mut progress,
        );
        let error = session.update_submodules(&checked_out, 0).unwrap_err();
        let GitError::Submodule { path, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(path, "deps/lib");
        assert_eq!(
            error.to_string(),
            "submodule deps/lib: submodules are fetched only over ssh://, scp-like \
             (user@host:path) and https:// URLs; its URL is refused: local repositories are \
             not allowed; workers must not read their own disk"
        );
        assert!(!parent.dir.path().join("src/deps/lib/lib.txt").exists());
    }

    #[test]
    fn path_must_stay_inside_the_checkout() {
        assert!(check_path("deps/lib").is_ok());
        for path in ["../x", "/etc", "a/../../b"] {
            assert!(check_path(path).is_err(), "{path}");
        }
    }
}
