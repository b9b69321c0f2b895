//! Fixtures shared by the unit tests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::Job;

/// An obviously fake OpenSSH private key: the markers and nothing usable.
pub const FAKE_KEY_TEXT: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// A `known_hosts` line with a well-formed (made up) ed25519 key.
pub fn known_hosts_line(host: &str) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[7u8; 32]);
    format!("{host} ssh-ed25519 {}", b64(blob))
}

/// A valid job using most fields.
pub fn job_json() -> Value {
    json!({
        "version": 1,
        "job_id": "6f1c2a3e-9b7d-4c1e-8f00-0123456789ab",
        "service_id": "web-app",
        "repo": {
            "url": "ssh://git@git.example.com:2222/team/web-app.git",
            "revision": "main",
            "auth": {"type": "ssh_key", "private_key": b64(FAKE_KEY_TEXT)},
            "known_hosts": format!("# pinned\n{}\n", known_hosts_line("[git.example.com]:2222")),
            "submodules": false
        },
        "build": {
            "context": "services/web",
            "dockerfile": "docker/Dockerfile",
            "build_args": {"RUST_VERSION": "1.88"},
            "target": "runtime",
            "labels": {"org.example.team": "web"},
            "no_cache": false,
            "pull": true,
            "cache_from": ["registry.example.com/team/web-app:cache"]
        },
        "image": {
            "repository": "registry.example.com:5000/team/web-app",
            "tags": ["0123456789abcdef0123456789abcdef01234567", "latest"],
            "push": true
        },
        "registry_auth": {"type": "basic", "username": "ci", "password": "not-a-real-password"},
        "timeout_secs": 1800
    })
}

pub fn job() -> Job {
    serde_json::from_value(job_json()).expect("the fixture deserializes")
}
