//! Clone step: fetch exactly one revision of the job's repository with git2
//! and check it out, with credentials held in memory only.
//!
//! The outline is here: [`run`] hands the job's [`Repo`] to
//! [`fetch_revision`] on a blocking thread; that parses the job's fields
//! once with the protocol's grammar, fetches the revision into a fresh
//! repository, checks it out, and follows submodules. The parts:
//!
//! | file | owns |
//! | --- | --- |
//! | `session.rs` | one clone's shared state; one repository: create, fetch, check out |
//! | `remote.rs` | which remotes may be fetched from (network URLs; local paths in tests) |
//! | `refs.rs` | what `repo.revision` names and which remote ref fetches it |
//! | `fetch.rs` | listing the remote's refs, the shallow fetch and its fallbacks |
//! | `connection.rs` | one connection's callbacks and the error it ends with |
//! | `credentials.rs` | SSH key from memory, HTTPS token, masking them in messages |
//! | `host_key.rs` | the SSH host key checked against the job's or the worker's pin |
//! | `limits.rs` | the byte cap and the cancellation flag that abort a transfer |
//! | `progress.rs` | throttled transfer progress lines |
//! | `checkout.rs` | the local repository and its detached checkout |
//! | `submodules.rs` | submodules, recursively, with the same credentials and pins |
//!
//! Secrets never reach the disk or an error message: the key is handed to
//! libssh2 from memory, and every message built from a libgit2 error has the
//! token and passphrase masked.

mod checkout;
mod connection;
mod credentials;
mod fetch;
mod host_key;
mod limits;
mod progress;
mod refs;
mod remote;
mod session;
mod submodules;
#[cfg(test)]
mod test_support;

use crate::events::Reporter;
use buildbot_protocol::grammar::RepoUrlError;
use buildbot_protocol::{Job, Repo, StepName};
use credentials::Auth;
pub(crate) use host_key::HostKeyDefault;
use host_key::HostKeyTrust;
use limits::{Budget, CancelOnDrop};
pub(crate) use limits::{CancelFlag, DEFAULT_MAX_CLONE_BYTES};
use refs::Revision;
use remote::Remote;
use session::Session;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// What the worker decides for every clone, whatever the job says.
#[derive(Debug, Clone)]
pub(crate) struct CloneSettings {
    /// The SSH host key rule for jobs without `repo.known_hosts`.
    pub(crate) host_keys: HostKeyDefault,
    /// Most bytes one clone (main repository and submodules) may receive.
    pub(crate) max_bytes: u64,
}

impl Default for CloneSettings {
    /// Fail closed: no SSH without a pin; the default byte cap.
    fn default() -> Self {
        Self {
            host_keys: HostKeyDefault::Refuse,
            max_bytes: DEFAULT_MAX_CLONE_BYTES,
        }
    }
}

/// Clones the job's revision into `dest`, on a blocking thread (git2 is
/// synchronous), reporting git's progress as it goes. Dropping the future
/// (the job's timeout or cancel) stops the blocking thread at its next
/// transfer callback. The thread holds `workspace` (which `dest` is in)
/// until it ends, so the workspace is removed only after git's last write,
/// never recreated by a thread that outlived its job.
pub(crate) async fn run(
    job: &Job,
    dest: &Path,
    workspace: Arc<TempDir>,
    settings: &CloneSettings,
    reporter: &Reporter,
) -> Result<Checkout, String> {
    let repo = job.repo.clone();
    let dest = dest.to_owned();
    let settings = settings.clone();
    let progress = reporter.clone();
    let cancel = CancelFlag::default();
    let _stop_when_dropped = CancelOnDrop(cancel.clone());
    let fetched = tokio::task::spawn_blocking(move || {
        let _workspace = workspace;
        let mut say = |line: &str| progress.system_blocking(StepName::Clone, line);
        fetch_revision(&repo, &dest, &settings, &cancel, &mut say)
    })
    .await
    .map_err(|e| format!("clone task failed: {e}"))?;
    let checkout = fetched.map_err(|e| e.to_string())?;
    reporter
        .system(StepName::Clone, format!("revision {}", checkout.commit))
        .await;
    Ok(checkout)
}

/// The commit that was checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkout {
    /// Full hex SHA of the commit.
    pub(crate) commit: String,
    /// The commit's committer time, in seconds since the Unix epoch.
    pub(crate) commit_time: i64,
}

