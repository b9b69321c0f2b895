//! A RabbitMQ cluster of three nodes on this machine, for the several
//! brokers test: node names, AMQP and distribution ports of their own
//! (off the rig's `rabbit@<host>`, 5672 and 25672), data and logs under a
//! temp dir, one Erlang cookie in that dir's `home/`. The nodes run the
//! Debian package's scripts directly (`/usr/lib/rabbitmq/bin`): its
//! `/usr/sbin` wrappers would switch to the `rabbitmq` user and its
//! home's cookie. Every node started here is killed and the dir removed
//! on drop, also when the test panics; a run that was itself killed
//! leaves dirs that the next [`Cluster::start`] sweeps.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the package's own scripts are (no user switch).
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";
/// Prefix of the node names and of the temp dirs.
const PREFIX: &str = "buildbot-e2e-cluster";
/// The first node's AMQP port; the others follow. Distribution ports are
/// these plus 20000, as RabbitMQ's default is.
const FIRST_AMQP_PORT: u16 = 5681;
/// How many nodes.
const NODES: u16 = 3;
/// How long a node may take to boot or join.
const BOOT_WITHIN: Duration = Duration::from_secs(120);

/// One node of the cluster.
#[derive(Debug)]
pub struct Node {
    /// Erlang node name, `buildbot-e2e-cluster-<n>@<host>`.
    pub name: String,
    /// Its AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    dir: PathBuf,
    /// The beam process, once booted; None once killed.
    pid: Option<u32>,
}

impl Node {
    /// Its AMQP URL (guest, allowed on loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `host:port`, as a worker's `/metrics` names it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port)
    }
}

/// Three clustered nodes, removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The nodes; the first is the one the others joined.
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts three nodes and clusters the second and third with the first.
    pub fn start() -> anyhow::Result<Self> {
        sweep_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}-"))
            .tempdir()
            .context("a temp dir for the cluster")?;
        write_cookie(&dir.path().join("home"))?;
        let host = short_hostname()?;
        let mut cluster = Self {
            nodes: (1..=NODES)
                .map(|n| Node {
                    name: format!("{PREFIX}-{n}@{host}"),
                    amqp_port: FIRST_AMQP_PORT + n - 1,
                    dir: dir.path().join(format!("node-{n}")),
                    pid: None,
                })
                .collect(),
            dir,
        };
        // Booted together: the two cores boot three nodes in about the
        // time of one and a half.
        for node in &cluster.nodes {
            cluster.spawn(node)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_until_running(&cluster.nodes[i])?;
            cluster.nodes[i].pid = Some(read_pid(&cluster.nodes[i].dir)?);
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            cluster.ctl(&node.name, &["stop_app"])?;
            cluster.ctl(&node.name, &["join_cluster", &first])?;
            cluster.ctl(&node.name, &["start_app"])?;
            cluster.wait_until_running(node)?;
        }
        Ok(cluster)
    }

    /// Every node's URL, comma-separated, in order.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::url).collect();
        urls.join(",")
    }

    /// Runs `rabbitmqctl -n node ARGS` with the cluster's cookie; its
    /// standard output.
    pub fn ctl(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        self.cli("rabbitmqctl", node, args)
    }

    /// The index of the node leading `queue` (a quorum queue), and its
    /// members, asked of `asked` (an index).
    pub fn queue_leader(&self, asked: usize, queue: &str) -> anyhow::Result<(usize, Vec<String>)> {
        let text = self.ctl(
            &self.nodes[asked].name,
            &[
                "list_queues",
                "name",
                "leader",
                "members",
                "--formatter",
                "json",
            ],
        )?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("list_queues said {text:?}"))?;
        let row = rows
            .iter()
            .find(|row| row["name"] == queue)
            .with_context(|| format!("{queue} is not in {text}"))?;
        let leader = row["leader"].as_str().unwrap_or_default();
        let index = self
            .nodes
            .iter()
            .position(|node| node.name == leader)
            .with_context(|| format!("{queue}'s leader {leader:?} is no node of ours"))?;
        let members = row["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((index, members))
    }

    /// Kills node `index` at once (SIGKILL of its beam process): the
    /// harshest stop, no leadership handed over.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let pid = self.nodes[index]
            .pid
            .take()
            .context("the node is not running")?;
        kill(pid)
    }

    fn cli(&self, tool: &str, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(Path::new(RABBITMQ_BIN).join(tool))
            .args(["-q", "-n", node, "--timeout", "60"])
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .output()
            .with_context(|| format!("{tool} {args:?}"))?;
        if !output.status.success() {
            bail!(
                "{tool} -n {node} {args:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `node` detached, with every path and port of its own.
    fn spawn(&self, node: &Node) -> anyhow::Result<()> {
        std::fs::create_dir_all(&node.dir)?;
        // No plugins: the management listener would take the rig's port.
        std::fs::write(node.dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(node.dir.join("rabbitmq.conf"), "")?;
        let path = |name: &str| node.dir.join(name);
        let status = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmq-server"))
            .arg("-detached")
            .env("HOME", self.dir.path().join("home"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", node.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", (node.amqp_port + 20000).to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .status()
            .context("rabbitmq-server -detached")?;
        anyhow::ensure!(status.success(), "rabbitmq-server -detached: {status}");
        Ok(())
    }

    fn wait_until_running(&self, node: &Node) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + BOOT_WITHIN;
        loop {
            let checked = self.cli("rabbitmq-diagnostics", &node.name, &["check_running"]);
            match checked {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    bail!("{} is not running after {BOOT_WITHIN:?}: {e:#}", node.name)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // A node that never wrote its pid file is found by its dir.
            let pid = node.pid.take().or_else(|| read_pid(&node.dir).ok());
            if let Some(pid) = pid {
                if let Err(e) = kill(pid) {
                    eprintln!("could not kill {} (pid {pid}): {e:#}", node.name);
                }
            }
        }
        // The TempDir removes the dir after this.
    }
}

/// Kills what an earlier run that was itself killed left: the nodes
/// whose pid files are in a `buildbot-e2e-cluster-*` temp dir, then the
/// dirs.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(&format!("{PREFIX}-")));
        if !ours {
            continue;
        }
        for n in 1..=NODES {
            if let Ok(pid) = read_pid(&dir.join(format!("node-{n}"))) {
                let _ = kill(pid);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// SIGKILLs `pid` if it is one of this fixture's beam processes (a pid
/// file outlives its process, and pids are reused).
fn kill(pid: u32) -> anyhow::Result<()> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(PREFIX) {
        return Ok(());
    }
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -KILL {pid}: {status}");
    // Gone from the process table before the caller goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn read_pid(node_dir: &Path) -> anyhow::Result<u32> {
    let file = node_dir.join("pid");
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}", file.display()))
}

/// The cookie every node and CLI call of the cluster shares.
fn write_cookie(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(home)?;
    let cookie = home.join(".erlang.cookie");
    std::fs::write(
        &cookie,
        uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
    )?;
    // Erlang refuses a cookie others may read.
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}

/// The host part of node names, as RabbitMQ's scripts make it.
fn short_hostname() -> anyhow::Result<String> {
    let output = Command::new("hostname").arg("-s").output()?;
    let host = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    anyhow::ensure!(!host.is_empty(), "hostname -s printed nothing");
    Ok(host)
}
