//! A job's text fields as the [`grammar`](crate::grammar)'s typed values:
//! the worker reads the same parse that validation checked. On a job that
//! passed [`Job::validate`](crate::Job::validate) every `parse_*` here
//! returns `Ok`; the `Result` remains for jobs built in code and not
//! validated.

use crate::grammar::docker_config::{same_registry, DockerAuths, DockerConfigError};
use crate::grammar::{
    KnownHosts, KnownHostsError, PathError, PrivateKeyError, RegistryCredentials, RelativePath,
    RepoUrl, RepoUrlError, SshPrivateKey,
};
use crate::{Build, Builder, RegistryAuth, Repo, RepoAuth};
use std::collections::BTreeMap;

impl Repo {
    /// `url`, parsed.
    pub fn parse_url(&self) -> Result<RepoUrl, RepoUrlError> {
        RepoUrl::parse(&self.url)
    }

    /// `known_hosts`, parsed; `None` when host keys are not pinned.
    pub fn parse_known_hosts(&self) -> Option<Result<KnownHosts, KnownHostsError>> {
        self.known_hosts.as_deref().map(KnownHosts::parse)
    }
}

impl RepoAuth {
    /// The SSH key (decoded) and passphrase; `None` for other auth.
    pub fn parse_ssh_key(&self) -> Option<Result<SshPrivateKey, PrivateKeyError>> {
        match self {
            RepoAuth::SshKey {
                private_key,
                passphrase,
            } => Some(SshPrivateKey::parse(private_key, passphrase.as_ref())),
            RepoAuth::None | RepoAuth::Https { .. } => None,
        }
    }
}

impl Build {
    /// `context`, relative to the checkout.
    pub fn parse_context(&self) -> Result<RelativePath, PathError> {
        RelativePath::parse(&self.context)
    }

    /// `dockerfile`, relative to the context.
    pub fn parse_dockerfile(&self) -> Result<RelativePath, PathError> {
        RelativePath::parse(&self.dockerfile)
    }
}

impl Builder {
    /// `dockerfile`, relative to the checkout; `None` for an image builder.
    pub fn parse_dockerfile(&self) -> Option<Result<RelativePath, PathError>> {
        self.dockerfile.as_deref().map(RelativePath::parse)
    }

    /// `artifacts_dest`, relative to the build context.
    pub fn parse_artifacts_dest(&self) -> Result<RelativePath, PathError> {
        RelativePath::parse(&self.artifacts_dest)
    }
}

impl RegistryAuth {
    /// The docker config's auths; `None` for basic auth.
    pub fn parse_docker_config(&self) -> Option<Result<DockerAuths, DockerConfigError>> {
        match self {
            RegistryAuth::DockerConfig { config } => Some(DockerAuths::parse(config)),
            RegistryAuth::Basic { .. } => None,
        }
    }

    /// The credentials for `registry` (`host[:port]` or `docker.io`):
    /// basic auth when its `server` names that registry (when absent, the
    /// job image's registry `image_registry`: a password is never sent to
    /// another registry, e.g. a builder image's), else the docker config's
    /// entry for it. `Ok(None)` when there are none for that registry.
    pub fn credentials_for(
        &self,
        registry: &str,
        image_registry: &str,
    ) -> Result<Option<RegistryCredentials>, DockerConfigError> {
        match self {
            RegistryAuth::Basic { server, .. } => {
                let server = server.as_deref().unwrap_or(image_registry);
                let applies = same_registry(server, registry);
                Ok(applies.then(|| self.basic_credentials()).flatten())
            }
            RegistryAuth::DockerConfig { config } => {
                Ok(DockerAuths::parse(config)?.get(registry).cloned())
            }
        }
    }

