//! One parser per text format a job carries, each turning the text into a
//! typed value once, with a typed error that says what is wrong without
//! ever repeating a credential. Validation ([`Job::validate`](crate::Job::validate))
//! and the worker consume the same values.
//!
//! | module | format | value |
//! | --- | --- | --- |
//! | [`base64`](mod@self::base64) | standard base64, line-wrapped or not | bytes |
//! | [`path`] | slash paths, cleaned lexically | [`CleanPath`], [`RelativePath`] |
//! | [`docker_config`] | base64 of a Docker `config.json` | [`DockerAuths`] |
//! | [`known_hosts`] | OpenSSH `known_hosts` text | [`KnownHosts`] |
//! | [`private_key`] | base64 of a PEM/OpenSSH private key | [`SshPrivateKey`] |
//! | [`repo_url`] | `ssh://`, scp-like `user@host:path`, `https://` | [`RepoUrl`] |

pub mod base64;
pub mod docker_config;
pub mod known_hosts;
pub mod path;
pub mod private_key;
pub mod repo_url;

pub use self::base64::Base64Error;
pub use docker_config::{DockerAuths, DockerConfigError, RegistryCredentials};
pub use known_hosts::{HostKey, HostKeyProblem, KnownHosts, KnownHostsError};
pub use path::{CleanPath, PathError, RelativePath};
pub use private_key::{PrivateKeyError, SshPrivateKey};
pub use repo_url::{known_hosts_name, RepoUrl, RepoUrlError, Transport};
