//! Registry credentials: picks, from a job's `registry_auth`, the credentials
//! for one registry host, in the form the Docker Engine API takes them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bollard::auth::DockerCredentials;
use buildbot_protocol::RegistryAuth;
use serde::Deserialize;
use std::collections::HashMap;

/// Host names Docker Hub is known by in `config.json` keys.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Why the job's registry credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryAuthError {
    /// `registry_auth.config` is not base64 of a Docker config.json.
    #[error("registry_auth.config: {0}")]
    BadDockerConfig(String),
}

/// One entry of a config.json `auths` map.
#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A whole config.json, of which only `auths` matters.
#[derive(Debug, Deserialize)]
struct DockerConfigFile {
    auths: HashMap<String, AuthEntry>,
}

/// The credentials in `auth` for `registry` (a `host[:port]`, or
/// `docker.io`), or None when it holds none for that registry.
pub(crate) fn credentials_for(
    auth: Option<&RegistryAuth>,
    registry: &str,
) -> Result<Option<DockerCredentials>, RegistryAuthError> {
    match auth {
        None => Ok(None),
        Some(RegistryAuth::Basic {
            server,
            username,
            password,
        }) => {
            let matches = server.as_deref().is_none_or(|s| same_registry(s, registry));
            Ok(matches.then(|| DockerCredentials {
                username: Some(username.clone()),
                password: Some(password.expose().to_owned()),
                serveraddress: Some(registry.to_owned()),
                ..Default::default()
            }))
        }
        Some(RegistryAuth::DockerConfig { config }) => {
            let auths = parse_auths(config.expose())?;
            auths
                .into_iter()
                .find(|(key, _)| same_registry(key, registry))
                .map(|(_, entry)| entry_credentials(entry, registry))
                .transpose()
        }
    }
}

/// Credentials for every registry `auth` names, keyed by registry host, for
/// the build's base-image pulls (`X-Registry-Config`).
pub(crate) fn all_credentials(
    auth: Option<&RegistryAuth>,
    image_registry: &str,
) -> Result<HashMap<String, DockerCredentials>, RegistryAuthError> {
    let mut all = HashMap::new();
    match auth {
        None => {}
        Some(RegistryAuth::Basic { server, .. }) => {
            let host = server.as_deref().unwrap_or(image_registry);
            if let Some(creds) = credentials_for(auth, host)? {
                all.insert(host.to_owned(), creds);
            }
        }
        Some(RegistryAuth::DockerConfig { config }) => {
            for (key, entry) in parse_auths(config.expose())? {
                let host = normalize(&key).to_owned();
                let creds = entry_credentials(entry, &host)?;
                all.insert(host, creds);
            }
        }
    }
    Ok(all)
}

/// Every credential value inside a docker config `registry_auth`: each
/// entry's `auth`, password and identity token, so that masking finds them
/// when a build prints one on its own. Empty for basic auth (its password is
/// the job's secret already) and for a config that does not parse.
pub(crate) fn docker_config_secrets(auth: &RegistryAuth) -> Vec<String> {
    let RegistryAuth::DockerConfig { config } = auth else {
        return Vec::new();
    };
    let Ok(auths) = parse_auths(config.expose()) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    for (registry, entry) in auths {
        secrets.extend(entry.auth.clone());
        secrets.extend(entry.identitytoken.clone());
        if let Ok(credentials) = entry_credentials(entry, &registry) {
            secrets.extend(credentials.password);
        }
    }
    secrets
}

/// Decodes the base64 config.json, or just its `auths` map.
fn parse_auths(base64_config: &str) -> Result<HashMap<String, AuthEntry>, RegistryAuthError> {
    let compact: String = base64_config
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|e| RegistryAuthError::BadDockerConfig(format!("not valid base64: {e}")))?;
    // Error messages say what is wrong without echoing the content.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| RegistryAuthError::BadDockerConfig("not a JSON document".into()))?;
    let auths = if value.get("auths").is_some() {
        serde_json::from_value::<DockerConfigFile>(value).map(|f| f.auths)
    } else {
        serde_json::from_value(value)
    };
    auths.map_err(|_| {
        RegistryAuthError::BadDockerConfig(
            "expected {\"auths\": {host: {auth}}} or the auths map".into(),
        )
    })
}