/// Why the clone step failed. `Display` is the message shown to the user;
/// it never contains a key, passphrase or token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    /// A `repo` field does not parse. Validation refuses such jobs, so only
    /// a job built in code and not validated gets here.
    #[error("{field}: {problem}")]
    InvalidField {
        /// The field, e.g. `repo.url`.
        field: &'static str,
        /// The grammar's reason, which never repeats a credential.
        problem: String,
    },
    /// The remote refused the credentials, or asked for some the job lacks.
    #[error("{0}")]
    Authentication(String),
    /// The SSH server's host key is not the one pinned in `repo.known_hosts`
    /// (or the worker's `--known-hosts` file).
    #[error("{0}")]
    HostKeyMismatch(String),
    /// An SSH server's key with nothing to check it against, on a worker
    /// that does not accept any key.
    #[error("{0}")]
    HostKeyNotPinned(String),
    /// The transfer went over the worker's `--max-clone-bytes`.
    #[error(
        "the clone was stopped after receiving more than {max_bytes} bytes, this worker's \
         limit (--max-clone-bytes); the repository is too large to build here"
    )]
    TooLarge {
        /// The cap.
        max_bytes: u64,
    },
    /// The job was cancelled or timed out while the clone ran.
    #[error("the clone was stopped: the job was cancelled or timed out")]
    Cancelled,
    /// The revision is not a commit, branch or tag of the remote.
    #[error("{0}")]
    UnknownRevision(String),
    /// The remote could not be reached or broke off the transfer.
    #[error("cannot reach the git remote {url}: {message}")]
    Remote {
        /// The URL (never holds a credential: the grammar refuses those).
        url: String,
        /// What libgit2 reported, with secrets masked.
        message: String,
    },
    /// The private key (or its passphrase) in `repo.auth` cannot be used.
    #[error("{0}")]
    InvalidKey(String),
    /// A `.gitmodules` URL the worker will not fetch from. The URL itself
    /// is not shown: a refused one may hold a credential.
    #[error(
        "submodules are fetched only over ssh://, scp-like (user@host:path) and https:// URLs; \
         its URL is refused: {0}"
    )]
    SubmoduleUrl(RepoUrlError),
    /// The local repository could not be set up or checked out.
    #[error("{0}")]
    Checkout(String),
    /// A submodule could not be fetched or checked out. (The inner error is
    /// a field, not a `source`: `Display` already says it all, and an error
    /// chain would repeat it.)
    #[error("submodule {path}: {error}")]
    Submodule {
        /// Path of the submodule in its parent's checkout.
        path: String,
        /// What went wrong with it.
        error: Box<GitError>,
    },
    /// The checkout directory could not be prepared.
    #[error("{action}: {error}")]
    Io {
        /// What the worker was doing.
        action: String,
        /// The operating system's error.
        error: std::io::Error,
    },
}

impl GitError {
    /// Whether no other way of fetching can help: trying another refspec
    /// would meet the same refusal, or the clone must stop.
    fn is_final(&self) -> bool {
        matches!(
            self,
            GitError::Authentication(_)
                | GitError::HostKeyMismatch(_)
                | GitError::HostKeyNotPinned(_)
                | GitError::TooLarge { .. }
                | GitError::Cancelled
        )
    }
}

/// Fetches `repo.revision` from `repo.url` into `dest` (created if missing),
/// checks it out on a detached HEAD, and with `repo.submodules` also checks
/// out every submodule. `progress` receives human-readable lines; the
/// transfer stops once `cancel` is set.
///
/// Blocking: call it from `spawn_blocking`.
pub(crate) fn fetch_revision(
    repo: &Repo,
    dest: &Path,
    settings: &CloneSettings,
    cancel: &CancelFlag,
    progress: &mut dyn FnMut(&str),
) -> Result<Checkout, GitError> {
    let budget = Budget::new(settings.max_bytes, cancel.clone());
    let bounds = Bounds {
        policy: Policy::JOB,
        host_keys: &settings.host_keys,
        budget: &budget,
    };
    fetch_with(repo, dest, progress, &bounds)
}

