//! End-to-end tests of hostile repositories and builders through the real
//! rig: one worker pool serves many tenants, so a tree too deep to walk or
//! an artifact too big to take must fail only its own job, with the limit
//! named, while the worker keeps serving the others.

use buildbot_protocol::{Builder, Job, JobStatus, StepName};
use buildbot_tests::daemon;
use buildbot_tests::e2e::{assert_failed, assert_well_formed, Fleet, LOCAL_IMAGES, RESULT_WITHIN};
use buildbot_tests::orchestrator::Attempt;
use buildbot_tests::TestRepo;
use std::collections::BTreeMap;
use std::path::Path;
use uuid::Uuid;

const DOCKERFILE: &str = "FROM buildbot-base:busybox\nCOPY . /app\n";

/// Levels of the deep chain: once enough to overflow the walk's stack in a
/// release build (600 in a debug one) and abort the worker.
const DEEP: usize = 1900;

/// Adds a commit to `repo` holding, next to what it has, a chain of
/// [`DEEP`] directories named `d` with a file at the bottom. Git stores it
/// as one tree per level, built here from the bottom up.
fn commit_deep_chain(repo: &TestRepo) -> String {
    let git = git2::Repository::open_bare(&repo.path).expect("open the test repository");
    let blob = git.blob(b"at the bottom\n").unwrap();
    let mut tree = {
        let mut builder = git.treebuilder(None).unwrap();
        builder.insert("f", blob, 0o100644).unwrap();
        builder.write().unwrap()
    };
    for _ in 0..DEEP {
        let mut builder = git.treebuilder(None).unwrap();
        builder.insert("d", tree, 0o040000).unwrap();
        tree = builder.write().unwrap();
    }
    let parent = git.head().unwrap().peel_to_commit().unwrap();
    let mut root = git.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    root.insert("d", tree, 0o040000).unwrap();
    let root = git.find_tree(root.write().unwrap()).unwrap();
    let signature = git2::Signature::now("buildbot tests", "tests@buildbot.invalid").unwrap();
    let commit = git
        .commit(
            Some("refs/heads/main"),
            &signature,
            &signature,
            "A directory chain too deep to walk",
            &root,
            &[&parent],
        )
        .unwrap();
    world_readable(&repo.path);
    commit.to_string()
}

/// Lets the remote's `git` user read the objects just written as root.
fn world_readable(path: &Path) {
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(path)
        .status()
        .expect("run chmod");
    assert!(status.success());
}

fn app_files() -> [(&'static str, &'static [u8]); 2] {
    [
        ("Dockerfile", DOCKERFILE.as_bytes()),
        ("hello.txt", b"hello\n"),
    ]
}

async fn run(fleet: &Fleet, job: &Job) -> Attempt {
    fleet
        .submit(job)
        .await
        .until_result(RESULT_WITHIN)
        .await
        .expect("the job's result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_deep_tree_fails_only_its_own_job() {
    let fleet = Fleet::new().await;
    let mut worker = fleet.worker(&["--concurrency", "2"]).await;
    let registry = fleet.rig.registry.clone();
    let mut deep_repo = fleet.rig.create_repo("deep", &app_files());
    deep_repo.commit = commit_deep_chain(&deep_repo);
    let deep_job = fleet.rig.job(&deep_repo, &registry);
    let normal_repo = fleet.rig.create_repo("normal", &app_files());
    let normal_job = fleet.rig.job(&normal_repo, &registry);

    let (deep, normal) = tokio::join!(run(&fleet, &deep_job), run(&fleet, &normal_job));

    assert_well_formed(&deep, &deep_job);
    assert_failed(
        &deep,
        StepName::Build,
        "build.context: more than 1024 directory levels (at d/d/d/",
    );
    assert!(deep
        .result()
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("--max-context-depth"));
    assert_well_formed(&normal, &normal_job);
    assert_eq!(
        normal.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        normal.result()
    );
    assert!(worker.is_running(), "the worker died:\n{}", worker.log());
    // And it still takes jobs.
    let after = fleet.rig.job(&normal_repo, &registry);
    assert_eq!(
        run(&fleet, &after).await.result().status,
        JobStatus::Succeeded
    );
}

/// A builder in the base image running `script`, its artifact `out`.
fn builder(image: &str, script: &str) -> Builder {
    Builder {
        image: Some(image.into()),
        dockerfile: None,
        command: vec!["sh".into(), "-c".into(), script.into()],
        workdir: "/src".into(),
        env: BTreeMap::new(),
        secret_env: Default::default(),
        artifacts: "out".into(),
        artifacts_dest: "artifact".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_beyond_the_limits_fail_with_the_limit_named() {
    let fleet = Fleet::new().await;
    let workspaces = tempfile::tempdir().unwrap();
    let workspace_dir = workspaces.path().to_str().unwrap().to_owned();
    let mut worker = fleet
        .worker(&[
            "--max-artifact-entries",
            "1000",
            "--max-artifact-bytes",
            "16777216",
            "--workspace-dir",
            &workspace_dir,
        ])
        .await;
    let docker = daemon::connect().await;
    let tag = format!("hostile-{}", Uuid::new_v4().simple());
    daemon::tag(&docker, &fleet.rig.base_image, LOCAL_IMAGES, &tag).await;
    let image = format!("{LOCAL_IMAGES}:{tag}");
    let repo = fleet.rig.create_repo("artifacts", &app_files());
    let registry = fleet.rig.registry.clone();
    let cases = [
        (
            "mkdir out && i=0 && while [ $i -lt 2000 ]; do : > out/f$i; i=$((i+1)); done",
            "build.builder.artifacts: the artifact holds more than 1,000 entries; this worker allows at most 1,000 (--max-artifact-entries)",
        ),
        (
            "mkdir out && truncate -s 64M out/sparse",
            "build.builder.artifacts: the artifact holds more than 16,777,216 bytes; this worker allows at most 16,777,216 (--max-artifact-bytes)",
        ),
    ];
    for (script, message) in cases {
        let mut job = fleet.rig.job(&repo, &registry);
        job.build.builder = Some(builder(&image, script));
        let attempt = run(&fleet, &job).await;
        assert_well_formed(&attempt, &job);
        assert_failed(&attempt, StepName::Builder, message);
        // Nothing of the job is left on the worker's disk: no archive.
        let left: Vec<_> = std::fs::read_dir(workspaces.path())
            .unwrap()
            .flat_map(|worker| std::fs::read_dir(worker.unwrap().path()).unwrap())
            .collect();
        assert!(
            left.is_empty(),
            "left in the worker's workspace dir: {left:?}"
        );
    }
    // Under the limits, the same worker places the artifact.
    let mut job = fleet.rig.job(&repo, &registry);
    job.build.builder = Some(builder(&image, "mkdir out && echo ok > out/ok.txt"));
    let attempt = run(&fleet, &job).await;
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{:#?}",
        attempt.result()
    );
    assert!(worker.is_running(), "the worker died:\n{}", worker.log());
    daemon::remove_image(&docker, &image).await;
}
