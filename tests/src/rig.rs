//! The real services `scripts/rig-up` started on this machine, as the tests
//! see them: where they listen, the keys and credentials to use, and helpers
//! to make git repositories on the SSH remote and to ask the registries what
//! they hold.
//!
//! Everything comes from `rig.env` in the rig's state dir
//! (`BUILDBOT_RIG_DIR`, default `/var/lib/buildbot-rig`).

use anyhow::{bail, Context};
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The state dir used when `BUILDBOT_RIG_DIR` is not set.
pub const DEFAULT_RIG_DIR: &str = "/var/lib/buildbot-rig";

/// Media types a manifest request accepts: single-platform manifests and
/// lists/indexes, Docker's and OCI's.
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// How long one registry API call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The services of the test rig and how to reach them.
#[derive(Clone)]
pub struct Rig {
    /// The state dir `rig.env` was read from.
    pub dir: PathBuf,
    /// AMQP URL of RabbitMQ (`amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub amqp_url: String,
    /// `host:port` of the registry without authentication.
    pub registry: String,
    /// `host:port` of the registry with htpasswd (basic) authentication.
    pub auth_registry: String,
    /// User name on [`Rig::auth_registry`].
    pub auth_registry_user: String,
    /// Password of [`Rig::auth_registry_user`].
    pub auth_registry_password: String,
    /// Host of the SSH git remote.
    pub git_ssh_host: String,
    /// Port of the SSH git remote.
    pub git_ssh_port: u16,
    /// SSH user of the git remote (its shell is git-shell).
    pub git_ssh_user: String,
    /// Directory holding the bare repositories the remote serves.
    pub git_repos: PathBuf,
    /// Local image every test build can start `FROM` (nothing can be pulled).
    pub base_image: String,
    /// Private key (ed25519, OpenSSH format) the remote accepts.
    pub ssh_key: PathBuf,
    /// Private key (RSA, PEM format) the remote accepts.
    pub ssh_rsa_key: PathBuf,
    /// Private key (ed25519) the remote does not accept.
    pub ssh_unauthorized_key: PathBuf,
    /// Public host key of the remote's sshd (`.pub` file).
    pub ssh_host_pubkey: PathBuf,
}

impl fmt::Debug for Rig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rig")
            .field("dir", &self.dir)
            .field("amqp_url", &self.amqp_url)
            .field("registry", &self.registry)
            .field("auth_registry", &self.auth_registry)
            .field("auth_registry_user", &self.auth_registry_user)
            .field("auth_registry_password", &"<redacted>")
            .field("git_ssh_host", &self.git_ssh_host)
            .field("git_ssh_port", &self.git_ssh_port)
            .field("git_ssh_user", &self.git_ssh_user)
            .field("git_repos", &self.git_repos)
            .field("base_image", &self.base_image)
            .field("ssh_key", &self.ssh_key)
            .field("ssh_rsa_key", &self.ssh_rsa_key)
            .field("ssh_unauthorized_key", &self.ssh_unauthorized_key)
            .field("ssh_host_pubkey", &self.ssh_host_pubkey)
            .finish()
    }
}

/// Which of the rig's SSH client keys to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshKey {
    /// The ed25519 key in the remote's `authorized_keys`.
    Authorized,
    /// The RSA key (PEM format) in the remote's `authorized_keys`.
    AuthorizedRsa,
    /// A valid ed25519 key the remote does not know.
    Unauthorized,
}

/// A bare repository on the rig's SSH remote.
#[derive(Clone, Debug)]
pub struct TestRepo {
    /// URL to clone it over SSH.
    pub ssh_url: String,
    /// SHA (40 hex digits) of the commit `main` pointed at on creation.
    pub commit: String,
    /// Path of the bare repository on this machine.
    pub path: PathBuf,
}

impl Rig {
    /// Reads the rig's `rig.env`.
    ///
    /// # Panics
    ///
    /// When the rig is not set up (run `scripts/rig-up`) or its `rig.env`
    /// lacks a value.
    pub fn load() -> Rig {
        match Self::try_load() {
            Ok(rig) => rig,
            Err(error) => panic!(
                "the test rig is not available: {error:#}\n\
                 run `scripts/rig-up` (as root) to install and start it"
            ),
        }
    }

