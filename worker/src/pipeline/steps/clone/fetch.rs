//! Getting one commit from a remote: list its refs, resolve the revision
//! against them, and fetch shallowly (depth 1) where the server allows.
//! A SHA no ref points at is fetched by id (servers with
//! `uploadpack.allowReachableSHA1InWant` or `allowAnySHA1InWant`), else
//! from a depth-limited fetch of the advertised branches and tags; never
//! with the whole history of every ref, which on a large repository is an
//! unbounded transfer a job could trigger at will.

use super::connection::Attempt;
use super::refs::{
    ref_pointing_at, refspec_for, resolve_name, Revision, ALL_BRANCHES_AND_TAGS, FETCHED_REF,
};
use super::remote::Remote;
use super::session::Session;
use super::GitError;
use git2::{AutotagOption, Direction, FetchOptions, Oid, Repository};

/// One advertised ref: its full name and the object it points at.
type Head = (String, Oid);

/// Commits of each advertised branch and tag fetched when looking for an
/// unadvertised SHA the server will not send by id.
const FALLBACK_DEPTH: i32 = 50;

/// How much history a fetch asks for.
#[derive(Debug, Clone, Copy)]
enum Depth {
    /// The tips only.
    One,
    /// The last `n` commits of each ref.
    Last(i32),
}

impl Session<'_, '_> {
    /// Fetches `revision` from `remote` through `origin` (the repository's
    /// remote for it) and returns the commit it names.
    pub(super) fn fetch_commit(
        &self,
        repo: &Repository,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
        revision: &Revision<'_>,
    ) -> Result<Oid, GitError> {
        match revision {
            Revision::Sha(oid) => self.fetch_sha(repo, origin, remote, *oid),
            Revision::Name(name) => self.fetch_name(repo, origin, remote, name),
        }
    }

    /// A commit SHA: fetched through a ref that points at it, else by id,
    /// else from the recent history of the advertised refs.
    fn fetch_sha(
        &self,
        repo: &Repository,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
        oid: Oid,
    ) -> Result<Oid, GitError> {
        let heads = self.list_remote(origin, remote)?;
        if let Some(name) = ref_pointing_at(&heads, oid) {
            let (refspec, _) = refspec_for(&name);
            if let Some(commit) =
                self.try_fetch(repo, origin, remote, &[refspec], Depth::One, oid)?
            {
                return Ok(commit);
            }
        }
        let by_id = format!("+{oid}:{FETCHED_REF}");
        if let Some(commit) = self.try_fetch(repo, origin, remote, &[by_id], Depth::One, oid)? {
            return Ok(commit);
        }
        // libgit2's local transport (tests only) cannot fetch shallowly,
        // and a full fetch is what this path must never do.
        if remote.allows_shallow() {
            self.say(&format!(
                "the remote did not send {oid} by id; fetching the last {FALLBACK_DEPTH} \
                 commits of its branches and tags"
            ));
            let recent = ALL_BRANCHES_AND_TAGS.map(str::to_owned);
            let depth = Depth::Last(FALLBACK_DEPTH);
            if let Some(commit) = self.try_fetch(repo, origin, remote, &recent, depth, oid)? {
                return Ok(commit);
            }
        }
        Err(GitError::UnknownRevision(format!(
            "revision {oid} is not advertised by the remote {remote} and could not be fetched \
             by id; push a branch or tag that contains it"
        )))
    }

    /// Fetches `refspecs` and looks for `oid`: `None` when the fetch failed
    /// in a way another fetch may get around (e.g. "cannot fetch a specific
    /// object") or did not bring `oid`.
    fn try_fetch(
        &self,
        repo: &Repository,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
        refspecs: &[String],
        depth: Depth,
        oid: Oid,
    ) -> Result<Option<Oid>, GitError> {
        match self.fetch_refspecs(origin, remote, refspecs, depth) {
            Ok(()) => Ok(peel_to_commit(repo, oid)),
            Err(e) if e.is_final() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// A branch or tag name (or a full `refs/...` name, or `HEAD`), resolved
    /// against the remote's refs and fetched shallowly.
    fn fetch_name(
        &self,
        repo: &Repository,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
        name: &str,
    ) -> Result<Oid, GitError> {
        let heads = self.list_remote(origin, remote)?;
        let Some(full_name) = resolve_name(&heads, name) else {
            return Err(GitError::UnknownRevision(format!(
                "revision '{name}' is neither a branch nor a tag of {remote}"
            )));
        };
        let (refspec, local) = refspec_for(&full_name);
        self.fetch_refspecs(origin, remote, &[refspec], Depth::One)?;
        let reference = repo.find_reference(&local).map_err(|e| {
            GitError::Checkout(format!(
                "cannot read the fetched {full_name}: {}",
                e.message()
            ))
        })?;
        let commit = reference.peel_to_commit().map_err(|_| {
            GitError::UnknownRevision(format!(
                "revision '{name}' ({full_name} of {remote}) does not point to a commit"
            ))
        })?;
        Ok(commit.id())
    }

    /// The remote's refs, as `git ls-remote` prints them.
    fn list_remote(
        &self,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
    ) -> Result<Vec<Head>, GitError> {
        let attempt = Attempt::default();
        let callbacks = self.callbacks(remote, &attempt);
        let listed = origin
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .and_then(|connection| {
                let heads = connection.list()?;
                Ok(heads
                    .iter()
                    .map(|head| (head.name().to_owned(), head.oid()))
                    .collect())
            });
        listed.map_err(|e| self.classify(e, remote, &attempt))
    }

    /// Fetches `refspecs`, to `depth` where the transport can.
    fn fetch_refspecs(
        &self,
        origin: &mut git2::Remote<'_>,
        remote: &Remote,
        refspecs: &[String],
        depth: Depth,
    ) -> Result<(), GitError> {
        let attempt = Attempt::default();
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks(remote, &attempt))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if remote.allows_shallow() {
            options.depth(match depth {
                Depth::One => 1,
                Depth::Last(n) => n,
            });
        }
        origin
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.classify(e, remote, &attempt))
    }
}

