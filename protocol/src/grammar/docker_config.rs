//! `registry_auth.config`: base64 of a Docker `config.json` (or of just its
//! `auths` map), as `~/.docker/config.json` holds it after `docker login`.
//! Parsed into the credentials per registry host; keys are normalized as
//! the Docker CLI does (`https://` and paths dropped, Docker Hub's names
//! folded into `docker.io`).
//!
//! Errors name registry hosts (the map's keys), never a credential.

use super::base64;
use crate::Secret;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use thiserror::Error;
use zeroize::Zeroizing;

/// Host names Docker Hub is known by in `config.json` keys.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// What every Docker Hub key normalizes to.
pub const DOCKER_HUB: &str = "docker.io";
/// The string fields of an entry.
const STRING_FIELDS: [&str; 4] = ["auth", "username", "password", "identitytoken"];

/// Why the config cannot be used. Names hosts, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DockerConfigError {
    /// The config is empty.
    #[error("empty")]
    Empty,
    /// The config is not base64.
    #[error("not valid base64")]
    NotBase64,
    /// The decoded bytes are not JSON.
    #[error("not base64 of a JSON document")]
    NotJson,
    /// The JSON is not an object.
    #[error("not a Docker config.json: expected an object with an \"auths\" map")]
    NotAnObject,
    /// `auths` is there but not an object.
    #[error("\"auths\" is not an object")]
    AuthsNotAnObject,
    /// `auths` (or the bare map) is empty.
    #[error("\"auths\" holds no registry")]
    NoRegistry,
    /// An entry is not an object.
    #[error("auths[{0:?}] is not an object; expected {{\"auth\": \"<base64 of user:password>\"}}")]
    EntryNotAnObject(String),
    /// A field of an entry is not a string.
    #[error("auths[{host:?}].{field} is not a string")]
    FieldNotAString {
        /// The entry's key.
        host: String,
        /// `auth`, `username`, `password` or `identitytoken`.
        field: &'static str,
    },
    /// An `auth` field is not base64 of `user:password`.
    #[error("auths[{0:?}].auth is not base64 of user:password")]
    BadAuth(String),
}

/// The credentials of one registry. Any part may be absent (a `config.json`
/// entry may be empty when a credential helper holds the secret).
#[derive(Debug, Clone, Default)]
pub struct RegistryCredentials {
    /// The user name: from `auth`, else `username`.
    pub username: Option<String>,
    /// The password or token: from `auth`, else `password`.
    pub password: Option<Secret>,
    /// `identitytoken`, an OAuth refresh token.
    pub identity_token: Option<Secret>,
    /// The `auth` field as written (base64 of `user:password`), kept so
    /// that masking finds it when a build prints it.
    pub auth: Option<Secret>,
}

impl RegistryCredentials {
    /// Every credential value in clear text, for masking: `auth`,
    /// password, identity token.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.auth, &self.password, &self.identity_token]
            .into_iter()
            .flatten()
            .map(Secret::expose)
    }
}

/// The `auths` of a Docker config, by normalized registry host.
#[derive(Debug, Clone, Default)]
pub struct DockerAuths {
    by_host: BTreeMap<String, RegistryCredentials>,
}

