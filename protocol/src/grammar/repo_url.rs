//! Clone URLs a job may name: `ssh://[user@]host[:port]/path` (also
//! `git+ssh://`, `ssh+git://`), scp-like `user@host:path`, and
//! `https://host[:port]/path`. Local paths, `file://`, plain `http://` and
//! URLs with embedded credentials are refused.
//!
//! Errors never repeat the URL, which may hold a credential.

use crate::reference::is_valid_registry_host;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// The accepted forms, named in errors.
const FORMS: &str = "use ssh://user@host[:port]/path, user@host:path or https://host/path";
/// Longest scheme echoed in an error.
const SCHEME_SHOWN_LEN: usize = 16;
/// Port of `ssh` when the URL names none.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// Port of `https` when the URL names none.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// Why a text is not an acceptable clone URL.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RepoUrlError {
    /// The text is empty.
    #[error("empty")]
    Empty,
    /// Whitespace or control characters anywhere.
    #[error("contains whitespace or control characters")]
    WhitespaceOrControl,
    /// `http://`: credentials and code would travel in the clear.
    #[error("plain http is not allowed; use https://")]
    PlainHttp,
    /// A path on the worker's disk, or `file://`.
    #[error("local repositories are not allowed; workers must not read their own disk")]
    Local,
    /// A scheme other than ssh and https (its first 16 characters).
    #[error("unsupported scheme {0:?}; {FORMS}")]
    UnsupportedScheme(String),
    /// Neither a URL nor scp-like.
    #[error("not a supported URL; {FORMS}")]
    NotSupported,
    /// A password or token in the URL (or any user in an https URL).
    #[error("embeds credentials; put them in repo.auth")]
    EmbedsCredentials,
    /// `host:path` without `user@`.
    #[error("scp-like URL without a user; {FORMS}")]
    ScpWithoutUser,
    /// `@host:path`.
    #[error("scp-like URL with an empty user")]
    ScpEmptyUser,
    /// `scheme://@host/path`.
    #[error("empty user before \"@\"")]
    EmptyUser,
    /// A user that ssh would read as an option.
    #[error("user must not start with \"-\"")]
    UserStartsWithDash,
    /// `user@host:` with nothing after the colon.
    #[error("no repository path after the \":\"")]
    NoScpPath,
    /// `scheme://host` or `scheme://host/`.
    #[error("no repository path after the host")]
    NoPath,
    /// A port that is not 1 to 65535.
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    /// No host.
    #[error("no host")]
    NoHost,
    /// A host that ssh would read as an option.
    #[error("host must not start with \"-\"")]
    HostStartsWithDash,
    /// Not a host name, IPv4 or `[IPv6]` address.
    #[error("host is not a valid host name or IP address")]
    BadHost,
}

/// How the worker talks to the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SSH: `ssh://` or scp-like.
    Ssh,
    /// HTTPS.
    Https,
}

impl Transport {
    /// The port used when the URL names none: 22 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Ssh => DEFAULT_SSH_PORT,
            Transport::Https => DEFAULT_HTTPS_PORT,
        }
    }
}

/// A clone URL, parsed. Never holds a credential (parsing refuses URLs
/// with one), so `Display` (the URL as given) is safe for logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    text: String,
    transport: Transport,
    scp_like: bool,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

impl RepoUrl {
    /// Parses `text`, or says why it is not an acceptable clone URL.
    pub fn parse(text: &str) -> Result<Self, RepoUrlError> {
        if text.is_empty() {
            return Err(RepoUrlError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RepoUrlError::WhitespaceOrControl);
        }
        match text.split_once("://") {
            Some((scheme, rest)) => parse_with_scheme(text, scheme, rest),
            None => parse_scp_like(text),
        }
    }

    /// SSH or HTTPS.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the URL is scp-like (`user@host:path`).
    pub fn is_scp_like(&self) -> bool {
        self.scp_like
    }

    /// The SSH user the URL names (never set for https).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host as written, IPv6 without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port the URL names, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port to connect to: the URL's, else the transport's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.transport.default_port())
    }

    /// The repository path: after the host's `/` (with it) for URLs, after
    /// the `:` for scp-like ones.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port` for messages, IPv6 in brackets, default port filled in:
    /// `github.com:22`, `[::1]:2222`.
    pub fn host_port(&self) -> String {
        format!("{}:{}", bracketed(&self.host), self.port_or_default())
    }

    /// The name an SSH `known_hosts` line must match for this remote.
    pub fn known_hosts_name(&self) -> String {
        known_hosts_name(&self.host, self.port_or_default())
    }

    /// The URL as given, for libgit2.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The name a `known_hosts` line must match for `host` on `port`, as
