//! The job a local run builds: read from a job file as is, or made from the
//! flags. Either way it passes the same validation as a queued job.
//! Credentials come from files and environment variables, never argv.

use super::flags::{
    with_flag, JobFlags, KEY_PASSPHRASE_ENV, REGISTRY_PASSWORD_ENV, REPO_TOKEN_ENV,
};
use super::BuildError;
use buildbot_protocol::grammar::base64;
use buildbot_protocol::{decode_job, Build, Job, RegistryAuth, RepoAuth, Secret};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// Reads and validates a job file, as a worker would decode it.
pub(super) fn job_from_file(path: &Path) -> Result<Job, BuildError> {
    let bytes = read(path, "job file")?;
    decode_job(&bytes).map_err(|e| BuildError::Invalid {
        origin: path.display().to_string(),
        problems: e.problems(),
    })
}

/// Makes the job the flags describe and validates it; each problem names
/// the job field and the flag that sets it.
pub(crate) fn job_from_flags(flags: &JobFlags) -> Result<Job, BuildError> {
    let image = flags.image.clone().unwrap_or_default();
    let service_id = flags
        .service_id
        .clone()
        .unwrap_or_else(|| default_service_id(&image));
    let build = Build {
        context: flags.context.clone(),
        dockerfile: flags.dockerfile.clone(),
        build_args: flags.build_args.iter().cloned().collect::<BTreeMap<_, _>>(),
        target: flags.target.clone(),
        labels: flags.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        no_cache: flags.no_cache,
        pull: flags.pull,
        engine: flags.engine,
        secrets: build_secrets(&flags.secrets)?,
        ..Build::default()
    };
    let mut job = Job::new(
        service_id,
        flags.repo.clone().unwrap_or_default(),
        flags.revision.clone().unwrap_or_default(),
        image,
        flags.tags.clone(),
    )
    .with_repo_auth(repo_auth(flags)?)
    .with_submodules(flags.submodules)
    .with_build(build)
    .with_push(!flags.no_push)
    .with_timeout_secs(flags.timeout_secs);
    if let Some(path) = &flags.known_hosts {
        job = job.with_known_hosts(read_text(path, "known_hosts file")?);
    }
    if let Some(auth) = registry_auth(flags)? {
        job = job.with_registry_auth(auth);
    }
    job.validate().map_err(|errors| BuildError::Invalid {
        origin: "the job made from the flags".into(),
        problems: errors.0.iter().map(with_flag).collect(),
    })?;
    Ok(job)
}

/// The SSH key of --key-file, the HTTPS login of --repo-user, or none.
fn repo_auth(flags: &JobFlags) -> Result<RepoAuth, BuildError> {
    if let Some(path) = &flags.key_file {
        return Ok(RepoAuth::SshKey {
            private_key: base64_of_file(path, "key file")?,
            passphrase: std::env::var(KEY_PASSPHRASE_ENV).ok().map(Secret::new),
        });
    }
    if let Some(username) = &flags.repo_user {
        return Ok(RepoAuth::Https {
            username: username.clone(),
            token: secret_from_env("--repo-user", REPO_TOKEN_ENV)?,
        });
    }
    Ok(RepoAuth::None)
}

/// The login of --registry-user, the file of --docker-config, or none.
fn registry_auth(flags: &JobFlags) -> Result<Option<RegistryAuth>, BuildError> {
    if let Some(username) = &flags.registry_user {
        return Ok(Some(RegistryAuth::Basic {
            server: flags.registry_server.clone(),
            username: username.clone(),
            password: secret_from_env("--registry-user", REGISTRY_PASSWORD_ENV)?,
        }));
    }
    match &flags.docker_config {
        Some(path) => Ok(Some(RegistryAuth::DockerConfig {
            config: base64_of_file(path, "docker config")?,
        })),
        None => Ok(None),
    }
}

/// `--secret ID=ENV` values, read from the environment.
fn build_secrets(flags: &[(String, String)]) -> Result<BTreeMap<String, Secret>, BuildError> {
    flags
        .iter()
        .map(|(id, var)| match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok((id.clone(), Secret::new(value))),
            _ => Err(BuildError::MissingSecretEnv {
                id: id.clone(),
                var: var.clone(),
            }),
        })
        .collect()
}

fn secret_from_env(flag: &'static str, var: &'static str) -> Result<Secret, BuildError> {
    std::env::var(var)
        .ok()
        .filter(|value| !value.is_empty())
        .map(Secret::new)
        .ok_or(BuildError::MissingEnv { flag, var })
}

/// A credential file as a job carries it: base64 of its bytes. The plain
/// bytes are wiped from memory once encoded.
fn base64_of_file(path: &Path, what: &'static str) -> Result<Secret, BuildError> {
    let bytes = Zeroizing::new(read(path, what)?);
    Ok(Secret::new(base64::encode(bytes.as_slice())))
}

pub(super) fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path, what: &'static str) -> Result<String, BuildError> {
    std::fs::read_to_string(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The image repository's last path component (`team/app` -> `app`), which
/// the reference grammar keeps within service_id's characters.
fn default_service_id(repository: &str) -> String {
    repository.rsplit('/').next().unwrap_or_default().to_owned()
}
