//! Docker image references: the grammar of `distribution/reference`, which
//! `docker pull`, `docker tag` and `docker push` accept.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain "/"] path
//! domain           := host [":" port]
//! host             := domain-name | IPv4 | "[" IPv6 "]"
//! domain-name      := component ("." component)*   component: [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path             := path-component ("/" path-component)*
//! path-component   := [a-z0-9]+ (separator [a-z0-9]+)*
//! separator        := [._] | "__" | "-"+
//! tag              := [\w][\w.-]{0,127}
//! digest           := "sha256:" 64 hex | "sha384:" 96 hex | "sha512:" 128 hex   (lowercase)
//! ```
//!
//! The first `/`-separated component of a name is its registry (domain) when
//! it contains `.` or `:`, is `localhost`, or has an uppercase letter, as in
//! Docker's `ParseNormalizedNamed`; otherwise the name is on Docker Hub
//! (`docker.io`). A name is at most 255 characters, and a name that is
//! exactly 64 lowercase hex characters is refused (it would be taken for an
//! image id).
//!
//! One deliberate difference: when the first component is taken as the
//! registry it must be a valid `host[:port]`. Docker would silently fall
//! back to reading e.g. `my_host.com/app` as a Docker Hub path, and then push
//! somewhere other than where the job author meant.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use thiserror::Error;

/// The registry host of names without one: Docker Hub.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The longest name (registry and path, without tag or digest) Docker accepts.
pub(crate) const NAME_MAX_LEN: usize = 255;

/// Docker Hub's legacy host name, normalized to [`DEFAULT_REGISTRY`].
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";

static TAG: LazyLock<Regex> = LazyLock::new(|| {
    // `\w` is spelled out: in Go's RE2 it is ASCII, in Rust's regex Unicode.
    Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("tag regex")
});

static PATH_COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("path component regex")
});

static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!(r"{component}(?:\.{component})*");
    let ipv6 = r"\[[a-fA-F0-9:]+\]";
    Regex::new(&format!(r"^(?:{domain_name}|{ipv6})(?::[0-9]+)?$")).expect("domain regex")
});

static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-f0-9]{64}$").expect("identifier regex"));

/// Why a string is not a valid image reference or repository. The messages
/// say what is wrong in words a job author can act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    /// The string is empty.
    #[error("empty")]
    Empty,
    /// A tag or digest with nothing before it (`:latest`, `@sha256:…`).
    #[error("no repository name before the tag or digest")]
    MissingName,
    /// The name (registry and path) is longer than 255 characters.
    #[error("the name is {len} characters; at most 255 are allowed")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// The name is 64 lowercase hex characters, which Docker reserves for image ids.
    #[error("a 64-character hexadecimal name is reserved for image ids")]
    HexName,
    /// The registry part is not a host name, IPv4 or `[IPv6]` address with an optional port.
    #[error(
        "registry {0:?} is not a valid host[:port] (a host name, IPv4 address or [IPv6] address)"
    )]
    InvalidRegistry(String),
    /// Two slashes in a row, or a slash at the end.
    #[error("empty path component (\"//\" or a trailing \"/\")")]
    EmptyPathComponent,
    /// A path component has uppercase letters.
    #[error("path component {0:?} must be lowercase")]
    Uppercase(String),
    /// A path component has characters or separators the grammar does not allow.
    #[error(
        "path component {0:?} must be lowercase letters and digits separated by \".\", \"_\", \"__\" or dashes"
    )]
    InvalidPathComponent(String),
    /// The tag does not match `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error(
        "invalid tag: up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\""
    )]
    InvalidTag,
    /// The digest is not `sha256:`, `sha384:` or `sha512:` with the matching
    /// number of lowercase hex digits.
    #[error(
        "invalid digest: expected sha256: and 64 lowercase hex digits (or sha384: 96, sha512: 128)"
    )]
    InvalidDigest,
    /// A repository was expected but the string has a `:tag`.
    #[error("contains a tag")]
    ContainsTag,
    /// A repository was expected but the string has an `@digest`.
    #[error("contains a digest")]
    ContainsDigest,
}

/// A repository: an image name without tag or digest, as in
/// `registry.example.com:5000/team/app` or `library/debian`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    /// The registry `host[:port]` exactly as written, or `None` when the name
    /// has none and lives on Docker Hub.
    pub domain: Option<String>,
    /// The path after the registry, as written (Docker Hub's implicit
    /// `library/` is not added).
    pub path: String,
}

