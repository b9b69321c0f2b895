//! Whether the worker talks to a registry over plain HTTP or HTTPS. It
//! follows the Docker Engine that pushed the layers, so both sides agree:
//! a registry the engine treats as insecure (listed by name in its
//! `insecure-registries`, or an address inside one of its insecure CIDRs,
//! `127.0.0.0/8` by default) is plain HTTP; everything else is HTTPS. When
//! the engine does not say, loopback (`localhost`, `127.x`, `::1`) is
//! plain HTTP, as the engine's default.
//!
//! Host names other than `localhost` are not resolved to match them
//! against the CIDRs: such a registry is insecure only when the engine
//! lists it by name.

use bollard::models::RegistryServiceConfig;
use bollard::Docker;
use std::net::{IpAddr, Ipv4Addr};

/// How to reach a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP: a registry the engine treats as insecure.
    Http,
    /// HTTPS with certificate verification.
    Https,
}

/// The scheme for `registry` (`host[:port]`), from the engine's registry
/// settings when it answers.
pub(crate) async fn scheme_for(docker: &Docker, registry: &str) -> Scheme {
    match docker.info().await {
        Ok(info) => match info.registry_config {
            Some(config) => scheme_by_engine(&config, registry),
            None => scheme_by_default(registry),
        },
        Err(e) => {
            tracing::warn!(error = %e, %registry, "the Docker Engine did not list its insecure registries; only loopback is plain HTTP");
            scheme_by_default(registry)
        }
    }
}

/// The engine's rule: its entry for the registry by name, else whether the
/// host's address is in one of its insecure CIDRs.
fn scheme_by_engine(config: &RegistryServiceConfig, registry: &str) -> Scheme {
    let listed = config
        .index_configs
        .as_ref()
        .and_then(|indexes| indexes.get(registry))
        .and_then(|index| index.secure);
    let insecure = match listed {
        Some(secure) => !secure,
        None => address_of(host_of(registry)).is_some_and(|address| {
            let cidrs = config
                .insecure_registry_cidrs
                .as_deref()
                .unwrap_or_default();
            cidrs.iter().any(|cidr| cidr_contains(cidr, address))
        }),
    };
    if insecure {
        Scheme::Http
    } else {
        Scheme::Https
    }
}

/// Without the engine's settings: loopback only, the engine's default.
fn scheme_by_default(registry: &str) -> Scheme {
    match address_of(host_of(registry)) {
        Some(address) if address.is_loopback() => Scheme::Http,
        _ => Scheme::Https,
    }
}

/// The host of `host[:port]` or `[v6]:port`, without brackets and port.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// The address of an IP literal host, and of `localhost` (which the engine
/// resolves to loopback); None for other names.
fn address_of(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().ok()
}

/// Whether `address` lies in `cidr` (`10.0.0.0/8`, `fd00::/8`). A CIDR that
/// does not parse contains nothing.
fn cidr_contains(cidr: &str, address: IpAddr) -> bool {
    let Some((network, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (network, address) {
        (IpAddr::V4(network), IpAddr::V4(address)) => {
            same_prefix(network.to_bits().into(), address.to_bits().into(), bits, 32)
        }
        (IpAddr::V6(network), IpAddr::V6(address)) => {
            same_prefix(network.to_bits(), address.to_bits(), bits, 128)
        }
        // An IPv6 CIDR can name IPv4 addresses as `::ffff:a.b.c.d`.
        (IpAddr::V6(_), IpAddr::V4(address)) => {
            cidr_contains(cidr, IpAddr::V6(address.to_ipv6_mapped()))
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Whether the first `bits` of two `width`-bit numbers agree.
fn same_prefix(network: u128, address: u128, bits: u32, width: u32) -> bool {
    if bits > width {
        return false;
    }
    let shift = width - bits;
    // A shift by the full width would overflow: a /0 matches everything.
    shift >= width || (network >> shift) == (address >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::IndexInfo;
    use std::collections::HashMap;

    fn engine(cidrs: &[&str], insecure_names: &[&str]) -> RegistryServiceConfig {
        let indexes: HashMap<String, IndexInfo> = insecure_names
            .iter()
            .map(|name| {
                let info = IndexInfo {
                    name: Some((*name).to_owned()),
                    secure: Some(false),
                    ..Default::default()
                };
                ((*name).to_owned(), info)
            })
            .collect();
        RegistryServiceConfig {
            insecure_registry_cidrs: Some(cidrs.iter().map(|c| (*c).to_owned()).collect()),
            index_configs: Some(indexes),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_is_plain_http_by_the_engines_default_cidr() {
        let config = engine(&["127.0.0.0/8"], &[]);
        for registry in ["127.0.0.1:5000", "127.9.8.7", "localhost:5001"] {
            assert_eq!(
                scheme_by_engine(&config, registry),
                Scheme::Http,
                "{registry}"
            );
        }
        for registry in ["registry.example.com", "10.0.0.1:5000", "[::1]:5000"] {
            assert_eq!(
                scheme_by_engine(&config, registry),
                Scheme::Https,
                "{registry}"
            );
        }
    }

    #[test]
    fn registries_the_engine_lists_as_insecure_are_plain_http() {
        let config = engine(
            &["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"],
            &["ci-cache:5000"],
        );
        assert_eq!(scheme_by_engine(&config, "ci-cache:5000"), Scheme::Http);
        assert_eq!(scheme_by_engine(&config, "ci-cache:5001"), Scheme::Https);
        assert_eq!(scheme_by_engine(&config, "10.1.200.3:5000"), Scheme::Http);
        assert_eq!(scheme_by_engine(&config, "10.2.0.1:5000"), Scheme::Https);
        assert_eq!(scheme_by_engine(&config, "[fd12::1]:5000"), Scheme::Http);
    }

    #[test]
    fn without_the_engine_only_loopback_is_plain_http() {
        for registry in ["127.0.0.1:5000", "localhost", "[::1]:5000"] {
            assert_eq!(scheme_by_default(registry), Scheme::Http, "{registry}");
        }
        for registry in ["docker.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert_eq!(scheme_by_default(registry), Scheme::Https, "{registry}");
        }
    }

    #[test]
    fn cidrs_match_by_prefix_and_bad_ones_match_nothing() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert!(cidr_contains("0.0.0.0/0", ip("8.8.8.8")));
        assert!(cidr_contains("192.168.1.7/32", ip("192.168.1.7")));
        assert!(!cidr_contains("192.168.1.7/32", ip("192.168.1.8")));
        assert!(cidr_contains("::ffff:0:0/96", ip("1.2.3.4")));
        assert!(!cidr_contains("10.0.0.0/33", ip("10.0.0.1")));
        assert!(!cidr_contains("10.0.0.0", ip("10.0.0.1")));
        assert!(!cidr_contains("nonsense/8", ip("10.0.0.1")));
    }
}
