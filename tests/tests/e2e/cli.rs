//! The `buildbot` command line through the real rig, as a person or a
//! script uses it: `submit --follow` against a running worker, `build` run
//! locally against the Docker Engine with no broker, and `schema`. Each
//! test runs the binary and checks what it prints and its exit status.

use buildbot_protocol::{Event, EventBody, Job, JobStatus};
use buildbot_tests::e2e::{Setup, RESULT_WITHIN};
use buildbot_tests::worker::worker_binary;
use buildbot_tests::{daemon, Rig, SshKey, TestRepo};
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

const DOCKERFILE: &str = "FROM buildbot-base:busybox\n\
RUN echo building the cli test app\n\
COPY hello.txt /hello.txt\n\
CMD [\"cat\", \"/hello.txt\"]\n";

const FAILING_DOCKERFILE: &str = "FROM buildbot-base:busybox\n\
RUN echo about to fail && exit 3\n";

fn app_repo(rig: &Rig, dockerfile: &str) -> TestRepo {
    rig.create_repo(
        "cli-app",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("hello.txt", b"hello from the cli test app\n"),
        ],
    )
}

/// A finished `buildbot` run: exit status and what it printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        let run = Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        // Shown when a test fails, so the reason is in the test's output.
        eprintln!("--- stdout\n{}--- stderr\n{}---", run.stdout, run.stderr);
        run
    }

    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `buildbot` with `args` and extra environment `env`, given at most
/// [`RESULT_WITHIN`].
async fn buildbot(args: &[&str], env: &[(&str, &str)]) -> Run {
    let run = Command::new(worker_binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RESULT_WITHIN, run)
        .await
        .expect("buildbot finished in time")
        .expect("buildbot ran");
    Run::from(output)
}