impl Repository {
    /// The registry `host[:port]` to push to and log in at: the domain, with
    /// `index.docker.io` and no domain at all both meaning [`DEFAULT_REGISTRY`].
    pub fn registry_host(&self) -> &str {
        match self.domain.as_deref() {
            None | Some(LEGACY_DEFAULT_REGISTRY) => DEFAULT_REGISTRY,
            Some(domain) => domain,
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{domain}/{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// A full image reference: a repository with an optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The repository.
    pub repository: Repository,
    /// The tag after `:`, if any.
    pub tag: Option<String>,
    /// The digest after `@` (`sha256:…`), if any.
    pub digest: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `tag` is a valid Docker tag: `[\w][\w.-]{0,127}` with `\w` ASCII
/// (letters, digits, `_`).
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    TAG.is_match(tag)
}

/// Parses a full image reference, `name[:tag][@digest]`.
pub fn parse_reference(reference: &str) -> Result<Reference, ReferenceError> {
    if reference.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if IDENTIFIER.is_match(reference) {
        return Err(ReferenceError::HexName);
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (reference, None),
    };
    // A tag is after the last `:` that follows the last `/`: a `:` before a
    // `/` belongs to the registry's port.
    let last_slash = name_and_tag.rfind('/');
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        _ => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err(ReferenceError::MissingName);
    }
    let repository = parse_name(name)?;
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag);
        }
    }
    if let Some(digest) = digest {
        if !is_valid_digest(digest) {
            return Err(ReferenceError::InvalidDigest);
        }
    }
    Ok(Reference {
        repository,
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Parses a repository: an image name WITHOUT tag or digest, such as
/// `image.repository`. A tag or digest is an error of its own
/// ([`ReferenceError::ContainsTag`], [`ReferenceError::ContainsDigest`]) so
/// the caller can say where it belongs instead.
pub(crate) fn parse_repository(repository: &str) -> Result<Repository, ReferenceError> {
    let reference = parse_reference(repository)?;
    if reference.digest.is_some() {
        return Err(ReferenceError::ContainsDigest);
    }
    if reference.tag.is_some() {
        return Err(ReferenceError::ContainsTag);
    }
    Ok(reference.repository)
}

/// The registry `host[:port]` of a repository (or reference), as Docker
/// picks it: the first path component when it looks like a host, otherwise
/// `docker.io`. Defined for any string; an invalid repository yields the
/// registry Docker would try.
pub fn registry_host(repository: &str) -> String {
    let name = repository.split('@').next().unwrap_or_default();
    match split_domain(name).0 {
        None | Some(LEGACY_DEFAULT_REGISTRY) => DEFAULT_REGISTRY.to_owned(),
        Some(domain) => domain.to_owned(),
    }
}

/// Whether `host` is a registry `host[:port]`: a host name, IPv4 address or
/// `[IPv6]` address with an optional numeric port.
pub(crate) fn is_valid_registry_host(host: &str) -> bool {
    DOMAIN.is_match(host)
}

/// Splits a name into its domain (when the first component is one, by
/// Docker's rules) and the rest.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_name(name: &str) -> Result<Repository, ReferenceError> {
    if name.len() > NAME_MAX_LEN {
        return Err(ReferenceError::TooLong { len: name.len() });
    }
    let (domain, path) = split_domain(name);
    if let Some(domain) = domain {
        if !is_valid_registry_host(domain) {
            return Err(ReferenceError::InvalidRegistry(domain.to_owned()));
        }
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ReferenceError::EmptyPathComponent);
        }
        if !PATH_COMPONENT.is_match(component) {
            return Err(
                if PATH_COMPONENT.is_match(&component.to_ascii_lowercase()) {
                    ReferenceError::Uppercase(component.to_owned())
                } else {
                    ReferenceError::InvalidPathComponent(component.to_owned())
                },
            );
        }
    }
    Ok(Repository {
        domain: domain.map(str::to_owned),
        path: path.to_owned(),
    })
}

