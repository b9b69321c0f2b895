//! The job's credentials as libgit2 asks for them: the SSH private key
//! handed over from memory, the HTTPS username and token (to the exact
//! scheme, host and port of the job's URL only), which of them a connection
//! has offered already, and masking them in every message built from a
//! libgit2 error.

use super::remote::Remote;
use super::GitError;
use buildbot_protocol::grammar::{PrivateKeyError, SshPrivateKey, Transport};
use buildbot_protocol::{RepoAuth, Secret};
use git2::{Cred, CredentialType, ErrorClass};
use std::cell::Cell;
use std::fmt;

/// User name for SSH when the URL names none: what every git host expects.
const DEFAULT_SSH_USER: &str = "git";
/// What a masked secret is replaced with.
const REDACTED: &str = "[REDACTED]";

/// The job's credentials, parsed once before any connection.
pub(super) enum Auth<'a> {
    None,
    /// Decoded by the protocol's grammar; in memory only.
    SshKey(SshPrivateKey),
    Https {
        username: &'a str,
        token: &'a Secret,
        /// Where the job's URL points: the token goes there only, so a
        /// `.gitmodules` or a redirect naming another host or port cannot
        /// collect it. `None` (not an https:// URL): the token goes nowhere.
        /// (An SSH key may go anywhere: public-key auth reveals no secret.)
        origin: Option<Origin>,
    },
}

