//! What one job's containers may use: memory (no swap), processes, CPU
//! and network. One worker serves many tenants, so a job's fork bomb or
//! memory hog must hit its own cgroup, not the host.
//!
//! Applied to the builder container ([`ContainerLimits::host_config`]) and
//! to the `RUN` steps of the legacy builder's image builds (the runtime
//! image's and a builder image's, in `build`).

use bollard::models::HostConfig;
use std::fmt;

/// 1 KiB, 1 MiB, 1 GiB, 1 TiB.
const KIB: i64 = 1024;
const MIB: i64 = KIB * 1024;
const GIB: i64 = MIB * 1024;
const TIB: i64 = GIB * 1024;

/// The Engine refuses a memory limit below 6 MiB.
const MIN_MEMORY: i64 = 6 * MIB;

/// The Engine refuses less than 0.01 CPU.
const MIN_CPUS: f64 = 0.01;

/// More CPUs than any host has; keeps the quotas within `i32`.
const MAX_CPUS: f64 = 10_000.0;

/// The CFS period the runtime build's quota is a share of (the Engine's
/// default, 100 ms).
const CPU_PERIOD_US: i32 = 100_000;

/// Capabilities a build may need as root in its own container: owning,
/// reading and writing its files whatever their mode (`tar`, `npm`, `cp
/// -a`), switching to an unprivileged user (`apt-get` runs as `_apt`) and
/// signalling its own processes. Docker's other defaults (`NET_RAW`:
/// spoofing on the bridge, `MKNOD`, `SETFCAP`, `SETPCAP`, `SYS_CHROOT`,
/// `NET_BIND_SERVICE`, `AUDIT_WRITE`) are dropped.
const BUILD_CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETUID",
    "SETGID",
    "KILL",
];

/// Limits of every container a job runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerLimits {
    /// Memory in bytes; swap is not allowed on top.
    pub(crate) memory: Memory,
    /// Processes (threads included) at once.
    pub(crate) pids: i64,
    /// CPUs (fractions allowed); None: all the daemon's CPUs.
    pub(crate) cpus: Option<f64>,
    /// The network the job's containers join.
    pub(crate) network: Network,
}

impl Default for ContainerLimits {
    /// The worker's defaults: 4 GiB, 1024 processes, every CPU, the
    /// default bridge (builds that download dependencies keep working).
    fn default() -> Self {
        Self {
            memory: Memory(4 * GIB),
            pids: 1024,
            cpus: None,
            network: Network::bridge(),
        }
    }
}

impl ContainerLimits {
    /// The builder container's host config: the limits, no swap, no new
    /// privileges through setuid binaries, and only [`BUILD_CAPABILITIES`].
    pub(crate) fn host_config(&self) -> HostConfig {
        HostConfig {
            memory: Some(self.memory.0),
            memory_swap: Some(self.memory.0),
            pids_limit: Some(self.pids),
            nano_cpus: self.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            network_mode: Some(self.network.0.clone()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(BUILD_CAPABILITIES.map(str::to_owned).to_vec()),
            ..Default::default()
        }
    }

    /// The memory limit for the legacy builder's `RUN` steps, when its API
    /// can carry it: the query parameter is a 32-bit integer, and silently
    /// capping a larger limit at 2 GiB would fail builds that fit the
    /// configured one. Above 2 GiB the `RUN` steps are not memory-limited.
    pub(crate) fn build_memory(&self) -> Option<i32> {
        i32::try_from(self.memory.0).ok()
    }

    /// The runtime build's CPU quota per [`Self::build_cpu_period`].
    pub(crate) fn build_cpu_quota(&self) -> Option<i32> {
        self.cpus
            .map(|cpus| (cpus * f64::from(CPU_PERIOD_US)).round() as i32)
    }

    /// The CFS period the quota is a share of, when there is a quota.
    pub(crate) fn build_cpu_period(&self) -> Option<i32> {
        self.cpus.map(|_| CPU_PERIOD_US)
    }
}

/// A memory size in bytes, at least the Engine's minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory(i64);

/// Shown in the largest unit that divides it: `256 MiB`, `4 GiB`.
impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
        match units.iter().find(|(size, _)| self.0 % size == 0) {
            Some((size, unit)) => write!(f, "{} {unit}", self.0 / size),
            None => write!(f, "{} bytes", self.0),
        }
    }
}

/// A flag value that is not a usable limit.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum LimitError {
    /// Not a number with an optional unit.
    #[error("{0:?} is not a size: use bytes or a number with k, m, g or t (e.g. 512m, 4GiB)")]
    NotASize(String),
    /// Below what the Engine accepts.
    #[error("{0} is below the Docker Engine's minimum memory limit of 6 MiB")]
    TooLittleMemory(Memory),
    /// Not a CPU count the Engine accepts.
    #[error("{0:?} is not a CPU count between {MIN_CPUS} and {MAX_CPUS} (e.g. 2 or 1.5)")]
    NotCpus(String),
    /// A network mode that would undo the isolation.
    #[error("{0:?} is not allowed: a job must not share the host's or another container's network; use none, bridge or a network's name")]
    SharedNetwork(String),
    /// Empty network name.
    #[error("the network name is empty")]
    NoNetwork,
}