/// Bounds how long libgit2 waits to connect to a remote and for each read
/// from it, so a stalled server fails the clone instead of holding a
/// blocking thread that the job's timeout cannot interrupt. Process-wide:
/// call once at startup, before any clone runs.
pub(crate) fn set_network_timeouts(connect: Duration, read: Duration) -> Result<(), git2::Error> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: libgit2's global options are plain integers read when a
    // connection opens; git2 marks the setters unsafe only because they are
    // not synchronized, and the caller sets them before any clone runs.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(read))
    }
}

/// What the worker lets a job, and a repository's content, make it fetch.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// Fetch from paths on the worker's disk (the job's URL or a
    /// submodule's). Never in a job: a hostile `.gitmodules` could copy
    /// other checkouts into the image. Only tests, whose remotes are local,
    /// turn it on.
    local_paths: bool,
}

impl Policy {
    const JOB: Self = Self { local_paths: false };
}

/// What one clone runs under besides the job: what it may fetch from, the
/// worker's host key default, and its transfer budget.
struct Bounds<'a> {
    policy: Policy,
    host_keys: &'a HostKeyDefault,
    budget: &'a Budget,
}

/// Parses the job's fields, then fetches and checks out the main
/// repository and, if asked, its submodules.
fn fetch_with(
    repo: &Repo,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
    bounds: &Bounds<'_>,
) -> Result<Checkout, GitError> {
    let main =
        Remote::parse(&repo.url, bounds.policy).map_err(|problem| GitError::InvalidField {
            field: "repo.url",
            problem: problem.to_string(),
        })?;
    let auth = Auth::from_job(&repo.auth, &main)?;
    let known_hosts =
        repo.parse_known_hosts()
            .transpose()
            .map_err(|problem| GitError::InvalidField {
                field: "repo.known_hosts",
                problem: problem.to_string(),
            })?;
    let revision = Revision::parse(&repo.revision)?;
    let host_keys = HostKeyTrust::resolve(known_hosts, bounds.host_keys);
    let session = Session::new(auth, host_keys, bounds.policy, bounds.budget, progress);
    let (checked_out, checkout) = session.fetch_and_check_out(&main, &revision, dest)?;
    if repo.submodules {
        session.update_submodules(&checked_out, 0)?;
    }
    Ok(checkout)
}

#[cfg(test)]
mod tests {
    use super::test_support::{
        bare, commit, fetch, fetch_as, fetch_with_settings, job_repo, settings, Entry, T, TESTS,
    };
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;
    use tempfile::TempDir;

    /// libgit2's timeouts are process-wide: tests that set them take turns,
    /// or one test's 300 s read timeout lands in the middle of another's.
    static GIT_TIMEOUTS: Mutex<()> = Mutex::new(());

    #[test]
    fn network_timeouts_reach_libgit2() {
        let _turn = GIT_TIMEOUTS.lock().unwrap_or_else(|e| e.into_inner());
        set_network_timeouts(Duration::from_secs(30), Duration::from_secs(300)).unwrap();
        // SAFETY: reads of libgit2's integer options.
        let (connect, read) = unsafe {
            (
                git2::opts::get_server_connect_timeout_in_milliseconds().unwrap(),
                git2::opts::get_server_timeout_in_milliseconds().unwrap(),
            )
        };
        assert_eq!((connect, read), (30_000, 300_000));
    }