    /// Reads the rig's `rig.env`, reporting what is missing.
    pub fn try_load() -> anyhow::Result<Rig> {
        let dir = std::env::var_os("BUILDBOT_RIG_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RIG_DIR));
        let env_file = dir.join("rig.env");
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let values = parse_env(&text);
        let get = |key: &str| -> anyhow::Result<String> {
            values
                .get(key)
                .cloned()
                .with_context(|| format!("{} has no {key}", env_file.display()))
        };
        let port = get("BUILDBOT_GIT_SSH_PORT")?;
        Ok(Rig {
            amqp_url: get("BUILDBOT_AMQP_URL")?,
            registry: get("BUILDBOT_REGISTRY")?,
            auth_registry: get("BUILDBOT_AUTH_REGISTRY")?,
            auth_registry_user: get("BUILDBOT_AUTH_REGISTRY_USER")?,
            auth_registry_password: get("BUILDBOT_AUTH_REGISTRY_PASSWORD")?,
            git_ssh_host: get("BUILDBOT_GIT_SSH_HOST")?,
            git_ssh_port: port
                .parse()
                .with_context(|| format!("BUILDBOT_GIT_SSH_PORT={port:?} is not a port"))?,
            git_ssh_user: values
                .get("BUILDBOT_GIT_SSH_USER")
                .cloned()
                .unwrap_or_else(|| "git".to_owned()),
            git_repos: get("BUILDBOT_GIT_REPOS")?.into(),
            base_image: get("BUILDBOT_BASE_IMAGE")?,
            ssh_key: get("BUILDBOT_SSH_KEY")?.into(),
            ssh_rsa_key: get("BUILDBOT_SSH_RSA_KEY")?.into(),
            ssh_unauthorized_key: get("BUILDBOT_SSH_UNAUTHORIZED_KEY")?.into(),
            ssh_host_pubkey: get("BUILDBOT_SSH_HOST_PUBKEY")?.into(),
            dir,
        })
    }

    /// Path of the private key file of `key`.
    pub fn ssh_key_path(&self, key: SshKey) -> &Path {
        match key {
            SshKey::Authorized => &self.ssh_key,
            SshKey::AuthorizedRsa => &self.ssh_rsa_key,
            SshKey::Unauthorized => &self.ssh_unauthorized_key,
        }
    }

    /// Text of the private key file of `key` (PEM / OpenSSH armor).
    pub fn ssh_key_pem(&self, key: SshKey) -> String {
        let path = self.ssh_key_path(key);
        std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("reading SSH key {}: {error}", path.display()))
    }

