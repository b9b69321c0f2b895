//! Tenants sharing one worker (and so one Docker Engine), written as the
//! attacks of the security review: a job cannot plant an image another
//! job builds from, cannot build from another tenant's private image that
//! the engine happens to hold, and cannot build under a repository the
//! worker does not serve.

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
