//! The files users deploy with: `docker-compose.yml` as Docker Compose
//! itself reads it (`docker-compose config`, installed by scripts/rig-up),
//! the broker accounts it gives RabbitMQ (`deploy/rabbitmq-definitions.*`),
//! and the worker's `Dockerfile` as a sequence of build stages: the
//! properties a user depends on (`broker_accounts` tries the accounts on
//! the rig's RabbitMQ). `scripts/compose-test` builds the image and starts
//! the compose file for real, on local stand-ins for the official images.

use buildbot_protocol::MAX_TIMEOUT_SECS;
use serde_norway::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

fn read(name: &str) -> String {
    let path = repo_root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------- compose --

/// `docker-compose config` of the repository's compose file, with
/// DOCKER_GID set to `docker_gid` (or unset) and the default credentials.
fn compose_config(docker_gid: Option<&str>) -> std::process::Output {
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo_root())
        .env_remove("RABBITMQ_USER")
        .env_remove("RABBITMQ_PASSWORD")
        .env_remove("RABBITMQ_ORCHESTRATOR_PASSWORD")
        .env_remove("RABBITMQ_WORKER_PASSWORD")
        .env_remove("RABBITMQ_DASHBOARD_PASSWORD")
        .env_remove("DOCKER_GID");
    for variable in [
        "BUILDBOT_AMQP_PORT",
        "BUILDBOT_MANAGEMENT_PORT",
        "BUILDBOT_REGISTRY_PORT",
        "BUILDBOT_WORKER_1_HTTP_PORT",
        "BUILDBOT_WORKER_2_HTTP_PORT",
        "BUILDBOT_IMAGE",
        "BUILDBOT_RABBITMQ_IMAGE",
        "BUILDBOT_REGISTRY_IMAGE",
        "COMPOSE_PROJECT_NAME",
    ] {
        command.env_remove(variable);
    }
    if let Some(gid) = docker_gid {
        command.env("DOCKER_GID", gid);
    }
    command
        .output()
        .expect("docker-compose runs (scripts/rig-up installs Debian's docker-compose)")
}