    /// The private key file of `key`, base64 (standard alphabet) encoded, as
    /// a job carries it.
    pub fn ssh_key_base64(&self, key: SshKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ssh_key_pem(key))
    }

    /// The public half of `key` (`ssh-ed25519 AAAA... comment`).
    pub fn ssh_public_key(&self, key: SshKey) -> String {
        let mut path = self.ssh_key_path(key).as_os_str().to_owned();
        path.push(".pub");
        let path = PathBuf::from(path);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading SSH public key {}: {error}", path.display()))
            .trim()
            .to_owned()
    }

    /// The `known_hosts` host pattern of the remote: `[host]:port`, or the
    /// bare host on port 22.
    pub fn known_hosts_pattern(&self) -> String {
        if self.git_ssh_port == 22 {
            self.git_ssh_host.clone()
        } else {
            format!("[{}]:{}", self.git_ssh_host, self.git_ssh_port)
        }
    }

    /// A `known_hosts` line pinning the remote's real host key:
    /// `[127.0.0.1]:2222 ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let text = std::fs::read_to_string(&self.ssh_host_pubkey).unwrap_or_else(|error| {
            panic!(
                "reading the SSH host key {}: {error}",
                self.ssh_host_pubkey.display()
            )
        });
        self.known_hosts_line_for(&text)
    }

    /// A `known_hosts` line for the remote's host pattern holding a valid
    /// key that is not the host's (the unauthorized client key's public
    /// half): host key verification against it must fail.
    pub fn wrong_known_hosts_line(&self) -> String {
        self.known_hosts_line_for(&self.ssh_public_key(SshKey::Unauthorized))
    }

    fn known_hosts_line_for(&self, public_key: &str) -> String {
        let mut fields = public_key.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            panic!("not an OpenSSH public key: {public_key:?}");
        };
        format!("{} {kind} {key}", self.known_hosts_pattern())
    }

    /// The SSH URL of the repository `name` (e.g. `app.git`) under
    /// [`Rig::git_repos`].
    pub fn ssh_url(&self, name: &str) -> String {
        format!(
            "ssh://{}@{}:{}{}",
            self.git_ssh_user,
            self.git_ssh_host,
            self.git_ssh_port,
            self.git_repos.join(name).display()
        )
    }

    /// Creates a new bare repository `{prefix}-{uuid}.git` on the remote
    /// whose branch `main` (also HEAD) has one commit holding `files`
    /// (paths may contain `/`; content starting with `#!` is executable).
    ///
    /// # Panics
    ///
    /// When the repository cannot be written.
    pub fn create_repo(&self, prefix: &str, files: &[(&str, &[u8])]) -> TestRepo {
        self.try_create_repo(prefix, files)
            .unwrap_or_else(|error| panic!("creating a test repository {prefix:?}: {error:#}"))
    }

    /// [`Rig::create_repo`], reporting failures.
    pub fn try_create_repo(
        &self,
        prefix: &str,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<TestRepo> {
        let name = format!("{prefix}-{}.git", uuid::Uuid::new_v4().simple());
        let path = self.git_repos.join(&name);
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).initial_head("main").mkpath(true);
        let repo = git2::Repository::init_opts(&path, &options)
            .with_context(|| format!("initializing {}", path.display()))?;
        let commit = commit_on_main(&repo, files, "Initial commit of the test app")?;
        make_world_readable(&path)?;
        Ok(TestRepo {
            ssh_url: self.ssh_url(&name),
            commit,
            path,
        })
    }

    /// A job that builds `repo` at its commit with the authorized ed25519
    /// key and the pinned host key, and pushes a fresh repository on
    /// `registry` (`host:port`) tagged with the short commit and `latest`.
    pub fn job(&self, repo: &TestRepo, registry: &str) -> buildbot_protocol::Job {
        use buildbot_protocol::{Job, RepoAuth};
        let job_id = uuid::Uuid::new_v4();
        Job::new(
            "e2e-app",
            repo.ssh_url.clone(),
            repo.commit.clone(),
            format!("{registry}/e2e/app-{}", job_id.simple()),
            [repo.commit[..12].to_owned(), "latest".into()],
        )
        .with_job_id(job_id)
        .with_repo_auth(RepoAuth::ssh_key(self.ssh_key_base64(SshKey::Authorized)))
        .with_known_hosts(self.known_hosts_line())
    }

    /// Digest (`sha256:...`) of the manifest `path:tag` on `registry`
    /// (`host:port`, plain HTTP), or `None` when the registry has no such
    /// manifest (404). `credentials` are sent as basic auth.
    ///
    /// # Panics
    ///
    /// When the registry cannot be reached or answers anything but 200/404.
    pub fn manifest_digest(
        &self,
        registry: &str,
        path: &str,
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> Option<String> {
        self.try_manifest_digest(registry, path, tag, credentials)
            .unwrap_or_else(|error| panic!("asking {registry} for {path}:{tag}: {error:#}"))
    }

    /// [`Rig::manifest_digest`], reporting failures.
    pub fn try_manifest_digest(
        &self,
        registry: &str,
        path: &str,
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<Option<String>> {
        let response = manifest_request(registry, path, tag, credentials)?;
        match response.status().as_u16() {
            200 => {
                let digest = response
                    .headers()
                    .get("Docker-Content-Digest")
                    .context("the registry sent no Docker-Content-Digest header")?
                    .to_str()
                    .context("the Docker-Content-Digest header is not text")?;
                Ok(Some(digest.to_owned()))
            }
            404 => Ok(None),
            status => bail!("GET /v2/{path}/manifests/{tag} answered HTTP {status}"),
        }
    }

    /// HTTP status the registry answers for the manifest `path:tag`
    /// (200 present, 404 absent, 401 not allowed...).
    ///
    /// # Panics
    ///
    /// When the registry cannot be reached.
    pub fn registry_status(
        &self,
        registry: &str,
        path: &str,
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> u16 {
        manifest_request(registry, path, tag, credentials)
            .map(|response| response.status().as_u16())
            .unwrap_or_else(|error| panic!("asking {registry} for {path}:{tag}: {error:#}"))
    }
}

impl TestRepo {
    /// Adds a commit on `main` that writes `files` (added or replaced, the
    /// others kept) and returns its SHA (40 hex digits).
    ///
    /// # Panics
    ///
    /// When the repository cannot be written.
    pub fn commit_files(&self, files: &[(&str, &[u8])]) -> String {
        self.try_commit_files(files)
            .unwrap_or_else(|error| panic!("committing to {}: {error:#}", self.path.display()))
    }

    /// [`TestRepo::commit_files`], reporting failures.
    pub fn try_commit_files(&self, files: &[(&str, &[u8])]) -> anyhow::Result<String> {
        let repo = git2::Repository::open_bare(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let commit = commit_on_main(&repo, files, "Change the test app")?;
        make_world_readable(&self.path)?;
        Ok(commit)
    }
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .collect()
}

/// Commits `files` on top of `main` (or as its first commit) and returns
/// the new commit's SHA.
fn commit_on_main(
    repo: &git2::Repository,
    files: &[(&str, &[u8])],
    message: &str,
) -> anyhow::Result<String> {
    const MAIN: &str = "refs/heads/main";
    let parent = match repo.find_reference(MAIN) {
        Ok(reference) => Some(reference.peel_to_commit()?),
        Err(error) if error.code() == git2::ErrorCode::NotFound => None,
        Err(error) => return Err(error.into()),
    };
    let mut index = git2::Index::new()?;
    if let Some(parent) = &parent {
        index.read_tree(&parent.tree()?)?;
    }
    for (path, content) in files {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|part| part == ".." || part == ".git") {
            bail!("refusing the file path {path:?}");
        }
        let blob = repo.blob(content)?;
        let mode = if content.starts_with(b"#!") {
            0o100755
        } else {
            0o100644
        };
        index.add(&index_entry(path, blob, mode, content.len()))?;
    }
    let tree = repo.find_tree(index.write_tree_to(repo)?)?;
    let signature = git2::Signature::now("buildbot tests", "tests@buildbot.invalid")?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let commit = repo.commit(Some(MAIN), &signature, &signature, message, &tree, &parents)?;
    repo.set_head(MAIN)?;
    Ok(commit.to_string())
}

fn index_entry(path: &str, id: git2::Oid, mode: u32, size: usize) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(size).unwrap_or(u32::MAX),
        id,
        // The low 12 bits hold the path length (capped).
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// Lets the remote's `git` user read everything in `root` (the tests run
/// as root and may have a restrictive umask).
fn make_world_readable(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::symlink_metadata(root)?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let extra = if metadata.is_dir() { 0o055 } else { 0o044 };
    let mode = metadata.permissions().mode();
    if mode & extra != extra {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | extra))
            .with_context(|| format!("chmod {}", root.display()))?;
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(root)? {
            make_world_readable(&entry?.path())?;
        }
    }
    Ok(())
}