/// Scheme, lowercase host and port (default filled in) of an HTTPS URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an https:// remote.
    fn of(remote: &Remote) -> Option<Self> {
        let Remote::Network(url) = remote else {
            return None;
        };
        (url.transport() == Transport::Https).then(|| Origin {
            host: url.host().to_ascii_lowercase(),
            port: url.port_or_default(),
        })
    }

    /// The origin of the URL libgit2 asks credentials for (the server it
    /// is talking to, after any redirect); `None` unless https://.
    fn parse(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        if !uri.scheme_str()?.eq_ignore_ascii_case("https") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(Origin {
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(Transport::Https.default_port()),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// Which credentials one connection has offered: each is offered once, so
/// a refused one ends the fetch instead of looping.
#[derive(Default)]
pub(super) struct Offered {
    key: Cell<bool>,
    password: Cell<bool>,
}

impl<'a> Auth<'a> {
    /// `auth` for a clone of `main` (the job's URL).
    pub(super) fn from_job(auth: &'a RepoAuth, main: &Remote) -> Result<Self, GitError> {
        Ok(match auth {
            RepoAuth::None => Auth::None,
            RepoAuth::SshKey {
                private_key,
                passphrase,
            } => Auth::SshKey(
                SshPrivateKey::parse(private_key, passphrase.as_ref()).map_err(key_error)?,
            ),
            RepoAuth::Https { username, token } => Auth::Https {
                username,
                token,
                origin: Origin::of(main),
            },
        })
    }

    /// Answers libgit2's request for credentials for `remote` (whose
    /// server is now at `url`), or says precisely why there are none to
    /// give.
    pub(super) fn credentials(
        &self,
        remote: &Remote,
        url: &str,
        offered: &Offered,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, GitError> {
        let user = user_from_url.unwrap_or(DEFAULT_SSH_USER);
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user).map_err(|e| self.not_handed_over(&e));
        }
        self.check_may_send_to(remote, url)?;
        match self {
            Auth::SshKey(key) if allowed.contains(CredentialType::SSH_MEMORY) => {
                if offered.key.replace(true) {
                    return Err(GitError::Authentication(format!(
                        "the git remote refused the SSH key for {user}@{} (is the key authorized?)",
                        remote.host_port()
                    )));
                }
                let passphrase = key.passphrase().map(Secret::expose);
                Cred::ssh_key_from_memory(user, None, key.pem().expose(), passphrase)
                    .map_err(|e| self.not_handed_over(&e))
            }
            Auth::Https {
                username, token, ..
            } if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                if offered.password.replace(true) {
                    return Err(GitError::Authentication(format!(
                        "the git remote refused the HTTPS credentials for {username}"
                    )));
                }
                Cred::userpass_plaintext(username, token.expose())
                    .map_err(|e| self.not_handed_over(&e))
            }
            Auth::None => Err(GitError::Authentication(format!(
                "the git remote {remote} asks for credentials, but repo.auth is none"
            ))),
            _ => Err(GitError::Authentication(format!(
                "the git remote {remote} does not accept the kind of credentials in repo.auth \
                 (it accepts: {})",
                describe_credential_types(allowed)
            ))),
        }
    }

    /// An HTTPS token is for the job's scheme, host and port only: both
    /// the remote being fetched (a submodule's may differ) and the server
    /// libgit2 is talking to (a redirect may lead elsewhere) must be there.
    fn check_may_send_to(&self, remote: &Remote, url: &str) -> Result<(), GitError> {
        let Auth::Https { origin, .. } = self else {
            return Ok(());
        };
        let Some(origin) = origin else {
            return Err(GitError::Authentication(format!(
                "the git remote {remote} asks for credentials, but the token in repo.auth is \
                 only sent to the https:// URL of the job"
            )));
        };
        if Origin::of(remote).as_ref() != Some(origin) {
            return Err(GitError::Authentication(format!(
                "the git remote {remote} asks for credentials, but the token in repo.auth is \
                 only sent to {origin}"
            )));
        }
        if Origin::parse(url).as_ref() != Some(origin) {
            // The redirect's URL is not shown: it may hold a credential.
            return Err(GitError::Authentication(format!(
                "the git remote {remote} redirected to another server that asks for \
                 credentials, but the token in repo.auth is only sent to {origin}"
            )));
        }
        Ok(())
    }

    /// libgit2 could not even take the credentials (it copies them only, so
    /// this is not expected); its message, masked.
    fn not_handed_over(&self, error: &git2::Error) -> GitError {
        GitError::Authentication(format!(
            "cannot hand the credentials in repo.auth to libgit2: {}",
            self.scrub(error.message())
        ))
    }

    /// The precise error when libssh2 failed because it cannot load the SSH
    /// key this connection offered: which part of `repo.auth` to fix.
    pub(super) fn unusable_key(
        &self,
        offered: &Offered,
        error: &git2::Error,
        message: &str,
    ) -> Option<GitError> {
        let Auth::SshKey(key) = self else {
            return None;
        };
        let about_the_key = message.contains("private key") || message.contains("public key");
        if !(offered.key.get() && error.class() == ErrorClass::Ssh && about_the_key) {
            return None;
        }
        Some(GitError::InvalidKey(if key.is_encrypted() {
            "repo.auth.passphrase does not decrypt repo.auth.private_key (wrong passphrase?)"
                .to_owned()
        } else {
            format!("repo.auth.private_key: the SSH library cannot use this key ({message})")
        }))
    }

    /// Masks the token and passphrase, should libgit2 ever echo them.
    pub(super) fn scrub(&self, message: &str) -> String {
        let secret = match self {
            Auth::None => None,
            Auth::SshKey(key) => key.passphrase(),
            Auth::Https { token, .. } => Some(*token),
        };
        match secret.map(Secret::expose) {
            Some(secret) if !secret.is_empty() => message.replace(secret, REDACTED),
            _ => message.to_owned(),
        }
    }
}

/// The grammar's reason, under the `repo.auth` field it concerns.
fn key_error(error: PrivateKeyError) -> GitError {
    GitError::InvalidKey(match error {
        PrivateKeyError::EncryptedWithoutPassphrase => {
            "repo.auth.private_key is encrypted, but repo.auth.passphrase is not set".to_owned()
        }
        PrivateKeyError::EmptyPassphrase => format!("repo.auth.passphrase: {error}"),
        _ => format!("repo.auth.private_key: {error}"),
    })
}

fn describe_credential_types(allowed: CredentialType) -> String {
    let names = [
        (CredentialType::SSH_KEY, "SSH key"),
        (CredentialType::USER_PASS_PLAINTEXT, "username and password"),
        (CredentialType::SSH_INTERACTIVE, "keyboard-interactive"),
        (CredentialType::DEFAULT, "Negotiate/NTLM"),
    ];
    let listed: Vec<&str> = names
        .iter()
        .filter(|(kind, _)| allowed.intersects(*kind))
        .map(|(_, name)| *name)
        .collect();
    if listed.is_empty() {
        "nothing this worker can offer".to_owned()
    } else {
        listed.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{fetch_as, job_repo};
    use super::super::Policy;
    use super::*;
    use buildbot_protocol::grammar::base64::encode;

    /// Base64 of an unencrypted or encrypted OpenSSH private key container
    /// (the key material itself is irrelevant here).
    fn openssh_key(cipher: &str) -> String {
        let mut body = b"openssh-key-v1\0".to_vec();
        for field in [cipher, "none", ""] {
            body.extend_from_slice(&(field.len() as u32).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        let pem = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            encode(body)
        );
        encode(pem)
    }

    fn ssh_auth(key: String, passphrase: Option<&str>) -> RepoAuth {
        RepoAuth::SshKey {
            private_key: Secret::new(key),
            passphrase: passphrase.map(Secret::new),
        }
    }

    fn main_remote() -> Remote {
        Remote::parse("ssh://git@example.com/app.git", Policy::JOB).unwrap()
    }

    fn key_error(auth: &RepoAuth) -> String {
        let Err(e) = Auth::from_job(auth, &main_remote()) else {
            panic!("accepted");
        };
        assert!(matches!(e, GitError::InvalidKey(_)));
        e.to_string()
    }

    // The grammar's tests cover which keys parse; these pin that its
    // reasons reach the user under the field to fix.
    #[test]
    fn private_key_must_be_base64_of_a_key() {
        let error = |key: &str| key_error(&ssh_auth(key.to_owned(), None));
        assert_eq!(
            error("not base64!"),
            "repo.auth.private_key: not valid base64; encode the key file, e.g. with \
             `base64 -w0 id_ed25519`"
        );
        assert!(error(&encode("hello")).contains("not base64 of a private key"));
        assert!(error(&encode([0xff, 0xfe])).contains("not base64 of a text"));
    }

    #[test]
    fn encrypted_keys_need_a_passphrase() {
        assert_eq!(
            key_error(&ssh_auth(openssh_key("aes256-ctr"), None)),
            "repo.auth.private_key is encrypted, but repo.auth.passphrase is not set"
        );
        assert_eq!(
            key_error(&ssh_auth(openssh_key("none"), Some(""))),
            "repo.auth.passphrase: empty passphrase; omit it for a key without a passphrase"
        );
        let encrypted = ssh_auth(openssh_key("aes256-ctr"), Some("pw"));
        let Ok(Auth::SshKey(key)) = Auth::from_job(&encrypted, &main_remote()) else {
            panic!("refused");
        };
        assert!(key.is_encrypted());
        let plain = ssh_auth(openssh_key("none"), None);
        let Ok(Auth::SshKey(key)) = Auth::from_job(&plain, &main_remote()) else {
            panic!("refused");
        };
        assert!(!key.is_encrypted());
    }

    #[test]
    fn the_token_goes_to_the_jobs_host_only() {
        let auth = RepoAuth::Https {
            username: "ci".into(),
            token: Secret::new("tok"),
        };
        let main_url = "https://Git.Example.com/team/app.git";
        let main = Remote::parse(main_url, Policy::JOB).unwrap();
        let auth = Auth::from_job(&auth, &main).unwrap();
        let other = Remote::parse("https://evil.example/lib.git", Policy::JOB).unwrap();
        let offered = Offered::default();
        let plaintext = CredentialType::USER_PASS_PLAINTEXT;
        let Err(refused) = auth.credentials(&other, main_url, &offered, None, plaintext) else {
            panic!("the token went to another host");
        };
        assert_eq!(
            refused.to_string(),
            "the git remote https://evil.example/lib.git asks for credentials, but the token \
             in repo.auth is only sent to https://git.example.com:443"
        );
        assert!(auth
            .credentials(&main, main_url, &offered, None, plaintext)
            .is_ok());
        let Err(again) = auth.credentials(&main, main_url, &offered, None, plaintext) else {
            panic!("offered twice");
        };
        assert_eq!(
            again.to_string(),
            "the git remote refused the HTTPS credentials for ci"
        );
    }

    #[test]
    fn the_token_goes_to_the_exact_scheme_host_and_port() {
        let auth = RepoAuth::Https {
            username: "ci".into(),
            token: Secret::new("tok"),
        };
        let main = Remote::parse("https://git.example.com/team/app.git", Policy::JOB).unwrap();
        let auth = Auth::from_job(&auth, &main).unwrap();
        let plaintext = CredentialType::USER_PASS_PLAINTEXT;
        let asks = |remote: &Remote, url: &str| {
            auth.credentials(remote, url, &Offered::default(), None, plaintext)
        };
        // The same origin, written differently: the default port, any case.
        assert!(asks(&main, "https://GIT.example.com:443/team/app.git").is_ok());
        // A redirect (libgit2 names the server it now talks to) elsewhere.
        for url in [
            "https://git.example.com:8443/team/app.git",
            "http://git.example.com/team/app.git",
            "https://evil.example/team/app.git",
            "not a url",
        ] {
            let Err(refused) = asks(&main, url) else {
                panic!("the token went to {url}");
            };
            assert_eq!(
                refused.to_string(),
                "the git remote https://git.example.com/team/app.git redirected to another \
                 server that asks for credentials, but the token in repo.auth is only sent to \
                 https://git.example.com:443",
                "{url}"
            );
        }
        // A submodule on another port of the same host.
        let sibling = Remote::parse("https://git.example.com:8443/lib.git", Policy::JOB).unwrap();
        let url = sibling.to_string();
        assert!(asks(&sibling, &url).is_err());
    }

    #[test]
    fn errors_never_contain_secrets() {
        let token = "tok-3f9a-very-secret";
        let passphrase = "pass-8c1d-very-secret";
        let cases = [
            (
                "https://127.0.0.1:1/team/app.git",
                RepoAuth::Https {
                    username: "ci".into(),
                    token: Secret::new(token),
                },
            ),
            (
                "ssh://git@127.0.0.1:1/team/app.git",
                ssh_auth(openssh_key("aes256-ctr"), Some(passphrase)),
            ),
        ];
        for (url, auth) in cases {
            let mut repo = job_repo(url, "main");
            repo.auth = auth;
            let fetched = fetch_as(&repo, Policy::JOB);
            let message = fetched.error();
            assert!(
                matches!(fetched.result, Err(GitError::Remote { .. })),
                "{message}"
            );
            assert!(
                message.starts_with(&format!("cannot reach the git remote {url}")),
                "{message}"
            );
            for secret in [token, passphrase, &openssh_key("aes256-ctr")] {
                assert!(!message.contains(secret), "{message}");
                assert!(!format!("{:?}", fetched.result).contains(secret));
            }
        }
    }

    #[test]
    fn scrub_masks_the_token() {
        let auth = RepoAuth::Https {
            username: "ci".into(),
            token: Secret::new("s3cr3t-token"),
        };
        let main = Remote::parse("https://example.com/app.git", Policy::JOB).unwrap();
        let auth = Auth::from_job(&auth, &main).unwrap();
        assert_eq!(
            auth.scrub("bad url https://ci:s3cr3t-token@example.com/"),
            "bad url https://ci:[REDACTED]@example.com/"
        );
    }
}
