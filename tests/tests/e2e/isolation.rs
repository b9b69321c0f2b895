//! Tenants sharing one worker (and so one Docker Engine), written as the
//! attacks of the security review: a job cannot plant an image another
//! job builds from, cannot build from another tenant's private image that
//! the engine happens to hold, and cannot build under a repository the
//! worker does not serve; a `basic` login without `server` never reaches
//! another registry (a fake one records what it is sent).

use bollard::auth::DockerCredentials;
use bollard::Docker;
use buildbot_protocol::{Job, JobStatus, StepName};
use buildbot_tests::daemon;
use buildbot_tests::e2e::{assert_failed, assert_rejected, assert_well_formed, Setup};
use uuid::Uuid;

/// A job building `dockerfile` (a repository of its own) to `registry`.
fn job_with(setup: &Setup, registry: &str, dockerfile: &str) -> Job {
    let repo = setup.rig.create_repo(
        "isolation",
        &[("Dockerfile", dockerfile.as_bytes()), ("app.txt", b"app\n")],
    );
    setup.rig.job(&repo, registry)
}

/// Tenant A's private image: pushed to the registry that needs a login,
/// and left on the engine, as a job of A's would leave it.
async fn private_image(setup: &Setup, docker: &Docker) -> String {
    let registry = &setup.rig.auth_registry;
    let repository = format!("{registry}/e2e/tenant-a-{}", Uuid::new_v4().simple());
    daemon::tag(docker, &setup.rig.base_image, &repository, "1").await;
    let credentials = DockerCredentials {
        username: Some(setup.rig.auth_registry_user.clone()),
        password: Some(setup.rig.auth_registry_password.clone()),
        serveraddress: Some(registry.clone()),
        ..Default::default()
    };
    daemon::push(docker, &repository, "1", Some(credentials))
        .await
        .expect("push tenant A's image");
    format!("{repository}:1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_plant_an_image_that_another_job_builds_from() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let registry = setup.rig.registry.clone();
    let victim_base = format!("{registry}/e2e/victim-base-{}", Uuid::new_v4().simple());

    // The attacker builds "the victim's base image" without pushing it.
    let base = &setup.rig.base_image;
    let planted = format!("FROM {base}\nRUN echo planted > /planted\n");
    let mut attacker = job_with(&setup, &registry, &planted);
    attacker.image.repository = victim_base.clone();
    attacker.image.tags = vec!["1".into()];
    attacker.image.push = false;
    let attempt = setup.run(&attacker).await;
    assert_well_formed(&attempt, &attacker);
    assert_eq!(attempt.result().status, JobStatus::Succeeded);
    let name = format!("{victim_base}:1");
    assert!(
        !daemon::has_image(&docker, &name).await,
        "{name} is on the engine"
    );

    // The victim's build does not find it: its registry has no such image.
    let victim = job_with(&setup, &registry, &format!("FROM {name}\nCOPY app.txt /\n"));
    let attempt = setup.run(&victim).await;
    assert_failed(
        &attempt,
        StepName::Build,
        &format!("build.dockerfile: {name} cannot be resolved at its registry"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_on_the_engine_needs_the_registrys_login() {
    let setup = Setup::start().await;
    let docker = daemon::connect().await;
    let private = private_image(&setup, &docker).await;
    let registry = setup.rig.registry.clone();
    let base = &setup.rig.base_image;

    // Without credentials: neither FROM nor COPY --from reads it.
    let from = job_with(&setup, &registry, &format!("FROM {private}\n"));
    let attempt = setup.run(&from).await;
    assert_failed(
        &attempt,
        StepName::Build,
        &format!("build.dockerfile: {private} cannot be resolved at its registry with the job's registry_auth"),
    );
    let copy = format!("FROM {base}\nCOPY --from={private} /bin/busybox /stolen\n");
    let copy_from = job_with(&setup, &registry, &copy);
    let attempt = setup.run(&copy_from).await;
    assert_failed(
        &attempt,
        StepName::Build,
        &format!("build.dockerfile: {private} cannot be resolved"),
    );

    // With them, the same FROM builds: the registry decided.
    let auth_registry = setup.rig.auth_registry.clone();
    let mut allowed = job_with(&setup, &auth_registry, &format!("FROM {private}\n"));
    allowed.registry_auth = Some(setup.auth_registry_basic());
    let attempt = setup.run(&allowed).await;
    assert_well_formed(&attempt, &allowed);
    let result = attempt.result();
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");
    assert!(attempt
        .log_text()
        .contains(&format!("{private} is sha256:")));
    daemon::remove_image(&docker, &private).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_builds_only_under_its_allowed_repositories() {
    let registry = buildbot_tests::Rig::load().registry;
    let allowed = format!("{registry}/e2e/team-a");
    let setup = Setup::start_with(&["--allowed-repository", &allowed]).await;
    let mut outside = job_with(&setup, &registry, "FROM scratch\n");
    outside.image.repository = format!("{allowed}b/app");
    let attempt = setup.run(&outside).await;
    assert_rejected(
        &attempt,
        &format!(
            "image.repository: {allowed}b/app is not allowed on this worker; it builds only under {allowed}"
        ),
    );
}

/// A registry that answers every request with a Basic challenge and
/// records the `Authorization` headers it was sent.
async fn fake_registry() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.lines();
                let request = lines.next().unwrap_or_default().to_owned();
                let auth: Vec<String> = lines
                    .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(str::to_owned)
                    .collect();
                record
                    .lock()
                    .expect("lock")
                    .push(format!("{request} {}", auth.join(" ")));
                let answer = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_login_without_server_never_reaches_another_registry() {
    use base64::Engine as _;
    let setup = Setup::start().await;
    let (port, seen) = fake_registry().await;
    let auth_registry = setup.rig.auth_registry.clone();
    let password = setup.rig.auth_registry_password.clone();
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{password}", setup.rig.auth_registry_user));

    // The builder image, then a base image, on the fake registry; the job's
    // own image (and so its `basic` login) on the auth registry.
    let mut builder_job = job_with(&setup, &auth_registry, "FROM scratch\n");
    builder_job.registry_auth = Some(setup.auth_registry_basic());
    builder_job.build.builder = Some(buildbot_protocol::Builder {
        image: Some(format!("127.0.0.1:{port}/tools/builder:1")),
        dockerfile: None,
        command: vec!["true".into()],
        workdir: "/src".into(),
        env: Default::default(),
        secret_env: Default::default(),
        artifacts: "out".into(),
        artifacts_dest: "artifact".into(),
    });
    let attempt = setup.run(&builder_job).await;
    assert_failed(
        &attempt,
        StepName::Builder,
        "cannot be resolved at its registry",
    );
    let mut base_job = job_with(
        &setup,
        &auth_registry,
        &format!("FROM 127.0.0.1:{port}/base:1\n"),
    );
    base_job.registry_auth = Some(setup.auth_registry_basic());
    let attempt = setup.run(&base_job).await;
    assert_failed(
        &attempt,
        StepName::Build,
        "cannot be resolved at its registry",
    );

    let requests = seen.lock().expect("lock").clone();
    assert!(!requests.is_empty(), "the fake registry was asked");
    for request in &requests {
        assert!(
            !request.contains(&basic) && !request.contains(&password),
            "the login went to the fake registry: {request}"
        );
    }
}
