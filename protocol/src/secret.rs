//! A credential value that never prints itself.

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A credential (key, password, token) carried in a job.
///
/// `Debug` and `Display` print `[REDACTED]`; the only way to read the value is
/// [`Secret::expose`], so every use of a secret is visible in the code. The
/// memory is zeroed on drop (via `secrecy`). It serializes as a plain JSON
/// string because orchestrators must be able to put it on the wire.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a credential value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The credential in clear text. Call only where the value is handed to
    /// the component that needs it (git, the Docker daemon, the masker).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Accepts a string; for anything else the error names only the kind of
/// value, never the value, so a credential put in the wrong shape (a number,
/// say) is not echoed in the rejection.
struct SecretVisitor;

impl SecretVisitor {
    fn wrong_type<E: de::Error>(&self, kind: &'static str) -> E {
        E::invalid_type(de::Unexpected::Other(kind), self)
    }
}

impl<'de> de::Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string (the value is not shown)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(self.wrong_type("boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(self.wrong_type("integer"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(self.wrong_type("integer"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(self.wrong_type("integer"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(self.wrong_type("integer"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(self.wrong_type("number"))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(self.wrong_type("bytes"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Secret, E> {
        Err(self.wrong_type("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Secret, E> {
        Err(self.wrong_type("null"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(self.wrong_type("array"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(self.wrong_type("object"))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "password",
            "writeOnly": true,
            "description": "A credential. Workers never log, print or store it."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(format!("{secret}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([REDACTED])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let secret: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"hunter2\"");
    }

    #[test]
    fn wrong_type_errors_do_not_echo_the_value() {
        for (json, kind) in [
            ("1234567", "integer"),
            ("-1234567", "integer"),
            ("12345.67", "number"),
            ("true", "boolean"),
            ("null", "null"),
            ("[\"hunter2\"]", "array"),
            ("{\"k\": \"hunter2\"}", "object"),
        ] {
            let err = serde_json::from_str::<Secret>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(kind), "{err}");
            for part in ["1234567", "12345", "hunter2"] {
                assert!(!err.contains(part), "{err} echoes the value");
            }
        }
    }
}
