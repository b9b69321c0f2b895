//! The broker accounts `docker-compose.yml` gives RabbitMQ
//! (`deploy/rabbitmq-definitions.json`, written by
//! `deploy/rabbitmq-definitions.sh`), tried on the rig's RabbitMQ: each
//! role can do its part of a job and is refused the others'. The
//! definitions are imported into a virtual host of their own, with the
//! user names made unique, and removed afterwards (`rabbitmqctl`, as root).

use buildbot_protocol::{EventBody, JobStatus};
use buildbot_tests::e2e::RESULT_WITHIN;
use buildbot_tests::orchestrator::Orchestrator;
use buildbot_tests::worker::WorkerProcess;
use buildbot_tests::Rig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

/// The roles' user names in the definitions.
const ROLES: [&str; 3] = [
    "buildbot-orchestrator",
    "buildbot-worker",
    "buildbot-dashboard",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The definitions imported into a vhost of their own; removed when dropped.
struct Accounts {
    vhost: String,
    /// Unique user names, in the order of [`ROLES`], then the administrator.
    users: Vec<String>,
    password: String,
    /// `host:port` of the broker.
    broker: String,
}

impl Accounts {
    /// Renders the definitions with the script compose runs, moves them to
    /// a fresh vhost under unique user names, and imports them.
    fn import(rig: &Rig) -> Self {
        let suffix = Uuid::new_v4().simple().to_string()[..8].to_owned();
        let password = Uuid::new_v4().simple().to_string();
        let accounts = Self {
            vhost: format!("buildbot-accounts-{suffix}"),
            users: ROLES
                .iter()
                .chain(&["admin"])
                .map(|role| format!("{role}-{suffix}"))
                .collect(),
            password,
            broker: broker_address(&rig.amqp_url),
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let rendered = accounts.rendered(dir.path());
        let moved = dir.path().join("moved.json");
        let text = serde_json::to_vec(&accounts.moved(rendered)).expect("JSON");
        std::fs::write(&moved, text).expect("write the definitions");
        let path = moved.to_str().expect("a UTF-8 path");
        rabbitmqctl(&["import_definitions", path]).expect("import the definitions");
        accounts
    }

    /// The definitions as `rabbitmq-definitions.sh` writes them.
    fn rendered(&self, dir: &Path) -> Value {
        let out = dir.join("definitions.json");
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("deploy/rabbitmq-definitions.sh"))
            .arg("true")
            .env(
                "BUILDBOT_DEFINITIONS_TEMPLATE",
                repo_root().join("deploy/rabbitmq-definitions.json"),
            )
            .env("BUILDBOT_DEFINITIONS", &out)
            .env("BUILDBOT_ADMIN_USER", "admin");
        for role in ["ADMIN", "ORCHESTRATOR", "WORKER", "DASHBOARD"] {
            command.env(format!("BUILDBOT_{role}_PASSWORD"), &self.password);
        }
        let status = command.status().expect("bash runs");
        assert!(status.success(), "rabbitmq-definitions.sh: {status}");
        let text = std::fs::read_to_string(&out).expect("the rendered definitions");
        serde_json::from_str(&text).expect("JSON")
    }

    /// `definitions` on this vhost, with this run's user names.
    fn moved(&self, mut definitions: Value) -> Value {
        let names: Vec<&str> = ROLES.iter().copied().chain(["admin"]).collect();
        let rename = |value: &mut Value| {
            if let Some(index) = names.iter().position(|name| value == *name) {
                *value = Value::from(self.users[index].as_str());
            }
        };
        definitions["vhosts"] = serde_json::json!([{ "name": self.vhost }]);
        for user in definitions["users"].as_array_mut().expect("users") {
            rename(&mut user["name"]);
        }
        for list in ["permissions", "topic_permissions", "exchanges"] {
            for entry in definitions[list].as_array_mut().expect(list) {
                entry["vhost"] = Value::from(self.vhost.as_str());
                if let Some(user) = entry.get_mut("user") {
                    rename(user);
                }
            }
        }
        definitions
    }

    /// The AMQP URL of role `index` of [`ROLES`] (3: the administrator).
    fn url(&self, index: usize) -> String {
        let (user, password, broker) = (&self.users[index], &self.password, &self.broker);
        format!("amqp://{user}:{password}@{broker}/{}", self.vhost)
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let mut left = Vec::new();
        left.extend(rabbitmqctl(&["delete_vhost", &self.vhost]).err());
        for user in &self.users {
            left.extend(rabbitmqctl(&["delete_user", user]).err());
        }
        if !left.is_empty() {
            eprintln!("could not remove the test's accounts: {left:?}");
        }
    }
}

/// `host:port` of an AMQP URL.
fn broker_address(url: &str) -> String {
    let after_user = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_user
        .split('/')
        .next()
        .expect("a broker address")
        .to_owned()
}

/// Connects as `url`'s account once the import made it known.
async fn connect(url: &str) -> Orchestrator {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Orchestrator::connect(url).await {
            Ok(connection) => return connection,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("connect: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Fails unless `outcome` is the broker refusing `what`.
fn assert_refused<T>(what: &str, outcome: anyhow::Result<T>) {
    match outcome {
        Ok(_) => panic!("{what}: allowed"),
        Err(e) => {
            let message = format!("{e:#}");
            assert!(message.contains("ACCESS_REFUSED"), "{what}: {message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broker_account_does_its_part_of_a_job_and_nothing_else() {
    let rig = Rig::load();
    let accounts = Accounts::import(&rig);
    let (orchestrator_url, worker_url, dashboard_url) =
        (accounts.url(0), accounts.url(1), accounts.url(2));
    let admin = connect(&accounts.url(3)).await;

    // The worker declares and consumes buildbot.jobs with its account.
    let local = [("BUILDBOT_LOCAL_IMAGES", rig.base_image.as_str())];
    let _worker = WorkerProcess::start_with_env(&worker_url, "buildbot.jobs", &[], &local)
        .expect("start a worker");
    admin
        .wait_for_consumer("buildbot.jobs", Duration::from_secs(30))
        .await
        .expect("the worker consumes with its account");

    // A dashboard watches, the orchestrator submits and reads the reply.
    let dashboard = connect(&dashboard_url).await;
    let mut watched = dashboard
        .watch_events("#")
        .await
        .expect("watch as a dashboard");
    let orchestrator = connect(&orchestrator_url).await;
    let repo = rig.create_repo(
        "accounts",
        &[(
            "Dockerfile",
            b"FROM buildbot-base:busybox\nRUN echo roles\n",
        )],
    );
    let job = rig.job(&repo, &rig.registry);
    let job_id = job.job_id.to_string();
    let reply_to = format!("buildbot.reply.{job_id}");
    let mut replies = orchestrator
        .reply_queue(&reply_to)
        .await
        .expect("declare a reply queue as the orchestrator");
    let body = serde_json::to_vec(&job).expect("JSON");
    orchestrator
        .publish_job("buildbot.jobs", &body, &job_id, Some(&reply_to))
        .await
        .expect("publish a job as the orchestrator");
    let attempt = replies
        .until_result(RESULT_WITHIN)
        .await
        .expect("the result");
    assert_eq!(
        attempt.result().status,
        JobStatus::Succeeded,
        "{attempt:#?}"
    );
    let seen = watched
        .until_result(RESULT_WITHIN)
        .await
        .expect("the dashboard's copy");
    assert_eq!(seen.events.len(), attempt.events.len());
    assert!(matches!(
        seen.events.last().map(|e| &e.body),
        Some(EventBody::Result(_))
    ));
    orchestrator
        .cancel(Uuid::new_v4())
        .await
        .expect("cancel as the orchestrator");

    // Each refused what another role does (a refusal closes the channel:
    // a connection each).
    let other_reply = format!("buildbot.reply.{}", Uuid::new_v4());
    assert_refused(
        "a dashboard publishing a job",
        connect(&dashboard_url)
            .await
            .publish_job("buildbot.jobs", b"{}", "x", None)
            .await,
    );
    assert_refused(
        "a dashboard reading a reply queue",
        connect(&dashboard_url)
            .await
            .reply_queue(&other_reply)
            .await,
    );
    assert_refused(
        "a worker reading a reply queue",
        connect(&worker_url).await.reply_queue(&other_reply).await,
    );
    assert_refused(
        "an orchestrator watching the events exchange",
        connect(&orchestrator_url).await.watch_events("#").await,
    );
    assert_refused(
        "an orchestrator taking a job off the job queue",
        connect(&orchestrator_url)
            .await
            .take_message("buildbot.jobs")
            .await,
    );
    assert_refused(
        "a dashboard deleting the events exchange",
        delete_exchange(&dashboard_url, "buildbot.events").await,
    );

    // A team's dashboard limited to its service by a topic read pattern.
    rabbitmqctl(&[
        "set_topic_permissions",
        "-p",
        &accounts.vhost,
        &accounts.users[2],
        "buildbot.events",
        "^$",
        "^billing-api\\.",
    ])
    .expect("limit the dashboard to billing-api");
    let limited = connect(&dashboard_url).await;
    limited
        .watch_events("billing-api.#")
        .await
        .expect("watch its own service");
    assert_refused(
        "a limited dashboard watching every service",
        connect(&dashboard_url).await.watch_events("#").await,
    );
}

/// Deletes `exchange` as `url`'s account.
async fn delete_exchange(url: &str, exchange: &str) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_delete(
            exchange.into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await?;
    Ok(())
}
