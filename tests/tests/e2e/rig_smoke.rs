//! Smoke tests of the test rig itself: each service `scripts/rig-up` starts
//! does what the end-to-end tests rely on, checked with the same client
//! libraries the worker uses (lapin, bollard, git2).

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use buildbot_tests::{Rig, SshKey};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::cell::Cell;
use std::time::Duration;

/// How long any single service interaction may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn rabbitmq_round_trips_a_message_on_a_fresh_queue() {
    let rig = Rig::load();
    let connection = Connection::connect(&rig.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("enable publisher confirms");
    let queue = format!("rig-smoke-{}", uuid::Uuid::new_v4());
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .expect("declare a fresh queue");

    let body = format!("hello {queue}");
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("publisher confirm");
    assert!(confirmation.is_ack(), "the broker nacked the message");
    assert!(
        confirmation.take_message().is_none(),
        "the message was returned unroutable"
    );

    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "rig-smoke".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume the queue");
    let delivery = tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("a delivery within the limit")
        .expect("the consumer is open")
        .expect("a delivery");
    assert_eq!(delivery.data, body.as_bytes());
    delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack the delivery");
    let _ = connection.close(200, "smoke test done".into()).await;
}

#[tokio::test]
async fn docker_runs_a_container_of_the_base_image() {
    let rig = Rig::load();
    let docker = Docker::connect_with_local_defaults().expect("Docker client");
    docker.ping().await.expect("docker answers _ping");

    let name = format!("rig-smoke-{}", uuid::Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(rig.base_image.clone()),
        cmd: Some(vec!["echo".into(), "hi".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .expect("create a container of the base image");

    let outcome = async {
        docker.start_container(&created.id, None).await?;
        let mut wait = docker.wait_container(&created.id, None);
        while let Some(status) = wait.next().await {
            anyhow::ensure!(status?.status_code == 0, "echo exited non-zero");
        }
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut logs = docker.logs(&created.id, Some(options));
        let mut text = String::new();
        while let Some(chunk) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(text)
    };
    let outcome = tokio::time::timeout(LIMIT, outcome).await;
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .expect("remove the container");
    let text = outcome
        .expect("the container ran within the limit")
        .expect("run the container");
    assert_eq!(text.trim(), "hi");
}

/// Tags the base image as `{registry}/smoke/base:{tag}`.
async fn tag_base_image(docker: &Docker, rig: &Rig, registry: &str, tag: &str) -> String {
    let repository = format!("{registry}/smoke/base");
    docker
        .tag_image(
            &rig.base_image,
            Some(
                TagImageOptionsBuilder::new()
                    .repo(&repository)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .expect("tag the base image");
    repository
}

/// Pushes `repository:tag`; the first error of the progress stream, if any.
async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), bollard::errors::Error> {
    let options = PushImageOptionsBuilder::new().tag(tag).build();
    let mut progress = docker.push_image(repository, Some(options), credentials);
    let drained = async {
        while let Some(item) = progress.next().await {
            item?;
        }
        Ok(())
    };
    tokio::time::timeout(LIMIT, drained)
        .await
        .expect("the push ended within the limit")
}

async fn untag(docker: &Docker, repository: &str, tag: &str) {
    docker
        .remove_image(
            &format!("{repository}:{tag}"),
            Some(RemoveImageOptionsBuilder::new().noprune(true).build()),
            None,
        )
        .await
        .expect("remove the pushed tag locally");
}

#[tokio::test]
async fn registry_without_auth_accepts_a_push() {
    let rig = Rig::load();
    let docker = Docker::connect_with_local_defaults().expect("Docker client");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let repository = tag_base_image(&docker, &rig, &rig.registry, &tag).await;

    let pushed = push(&docker, &repository, &tag, None).await;
    untag(&docker, &repository, &tag).await;
    pushed.expect("push to the registry without auth");

    let digest = rig
        .manifest_digest(&rig.registry, "smoke/base", &tag, None)
        .expect("the pushed manifest is in the registry");
    assert!(digest.starts_with("sha256:"), "digest {digest}");
    assert_eq!(
        rig.manifest_digest(&rig.registry, "smoke/base", "no-such-tag", None),
        None
    );
}

#[tokio::test]
async fn auth_registry_refuses_anonymous_pushes_and_accepts_credentials() {
    let rig = Rig::load();
    let docker = Docker::connect_with_local_defaults().expect("Docker client");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let repository = tag_base_image(&docker, &rig, &rig.auth_registry, &tag).await;

    let anonymous = push(&docker, &repository, &tag, None).await;
    let credentials = DockerCredentials {
        username: Some(rig.auth_registry_user.clone()),
        password: Some(rig.auth_registry_password.clone()),
        serveraddress: Some(rig.auth_registry.clone()),
        ..Default::default()
    };
    let authenticated = push(&docker, &repository, &tag, Some(credentials)).await;
    untag(&docker, &repository, &tag).await;

    let error = anonymous.expect_err("an anonymous push to the auth registry must fail");
    let message = error.to_string();
    assert!(
        message.contains("no basic auth credentials")
            || message.to_lowercase().contains("unauthorized"),
        "not an authentication error: {message}"
    );
    assert!(
        !message.contains(&rig.auth_registry_password),
        "error leaks the password: {message}"
    );
    authenticated.expect("push to the auth registry with credentials");

    let login = Some((
        rig.auth_registry_user.as_str(),
        rig.auth_registry_password.as_str(),
    ));
    let digest = rig
        .manifest_digest(&rig.auth_registry, "smoke/base", &tag, login)
        .expect("the pushed manifest is in the auth registry");
    assert!(digest.starts_with("sha256:"), "digest {digest}");
    assert_eq!(
        rig.registry_status(&rig.auth_registry, "smoke/base", &tag, None),
        401
    );
    assert_eq!(
        rig.registry_status(
            &rig.auth_registry,
            "smoke/base",
            &tag,
            Some((rig.auth_registry_user.as_str(), "wrong password")),
        ),
        401
    );
}

/// Clones `url` with `key`, checking the host key against the rig's
/// `known_hosts` line; credentials are offered once, a second request
/// fails the clone instead of looping. Also returns how often credentials
/// were asked for.
fn clone_with(rig: &Rig, url: &str, key: SshKey) -> (Result<Clone, git2::Error>, u32) {
    let pem = rig.ssh_key_pem(key);
    let known_hosts = rig.known_hosts_line();
    let host_key = known_hosts
        .split_whitespace()
        .nth(2)
        .and_then(|key| base64::engine::general_purpose::STANDARD.decode(key).ok())
        .expect("the rig's host key is base64");
    let asked = Cell::new(0u32);

    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|_url, username, allowed| {
        asked.set(asked.get() + 1);
        if asked.get() > 1 {
            return Err(git2::Error::from_str("the remote refused the SSH key"));
        }
        if !allowed.contains(git2::CredentialType::SSH_KEY) {
            return Err(git2::Error::from_str("the remote does not offer key auth"));
        }
        git2::Cred::ssh_key_from_memory(username.unwrap_or("git"), None, &pem, None)
    });
    callbacks.certificate_check(
        |cert, _host| match cert.as_hostkey().and_then(|h| h.hostkey()) {
            Some(key) if key == host_key.as_slice() => {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            }
            _ => Err(git2::Error::from_str("host key mismatch")),
        },
    );
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cloned = git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(url, dir.path());
    assert!(asked.get() <= 2, "credentials asked {} times", asked.get());
    (cloned.map(|repo| (dir, repo)), asked.get())
}

/// A clone's work tree (removed on drop) and repository.
type Clone = (tempfile::TempDir, git2::Repository);

#[test]
fn ssh_remote_serves_a_repository_to_the_authorized_keys() {
    let rig = Rig::load();
    let repo = rig.create_repo(
        "smoke",
        &[
            ("README", b"smoke test\n"),
            ("sub/dir/file.txt", b"nested\n"),
            ("run.sh", b"#!/bin/sh\necho hi\n"),
        ],
    );
    assert_eq!(repo.commit.len(), 40, "{}", repo.commit);
    assert!(
        repo.ssh_url.starts_with("ssh://git@127.0.0.1:"),
        "{}",
        repo.ssh_url
    );

    for key in [SshKey::Authorized, SshKey::AuthorizedRsa] {
        let (dir, clone) = clone_with(&rig, &repo.ssh_url, key)
            .0
            .unwrap_or_else(|error| panic!("clone with the {key:?} key: {error}"));
        let head = clone.head().expect("HEAD of the clone");
        assert_eq!(head.shorthand().ok(), Some("main"));
        assert_eq!(
            head.peel_to_commit().expect("HEAD commit").id().to_string(),
            repo.commit
        );
        assert_eq!(
            std::fs::read(dir.path().join("sub/dir/file.txt")).expect("nested file"),
            b"nested\n"
        );
    }

    let second = repo.commit_files(&[("README", b"changed\n")]);
    assert_ne!(second, repo.commit);
    let (dir, clone) = clone_with(&rig, &repo.ssh_url, SshKey::Authorized)
        .0
        .expect("clone again");
    let head = clone
        .head()
        .expect("HEAD")
        .peel_to_commit()
        .expect("commit");
    assert_eq!(head.id().to_string(), second);
    assert_eq!(
        head.parent_id(0).expect("a parent").to_string(),
        repo.commit
    );
    assert_eq!(
        std::fs::read(dir.path().join("README")).expect("README"),
        b"changed\n"
    );
    assert!(
        dir.path().join("sub/dir/file.txt").exists(),
        "older files kept"
    );
}

#[test]
fn ssh_remote_refuses_an_unauthorized_key() {
    let rig = Rig::load();
    let repo = rig.create_repo("smoke-denied", &[("README", b"secret\n")]);
    let (cloned, asked) = clone_with(&rig, &repo.ssh_url, SshKey::Unauthorized);
    let error = cloned
        .map(|_| ())
        .expect_err("the unauthorized key must not clone");
    // The host key was accepted and the key offered: the refusal is the
    // server's, not a host key or connection failure.
    assert!(asked >= 1, "credentials never asked for: {error}");
    assert!(!error.message().contains("host key"), "{error}");
}

#[test]
fn known_hosts_lines_name_the_remote() {
    let rig = Rig::load();
    let right = rig.known_hosts_line();
    let wrong = rig.wrong_known_hosts_line();
    let pattern = format!("[{}]:{} ", rig.git_ssh_host, rig.git_ssh_port);
    assert!(right.starts_with(&pattern), "{right}");
    assert!(wrong.starts_with(&pattern), "{wrong}");
    assert_ne!(right, wrong);
    assert_eq!(right.split_whitespace().count(), 3, "{right}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(rig.ssh_key_base64(SshKey::Authorized))
        .expect("base64 key");
    assert!(String::from_utf8_lossy(&key).starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let rsa = base64::engine::general_purpose::STANDARD
        .decode(rig.ssh_key_base64(SshKey::AuthorizedRsa))
        .expect("base64 key");
    assert!(String::from_utf8_lossy(&rsa).starts_with("-----BEGIN RSA PRIVATE KEY-----"));
}