fn entry_credentials(
    entry: AuthEntry,
    registry: &str,
) -> Result<DockerCredentials, RegistryAuthError> {
    let (username, password) = match (entry.auth, entry.username, entry.password) {
        (Some(auth), _, _) => split_basic(&auth, registry)?,
        (None, username, password) => (username, password),
    };
    Ok(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken,
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    })
}

/// Splits an `auth` field: base64 of `user:password`.
fn split_basic(
    auth: &str,
    registry: &str,
) -> Result<(Option<String>, Option<String>), RegistryAuthError> {
    let invalid = || {
        RegistryAuthError::BadDockerConfig(format!(
            "auths[{registry}].auth is not base64 of user:password"
        ))
    };
    let decoded = STANDARD.decode(auth.trim()).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = text.split_once(':').ok_or_else(invalid)?;
    Ok((Some(user.to_owned()), Some(password.to_owned())))
}

/// Whether a config key or `server` value names `registry`.
fn same_registry(key: &str, registry: &str) -> bool {
    normalize(key) == normalize(registry)
}

/// `https://host:port/v1/` -> `host:port`; Docker Hub's names -> `docker.io`.
fn normalize(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    if DOCKER_HUB_HOSTS.contains(&host) {
        "docker.io"
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::Secret;

    fn docker_config(json: &str) -> RegistryAuth {
        RegistryAuth::DockerConfig {
            config: Secret::new(STANDARD.encode(json)),
        }
    }

    #[test]
    fn basic_without_server_applies_to_the_image_registry() {
        let auth = RegistryAuth::Basic {
            server: None,
            username: "u".into(),
            password: Secret::new("p"),
        };
        let creds = credentials_for(Some(&auth), "127.0.0.1:5001").expect("valid");
        let creds = creds.expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.serveraddress.as_deref(), Some("127.0.0.1:5001"));
    }

    #[test]
    fn basic_for_another_server_does_not_apply() {
        let auth = RegistryAuth::Basic {
            server: Some("other.example:443".into()),
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert!(credentials_for(Some(&auth), "127.0.0.1:5001")
            .expect("valid")
            .is_none());
    }

    #[test]
    fn docker_config_entry_is_matched_by_host() {
        let user_pass = STANDARD.encode("alice:pw:with:colons");
        let json = format!(
            r#"{{"auths":{{"https://127.0.0.1:5001/v1/":{{"auth":"{user_pass}"}},"docker.io":{{"auth":"eDp5"}}}}}}"#
        );
        let creds = credentials_for(Some(&docker_config(&json)), "127.0.0.1:5001")
            .expect("valid")
            .expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("alice"));
        assert_eq!(creds.password.as_deref(), Some("pw:with:colons"));
    }

    #[test]
    fn bare_auths_map_and_docker_hub_aliases() {
        let json = r#"{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}"#;
        let creds = credentials_for(Some(&docker_config(json)), "docker.io")
            .expect("valid")
            .expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("bob"));
    }

    #[test]
    fn garbage_config_is_a_clear_error_without_its_content() {
        let auth = RegistryAuth::DockerConfig {
            config: Secret::new(STANDARD.encode("topsecret")),
        };
        let err = credentials_for(Some(&auth), "x").expect_err("invalid");
        assert_eq!(err.to_string(), "registry_auth.config: not a JSON document");
    }

    #[test]
    fn every_password_inside_a_docker_config_is_a_secret() {
        let basic = STANDARD.encode("ci:hidden-one");
        let auth = docker_config(&format!(
            r#"{{"auths": {{"a:5000": {{"auth": "{basic}"}},
                "b:5000": {{"username": "u", "password": "hidden-two", "identitytoken": "tok-three"}}}}}}"#
        ));
        let mut secrets = docker_config_secrets(&auth);
        secrets.sort();
        assert_eq!(
            secrets,
            [basic.as_str(), "hidden-one", "hidden-two", "tok-three"]
        );
    }
}
