//! Test step: a command run in a container of the built image after the
//! build and before the push (the original's
//! `#test_in_container_entrypoint=`). A non-zero exit fails the job, so
//! nothing is pushed.
//!
//! The container gets the worker's limits, as a builder container does,
//! and no network unless the job's `test.network` asks for it: the test
//! exercises the image, not the internet. It carries the job and worker
//! labels and is removed whatever the outcome, also when the job's
//! timeout or a cancel drops the step ([`Leftovers`]).

use crate::events::Reporter;
use crate::pipeline::conventions::TestEntrypoint;
use crate::pipeline::steps::builder::{
    follow, job_labels, oom_killed, ContainerLimits, Exited, Leftovers, TEST_ROLE,
};
use bollard::models::ContainerCreateBody;
use bollard::Docker;
use buildbot_protocol::{StepName, Test, DEFAULT_TEST_TIMEOUT_SECS};
use std::collections::BTreeMap;
use std::time::Duration;

/// What runs in the test container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TestCommand {
    /// The job's `test`: its argv replaces the image's entrypoint.
    Job(Test),
    /// The Dockerfile's marker: its words follow the image's entrypoint,
    /// as `docker run <image> <cmd>` passes them.
    Marker(TestEntrypoint),
}

impl TestCommand {
    /// The job's `test` wins; else the Dockerfile's marker.
    pub(crate) fn choose(job: Option<&Test>, marker: Option<TestEntrypoint>) -> Option<Self> {
        match job {
            Some(test) => Some(TestCommand::Job(test.clone())),
            None => marker.map(TestCommand::Marker),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(match self {
            TestCommand::Job(test) => test.timeout_secs,
            TestCommand::Marker(_) => DEFAULT_TEST_TIMEOUT_SECS,
        })
    }

    /// Where it came from, for the log and the errors.
    fn source(&self) -> &'static str {
        match self {
            TestCommand::Job(_) => "test.command",
            TestCommand::Marker(_) => "the Dockerfile's #test_in_container_entrypoint",
        }
    }
}

