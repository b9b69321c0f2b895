//! Registry credentials in the form the Docker Engine API takes them. Which
//! credentials apply to which registry is the protocol's
//! ([`RegistryAuth::credentials_for`], parsed once by its grammar); this
//! module only turns them into bollard's [`DockerCredentials`].

use bollard::auth::DockerCredentials;
use buildbot_protocol::grammar::docker_config::{DockerAuths, RegistryCredentials};
use buildbot_protocol::{registry_host, Job, RegistryAuth};
use std::collections::HashMap;

/// Why the job's registry credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryAuthError {
    /// `registry_auth.config` is not base64 of a Docker config.json.
    #[error("registry_auth.config: {0}")]
    BadDockerConfig(String),
}

/// The credentials in `job`'s `registry_auth` for `registry` (a
/// `host[:port]`, or `docker.io`), or None when it holds none for that
/// registry. Basic auth without a server is for the job image's registry
/// only.
pub(crate) fn credentials_for(
    job: &Job,
    registry: &str,
) -> Result<Option<DockerCredentials>, RegistryAuthError> {
    let Some(auth) = &job.registry_auth else {
        return Ok(None);
    };
    let image_registry = registry_host(&job.image.repository);
    let credentials = auth
        .credentials_for(registry, &image_registry)
        .map_err(|e| RegistryAuthError::BadDockerConfig(e.to_string()))?;
    Ok(credentials.map(|c| for_engine(&c, registry)))
}

/// Credentials for every registry `auth` names, keyed by registry host, for
/// the build's base-image pulls (`X-Registry-Config`).
pub(crate) fn all_credentials(
    auth: Option<&RegistryAuth>,
    image_registry: &str,
) -> Result<HashMap<String, DockerCredentials>, RegistryAuthError> {
    let Some(auth) = auth else {
        return Ok(HashMap::new());
    };
    let all = auth
        .all_credentials(image_registry)
        .map_err(|e| RegistryAuthError::BadDockerConfig(e.to_string()))?;
    Ok(all
        .into_iter()
        .map(|(host, c)| {
            let engine = for_engine(&c, &host);
            (host, engine)
        })
        .collect())
}

/// Every credential value inside a docker config `registry_auth`, so that
/// masking finds each when a build prints it on its own. Empty for basic
/// auth (its password is the job's secret already) and for a config that
/// does not parse.
pub(crate) fn docker_config_secrets(auth: &RegistryAuth) -> Vec<String> {
    match auth.parse_docker_config() {
        Some(Ok(auths)) => secrets_of(&auths),
        _ => Vec::new(),
    }
}

fn secrets_of(auths: &DockerAuths) -> Vec<String> {
    auths.secrets().map(str::to_owned).collect()
}

/// The Engine API's form; the copy of the password lives as long as the
/// request that carries it.
fn for_engine(credentials: &RegistryCredentials, registry: &str) -> DockerCredentials {
    DockerCredentials {
        username: credentials.username.clone(),
        password: credentials.password.as_ref().map(|p| p.expose().to_owned()),
        identitytoken: credentials
            .identity_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildbot_protocol::grammar::base64;
    use buildbot_protocol::Secret;

    /// A job pushing to 127.0.0.1:5001 with `auth`.
    fn job(auth: RegistryAuth) -> Job {
        Job::new("s", "https://h/r.git", "main", "127.0.0.1:5001/app", ["v1"])
            .with_registry_auth(auth)
    }

    fn docker_config(json: &str) -> RegistryAuth {
        RegistryAuth::DockerConfig {
            config: Secret::new(base64::encode(json)),
        }
    }

    #[test]
    fn basic_without_server_applies_to_the_image_registry() {
        let auth = RegistryAuth::Basic {
            server: None,
            username: "u".into(),
            password: Secret::new("p"),
        };
        let creds = credentials_for(&job(auth.clone()), "127.0.0.1:5001").expect("valid");
        let creds = creds.expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.password.as_deref(), Some("p"));
        assert_eq!(creds.serveraddress.as_deref(), Some("127.0.0.1:5001"));
    }

    #[test]
    fn basic_without_server_is_never_sent_to_another_registry() {
        let auth = RegistryAuth::Basic {
            server: None,
            username: "u".into(),
            password: Secret::new("p"),
        };
        // E.g. a builder image on another registry than the job's image.
        assert!(credentials_for(&job(auth), "builders.example:443")
            .expect("valid")
            .is_none());
    }

    #[test]
    fn basic_for_another_server_does_not_apply() {
        let auth = RegistryAuth::Basic {
            server: Some("other.example:443".into()),
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert!(credentials_for(&job(auth.clone()), "127.0.0.1:5001")
            .expect("valid")
            .is_none());
    }

    #[test]
    fn docker_config_entry_is_matched_by_host() {
        let user_pass = base64::encode("alice:pw:with:colons");
        let json = format!(
            r#"{{"auths":{{"https://127.0.0.1:5001/v1/":{{"auth":"{user_pass}"}},"docker.io":{{"auth":"eDp5"}}}}}}"#
        );
        let creds = credentials_for(&job(docker_config(&json)), "127.0.0.1:5001")
            .expect("valid")
            .expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("alice"));
        assert_eq!(creds.password.as_deref(), Some("pw:with:colons"));
        let all = all_credentials(Some(&docker_config(&json)), "ignored").expect("valid");
        let mut hosts: Vec<&str> = all.keys().map(String::as_str).collect();
        hosts.sort_unstable();
        assert_eq!(hosts, ["127.0.0.1:5001", "docker.io"]);
    }

    #[test]
    fn bare_auths_map_and_docker_hub_aliases() {
        let json = r#"{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}"#;
        let creds = credentials_for(&job(docker_config(json)), "docker.io")
            .expect("valid")
            .expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("bob"));
    }

    #[test]
    fn garbage_config_is_a_clear_error_without_its_content() {
        let auth = RegistryAuth::DockerConfig {
            config: Secret::new(base64::encode("topsecret")),
        };
        let err = credentials_for(&job(auth.clone()), "x").expect_err("invalid");
        let message = err.to_string();
        assert!(message.starts_with("registry_auth.config: "), "{message}");
        assert!(!message.contains("topsecret"), "{message}");
    }

    #[test]
    fn every_password_inside_a_docker_config_is_a_secret() {
        let basic = base64::encode("ci:hidden-one");
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