/// The compose file as Compose resolves it: anchors merged, variables
/// interpolated, paths absolute.
fn resolved_compose() -> Value {
    let output = compose_config(Some("4242"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "docker-compose config: {stderr}");
    serde_norway::from_slice(&output.stdout).expect("docker-compose config prints YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

#[test]
fn compose_runs_rabbitmq_a_registry_two_workers_and_the_dashboard() {
    let config = resolved_compose();
    let services = config["services"].as_mapping().expect("services");
    let mut names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["dashboard", "rabbitmq", "registry", "worker-1", "worker-2"]
    );
    // The dashboard reads events only: no Docker socket, its own account.
    let dashboard = &config["services"]["dashboard"];
    assert!(dashboard["volumes"].is_null(), "{dashboard:?}");
    let url = text(
        &dashboard["environment"]["BUILDBOT_AMQP_URL"],
        "dashboard AMQP URL",
    );
    assert!(url.starts_with("amqp://buildbot-dashboard:"), "{url}");

    let rabbitmq = &config["services"]["rabbitmq"];
    let image = text(&rabbitmq["image"], "rabbitmq image");
    assert!(image.starts_with("rabbitmq:") && image.ends_with("-management"));
    let ports = strings(&rabbitmq["ports"]);
    assert!(
        ports.iter().any(|p| p.contains(":15672:15672")),
        "{ports:?}"
    );
    let registry = &config["services"]["registry"];
    assert!(text(&registry["image"], "registry image").starts_with("registry:"));
    assert!(strings(&registry["ports"])
        .iter()
        .any(|p| p.contains(":5000:5000")));
}

#[test]
fn compose_raises_rabbitmqs_consumer_timeout_above_the_longest_job() {
    let config = resolved_compose();
    let conf = repo_root().join("deploy/rabbitmq.conf");
    let mount = format!("{}:/etc/rabbitmq/conf.d/", conf.display());
    let volumes = strings(&config["services"]["rabbitmq"]["volumes"]);
    assert!(
        volumes.iter().any(|v| v.starts_with(&mount)),
        "{mount} in {volumes:?}"
    );

    let text = read("deploy/rabbitmq.conf");
    let timeout_ms: u64 = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == "consumer_timeout")
        .map(|(_, value)| value.trim().parse().expect("a number of milliseconds"))
        .expect("rabbitmq.conf sets consumer_timeout");
    assert!(
        timeout_ms > MAX_TIMEOUT_SECS * 1000,
        "consumer_timeout {timeout_ms} ms must exceed the longest job ({MAX_TIMEOUT_SECS} s)"
    );
}

#[test]
fn compose_workers_reach_rabbitmq_and_the_docker_socket() {
    let config = resolved_compose();
    let rabbitmq = &config["services"]["rabbitmq"]["environment"];
    let password = text(&rabbitmq["BUILDBOT_WORKER_PASSWORD"], "password");
    let root = repo_root();
    let mut ids = Vec::new();
    let mut http_ports = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let worker = &config["services"][name];
        let context = text(&worker["build"]["context"], "build context");
        assert_eq!(Path::new(context), root, "{name} builds the Dockerfile");
        assert_eq!(strings(&worker["command"]), ["worker"]);
        // The host's network: "127.0.0.1:5000" in a job means the compose
        // registry to the worker (its API calls) and to the engine (push)
        // alike; RabbitMQ through its published port.
        assert_eq!(worker["network_mode"].as_str(), Some("host"), "{name}");
        let env = &worker["environment"];
        assert_eq!(
            text(&env["BUILDBOT_AMQP_URL"], "BUILDBOT_AMQP_URL"),
            format!("amqp://buildbot-worker:{password}@127.0.0.1:5672/%2f"),
            "{name}"
        );
        let http_addr = text(&env["BUILDBOT_HTTP_ADDR"], "BUILDBOT_HTTP_ADDR");
        assert!(http_addr.starts_with("127.0.0.1:"), "{name}: {http_addr}");
        http_ports.push(http_addr.to_owned());
        ids.push(text(&env["BUILDBOT_WORKER_ID"], "worker id").to_owned());
        let volumes = strings(&worker["volumes"]);
        assert!(
            volumes
                .iter()
                .any(|v| v.starts_with("/var/run/docker.sock:/var/run/docker.sock")),
            "{name}: {volumes:?}"
        );
        assert_eq!(strings(&worker["group_add"]), ["4242"], "{name}");
        assert_eq!(
            worker["depends_on"]["rabbitmq"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_health_check_asks_the_http_addr(name, worker);
    }
    assert_ne!(ids[0], ids[1], "each worker reports its own id");
    assert_ne!(
        http_ports[0], http_ports[1],
        "workers on the host's network need ports of their own"
    );
}

/// The health check opens the port the worker serves /readyz on: the
/// one of its own BUILDBOT_HTTP_ADDR, read by the shell in the container.
fn assert_health_check_asks_the_http_addr(name: &str, worker: &Value) {
    let test = strings(&worker["healthcheck"]["test"]).join(" ");
    assert!(
        test.contains("/dev/tcp/127.0.0.1/$${BUILDBOT_HTTP_ADDR##*:}") && test.contains("/readyz"),
        "{name}: {test}"
    );
}

#[test]
fn compose_refuses_to_start_without_the_docker_sockets_group() {
    let output = compose_config(None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DOCKER_GID"), "{stderr}");
}

// -------------------------------------------------- broker accounts --

/// `deploy/rabbitmq-definitions.json`, the accounts' template.
fn definitions_template() -> serde_json::Value {
    serde_json::from_str(&read("deploy/rabbitmq-definitions.json"))
        .expect("the definitions template is JSON")
}

/// The `(configure, write, read)` regexes of `user` on vhost `/`.
fn permissions_of(definitions: &serde_json::Value, user: &str) -> [String; 3] {
    let permissions = definitions["permissions"].as_array().expect("permissions");
    let entry = permissions
        .iter()
        .find(|p| p["user"] == user && p["vhost"] == "/")
        .unwrap_or_else(|| panic!("{user} has no permissions on /"));
    ["configure", "write", "read"].map(|kind| {
        entry[kind]
            .as_str()
            .unwrap_or_else(|| panic!("{user}'s {kind} regex"))
            .to_owned()
    })
}

#[test]
fn compose_gives_the_orchestrator_workers_and_dashboards_accounts_of_their_own() {
    let config = resolved_compose();
    let rabbitmq = &config["services"]["rabbitmq"];
    let volumes = strings(&rabbitmq["volumes"]).join("\n");
    for file in ["rabbitmq-definitions.json", "rabbitmq-definitions.sh"] {
        assert!(
            volumes.contains(&format!("deploy/{file}:/etc/rabbitmq/buildbot/")),
            "{file} in {volumes}"
        );
    }
    let entrypoint = strings(&rabbitmq["entrypoint"]).join(" ");
    assert!(
        entrypoint.ends_with("rabbitmq-definitions.sh docker-entrypoint.sh"),
        "{entrypoint}"
    );
    assert!(read("deploy/rabbitmq.conf")
        .lines()
        .any(|line| line == "load_definitions = /etc/rabbitmq/definitions.json"));
    for role in ["ADMIN", "ORCHESTRATOR", "WORKER", "DASHBOARD"] {
        let variable = format!("BUILDBOT_{role}_PASSWORD");
        assert!(
            rabbitmq["environment"][&variable]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{variable}"
        );
    }

    let definitions = definitions_template();
    let users = definitions["users"].as_array().expect("users");
    let roles = [
        "buildbot-orchestrator",
        "buildbot-worker",
        "buildbot-dashboard",
    ];
    for role in roles {
        let user = users
            .iter()
            .find(|u| u["name"] == role)
            .unwrap_or_else(|| panic!("user {role}"));
        assert_eq!(
            user["tags"],
            serde_json::json!([]),
            "{role} is no administrator"
        );
    }
    let distinct: std::collections::HashSet<[String; 3]> = roles
        .iter()
        .map(|role| permissions_of(&definitions, role))
        .collect();
    assert_eq!(
        distinct.len(),
        roles.len(),
        "each role has permissions of its own"
    );
    for role in roles {
        assert!(
            !permissions_of(&definitions, role).contains(&".*".to_owned()),
            "{role} may do anything somewhere"
        );
    }
    let dashboard_topics = definitions["topic_permissions"]
        .as_array()
        .expect("topic permissions")
        .iter()
        .find(|t| t["user"] == "buildbot-dashboard")
        .expect("the dashboards' topic permissions");
    assert_eq!(dashboard_topics["exchange"], "buildbot.events");
    assert_eq!(dashboard_topics["write"], "^$");
}

/// Runs `deploy/rabbitmq-definitions.sh echo done` with `passwords` (for
/// ADMIN, ORCHESTRATOR, WORKER, DASHBOARD), writing into `dir`.
fn render_definitions(dir: &Path, passwords: [&str; 4]) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("deploy/rabbitmq-definitions.sh"))
        .args(["echo", "done"])
        .env(
            "BUILDBOT_DEFINITIONS_TEMPLATE",
            repo_root().join("deploy/rabbitmq-definitions.json"),
        )
        .env("BUILDBOT_DEFINITIONS", dir.join("definitions.json"))
        .env("BUILDBOT_ADMIN_USER", "admin");
    for (role, password) in ["ADMIN", "ORCHESTRATOR", "WORKER", "DASHBOARD"]
        .iter()
        .zip(passwords)
    {
        command.env(format!("BUILDBOT_{role}_PASSWORD"), password);
    }
    command.output().expect("bash runs")
}

#[test]
fn the_definitions_script_writes_any_password_into_valid_json_then_runs_its_arguments() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let passwords = [r#"a"b\c"#, "&@WORKER_PASSWORD@", "w$x`y&", "dä"];
    let output = render_definitions(dir.path(), passwords);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "done\n");
    let written = std::fs::read_to_string(dir.path().join("definitions.json")).expect("written");
    let definitions: serde_json::Value = serde_json::from_str(&written).expect("JSON");
    let users = definitions["users"].as_array().expect("users");
    let password_of = |name: &str| {
        users
            .iter()
            .find(|u| u["name"] == name)
            .and_then(|u| u["password"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(password_of("admin").as_deref(), Some(passwords[0]));
    assert_eq!(
        password_of("buildbot-orchestrator").as_deref(),
        Some(passwords[1])
    );
    assert_eq!(
        password_of("buildbot-worker").as_deref(),
        Some(passwords[2])
    );
    assert_eq!(
        password_of("buildbot-dashboard").as_deref(),
        Some(passwords[3])
    );
    let mode = std::fs::metadata(dir.path().join("definitions.json")).expect("metadata");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
        0
    );

    let refused = render_definitions(dir.path(), ["ok", "new\nline", "w", "d"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("BUILDBOT_ORCHESTRATOR_PASSWORD"));
}

// ------------------------------------------------------- Dockerfile --

/// One build stage: its `FROM` line and the instructions after it, each
/// as (keyword, arguments) with line continuations joined.
#[derive(Debug)]
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn args_of(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    }
}

/// The Dockerfile's instructions before the first `FROM`, and its stages.
fn dockerfile_stages(text: &str) -> (Vec<(String, String)>, Vec<Stage>) {
    let mut global = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        let (keyword, args) = match instruction.split_once(char::is_whitespace) {
            Some((keyword, args)) => (keyword.to_uppercase(), args.trim().to_owned()),
            None => (instruction.to_uppercase(), String::new()),
        };
        if keyword == "FROM" {
            stages.push(Stage {
                from: args,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, args));
        } else {
            global.push((keyword, args));
        }
    }
    (global, stages)
}

/// Instructions with comments and blank lines dropped and `\` line
/// continuations joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current).trim().to_owned());
            }
        }
    }
    out
}