/// Why the test step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TestError {
    /// The daemon could not be reached or answered with an API error.
    #[error("Docker Engine: {0}")]
    Api(#[from] bollard::errors::Error),
    /// The command exited with a non-zero code.
    #[error("{from} exited with code {code}{}{}", oom_note(*.oom), quoted(.tail))]
    Failed {
        /// Where the command came from.
        from: &'static str,
        /// Its exit code.
        code: i64,
        /// Its last output lines.
        tail: String,
        /// Whether the memory limit killed it.
        oom: bool,
    },
    /// The Dockerfile's marker is unusable.
    #[error(transparent)]
    Marker(#[from] crate::pipeline::conventions::ConventionError),
    /// It ran past its timeout.
    #[error("{from} did not finish within its timeout of {secs} s")]
    TimedOut {
        /// Where the command came from.
        from: &'static str,
        /// The timeout.
        secs: u64,
    },
}

impl TestError {
    /// The command's exit code, when it ran to its end.
    pub(crate) fn exit_code(&self) -> Option<i64> {
        match self {
            TestError::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn oom_note(oom: bool) -> &'static str {
    if oom {
        " (killed: out of memory)"
    } else {
        ""
    }
}

fn quoted(tail: &str) -> String {
    if tail.is_empty() {
        "; it wrote no output".to_owned()
    } else {
        format!("; its last output lines:\n{tail}")
    }
}

/// One job's test: what [`run`] needs.
pub(crate) struct TestRun<'a> {
    /// The built image's id.
    pub(crate) image_id: &'a str,
    /// The command.
    pub(crate) command: &'a TestCommand,
    /// The job's id, labelled on the container.
    pub(crate) job_id: &'a str,
    /// The worker's id, labelled for the sweep after a crash.
    pub(crate) worker_id: &'a str,
    /// What the container may use.
    pub(crate) limits: &'a ContainerLimits,
}

/// Runs the test within its timeout; the container is removed before
/// this returns (or, if the future is dropped, right after).
pub(crate) async fn run(
    docker: &Docker,
    spec: &TestRun<'_>,
    reporter: &Reporter,
) -> Result<(), TestError> {
    let command = spec.command;
    reporter
        .system(
            StepName::Test,
            format!("running {} in the built image", command.source()),
        )
        .await;
    let mut leftovers = Leftovers::new(docker.clone(), StepName::Test);
    let limit = command.timeout();
    let outcome = tokio::time::timeout(limit, run_in(docker, spec, &mut leftovers, reporter)).await;
    leftovers.remove(reporter).await;
    outcome.unwrap_or(Err(TestError::TimedOut {
        from: command.source(),
        secs: limit.as_secs(),
    }))
}

/// Create, start, follow; the container is recorded as soon as it exists.
async fn run_in(
    docker: &Docker,
    spec: &TestRun<'_>,
    leftovers: &mut Leftovers,
    reporter: &Reporter,
) -> Result<(), TestError> {
    let created = docker
        .create_container(None, container_config(spec))
        .await?;
    leftovers.record_container(created.id.clone());
    docker.start_container(&created.id, None).await?;
    let Exited { code, tail } = follow(docker, &created.id, StepName::Test, reporter).await?;
    if code == 0 {
        return Ok(());
    }
    let oom = oom_killed(docker, &created.id, code).await;
    Err(TestError::Failed {
        from: spec.command.source(),
        code,
        tail,
        oom,
    })
}

/// The container: the built image, the command, the worker's limits, no
/// network unless the job's test asks for it.
fn container_config(spec: &TestRun<'_>) -> ContainerCreateBody {
    let mut host_config = spec.limits.host_config();
    let (entrypoint, cmd, env, network) = match spec.command {
        TestCommand::Job(test) => (
            Some(test.command.clone()),
            None,
            env_list(&test.env),
            test.network,
        ),
        TestCommand::Marker(marker) => (None, Some(marker.args.clone()), Vec::new(), false),
    };
    if !network {
        host_config.network_mode = Some("none".to_owned());
    }
    ContainerCreateBody {
        image: Some(spec.image_id.to_owned()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(job_labels(spec.job_id, spec.worker_id, TEST_ROLE)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_test_wins_over_the_marker() {
        let marker = TestEntrypoint {
            args: vec!["check".into()],
        };
        let test = Test::new(["sh", "-c", "exit 0"]);
        assert_eq!(
            TestCommand::choose(Some(&test), Some(marker.clone())),
            Some(TestCommand::Job(test))
        );
        assert_eq!(
            TestCommand::choose(None, Some(marker.clone())),
            Some(TestCommand::Marker(marker))
        );
        assert_eq!(TestCommand::choose(None, None), None);
    }

    #[test]
    fn no_network_unless_asked() {
        let limits = ContainerLimits::default();
        let mut test = Test::new(["true"]);
        let config = |command: &TestCommand| {
            let spec = TestRun {
                image_id: "sha256:abc",
                command,
                job_id: "job",
                worker_id: "worker",
                limits: &limits,
            };
            container_config(&spec)
                .host_config
                .and_then(|h| h.network_mode)
        };
        assert_eq!(
            config(&TestCommand::Job(test.clone())).as_deref(),
            Some("none")
        );
        test.network = true;
        assert_eq!(
            config(&TestCommand::Job(test)).as_deref(),
            limits.host_config().network_mode.as_deref()
        );
    }

    #[test]
    fn a_failure_names_its_source_and_code() {
        let failed = TestError::Failed {
            from: "test.command",
            code: 3,
            tail: "not ok".into(),
            oom: false,
        };
        assert_eq!(failed.exit_code(), Some(3));
        assert_eq!(
            failed.to_string(),
            "test.command exited with code 3; its last output lines:\nnot ok"
        );
    }
}