    /// Credentials for every registry named, by host, for base-image pulls:
    /// basic auth under its `server` (else `image_registry`), a docker
    /// config's entries under their normalized hosts.
    pub fn all_credentials(
        &self,
        image_registry: &str,
    ) -> Result<BTreeMap<String, RegistryCredentials>, DockerConfigError> {
        match self {
            RegistryAuth::Basic { server, .. } => {
                let host = server.as_deref().unwrap_or(image_registry);
                Ok(self
                    .basic_credentials()
                    .map(|credentials| (host.to_owned(), credentials))
                    .into_iter()
                    .collect())
            }
            RegistryAuth::DockerConfig { config } => Ok(DockerAuths::parse(config)?
                .iter()
                .map(|(host, credentials)| (host.to_owned(), credentials.clone()))
                .collect()),
        }
    }

    fn basic_credentials(&self) -> Option<RegistryCredentials> {
        match self {
            RegistryAuth::Basic {
                username, password, ..
            } => Some(RegistryCredentials {
                username: Some(username.clone()),
                password: Some(password.clone()),
                ..RegistryCredentials::default()
            }),
            RegistryAuth::DockerConfig { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::base64::encode;
    use crate::test_support::job;
    use crate::{Job, Secret};

    #[test]
    fn a_valid_job_parses_into_typed_values() {
        let job: Job = job();
        job.validate().unwrap();
        let url = job.repo.parse_url().unwrap();
        assert_eq!(url.host_port(), "git.example.com:2222");
        let known = job.repo.parse_known_hosts().unwrap().unwrap();
        assert!(known.has_entry_for(url.host(), url.port_or_default()));
        let key = job.repo.auth.parse_ssh_key().unwrap().unwrap();
        assert!(!key.is_encrypted());
        assert_eq!(job.build.parse_context().unwrap().as_str(), "services/web");
        assert_eq!(job.build.parse_dockerfile().unwrap().depth(), 2);
        assert!(job.registry_auth.unwrap().parse_docker_config().is_none());
    }

    // From worker/src/registry_auth.rs.
    #[test]
    fn basic_auth_applies_to_its_server_or_the_image_registry() {
        let basic = |server: Option<&str>| RegistryAuth::Basic {
            server: server.map(str::to_owned),
            username: "u".into(),
            password: Secret::new("p"),
        };
        let creds = basic(None)
            .credentials_for("127.0.0.1:5001", "127.0.0.1:5001")
            .unwrap()
            .unwrap();
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.password.as_ref().map(Secret::expose), Some("p"));
        // Without a server, never for another registry than the image's.
        assert!(basic(None)
            .credentials_for("builders.example:443", "127.0.0.1:5001")
            .unwrap()
            .is_none());
        let other = basic(Some("other.example:443"));
        assert!(other
            .credentials_for("127.0.0.1:5001", "127.0.0.1:5001")
            .unwrap()
            .is_none());
        let all = other.all_credentials("127.0.0.1:5001").unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["other.example:443"]);
        let all = basic(None).all_credentials("127.0.0.1:5001").unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["127.0.0.1:5001"]);
    }

    #[test]
    fn docker_config_credentials_by_host() {
        let user_pass = encode("alice:pw");
        let auth = RegistryAuth::DockerConfig {
            config: Secret::new(encode(format!(
                r#"{{"auths":{{"https://127.0.0.1:5001/v1/":{{"auth":"{user_pass}"}}}}}}"#
            ))),
        };
        let creds = auth
            .credentials_for("127.0.0.1:5001", "127.0.0.1:5001")
            .unwrap()
            .unwrap();
        assert_eq!(creds.username.as_deref(), Some("alice"));
        assert!(auth
            .credentials_for("docker.io", "docker.io")
            .unwrap()
            .is_none());
        let all = auth.all_credentials("x").unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["127.0.0.1:5001"]);
        let garbage = RegistryAuth::DockerConfig {
            config: Secret::new(encode("topsecret")),
        };
        let error = garbage.credentials_for("x", "x").unwrap_err().to_string();
        assert_eq!(error, "not base64 of a JSON document");
    }
}