/// `algorithm:hex` for the algorithms Docker registers, lowercase hex of the
/// algorithm's length.
fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// Input, registry host, path, tag, digest.
    type Case = (
        String,
        &'static str,
        String,
        Option<&'static str>,
        Option<String>,
    );

    fn digest(name: &str) -> String {
        format!("{name}@{SHA256}")
    }

    #[test]
    fn docker_reference_parse_cases() {
        // (input, registry host, path, tag, digest): distribution/reference's
        // TestReferenceParse, with the domain as ParseNormalizedNamed splits it.
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let long_name = format!("{}a", "a/".repeat(127));
        let cases: Vec<Case> = vec![
            (
                "test_com".into(),
                "docker.io",
                "test_com".into(),
                None,
                None,
            ),
            (
                "test.com:tag".into(),
                "docker.io",
                "test.com".into(),
                Some("tag"),
                None,
            ),
            (
                "test.com:5000".into(),
                "docker.io",
                "test.com".into(),
                Some("5000"),
                None,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "test:5000/repo:tag".into(),
                "test:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                digest("test:5000/repo"),
                "test:5000",
                "repo".into(),
                None,
                Some(SHA256.into()),
            ),
            (
                digest("test:5000/repo:tag"),
                "test:5000",
                "repo".into(),
                Some("tag"),
                Some(SHA256.into()),
            ),
            (
                "lowercase:Uppercase".into(),
                "docker.io",
                "lowercase".into(),
                Some("Uppercase"),
                None,
            ),
            (
                format!("{long_name}:tag-puts-this-over-max"),
                "docker.io",
                long_name.clone(),
                Some("tag-puts-this-over-max"),
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                "sub-dom1.foo.com",
                "bar/baz/quux".into(),
                Some("some-long-tag"),
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "test.example.com/my-app".into(),
                Some("test.example.com"),
                None,
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com".into(),
                "xn--n3h.com",
                "myimage".into(),
                Some("xn--n3h.com"),
                None,
            ),
            (
                format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"),
                "xn--7o8h.com",
                "myimage".into(),
                Some("xn--7o8h.com"),
                Some(sha512.clone()),
            ),
            (
                "foo_bar.com:8080".into(),
                "docker.io",
                "foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "docker.io",
                "foo/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "192.168.1.1".into(),
                "docker.io",
                "192.168.1.1".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:tag".into(),
                "docker.io",
                "192.168.1.1".into(),
                Some("tag"),
                None,
            ),
            (
                "192.168.1.1:5000".into(),
                "docker.io",
                "192.168.1.1".into(),
                Some("5000"),
                None,
            ),
            (
                "192.168.1.1/repo".into(),
                "192.168.1.1",
                "repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo".into(),
                "192.168.1.1:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                "192.168.1.1:5000",
                "repo".into(),
                Some("5050"),
                None,
            ),
            (
                "[2001:db8::1]/repo".into(),
                "[2001:db8::1]",
                "repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                "[2001:db8:1:2:3:4:5:6]",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "[2001:db8::1]:5000/repo".into(),
                "[2001:db8::1]:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8::1]:5000/repo:tag".into(),
                "[2001:db8::1]:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                digest("[2001:db8::1]:5000/repo:tag"),
                "[2001:db8::1]:5000",
                "repo".into(),
                Some("tag"),
                Some(SHA256.into()),
            ),
            (
                "[2001:db8::]:5000/repo".into(),
                "[2001:db8::]:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000",
                "repo".into(),
                None,
                None,
            ),
        ];
        for (input, host, path, tag, digest) in cases {
            let parsed = parse_reference(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.repository.registry_host(), host, "{input}");
            assert_eq!(registry_host(&input), host, "{input}");
            assert_eq!(parsed.repository.path, path, "{input}");
            assert_eq!(parsed.tag.as_deref(), tag, "{input}");
            assert_eq!(parsed.digest, digest, "{input}");
            assert_eq!(parsed.to_string(), input, "round trip");
            assert!(parse_reference(&input).is_ok(), "{input}");
        }
    }

    #[test]
    fn docker_reference_parse_failures() {
        // distribution/reference's failing TestReferenceParse cases; `None`
        // where Docker only says "invalid reference format".
        let cases: Vec<(String, Option<ReferenceError>)> = vec![
            (String::new(), Some(ReferenceError::Empty)),
            (":justtag".into(), Some(ReferenceError::MissingName)),
            (format!("@{SHA256}"), Some(ReferenceError::MissingName)),
            (
                "repo@sha256:ffffffffffffffffffffffffffffffffff".into(),
                Some(ReferenceError::InvalidDigest),
            ),
            (
                format!("validname@invaliddigest:{}", "f".repeat(64)),
                Some(ReferenceError::InvalidDigest),
            ),
            (
                "Uppercase:tag".into(),
                Some(ReferenceError::Uppercase("Uppercase".into())),
            ),
            (
                "test:5000/Uppercase/lowercase:tag".into(),
                Some(ReferenceError::Uppercase("Uppercase".into())),
            ),
            (
                format!("{}a:tag", "a/".repeat(128)),
                Some(ReferenceError::TooLong { len: 257 }),
            ),
            (
                "aa/asdf$$^/aa".into(),
                Some(ReferenceError::InvalidPathComponent("asdf$$^".into())),
            ),
            ("[2001:db8::1]".into(), None),
            ("[2001:db8::1]:5000".into(), None),
            ("[2001:db8::1]:tag".into(), None),
            (
                "[fe80::1%eth0]:5000/repo".into(),
                Some(ReferenceError::InvalidRegistry(
                    "[fe80::1%eth0]:5000".into(),
                )),
            ),
            ("[fe80::1%@invalidzone]:5000/repo".into(), None),
            ("app:-tag".into(), Some(ReferenceError::InvalidTag)),
            ("app@sha256:".into(), Some(ReferenceError::InvalidDigest)),
            (
                format!("app@sha256:{}", "F".repeat(64)),
                Some(ReferenceError::InvalidDigest),
            ),
            (
                "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a".into(),
                Some(ReferenceError::HexName),
            ),
        ];
        for (input, expected) in cases {
            let result = parse_reference(&input);
            match expected {
                Some(expected) => assert_eq!(result, Err(expected), "{input}"),
                None => assert!(result.is_err(), "{input}: {result:?}"),
            }
            assert!(parse_reference(&input).is_err(), "{input}");
        }
    }

    #[test]
    fn docker_normalized_names() {
        // distribution/reference's TestValidateReferenceName and
        // TestValidateRemoteName (ParseNormalizedNamed).
        let valid = [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
            "docker-rules/docker",
            "docker---rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
            "dock__er/docker",
            "localhost/debian",
            "localhost:5000/team/app",
        ];
        for name in valid {
            assert!(
                parse_repository(name).is_ok(),
                "{name}: {:?}",
                parse_repository(name)
            );
        }
        let invalid = [
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
        ];
        for name in invalid {
            assert!(parse_repository(name).is_err(), "{name} should be invalid");
        }
    }

    #[test]
    fn repository_rejects_tag_and_digest() {
        assert_eq!(
            parse_repository("app:1.0"),
            Err(ReferenceError::ContainsTag)
        );
        assert_eq!(
            parse_repository("localhost:5000/app:1.0"),
            Err(ReferenceError::ContainsTag)
        );
        assert_eq!(
            parse_repository(&digest("app")),
            Err(ReferenceError::ContainsDigest)
        );
        assert_eq!(
            parse_repository(&digest("app:1.0")),
            Err(ReferenceError::ContainsDigest)
        );
        // Docker reads a lone `host:port` as a name with a tag.
        assert_eq!(
            parse_repository("192.168.0.1:80"),
            Err(ReferenceError::ContainsTag)
        );
        let repo = parse_repository("registry.example.com:5000/team/app").unwrap();
        assert_eq!(repo.domain.as_deref(), Some("registry.example.com:5000"));
        assert_eq!(repo.path, "team/app");
        assert_eq!(repo.to_string(), "registry.example.com:5000/team/app");
    }

    #[test]
    fn registry_host_follows_docker() {
        for (repository, host) in [
            ("app", "docker.io"),
            ("team/app", "docker.io"),
            ("docker.io/team/app", "docker.io"),
            ("index.docker.io/library/debian", "docker.io"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app", "localhost:5000"),
            ("127.0.0.1:5000/team/app", "127.0.0.1:5000"),
            ("registry.example.com/app", "registry.example.com"),
            ("[::1]:5000/app", "[::1]:5000"),
            ("Foo/bar", "Foo"),
            ("test_com/foo", "docker.io"),
            ("localhost:5000", "docker.io"),
            (
                "registry.example.com/app@sha256:abc",
                "registry.example.com",
            ),
        ] {
            assert_eq!(registry_host(repository), host, "{repository}");
        }
    }

    #[test]
    fn docker_tags() {
        let max = "a".repeat(128);
        for tag in [
            "latest",
            "v1.2.3",
            "1.0-rc.1",
            "_x",
            "UPPER",
            "a__b",
            max.as_str(),
        ] {
            assert!(is_valid_tag(tag), "{tag}");
        }
        let too_long = "a".repeat(129);
        for tag in [
            "",
            ".hidden",
            "-dash",
            "has space",
            "a/b",
            "a:b",
            "é",
            too_long.as_str(),
        ] {
            assert!(!is_valid_tag(tag), "{tag}");
        }
    }

    #[test]
    fn registry_hosts() {
        for host in [
            "docker.io",
            "localhost",
            "localhost:5000",
            "10.0.0.1:443",
            "[::1]",
            "a-b.c",
        ] {
            assert!(is_valid_registry_host(host), "{host}");
        }
        for host in [
            "",
            "-a.com",
            "a-.com",
            "a_b.com",
            "host:port",
            "https://x.com",
            "x.com/v1",
        ] {
            assert!(!is_valid_registry_host(host), "{host}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            parse_repository("team//app").unwrap_err().to_string(),
            "empty path component (\"//\" or a trailing \"/\")"
        );
        assert_eq!(
            parse_repository("team/App").unwrap_err().to_string(),
            "path component \"App\" must be lowercase"
        );
        assert_eq!(
            parse_repository("my_host.com/app").unwrap_err().to_string(),
            "registry \"my_host.com\" is not a valid host[:port] (a host name, IPv4 address or [IPv6] address)"
        );
    }
}