/// Writes `job` as a job file in `dir`.
fn job_file(dir: &Path, job: &Job) -> String {
    let path = dir.join("job.json");
    std::fs::write(&path, serde_json::to_vec_pretty(job).expect("encode")).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

/// `buildbot submit --follow` of `job` to the worker of `setup`.
async fn submit_follow(setup: &Setup, job: &Job, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = job_file(dir.path(), job);
    let mut args = vec![
        "submit",
        "--amqp-url",
        &setup.rig.amqp_url,
        "--queue",
        &setup.queue,
        "--follow",
    ];
    args.extend(extra);
    args.push(&file);
    buildbot(&args, &[]).await
}

fn path_in(registry: &str, repository: &str) -> String {
    repository
        .trim_start_matches(&format!("{registry}/"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_prints_steps_and_log_and_exits_0_on_success() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup.rig, DOCKERFILE);
    let job = setup.rig.job(&repo, &setup.rig.registry);

    let run = submit_follow(&setup, &job, &[]).await;

    assert_eq!(run.code, Some(0));
    for step in ["clone", "build", "push"] {
        for state in ["started", "succeeded"] {
            let line = format!("s] {step} {state}\n");
            assert!(run.stdout.contains(&line), "missing {line:?}");
        }
    }
    assert!(run.stdout.contains("building the cli test app"));
    assert!(run
        .stdout
        .contains(&format!("job succeeded at revision {}", repo.commit)));
    assert!(run
        .stdout
        .contains(&format!("pushed {}@sha256:", job.image.repository)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_of_a_failing_job_shows_the_log_and_exits_1() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup.rig, FAILING_DOCKERFILE);
    let job = setup.rig.job(&repo, &setup.rig.registry);

    let run = submit_follow(&setup, &job, &[]).await;

    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("s] build failed\n"));
    assert!(run.stdout.contains("about to fail"));
    assert!(run.stdout.contains("job failed at revision"));
    assert!(run.stdout.contains("\n    build step: "));
    assert!(!run.stdout.contains("push started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_json_prints_every_event_as_one_json_line() {
    let setup = Setup::start().await;
    let repo = app_repo(&setup.rig, DOCKERFILE);
    let job = setup.rig.job(&repo, &setup.rig.registry);

    let run = submit_follow(&setup, &job, &["--json"]).await;

    assert_eq!(run.code, Some(0));
    let events: Vec<Event> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one event"))
        .collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1);
        assert_eq!(event.job_id, job.job_id.to_string());
    }
    let Some(EventBody::Result(result)) = events.last().map(|e| &e.body) else {
        panic!("the last line is the result");
    };
    assert_eq!(result.status, JobStatus::Succeeded);
    assert_eq!(result.last_seq, events.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_file_exits_2_naming_the_field_before_any_broker_is_asked() {
    let rig = Rig::load();
    let repo = app_repo(&rig, DOCKERFILE);
    let mut job = rig.job(&repo, &rig.registry);
    job.image.tags = vec!["-not-a-tag".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = job_file(dir.path(), &job);

    // An unreachable broker: the job must be refused before it is needed.
    let submitted = buildbot(
        &[
            "submit",
            "--amqp-url",
            "amqp://127.0.0.1:1/%2f",
            "--follow",
            &file,
        ],
        &[],
    )
    .await;
    let built = buildbot(&["build", "--job", &file], &[]).await;

    for run in [submitted, built] {
        assert_eq!(run.code, Some(2));
        assert!(run.stderr.contains("is not a valid job"));
        assert!(run.stderr.contains("image.tags[0]: "));
    }
}

/// `buildbot build` flags for `repo` at its commit with the rig's SSH key
/// and pinned host key (written to `dir`), pushing `repository`.
fn build_flags(rig: &Rig, repo: &TestRepo, repository: &str, dir: &Path) -> Vec<String> {
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, rig.known_hosts_line() + "\n").expect("write known_hosts");
    let key = rig.ssh_key_path(SshKey::Authorized);
    [
        "build",
        "--repo",
        &repo.ssh_url,
        "--revision",
        &repo.commit,
        "--image",
        repository,
        "--tag",
        &repo.commit[..12],
        "--tag",
        "latest",
        "--key-file",
        key.to_str().expect("utf-8 path"),
        "--known-hosts",
        known_hosts.to_str().expect("utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Neither the key file's text nor its base64 was printed.
fn assert_key_not_printed(rig: &Rig, run: &Run) {
    let pem = rig.ssh_key_pem(SshKey::Authorized);
    let body = pem.lines().nth(1).expect("a key body line");
    let text = run.text();
    assert!(
        !text.contains(body),
        "a line of the private key was printed"
    );
    assert!(!text.contains(&rig.ssh_key_base64(SshKey::Authorized)[..40]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_runs_a_job_locally_and_pushes_every_tag() {
    let rig = Rig::load();
    let repo = app_repo(&rig, DOCKERFILE);
    let registry = rig.registry.clone();
    let repository = format!("{registry}/cli/app-{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let args = build_flags(&rig, &repo, &repository, dir.path());

    let run = buildbot(&strs(&args), &[]).await;

    assert_eq!(run.code, Some(0));
    for line in ["clone started", "build succeeded", "push succeeded"] {
        assert!(run.stdout.contains(&format!("s] {line}\n")), "{line}");
    }
    assert!(run.stdout.contains("building the cli test app"));
    assert!(run
        .stdout
        .contains(&format!("job succeeded at revision {}", repo.commit)));
    let path = path_in(&registry, &repository);
    let digest = rig
        .manifest_digest(&registry, &path, "latest", None)
        .expect("latest was pushed");
    let short = rig.manifest_digest(&registry, &path, &repo.commit[..12], None);
    assert_eq!(short.as_deref(), Some(digest.as_str()));
    assert!(run
        .stdout
        .contains(&format!("pushed {repository}@{digest} as ")));
    assert_key_not_printed(&rig, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_logs_in_to_the_registry_with_the_password_from_the_environment() {
    let rig = Rig::load();
    let repo = app_repo(&rig, DOCKERFILE);
    let registry = rig.auth_registry.clone();
    let repository = format!("{registry}/cli/auth-{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = build_flags(&rig, &repo, &repository, dir.path());
    args.extend(["--registry-user".into(), rig.auth_registry_user.clone()]);

    let without_password = buildbot(&strs(&args), &[]).await;
    let run = buildbot(
        &strs(&args),
        &[(
            "BUILDBOT_REGISTRY_PASSWORD",
            rig.auth_registry_password.as_str(),
        )],
    )
    .await;

    assert_eq!(without_password.code, Some(5));
    assert!(without_password
        .stderr
        .contains("--registry-user needs BUILDBOT_REGISTRY_PASSWORD"));
    assert_eq!(run.code, Some(0));
    let login = (
        rig.auth_registry_user.as_str(),
        rig.auth_registry_password.as_str(),
    );
    let path = path_in(&registry, &repository);
    assert!(rig
        .manifest_digest(&registry, &path, "latest", Some(login))
        .is_some());
    assert!(!run.text().contains(&rig.auth_registry_password));
    assert_key_not_printed(&rig, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_of_a_failing_dockerfile_exits_1_and_no_push_pushes_nothing() {
    let rig = Rig::load();
    let failing = app_repo(&rig, FAILING_DOCKERFILE);
    let good = app_repo(&rig, DOCKERFILE);
    let registry = rig.registry.clone();
    let repository = format!("{registry}/cli/local-{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failing_args = build_flags(&rig, &failing, &repository, dir.path());
    failing_args.push("--no-push".into());
    let mut good_args = build_flags(&rig, &good, &repository, dir.path());
    good_args.push("--no-push".into());

    let failed = buildbot(&strs(&failing_args), &[]).await;
    let built = buildbot(&strs(&good_args), &[]).await;

    assert_eq!(failed.code, Some(1));
    assert!(failed.stdout.contains("about to fail"));
    assert!(failed.stdout.contains("\n    build step: "));
    assert_eq!(built.code, Some(0));
    assert!(!built.stdout.contains("push started"));
    assert!(built.stdout.contains(&format!(
        "tagged {repository}:{}, {repository}:latest (not pushed)",
        &good.commit[..12]
    )));
    let path = path_in(&registry, &repository);
    assert_eq!(rig.manifest_digest(&registry, &path, "latest", None), None);
    let docker = daemon::connect().await;
    let local = format!("{repository}:latest");
    assert!(daemon::has_image(&docker, &local).await, "tagged locally");
    daemon::remove_image(&docker, &local).await;
    daemon::remove_image(&docker, &format!("{repository}:{}", &good.commit[..12])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_reports_flag_problems_with_the_field_and_the_flag() {
    let run = buildbot(
        &[
            "build",
            "--repo",
            "ssh://git@127.0.0.1:2222/srv/app.git",
            "--revision",
            "main",
            "--image",
            "Not A Repository",
            "--timeout",
            "0",
        ],
        &[],
    )
    .await;

    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("image.repository (--image): "));
    assert!(run.stderr.contains("timeout_secs (--timeout): "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_takes_a_secret_from_the_environment_and_never_prints_it() {
    let rig = Rig::load();
    let dockerfile = format!(
        "FROM {}\nRUN --mount=type=secret,id=token echo \"token=$(cat /run/secrets/token)\"\n",
        rig.base_image
    );
    let repo = app_repo(&rig, &dockerfile);
    let repository = format!("{}/cli/secret-{}", rig.registry, Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = build_flags(&rig, &repo, &repository, dir.path());
    // BuildKit caches a step whatever its secret's value: no cache, so
    // the step runs and prints.
    args.extend([
        "--secret".into(),
        "token=CLI_BUILD_TOKEN".into(),
        "--no-push".into(),
        "--no-cache".into(),
    ]);
    let canary = format!("cli-canary-{}", Uuid::new_v4().simple());

    let missing = buildbot(&strs(&args), &[]).await;
    assert_eq!(missing.code, Some(5));
    assert!(
        missing.stderr.contains(
            "--secret token=CLI_BUILD_TOKEN needs CLI_BUILD_TOKEN set in the environment"
        ),
        "{}",
        missing.stderr
    );

    let run = buildbot(&strs(&args), &[("CLI_BUILD_TOKEN", &canary)]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("token=********"), "{}", run.stdout);
    assert!(!run.stdout.contains(&canary) && !run.stderr.contains(&canary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_exits_3_on_timeout_and_4_when_interrupted() {
    let rig = Rig::load();
    let slow = app_repo(
        &rig,
        "FROM buildbot-base:busybox\nRUN echo sleeping now && sleep 60\n",
    );
    let repository = format!("{}/cli/slow-{}", rig.registry, Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = build_flags(&rig, &slow, &repository, dir.path());
    args.extend(["--no-push".into(), "--timeout".into(), "3".into()]);

    let timed_out = buildbot(&strs(&args), &[]).await;
    assert_eq!(timed_out.code, Some(3));
    assert!(timed_out.stdout.contains("job timed out"));

    let mut child = Command::new(worker_binary())
        .args(&args[..args.len() - 2])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start buildbot build");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let sleeping = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("sleeping now") {
                return true;
            }
        }
        false
    };
    let started = tokio::time::timeout(RESULT_WITHIN, sleeping).await;
    assert_eq!(started.ok(), Some(true), "the build started:\n{seen}");
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let rest = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
        }
        child.wait().await
    };
    let status = tokio::time::timeout(RESULT_WITHIN, rest)
        .await
        .expect("stopped in time")
        .expect("exit status");
    assert_eq!(status.code(), Some(4), "{seen}");
    assert!(seen.contains("job cancelled"), "{seen}");
}

#[tokio::test]
async fn schema_writes_checks_and_prints_the_protocol_crates_schemas() {
    let checked_in = concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol/schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("schema");
    let out = out.to_str().expect("utf-8 path");

    let current = buildbot(&["schema", "--check", checked_in], &[]).await;
    let missing = buildbot(&["schema", "--check", out], &[]).await;
    let written = buildbot(&["schema", out], &[]).await;
    let printed = buildbot(&["schema", "--print", "event"], &[]).await;

    assert_eq!(current.code, Some(0));
    assert_eq!(missing.code, Some(1));
    assert!(missing
        .stderr
        .contains("job.schema.json is missing or not current"));
    assert_eq!(written.code, Some(0));
    for name in ["job.schema.json", "event.schema.json"] {
        let ours = std::fs::read_to_string(Path::new(out).join(name)).expect("written");
        let theirs = std::fs::read_to_string(Path::new(checked_in).join(name)).expect("checked in");
        assert_eq!(ours, theirs, "{name}");
    }
    let event_schema =
        std::fs::read_to_string(Path::new(checked_in).join("event.schema.json")).expect("read");
    assert_eq!(printed.stdout, event_schema);
}