/// The commit `oid` names (peeling an annotated tag), if the repository
/// has it.
fn peel_to_commit(repo: &Repository, oid: Oid) -> Option<Oid> {
    let object = repo.find_object(oid, None).ok()?;
    object.peel_to_commit().ok().map(|commit| commit.id())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{bare, commit, fetch, Entry, T};
    use super::super::Checkout;
    use super::*;
    use git2::{Signature, Time};
    use tempfile::TempDir;

    /// main: c0 <- c1 <- c2; feature: c1 <- c3; tags: light -> c1, v1
    /// (annotated) -> c2. c0 is the tip of nothing.
    struct Upstream {
        _dir: TempDir,
        url: String,
        c: [Oid; 4],
        v1_tag: Oid,
    }

    fn upstream() -> Upstream {
        let dir = TempDir::new().unwrap();
        let (repo, url) = bare(dir.path(), "upstream.git");
        let c0 = commit(&repo, &[Entry::File("README", "zero")], &[], T);
        let c1 = commit(&repo, &[Entry::File("README", "one")], &[c0], T + 10);
        let c2 = commit(&repo, &[Entry::File("README", "two")], &[c1], T + 20);
        let c3 = commit(
            &repo,
            &[
                Entry::File("README", "one"),
                Entry::File("feature.txt", "f"),
            ],
            &[c1],
            T + 30,
        );
        repo.reference("refs/heads/main", c2, true, "").unwrap();
        repo.reference("refs/heads/feature", c3, true, "").unwrap();
        repo.set_head("refs/heads/main").unwrap();
        repo.reference("refs/tags/light", c1, true, "").unwrap();
        let tagger = Signature::new("Test", "test@example.com", &Time::new(T, 0)).unwrap();
        let target = repo.find_object(c2, None).unwrap();
        let v1_tag = repo.tag("v1", &target, &tagger, "release", false).unwrap();
        Upstream {
            _dir: dir,
            url,
            c: [c0, c1, c2, c3],
            v1_tag,
        }
    }

    #[test]
    fn fetches_the_tip_by_sha_with_its_commit_time() {
        let up = upstream();
        let sha = up.c[2].to_string();
        let fetched = fetch(&up.url, &sha);
        assert_eq!(
            fetched.checkout(),
            &Checkout {
                commit: sha.clone(),
                commit_time: T + 20
            }
        );
        assert_eq!(fetched.read("README"), "two");
        assert_eq!(fetched.head(), up.c[2]);
        assert_eq!(
            fetched.lines.first().unwrap(),
            &format!("fetching {sha} from {}", up.url)
        );
        assert_eq!(fetched.lines.last().unwrap(), &format!("checked out {sha}"));
    }

    #[test]
    fn fetches_a_commit_no_ref_points_at() {
        let up = upstream();
        let fetched = fetch(&up.url, &up.c[0].to_string());
        assert_eq!(fetched.checkout().commit, up.c[0].to_string());
        assert_eq!(fetched.checkout().commit_time, T);
        assert_eq!(fetched.read("README"), "zero");
        assert_eq!(fetched.head(), up.c[0]);
        // Fetched by id: no fallback to the refs' history.
        assert!(
            !fetched
                .lines
                .iter()
                .any(|l| l.contains("branches and tags")),
            "{:?}",
            fetched.lines
        );
    }

    #[test]
    fn fetches_branches_by_short_and_full_name() {
        let up = upstream();
        for (revision, commit) in [
            ("feature", up.c[3]),
            ("refs/heads/feature", up.c[3]),
            ("main", up.c[2]),
            ("HEAD", up.c[2]),
        ] {
            let fetched = fetch(&up.url, revision);
            assert_eq!(fetched.checkout().commit, commit.to_string(), "{revision}");
            assert_eq!(fetched.head(), commit, "{revision}");
        }
        assert_eq!(fetch(&up.url, "feature").read("feature.txt"), "f");
    }

    #[test]
    fn fetches_lightweight_and_annotated_tags_as_commits() {
        let up = upstream();
        for (revision, commit) in [
            ("light".to_owned(), up.c[1]),
            ("v1".to_owned(), up.c[2]),
            ("refs/tags/v1".to_owned(), up.c[2]),
            (up.v1_tag.to_string(), up.c[2]),
        ] {
            let fetched = fetch(&up.url, &revision);
            assert_eq!(fetched.checkout().commit, commit.to_string(), "{revision}");
            assert_eq!(fetched.head(), commit, "{revision}");
        }
    }

    #[test]
    fn unknown_sha_is_an_unknown_revision() {
        let up = upstream();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let fetched = fetch(&up.url, sha);
        assert!(matches!(fetched.result, Err(GitError::UnknownRevision(_))));
        // Was "not found" after fetching every branch and tag in full;
        // now no full fetch is tried, and the error says what to do.
        assert_eq!(
            fetched.error(),
            format!(
                "revision {sha} is not advertised by the remote {} and could not be fetched \
                 by id; push a branch or tag that contains it",
                up.url
            )
        );
    }

    #[test]
    fn unknown_name_is_an_unknown_revision() {
        let up = upstream();
        let fetched = fetch(&up.url, "no-such-branch");
        assert!(matches!(fetched.result, Err(GitError::UnknownRevision(_))));
        assert_eq!(
            fetched.error(),
            format!(
                "revision 'no-such-branch' is neither a branch nor a tag of {}",
                up.url
            )
        );
    }
}