impl Rig {
    /// Everything the open registry `registry` stores for `path:tag`:
    /// the manifest, the config blob and every layer, gunzipped, so a test
    /// can search them for a value that must not be there.
    ///
    /// # Panics
    ///
    /// When the registry cannot be reached or lacks the image.
    pub fn registry_image_bytes(&self, registry: &str, path: &str, tag: &str) -> Vec<Vec<u8>> {
        image_bytes(registry, path, tag)
            .unwrap_or_else(|error| panic!("reading {registry}/{path}:{tag}: {error:#}"))
    }
}

fn image_bytes(registry: &str, path: &str, tag: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut response = manifest_request(registry, path, tag, None)?;
    anyhow::ensure!(
        response.status().as_u16() == 200,
        "the manifest answered HTTP {}",
        response.status()
    );
    let manifest = response.body_mut().read_to_vec()?;
    let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
    let config = parsed["config"]["digest"]
        .as_str()
        .context("no config digest")?;
    let mut all = vec![manifest.clone(), blob(registry, path, config)?];
    let layers = parsed["layers"].as_array().context("no layers")?;
    for layer in layers {
        let digest = layer["digest"].as_str().context("a layer without digest")?;
        let compressed = blob(registry, path, digest)?;
        let mut layer_tar = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut layer_tar)
            .with_context(|| format!("gunzip layer {digest}"))?;
        all.push(layer_tar);
    }
    Ok(all)
}

fn blob(registry: &str, path: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let url = format!("http://{registry}/v2/{path}/blobs/{digest}");
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    Ok(response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()?)
}

fn manifest_request(
    registry: &str,
    path: &str,
    tag: &str,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let url = format!("http://{registry}/v2/{path}/manifests/{tag}");
    let mut request = agent.get(&url).header("Accept", MANIFEST_ACCEPT);
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("Authorization", format!("Basic {token}"));
    }
    request.call().with_context(|| format!("GET {url}"))
}