/// OpenSSH writes it: the lowercase host on port 22, else `[host]:port`.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == DEFAULT_SSH_PORT {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RepoUrl {
    type Err = RepoUrlError;

    fn from_str(text: &str) -> Result<Self, RepoUrlError> {
        Self::parse(text)
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn parse_with_scheme(text: &str, scheme: &str, rest: &str) -> Result<RepoUrl, RepoUrlError> {
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
        "https" => Transport::Https,
        "http" => return Err(RepoUrlError::PlainHttp),
        "file" => return Err(RepoUrlError::Local),
        _ => {
            let shown = scheme.chars().take(SCHEME_SHOWN_LEN).collect();
            return Err(RepoUrlError::UnsupportedScheme(shown));
        }
    };
    let authority = Authority::parse(rest, transport == Transport::Ssh)?;
    Ok(RepoUrl {
        text: text.to_owned(),
        transport,
        scp_like: false,
        user: authority.user,
        host: authority.host,
        port: authority.port,
        path: authority.path,
    })
}

/// `[user@]host[:port]/path` after `scheme://`.
struct Authority {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Authority {
    fn parse(rest: &str, user_allowed: bool) -> Result<Self, RepoUrlError> {
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                (Some(check_userinfo(userinfo, user_allowed)?), host_port)
            }
            None => (None, authority),
        };
        let (host, port) = split_port(host_port)?;
        check_host(host)?;
        if path.trim_matches('/').is_empty() {
            return Err(RepoUrlError::NoPath);
        }
        Ok(Self {
            user,
            host: unbracketed(host).to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// The user part before `@`: a plain SSH user name only.
fn check_userinfo(userinfo: &str, user_allowed: bool) -> Result<String, RepoUrlError> {
    if userinfo.contains(':') || !user_allowed {
        return Err(RepoUrlError::EmbedsCredentials);
    }
    if userinfo.is_empty() {
        return Err(RepoUrlError::EmptyUser);
    }
    if userinfo.starts_with('-') {
        return Err(RepoUrlError::UserStartsWithDash);
    }
    Ok(userinfo.to_owned())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_port(host_port: &str) -> Result<(&str, Option<u16>), RepoUrlError> {
    match host_port.rsplit_once(':') {
        // A `:` inside brackets is part of an IPv6 address, not a port.
        Some((host, port)) if !port.contains(']') => {
            let number = port
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| port.parse::<u16>().ok())
                .flatten()
                .filter(|&p| p > 0)
                .ok_or(RepoUrlError::BadPort)?;
            Ok((host, Some(number)))
        }
        _ => Ok((host_port, None)),
    }
}

fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

fn check_host(host: &str) -> Result<(), RepoUrlError> {
    if host.is_empty() {
        return Err(RepoUrlError::NoHost);
    }
    if host.starts_with('-') {
        return Err(RepoUrlError::HostStartsWithDash);
    }
    if !is_valid_registry_host(host) {
        return Err(RepoUrlError::BadHost);
    }
    Ok(())
}

/// `user@host:path`, where no `/` comes before the first `:`.
fn parse_scp_like(text: &str) -> Result<RepoUrl, RepoUrlError> {
    if text.starts_with(['/', '.', '~']) {
        return Err(RepoUrlError::Local);
    }
    let Some((user_host, path)) = text.split_once(':') else {
        return Err(RepoUrlError::NotSupported);
    };
    if user_host.contains('/') {
        return Err(RepoUrlError::NotSupported);
    }
    let Some((user, host)) = user_host.rsplit_once('@') else {
        return Err(if text.contains('@') {
            // `user:password@host:path`: the first `:` is inside the user info.
            RepoUrlError::EmbedsCredentials
        } else {
            RepoUrlError::ScpWithoutUser
        });
    };
    if user.is_empty() {
        return Err(RepoUrlError::ScpEmptyUser);
    }
    check_host(host)?;
    if user.starts_with('-') {
        return Err(RepoUrlError::UserStartsWithDash);
    }
    if path.is_empty() {
        return Err(RepoUrlError::NoScpPath);
    }
    Ok(RepoUrl {
        text: text.to_owned(),
        transport: Transport::Ssh,
        scp_like: true,
        user: Some(user.to_owned()),
        host: host.to_owned(),
        port: None,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every case of validate.rs's `repo_urls`.
    #[test]
    fn refuses_with_the_reason() {
        let forms = FORMS;
        let cases = [
            ("", "empty".to_owned()),
            (
                "http://git.example.com/x.git",
                "plain http is not allowed; use https://".into(),
            ),
            (
                "file:///srv/git/x.git",
                "local repositories are not allowed; workers must not read their own disk".into(),
            ),
            (
                "/srv/git/x.git",
                "local repositories are not allowed; workers must not read their own disk".into(),
            ),
            (
                "https://user:pass@git.example.com/x.git",
                "embeds credentials; put them in repo.auth".into(),
            ),
            (
                "https://token@git.example.com/x.git",
                "embeds credentials; put them in repo.auth".into(),
            ),
            (
                "ssh://git:pass@git.example.com/x.git",
                "embeds credentials; put them in repo.auth".into(),
            ),
            (
                "git:pass@git.example.com:x.git",
                "embeds credentials; put them in repo.auth".into(),
            ),
            (
                "ftp://git.example.com/x.git",
                format!("unsupported scheme \"ftp\"; {forms}"),
            ),
            (
                "git.example.com:team/x.git",
                format!("scp-like URL without a user; {forms}"),
            ),
            (
                "git.example.com/x.git",
                format!("not a supported URL; {forms}"),
            ),
            (
                "git@git.example.com:",
                "no repository path after the \":\"".into(),
            ),
            (
                "ssh://git@git.example.com",
                "no repository path after the host".into(),
            ),
            (
                "https://git.example.com/",
                "no repository path after the host".into(),
            ),
            (
                "ssh://git@git.example.com:0/x",
                "port must be a number from 1 to 65535".into(),
            ),
            (
                "ssh://git@git.example.com:99999/x",
                "port must be a number from 1 to 65535".into(),
            ),
            (
                "ssh://git@git.example.com:/x",
                "port must be a number from 1 to 65535".into(),
            ),
            (
                "ssh://-oProxyCommand=x/x",
                "host must not start with \"-\"".into(),
            ),
            ("ssh://-o@host/x", "user must not start with \"-\"".into()),
            (
                "ssh://git@bad_host/x",
                "host is not a valid host name or IP address".into(),
            ),
            (
                "ssh://git@host/x y",
                "contains whitespace or control characters".into(),
            ),
            // From worker/src/git.rs: what its lenient parser called local
            // or other transports.
            (
                "./app",
                "local repositories are not allowed; workers must not read their own disk".into(),
            ),
            ("dir/with:colon", format!("not a supported URL; {forms}")),
            (
                "git://host/app",
                format!("unsupported scheme \"git\"; {forms}"),
            ),
            ("@host:x", "scp-like URL with an empty user".into()),
            ("ssh://@host/x", "empty user before \"@\"".into()),
        ];
        for (url, reason) in cases {
            let error = RepoUrl::parse(url).expect_err(url);
            assert_eq!(error.to_string(), reason, "{url}");
        }
    }

    #[test]
    fn accepts_the_three_forms() {
        for url in [
            "ssh://git@git.example.com:2222/srv/x.git",
            "ssh://git.example.com/x",
            "ssh://git@[::1]:22/x",
            "git@github.com:team/x.git",
            "https://github.com/team/x.git",
            "https://localhost:8443/x",
            "git+ssh://git@host/x",
        ] {
            let parsed = RepoUrl::parse(url).expect(url);
            assert_eq!(parsed.to_string(), url);
            assert_eq!(parsed.as_str(), url);
        }
    }

    // From worker/src/git.rs (`parses_clone_urls_and_drops_credentials_from_display`),
    // minus the URLs with credentials, which are refused here.
    #[test]
    fn parts_and_host_port() {
        let url = RepoUrl::parse("ssh://git@127.0.0.1:2222/srv/app.git").unwrap();
        assert_eq!(url.transport(), Transport::Ssh);
        assert_eq!(url.user(), Some("git"));
        assert_eq!((url.host(), url.port()), ("127.0.0.1", Some(2222)));
        assert_eq!(url.path(), "/srv/app.git");
        assert_eq!(url.host_port(), "127.0.0.1:2222");
        assert_eq!(url.known_hosts_name(), "[127.0.0.1]:2222");
        assert!(!url.is_scp_like());

        let url = RepoUrl::parse("git@github.com:team/app.git").unwrap();
        assert_eq!(url.transport(), Transport::Ssh);
        assert!(url.is_scp_like());
        assert_eq!((url.host(), url.port()), ("github.com", None));
        assert_eq!(url.path(), "team/app.git");
        assert_eq!(url.to_string(), "git@github.com:team/app.git");
        assert_eq!(url.host_port(), "github.com:22");
        assert_eq!(url.known_hosts_name(), "github.com");

        let url = RepoUrl::parse("https://example.com:8443/app.git").unwrap();
        assert_eq!(url.transport(), Transport::Https);
        assert_eq!(url.user(), None);
        assert_eq!(url.host_port(), "example.com:8443");
        assert_eq!(
            RepoUrl::parse("https://example.com/a")
                .unwrap()
                .port_or_default(),
            443
        );

        let url = RepoUrl::parse("ssh://me@[::1]:2222/app.git").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", Some(2222)));
        assert_eq!(url.host_port(), "[::1]:2222");
        assert_eq!(url.known_hosts_name(), "[::1]:2222");

        let url = RepoUrl::parse("ssh://Git.Example.COM/x").unwrap();
        assert_eq!(url.user(), None);
        assert_eq!(url.known_hosts_name(), "git.example.com");
    }

    #[test]
    fn known_hosts_names() {
        assert_eq!(known_hosts_name("GitLab.com", 22), "gitlab.com");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn errors_never_echo_credentials() {
        for url in [
            "https://user:s3cret@git.example.com/x.git",
            "ssh://git:s3cret@git.example.com/x.git",
            "git:s3cret@git.example.com:x.git",
        ] {
            let message = RepoUrl::parse(url).unwrap_err().to_string();
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