/// Parses a memory limit: a [`parse_size`] of at least the engine's
/// minimum.
pub(crate) fn parse_memory(text: &str) -> Result<Memory, LimitError> {
    let memory = Memory(parse_size(text)?);
    if memory.0 < MIN_MEMORY {
        return Err(LimitError::TooLittleMemory(memory));
    }
    Ok(memory)
}

/// Parses `1073741824`, `512m`, `512MiB`, `4g`, `4GB` (units are powers of
/// 1024, as Docker's `--memory`) into bytes.
pub(crate) fn parse_size(text: &str) -> Result<i64, LimitError> {
    let not_a_size = || LimitError::NotASize(text.to_owned());
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: i64 = number.parse().map_err(|_| not_a_size())?;
    let multiplier = match unit.trim_start() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => TIB,
        _ => return Err(not_a_size()),
    };
    number.checked_mul(multiplier).ok_or_else(not_a_size)
}

/// Parses a CPU count like Docker's `--cpus`: `2`, `1.5`.
pub(crate) fn parse_cpus(text: &str) -> Result<f64, LimitError> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if (MIN_CPUS..=MAX_CPUS).contains(&cpus) => Ok(cpus),
        _ => Err(LimitError::NotCpus(text.to_owned())),
    }
}

/// The network mode of a job's containers: `none`, `bridge` or a
/// network's name; never `host` or `container:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Network(String);

impl Network {
    /// Docker's default bridge.
    pub(crate) fn bridge() -> Self {
        Self("bridge".to_owned())
    }

    /// The mode as the Engine API takes it.
    pub(crate) fn mode(&self) -> &str {
        &self.0
    }
}

/// Parses a `--builder-network` value.
pub(crate) fn parse_network(text: &str) -> Result<Network, LimitError> {
    let name = text.trim();
    if name.is_empty() {
        return Err(LimitError::NoNetwork);
    }
    if name == "host" || name.starts_with("container:") {
        return Err(LimitError::SharedNetwork(name.to_owned()));
    }
    Ok(Network(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_take_docker_s_units() {
        assert_eq!(parse_memory("64m"), Ok(Memory(64 * MIB)));
        assert_eq!(parse_memory("256MiB"), Ok(Memory(256 * MIB)));
        assert_eq!(parse_memory("4 GB"), Ok(Memory(4 * GIB)));
        assert_eq!(parse_memory("10485760"), Ok(Memory(10 * MIB)));
        assert!(matches!(parse_memory("4x"), Err(LimitError::NotASize(_))));
        assert!(matches!(parse_memory("m"), Err(LimitError::NotASize(_))));
        assert!(matches!(parse_memory("-1"), Err(LimitError::NotASize(_))));
        assert!(matches!(
            parse_memory("99999999999t"),
            Err(LimitError::NotASize(_))
        ));
        assert_eq!(
            parse_memory("1m"),
            Err(LimitError::TooLittleMemory(Memory(MIB)))
        );
    }

    #[test]
    fn memory_is_shown_in_its_largest_whole_unit() {
        assert_eq!(Memory(256 * MIB).to_string(), "256 MiB");
        assert_eq!(Memory(4 * GIB).to_string(), "4 GiB");
        assert_eq!(Memory(MIB + 1).to_string(), "1048577 bytes");
    }

    #[test]
    fn cpus_and_networks_are_checked() {
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("many").is_err());
        assert_eq!(parse_network("none").map(|n| n.0), Ok("none".into()));
        assert_eq!(parse_network("builds").map(|n| n.0), Ok("builds".into()));
        assert!(matches!(
            parse_network("host"),
            Err(LimitError::SharedNetwork(_))
        ));
        assert!(parse_network("container:abc").is_err());
        assert_eq!(parse_network(" "), Err(LimitError::NoNetwork));
    }

    #[test]
    fn the_builder_gets_every_limit_and_no_swap() {
        let limits = ContainerLimits {
            memory: Memory(256 * MIB),
            pids: 64,
            cpus: Some(1.5),
            network: Network("none".into()),
        };
        let host = limits.host_config();
        assert_eq!(host.memory, Some(256 * MIB));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(limits.build_cpu_quota(), Some(150_000));
        assert_eq!(limits.build_memory(), Some(256 * 1024 * 1024));
    }

    #[test]
    fn a_limit_beyond_the_build_api_s_range_is_not_shrunk() {
        let limits = ContainerLimits::default();
        assert_eq!(limits.build_memory(), None);
        assert_eq!(limits.host_config().nano_cpus, None);
        assert_eq!(limits.build_cpu_period(), None);
    }
}