impl DockerAuths {
    /// Decodes `base64_config` and reads its `auths` (or the bare map).
    /// When two keys normalize to the same host, the first in key order
    /// wins.
    pub fn parse(base64_config: &Secret) -> Result<Self, DockerConfigError> {
        let encoded = base64_config.expose();
        if encoded.is_empty() {
            return Err(DockerConfigError::Empty);
        }
        let bytes =
            Zeroizing::new(base64::decode(encoded).map_err(|_| DockerConfigError::NotBase64)?);
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| DockerConfigError::NotJson)?;
        let Value::Object(object) = value else {
            return Err(DockerConfigError::NotAnObject);
        };
        let auths = match object.get("auths") {
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(DockerConfigError::AuthsNotAnObject),
            None => &object,
        };
        if auths.is_empty() {
            return Err(DockerConfigError::NoRegistry);
        }
        let mut by_host = BTreeMap::new();
        for (key, entry) in auths {
            let credentials = parse_entry(key, entry)?;
            by_host
                .entry(normalize_registry(key).to_owned())
                .or_insert(credentials);
        }
        Ok(Self { by_host })
    }

    /// The credentials for `registry` (`host[:port]`, `docker.io`, or any
    /// form a config key may take).
    pub fn get(&self, registry: &str) -> Option<&RegistryCredentials> {
        self.by_host.get(normalize_registry(registry))
    }

    /// Every registry host (normalized) and its credentials.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RegistryCredentials)> {
        self.by_host.iter().map(|(host, c)| (host.as_str(), c))
    }

    /// Every credential value in the config, for masking.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.by_host.values().flat_map(RegistryCredentials::secrets)
    }
}

fn parse_entry(host: &str, entry: &Value) -> Result<RegistryCredentials, DockerConfigError> {
    let Value::Object(entry) = entry else {
        return Err(DockerConfigError::EntryNotAnObject(host.to_owned()));
    };
    for field in STRING_FIELDS {
        if entry.get(field).is_some_and(|v| !v.is_string()) {
            return Err(DockerConfigError::FieldNotAString {
                host: host.to_owned(),
                field,
            });
        }
    }
    let text = |field: &str| string_field(entry, field);
    let (username, password) = match text("auth") {
        Some(auth) => {
            let (user, password) =
                split_basic(&auth).ok_or_else(|| DockerConfigError::BadAuth(host.to_owned()))?;
            (Some(user), Some(password))
        }
        None => (text("username"), text("password").map(Secret::new)),
    };
    Ok(RegistryCredentials {
        username,
        password,
        identity_token: text("identitytoken").map(Secret::new),
        auth: text("auth").map(Secret::new),
    })
}

fn string_field(entry: &Map<String, Value>, field: &str) -> Option<String> {
    entry.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// An `auth` field: base64 of `user:password` (the password may hold `:`).
fn split_basic(auth: &str) -> Option<(String, Secret)> {
    let decoded = Zeroizing::new(base64::decode(auth).ok()?);
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), Secret::new(password)))
}

/// A registry as a config key or `server` names it, as a host:
/// `https://host:port/v1/` is `host:port`; Docker Hub's names are
/// [`DOCKER_HUB`].
pub(crate) fn normalize_registry(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    if DOCKER_HUB_HOSTS.contains(&host) {
        DOCKER_HUB
    } else {
        host
    }
}