fn arg_default<'a>(global: &'a [(String, String)], name: &str) -> &'a str {
    global
        .iter()
        .filter(|(keyword, _)| keyword == "ARG")
        .find_map(|(_, args)| args.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("ARG {name}=... before the first FROM"))
}

/// `1.88` -> (1, 88).
fn minor_version(text: &str) -> (u32, u32) {
    let mut parts = text.trim_matches('"').split('.');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a version: {text}"))
    };
    (next(), next())
}

#[test]
fn dockerfile_builds_with_a_new_enough_rust_and_runs_buildbot_as_non_root() {
    let (global, stages) = dockerfile_stages(&read("Dockerfile"));
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);

    // The build stage: the official rust image by default (RUST_IMAGE
    // overrides it), Rust at least the workspace's rust-version.
    assert_eq!(build.from, "${RUST_IMAGE} AS build");
    assert!(arg_default(&global, "RUST_IMAGE").starts_with("rust:${RUST_VERSION}-"));
    let workspace = read("Cargo.toml");
    let required = workspace
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .expect("the workspace's rust-version");
    let rust = arg_default(&global, "RUST_VERSION");
    assert!(
        minor_version(rust) >= minor_version(required),
        "Rust {rust} is older than rust-version {required}"
    );
    let runs = build.args_of("RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked -p buildbot-worker"));
    assert!(read("worker/Cargo.toml").contains("[[bin]]\nname = \"buildbot\"\n"));
    assert!(runs.contains("target/release/buildbot /usr/local/bin/buildbot"));

    // The runtime stage: slim Debian by default (RUNTIME_IMAGE overrides
    // it), the binary only, a non-root user.
    assert_eq!(runtime.from, "${RUNTIME_IMAGE} AS runtime");
    let runtime_image = arg_default(&global, "RUNTIME_IMAGE");
    assert!(runtime_image.starts_with("debian:") && runtime_image.ends_with("-slim"));
    assert_eq!(
        runtime.args_of("COPY"),
        ["--from=build /usr/local/bin/buildbot /usr/local/bin/buildbot"]
    );
    assert!(runtime
        .args_of("RUN")
        .join("\n")
        .contains("ca-certificates"));
    let users = runtime.args_of("USER");
    let user = *users.last().expect("the runtime stage sets USER");
    assert!(!["root", "0"].contains(&user.split(':').next().unwrap_or(user)));
    assert!(runtime
        .args_of("RUN")
        .iter()
        .any(|run| run.contains("useradd") && run.ends_with(&format!(" {user}"))));
    assert_eq!(runtime.args_of("ENTRYPOINT"), ["[\"buildbot\"]"]);
    assert_eq!(runtime.args_of("CMD"), ["[\"worker\"]"]);
}

#[test]
fn the_docker_build_context_leaves_out_target() {
    let ignored = read(".dockerignore");
    assert!(ignored
        .lines()
        .any(|line| line.trim() == "target/" || line.trim() == "target"));
}
