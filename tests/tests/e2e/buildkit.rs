//! BuildKit builds through the Engine API: `RUN --mount=type=cache`,
//! multi-stage targets, build secrets that never reach an image, the
//! registry or an event, `secret_env` in a builder, and a cold worker
//! reusing layers from the registry's inline cache.

use base64::Engine as _;
use bollard::query_parameters::PruneBuildOptions;
use bollard::Docker;
use buildbot_protocol::{BuildEngine, Builder, Job, JobStatus, Secret};
use buildbot_tests::daemon::{self, connect, run_in_image};
use buildbot_tests::e2e::{assert_rejected, Setup};
use buildbot_tests::orchestrator::Attempt;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use uuid::Uuid;

fn assert_succeeded(attempt: &Attempt) {
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}\n{}",
        attempt.result(),
        attempt.log_text()
    );
}

/// Pulls the job's first tag from the registry, so the test looks at what
/// was pushed; returns its reference.
async fn pull_pushed(docker: &Docker, job: &Job) -> String {
    let reference = format!("{}:{}", job.image.repository, job.image.tags[0]);
    daemon::pull(docker, &reference, None)
        .await
        .expect("pull the pushed image");
    reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_mount_is_reused_by_the_next_build() {
    let setup = Setup::start().await;
    // Its own cache id: cache mounts are shared by id on the engine.
    let cache_id = format!("e2e-{}", Uuid::new_v4().simple());
    let dockerfile = format!(
        "FROM {}\n\
         RUN --mount=type=cache,id={cache_id},target=/cache \
         if [ -f /cache/seen ]; then echo 'cache mount: warm'; \
         else echo 'cache mount: cold'; touch /cache/seen; fi\n",
        setup.rig.base_image
    );
    let repo = setup
        .rig
        .create_repo("cache-mount", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    // The step runs again; only its cache mount carries over.
    job.build.no_cache = true;
    for expected in ["cache mount: cold", "cache mount: warm"] {
        job.job_id = Uuid::new_v4();
        let attempt = setup.run(&job).await;
        assert_succeeded(&attempt);
        assert!(
            attempt.log_text().contains(expected),
            "{}",
            attempt.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stage_target_builds_only_the_stages_it_needs() {
    let setup = Setup::start().await;
    let base = &setup.rig.base_image;
    let dockerfile = format!(
        "FROM {base} AS deps\n\
         RUN echo deps-built > /deps.txt\n\
         FROM {base} AS broken\n\
         RUN echo never-runs && exit 9\n\
         FROM {base} AS app\n\
         COPY --from=deps /deps.txt /deps.txt\n\
         FROM app AS later\n\
         RUN exit 7\n"
    );
    let repo = setup
        .rig
        .create_repo("target", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.target = Some("app".into());
    let attempt = setup.run(&job).await;
    assert_succeeded(&attempt);
    let log = attempt.log_text();
    assert!(log.contains("[deps 2/2] RUN echo deps-built"), "{log}");
    assert!(!log.contains("never-runs"), "an unused stage ran: {log}");
    assert!(!log.contains("exit 7"), "a later stage ran: {log}");
    // The OCI labels go into the image config, not a build step.
    assert!(!log.contains("LABEL"), "{log}");

    let docker = connect().await;
    let reference = pull_pushed(&docker, &job).await;
    let (code, deps) = run_in_image(&docker, &reference, &["cat", "/deps.txt"]).await;
    assert_eq!((code, deps.trim()), (0, "deps-built"));
    let labels = docker
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert!(
        labels.contains_key("org.opencontainers.image.revision"),
        "{labels:?}"
    );
    daemon::remove_image(&docker, &reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_secret_is_mounted_and_found_nowhere_else() {
    let setup = Setup::start().await;
    let canary = format!("bk-s3cr3t-{}", Uuid::new_v4().simple());
    let dockerfile = format!(
        "FROM {}\n\
         RUN --mount=type=secret,id=token \
         wc -c < /run/secrets/token > /token-length \
         && echo \"token is $(cat /run/secrets/token)\" \
         && echo \"encoded $(base64 /run/secrets/token)\"\n",
        setup.rig.base_image
    );
    let repo = setup
        .rig
        .create_repo("build-secret", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    // BuildKit caches a step whatever its secret's value: no cache, so
    // this job's secret is the one the step reads.
    job.build.no_cache = true;
    job.build.secrets = BTreeMap::from([("token".to_owned(), Secret::new(canary.clone()))]);
    let attempt = setup.run(&job).await;
    assert_succeeded(&attempt);
    let log = attempt.log_text();
    assert!(
        log.contains("token is ********"),
        "masked in the log: {log}"
    );

    let encoded = base64::engine::general_purpose::STANDARD.encode(&canary);
    let forms = [canary.as_str(), encoded.as_str()];
    let events = serde_json::to_string(&attempt.events).expect("events are JSON");
    assert_absent(&forms, "the events", events.as_bytes());

    let docker = connect().await;
    let reference = pull_pushed(&docker, &job).await;
    let (code, length) = run_in_image(&docker, &reference, &["cat", "/token-length"]).await;
    assert_eq!(
        (code, length.trim()),
        (0, canary.len().to_string().as_str())
    );
    let history = docker.image_history(&reference).await.expect("history");
    let history = serde_json::to_string(&history).expect("history is JSON");
    assert_absent(&forms, "docker history --no-trunc", history.as_bytes());
    let inspect = docker.inspect_image(&reference).await.expect("inspect");
    let inspect = serde_json::to_string(&inspect).expect("inspect is JSON");
    assert_absent(&forms, "the image config", inspect.as_bytes());
    // `docker save`: the layers as uncompressed tars, config, manifest.
    let saved = docker_save(&docker, &reference).await;
    assert_absent(&forms, "docker save", &saved);
    let path = job.image.repository.split_once('/').expect("a path").1;
    for (i, blob) in setup
        .rig
        .registry_image_bytes(&setup.rig.registry, path, &job.image.tags[0])
        .iter()
        .enumerate()
    {
        assert_absent(&forms, &format!("registry blob {i}"), blob);
    }
    daemon::remove_image(&docker, &reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_env_reaches_the_builder_command_only() {
    let setup = Setup::start().await;
    let canary = format!("bk-env-{}", Uuid::new_v4().simple());
    let dockerfile = format!("FROM {}\nCOPY artifact /artifact\n", setup.rig.base_image);
    let repo = setup
        .rig
        .create_repo("secret-env", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.builder = Some(Builder {
        image: Some(setup.rig.base_image.clone()),
        dockerfile: None,
        command: vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p out && printf %s \"$NPM_TOKEN\" | wc -c > out/token-length \
             && echo \"using $NPM_TOKEN\""
                .into(),
        ],
        workdir: "/src".into(),
        env: BTreeMap::new(),
        secret_env: BTreeMap::from([("NPM_TOKEN".to_owned(), Secret::new(canary.clone()))]),
        artifacts: "out".into(),
        artifacts_dest: "artifact".into(),
    });
    let attempt = setup.run(&job).await;
    assert_succeeded(&attempt);
    let log = attempt.log_text();
    assert!(log.contains("using ********"), "{log}");
    let events = serde_json::to_string(&attempt.events).expect("events are JSON");
    assert_absent(&[&canary], "the events", events.as_bytes());

    let docker = connect().await;
    let reference = pull_pushed(&docker, &job).await;
    let (code, length) =
        run_in_image(&docker, &reference, &["cat", "/artifact/token-length"]).await;
    assert_eq!(
        (code, length.trim()),
        (0, canary.len().to_string().as_str())
    );
    let saved = docker_save(&docker, &reference).await;
    assert_absent(&[&canary], "docker save", &saved);
    daemon::remove_image(&docker, &reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_needs_buildkit_is_refused_on_the_legacy_builder() {
    let setup = Setup::start().await;
    let repo = setup.rig.create_repo(
        "legacy-secret",
        &[(
            "Dockerfile",
            format!("FROM {}\n", setup.rig.base_image).as_bytes(),
        )],
    );
    let mut job = setup.rig.job(&repo, &setup.rig.registry);
    job.build.engine = Some(BuildEngine::Legacy);
    job.build.secrets = BTreeMap::from([("token".to_owned(), Secret::new("x-token-value"))]);
    let attempt = setup.run(&job).await;
    assert_rejected(
        &attempt,
        "build.secrets: needs BuildKit; the legacy builder cannot mount secrets",
    );
}

/// A worker whose engine never built the app: its layers come from the
/// image a previous job pushed with inline cache. Ignored in the main run
/// because it empties the engine's BuildKit cache; `scripts/test` runs it
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "empties the engine's BuildKit cache: run alone"]
async fn buildkit_cold_cache_comes_from_the_registry() {
    let setup = Setup::start().await;
    let run_id = Uuid::new_v4().simple().to_string();
    let dockerfile = format!(
        "FROM {}\n\
         RUN echo one-{run_id} > /one && sleep 1\n\
         RUN echo two-{run_id} > /two && sleep 1\n\
         RUN echo three-{run_id} > /three\n",
        setup.rig.base_image
    );
    let repo = setup
        .rig
        .create_repo("cold-cache", &[("Dockerfile", dockerfile.as_bytes())]);
    let mut first = setup.rig.job(&repo, &setup.rig.registry);
    first.build.cache_inline = true;
    first.image.tags = vec!["warm".into()];
    assert_succeeded(&setup.run(&first).await);

    let docker = connect().await;
    forget_the_app(&docker, &first.image.repository).await;

    let mut second = setup.rig.job(&repo, &setup.rig.registry);
    second.image.repository = first.image.repository.clone();
    second.image.tags = vec!["cold".into()];
    second.build.cache_from = vec![format!("{}:warm", first.image.repository)];
    let attempt = setup.run(&second).await;
    assert_succeeded(&attempt);
    let log = attempt.log_text();
    let cached = log.lines().filter(|l| l.ends_with(" CACHED")).count();
    println!("cold worker: {cached} steps cached from the registry\n{log}");
    assert!(
        cached >= 3,
        "every RUN step came from the registry's cache: {log}"
    );
    // Only the labels (the build time) differ: the layers are the first
    // job's.
    let docker_layers = |tag: &str| {
        let reference = format!("{}:{tag}", second.image.repository);
        let docker = docker.clone();
        async move {
            daemon::pull(&docker, &reference, None).await.expect("pull");
            let layers = docker.inspect_image(&reference).await.expect("inspect");
            daemon::remove_image(&docker, &reference).await;
            layers.root_fs.and_then(|r| r.layers).unwrap_or_default()
        }
    };
    assert_eq!(docker_layers("warm").await, docker_layers("cold").await);
}

/// Removes every image of `repository` from the engine and empties
/// BuildKit's cache, as on a fresh worker.
async fn forget_the_app(docker: &Docker, repository: &str) {
    let images = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .expect("list images");
    for image in images {
        let names = image.repo_tags.iter().chain(&image.repo_digests);
        for name in names.filter(|n| {
            n.starts_with(&format!("{repository}:")) || n.starts_with(&format!("{repository}@"))
        }) {
            daemon::remove_image(docker, name).await;
        }
    }
    let options = PruneBuildOptions {
        all: Some(true),
        ..Default::default()
    };
    docker
        .prune_build(Some(options))
        .await
        .expect("prune the BuildKit cache");
}

/// `docker save` of `reference`, as bytes.
async fn docker_save(docker: &Docker, reference: &str) -> Vec<u8> {
    let mut saved = Vec::new();
    let mut stream = docker.export_image(reference);
    while let Some(chunk) = stream.next().await {
        saved.extend_from_slice(&chunk.expect("docker save"));
    }
    saved
}

fn assert_absent(forms: &[&str], place: &str, haystack: &[u8]) {
    for form in forms {
        let found = haystack
            .windows(form.len())
            .any(|window| window == form.as_bytes());
        assert!(!found, "the secret ({form}) is in {place}");
    }
}
