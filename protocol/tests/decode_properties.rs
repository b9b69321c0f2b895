//! Property tests of job decoding, a bounded number of cases per run: no
//! input makes `decode_job` or `read_envelope` panic, every refusal names at
//! least one field, stays within its bound, and echoes no credential of the
//! message.

use buildbot_protocol::{decode_job, read_envelope, MAX_PROBLEMS};
use proptest::prelude::*;
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/ssh-key-and-auth-registry.job.json");
/// The credentials of the example: never in an error message.
const SECRETS: [&str; 2] = [
    "not-a-real-password",
    "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K",
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("../../etc/passwd".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (as JSON pointer) to a value of the example job.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let path = format!("{prefix}/{k}");
            out.push(path.clone());
            pointers(v, path, out);
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            let path = format!("{prefix}/{i}");
            out.push(path.clone());
            pointers(v, path, out);
        }),
        _ => {}
    }
}

fn example() -> Value {
    serde_json::from_str(EXAMPLE).expect("the example is JSON")
}

fn example_pointers() -> Vec<String> {
    let mut out = Vec::new();
    pointers(&example(), String::new(), &mut out);
    out
}

/// Longest line a refusal may hold: a field path of 128 characters, `: `
/// and a reason of 320, each with a `…` where cut.
const MAX_LINE_CHARS: usize = 128 + 1 + 2 + 320 + 1;

/// A refusal is a bounded list of `field: reason` lines free of
/// credentials; of an accepted job, `read_envelope` reads its id and
/// service.
fn assert_well_formed_refusal(bytes: &[u8]) -> Result<(), TestCaseError> {
    let envelope = read_envelope(bytes);
    match decode_job(bytes) {
        Ok(job) => {
            prop_assert_eq!(envelope.job_id, Some(job.job_id));
            prop_assert_eq!(envelope.service_id, Some(job.service_id));
        }
        Err(error) => assert_well_formed_problems(&error.problems())?,
    }
    Ok(())
}

fn assert_well_formed_problems(problems: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty());
    prop_assert!(problems.len() <= MAX_PROBLEMS + 1);
    for problem in problems {
        prop_assert!(problem.chars().count() <= MAX_LINE_CHARS, "{problem:?}");
        prop_assert!(problem.contains(": "), "no field named in {problem:?}");
        for secret in SECRETS {
            prop_assert!(!problem.contains(secret), "secret echoed in {problem:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_well_formed_refusal(&bytes)?;
    }

    #[test]
    fn arbitrary_json_is_refused_with_a_reason(value in json_value()) {
        assert_well_formed_refusal(value.to_string().as_bytes())?;
    }

    #[test]
    fn one_field_replaced_is_decoded_or_refused_with_a_reason(
        index in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let pointers = example_pointers();
        let pointer = index.get(&pointers);
        let mut job = example();
        if let Some(slot) = job.pointer_mut(pointer) {
            *slot = replacement;
        }
        assert_well_formed_refusal(job.to_string().as_bytes())?;
    }

    #[test]
    fn one_field_removed_is_decoded_or_refused_with_a_reason(index in any::<prop::sample::Index>()) {
        let pointers = example_pointers();
        let pointer = index.get(&pointers);
        let mut job = example();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        match job.pointer_mut(parent) {
            Some(Value::Object(map)) => { map.remove(key); }
            Some(Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>() { items.remove(i); }
            }
            _ => {}
        }
        assert_well_formed_refusal(job.to_string().as_bytes())?;
    }

    // Cut before the closing brace: only trailing whitespace follows it.
    #[test]
    fn truncated_messages_are_refused_with_a_reason(cut in 0..EXAMPLE.trim_end().len()) {
        prop_assert!(decode_job(&EXAMPLE.as_bytes()[..cut]).is_err());
        assert_well_formed_refusal(&EXAMPLE.as_bytes()[..cut])?;
    }
}
