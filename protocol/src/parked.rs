//! A dead-lettered job as it is parked for inspection: everything an
//! operator needs to see what the job was (ids, repository, revision,
//! image, build settings) and no credential. A whitelist, not a list of
//! secret fields: a rejected job may carry a credential anywhere, under any
//! name, and what is parked outlives the job.

use serde_json::Value;

/// What a masked value is replaced with.
pub const MASK: &str = "********";

/// String values kept as they are, by field path (array indices left out);
/// a path keeps everything below it.
const KEPT: &[&str] = &[
    "version",
    "job_id",
    "service_id",
    "repo.url",
    "repo.revision",
    "repo.known_hosts",
    "repo.submodules",
    "repo.auth.type",
    "repo.auth.username",
    "build",
    "image",
    "registry_auth.type",
    "registry_auth.server",
    "registry_auth.username",
    "test",
    "timeout_secs",
    "signature",
];

/// Paths inside [`KEPT`] ones whose values are masked anyway: they are
/// where a build's tokens travel.
const MASKED_INSIDE_KEPT: &[&str] = &[
    "build.build_args",
    "build.secrets",
    "build.builder.env",
    "build.builder.secret_env",
    "test.env",
];

/// The body to park for a dead-lettered message: a JSON object with every
/// string outside [`KEPT`] replaced by [`MASK`], or, for a body that is no
/// JSON object, a note of its size (it may hold anything).
pub fn parked_body(body: &[u8]) -> Vec<u8> {
    let masked = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) if value.is_object() => {
            mask_value(&mut value, &mut Vec::new());
            value
        }
        _ => serde_json::json!({
            "unreadable_job": format!(
                "{} bytes that are not a JSON object, dropped: they may hold credentials",
                body.len()
            )
        }),
    };
    // Serializing a Value cannot fail.
    serde_json::to_vec(&masked).unwrap_or_default()
}

fn mask_value(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                path.push(key.clone());
                mask_value(member, path);
                path.pop();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask_value(item, path)),
        Value::String(text) if !is_kept(path) => MASK.clone_into(text),
        _ => {}
    }
}

fn is_kept(path: &[String]) -> bool {
    let under = |prefix: &&str| {
        let prefix: Vec<&str> = prefix.split('.').collect();
        path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
    };
    KEPT.iter().any(under) && !MASKED_INSIDE_KEPT.iter().any(under)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(json: &str) -> Value {
        serde_json::from_slice(&parked_body(json.as_bytes())).unwrap()
    }

    #[test]
    fn credentials_are_masked_and_the_rest_kept() {
        let value = parked(
            r#"{"version":1,"job_id":"j","service_id":"s",
                "repo":{"url":"ssh://git@h/r","revision":"main",
                        "auth":{"type":"ssh_key","private_key":"S1","passphrase":"S2"}},
                "build":{"context":".","build_args":{"TOKEN":"S3"},"labels":{"a":"b"},
                         "builder":{"image":"i","env":{"X":"S4"},"command":["make"]}},
                "image":{"repository":"r","tags":["v1","latest"]},
                "registry_auth":{"type":"basic","username":"u","password":"S5"},
                "unknown":{"password":"S6"}}"#,
        );
        let text = value.to_string();
        for secret in ["S1", "S2", "S3", "S4", "S5", "S6"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(value["repo"]["url"], "ssh://git@h/r");
        assert_eq!(value["repo"]["auth"]["type"], "ssh_key");
        assert_eq!(value["build"]["labels"]["a"], "b");
        assert_eq!(value["build"]["builder"]["command"][0], "make");
        assert_eq!(value["image"]["tags"][1], "latest");
        assert_eq!(value["registry_auth"]["username"], "u");
        assert_eq!(value["repo"]["auth"]["private_key"], MASK);
        assert_eq!(value["version"], 1);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_dropped() {
        for body in ["not json ssh-key", "[\"S1\"]", "\"S1\""] {
            let text = parked(body).to_string();
            assert!(!text.contains("S1") && !text.contains("ssh-key"), "{text}");
            assert!(text.contains("dropped"), "{text}");
        }
    }
}