/// Whether two registry names (config keys, `server`, image registries)
/// name the same registry.
pub(crate) fn same_registry(a: &str, b: &str) -> bool {
    normalize_registry(a) == normalize_registry(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::base64::encode;

    fn parse(json: &str) -> Result<DockerAuths, DockerConfigError> {
        DockerAuths::parse(&Secret::new(encode(json)))
    }

    // Cases of validate.rs's `registry_docker_config`.
    #[test]
    fn accepts_a_config_or_its_auths_map() {
        let auth = encode("ci:not-a-real-password");
        for fine in [
            format!(r#"{{"auths": {{"registry.example.com:5000": {{"auth": "{auth}"}}}}}}"#),
            format!(r#"{{"registry.example.com": {{"auth": "{auth}"}}}}"#),
            r#"{"auths": {"r.example.com": {"username": "u", "password": "p"}}, "credsStore": "x"}"#
                .into(),
        ] {
            assert!(parse(&fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn refuses_with_the_reason() {
        let cases = [
            (String::new(), "empty"),
            ("%%%".into(), "not valid base64"),
            (encode("{not json"), "not base64 of a JSON document"),
            (
                encode("[1]"),
                "not a Docker config.json: expected an object with an \"auths\" map",
            ),
            (encode(r#"{"auths": []}"#), "\"auths\" is not an object"),
            (encode(r#"{"auths": {}}"#), "\"auths\" holds no registry"),
            (
                encode(r#"{"auths": {"r.example.com": "x"}}"#),
                "auths[\"r.example.com\"] is not an object; expected {\"auth\": \"<base64 of user:password>\"}",
            ),
            (
                encode(r#"{"auths": {"r.example.com": {"auth": 5}}}"#),
                "auths[\"r.example.com\"].auth is not a string",
            ),
            (
                encode(r#"{"auths": {"r.example.com": {"identitytoken": []}}}"#),
                "auths[\"r.example.com\"].identitytoken is not a string",
            ),
            (
                encode(r#"{"auths": {"r.example.com": {"auth": "c2VjcmV0"}}}"#),
                "auths[\"r.example.com\"].auth is not base64 of user:password",
            ),
            // From worker/src/registry_auth.rs: garbage, content not echoed.
            (encode("topsecret"), "not base64 of a JSON document"),
        ];
        for (text, reason) in cases {
            let error = DockerAuths::parse(&Secret::new(text.clone())).unwrap_err();
            assert_eq!(error.to_string(), reason, "{text}");
        }
    }

    // From worker/src/registry_auth.rs.
    #[test]
    fn entry_is_matched_by_host() {
        let user_pass = encode("alice:pw:with:colons");
        let auths = parse(&format!(
            r#"{{"auths":{{"https://127.0.0.1:5001/v1/":{{"auth":"{user_pass}"}},"docker.io":{{"auth":"eDp5"}}}}}}"#
        ))
        .unwrap();
        let creds = auths.get("127.0.0.1:5001").expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("alice"));
        assert_eq!(
            creds.password.as_ref().map(Secret::expose),
            Some("pw:with:colons")
        );
        let hub = auths.get("index.docker.io").expect("docker hub");
        assert_eq!(hub.username.as_deref(), Some("x"));
        assert!(auths.get("other:5000").is_none());
        let hosts: Vec<&str> = auths.iter().map(|(host, _)| host).collect();
        assert_eq!(hosts, ["127.0.0.1:5001", "docker.io"]);
    }

    // From worker/src/registry_auth.rs.
    #[test]
    fn bare_auths_map_and_docker_hub_aliases() {
        let auths =
            parse(r#"{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}"#).unwrap();
        let creds = auths.get("docker.io").expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("bob"));
        assert_eq!(creds.password.as_ref().map(Secret::expose), Some("pw"));
        assert!(creds.auth.is_none());
    }

    // From worker/src/registry_auth.rs.
    #[test]
    fn every_password_inside_is_a_secret() {
        let basic = encode("ci:hidden-one");
        let auths = parse(&format!(
            r#"{{"auths": {{"a:5000": {{"auth": "{basic}"}},
                "b:5000": {{"username": "u", "password": "hidden-two", "identitytoken": "tok-three"}}}}}}"#
        ))
        .unwrap();
        let mut secrets: Vec<&str> = auths.secrets().collect();
        secrets.sort();
        assert_eq!(
            secrets,
            [basic.as_str(), "hidden-one", "hidden-two", "tok-three"]
        );
        let debug = format!("{auths:?}");
        for secret in secrets {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn normalizes_registry_names() {
        for (key, host) in [
            (
                "https://registry.example.com:5000/v1/",
                "registry.example.com:5000",
            ),
            ("http://r.example.com", "r.example.com"),
            ("r.example.com/some/path", "r.example.com"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
        ] {
            assert_eq!(normalize_registry(key), host, "{key}");
        }
        assert!(same_registry("https://index.docker.io/v1/", "docker.io"));
        assert!(!same_registry("other.example:443", "127.0.0.1:5001"));
    }

    #[test]
    fn the_first_of_two_keys_for_one_host_wins() {
        let auths = parse(
            r#"{"https://r.example.com/v2/": {"username": "b"}, "r.example.com": {"username": "a"}}"#,
        )
        .unwrap();
        // Key order: "https://..." sorts before "r.example.com".
        assert_eq!(
            auths.get("r.example.com").unwrap().username.as_deref(),
            Some("b")
        );
    }
}