    /// A server that accepts connections and never says a word.
    fn silent_server() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            // Held, never answered, until the test process ends.
            let held: Vec<_> = listener.incoming().take(8).collect();
            std::thread::sleep(Duration::from_secs(600));
            drop(held);
        });
        addr
    }

    #[test]
    fn a_silent_server_fails_the_clone_at_the_read_timeout() {
        let _turn = GIT_TIMEOUTS.lock().unwrap_or_else(|e| e.into_inner());
        let read_timeout = Duration::from_secs(1);
        set_network_timeouts(Duration::from_secs(5), read_timeout).unwrap();
        let addr = silent_server();
        for url in [
            format!("ssh://git@{addr}/repo.git"),
            format!("https://{addr}/repo.git"),
        ] {
            let started = Instant::now();
            let fetched = fetch_as(&job_repo(&url, "main"), Policy::JOB);
            let error = fetched.error();
            assert!(
                matches!(fetched.result, Err(GitError::Remote { .. })),
                "{url}: {error}"
            );
            assert!(error.contains("timed out"), "{url}: {error}");
            // Not a speed target: without the timeout this never returns.
            assert!(started.elapsed() < Duration::from_secs(30), "{url}");
        }
    }

    #[test]
    fn sha256_revisions_are_refused_up_front() {
        let fetched = fetch("/nonexistent", &"ab".repeat(32));
        assert!(fetched.error().contains("SHA-256"), "{}", fetched.error());
    }

    #[test]
    fn unreachable_remote_names_the_url() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing.git");
        let fetched = fetch(missing.to_str().unwrap(), "main");
        assert!(matches!(fetched.result, Err(GitError::Remote { .. })));
        assert!(
            fetched.error().starts_with(&format!(
                "cannot reach the git remote {}: ",
                missing.display()
            )),
            "{}",
            fetched.error()
        );
    }

    #[test]
    fn fields_that_do_not_parse_are_named() {
        let mut repo = job_repo("/srv/app.git", "main");
        let fetched = fetch_as(&repo, Policy::JOB);
        assert_eq!(
            fetched.error(),
            "repo.url: local repositories are not allowed; workers must not read their own disk"
        );
        repo.url = "ssh://git@127.0.0.1:1/app.git".into();
        repo.known_hosts = Some("# nothing pinned\n".into());
        let fetched = fetch_as(&repo, Policy::JOB);
        assert_eq!(fetched.error(), "repo.known_hosts: no host key lines");
    }

    /// A one-commit remote with a file of `size` letters that compress
    /// poorly (xorshift), so the pack is about that large.
    fn remote_of_size(dir: &TempDir, size: usize) -> String {
        let (repo, url) = bare(dir.path(), "big.git");
        let mut x: u32 = 2_463_534_242;
        let text: String = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                char::from(b'a' + u8::try_from(x % 26).unwrap())
            })
            .collect();
        let tip = commit(&repo, &[Entry::File("big.txt", &text)], &[], T);
        repo.reference("refs/heads/main", tip, true, "").unwrap();
        url
    }

    #[test]
    fn a_clone_over_the_byte_cap_is_stopped() {
        let dir = TempDir::new().unwrap();
        let url = remote_of_size(&dir, 64 * 1024);
        let repo = job_repo(&url, "main");
        let small = settings(HostKeyDefault::Refuse, 1024);
        let fetched = fetch_with_settings(&repo, TESTS, &small, &CancelFlag::default());
        assert!(
            matches!(fetched.result, Err(GitError::TooLarge { max_bytes: 1024 })),
            "{:?}",
            fetched.result
        );
        assert!(fetched.error().contains("--max-clone-bytes"));
        let roomy = settings(HostKeyDefault::Refuse, 10 * 1024 * 1024);
        let fetched = fetch_with_settings(&repo, TESTS, &roomy, &CancelFlag::default());
        assert!(fetched.result.is_ok(), "{:?}", fetched.result);
    }

    #[test]
    fn a_cancelled_clone_writes_nothing() {
        let dir = TempDir::new().unwrap();
        let url = remote_of_size(&dir, 16);
        let cancel = CancelFlag::default();
        cancel.cancel();
        let repo = job_repo(&url, "main");
        let fetched = fetch_with_settings(&repo, TESTS, &CloneSettings::default(), &cancel);
        assert!(matches!(fetched.result, Err(GitError::Cancelled)));
        assert!(!fetched.dir.path().join("src").exists());
    }

    #[test]
    fn the_workers_known_hosts_file_is_parsed_at_start() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_hosts");
        let missing = HostKeyDefault::from_file(&path).unwrap_err();
        assert!(
            missing.to_string().starts_with(&format!(
                "cannot read the --known-hosts file {}: ",
                path.display()
            )),
            "{missing}"
        );
        std::fs::write(&path, "github.com ssh-ed25519 not-base64\n").unwrap();
        let bad = HostKeyDefault::from_file(&path).unwrap_err();
        assert!(
            bad.to_string().starts_with(&format!(
                "the --known-hosts file {} is not valid known_hosts text: line 1: ",
                path.display()
            )),
            "{bad}"
        );
        let line = "[127.0.0.1]:2222 ssh-ed25519 \
                    AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";
        std::fs::write(&path, line).unwrap();
        assert!(matches!(
            HostKeyDefault::from_file(&path),
            Ok(HostKeyDefault::Pinned(_))
        ));
    }
}
