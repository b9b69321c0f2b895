//! The job's SSH private key: base64 of the PEM or OpenSSH text of the key
//! file (as `base64 -w0 id_ed25519` prints it), plus an optional passphrase.
//!
//! Checked by hand, not with the `ssh-key` crate: that crate reads only the
//! OpenSSH container, not PEM (`BEGIN RSA PRIVATE KEY`, PKCS#8), and would
//! refuse the placeholder keys of the examples. libssh2 has the final word
//! when the worker hands it the key; this checks what can be checked
//! without it, and finds out whether the key is encrypted.

use super::base64;
use crate::Secret;
use thiserror::Error;
use zeroize::Zeroizing;

/// The tail of every PEM/OpenSSH private key's first line.
const PRIVATE_KEY_MARKER: &str = "PRIVATE KEY-----";
/// The start of every PEM line.
const BEGIN_MARKER: &str = "-----BEGIN";
/// Magic at the start of an OpenSSH private key container.
const OPENSSH_MAGIC: &[u8] = b"openssh-key-v1\0";

/// Why the key (or its passphrase) cannot be used. Names no part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PrivateKeyError {
    /// The key is empty.
    #[error("empty")]
    Empty,
    /// The key is not base64.
    #[error("not valid base64; encode the key file, e.g. with `base64 -w0 id_ed25519`")]
    NotBase64,
    /// The decoded bytes are not text (not UTF-8, or a NUL byte).
    #[error("not base64 of a text (PEM or OpenSSH) private key")]
    NotText,
    /// The decoded text is not a private key.
    #[error("not base64 of a private key (expected \"-----BEGIN ... PRIVATE KEY-----\" text)")]
    NotPrivateKey,
    /// The passphrase is set but empty.
    #[error("empty passphrase; omit it for a key without a passphrase")]
    EmptyPassphrase,
    /// The key is encrypted, and no passphrase is given.
    #[error("encrypted, but no passphrase is set")]
    EncryptedWithoutPassphrase,
}

/// A decoded private key, in memory only: the PEM/OpenSSH text and the
/// passphrase are [`Secret`]s (never printed, zeroed on drop).
#[derive(Debug, Clone)]
pub struct SshPrivateKey {
    pem: Secret,
    passphrase: Option<Secret>,
    encrypted: bool,
}

impl SshPrivateKey {
    /// Decodes `base64_key` (base64 of the key file) and checks it with
    /// `passphrase`: the key first, then the passphrase.
    pub fn parse(
        base64_key: &Secret,
        passphrase: Option<&Secret>,
    ) -> Result<Self, PrivateKeyError> {
        let pem = decode_pem(base64_key)?;
        if let Some(passphrase) = passphrase {
            check_passphrase(passphrase)?;
        }
        let encrypted = is_encrypted_key(pem.expose());
        if encrypted && passphrase.is_none() {
            return Err(PrivateKeyError::EncryptedWithoutPassphrase);
        }
        Ok(Self {
            pem,
            passphrase: passphrase.cloned(),
            encrypted,
        })
    }

    /// The PEM/OpenSSH text, for libssh2.
    pub fn pem(&self) -> &Secret {
        &self.pem
    }

    /// The passphrase, set only for a key that has one.
    pub fn passphrase(&self) -> Option<&Secret> {
        self.passphrase.as_ref()
    }

    /// Whether the key is passphrase-protected.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }
}

/// A passphrase, when given, must not be empty: an empty one means the
/// job author meant "no passphrase" and should omit it.
pub(crate) fn check_passphrase(passphrase: &Secret) -> Result<(), PrivateKeyError> {
    if passphrase.expose().is_empty() {
        Err(PrivateKeyError::EmptyPassphrase)
    } else {
        Ok(())
    }
}

/// The key's text from its base64, checked to look like a private key.
fn decode_pem(base64_key: &Secret) -> Result<Secret, PrivateKeyError> {
    let encoded = base64_key.expose();
    if encoded.is_empty() {
        return Err(PrivateKeyError::Empty);
    }
    let bytes = Zeroizing::new(base64::decode(encoded).map_err(|_| PrivateKeyError::NotBase64)?);
    // libssh2 takes the key as a C string: no NUL inside.
    let text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|text| !text.contains('\0'))
        .ok_or(PrivateKeyError::NotText)?;
    if !(text.contains(BEGIN_MARKER) && text.contains(PRIVATE_KEY_MARKER)) {
        return Err(PrivateKeyError::NotPrivateKey);
    }
    // `Secret::new` copies exactly the text; `bytes` is zeroed on return.
    Ok(Secret::new(text))
}

/// Whether a PEM or OpenSSH private key text is passphrase-protected.
pub(crate) fn is_encrypted_key(text: &str) -> bool {
    if text.contains("Proc-Type: 4,ENCRYPTED") || text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return true;
    }
    let Some(body) = pem_body(text, "OPENSSH PRIVATE KEY") else {
        return false;
    };
    // openssh-key-v1: magic, then the cipher name as an SSH string.
    let Some(rest) = body.strip_prefix(OPENSSH_MAGIC) else {
        return false;
    };
    ssh_string(rest).is_some_and(|(cipher, _)| cipher != b"none")
}

/// The base64-decoded body between `-----BEGIN <label>-----` and `-----END`.
fn pem_body(text: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let start = text.find(&begin)? + begin.len();
    let end = start + text[start..].find("-----END")?;
    base64::decode(&text[start..end]).ok().map(Zeroizing::new)
}

/// Splits one SSH wire-format string (u32 length, bytes) off `data`.
pub(crate) fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let value = data.get(4..4usize.checked_add(len)?)?;
    Some((value, &data[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::base64::encode;
    use crate::test_support::FAKE_KEY_TEXT;

    /// Base64 of an unencrypted or encrypted OpenSSH private key container
    /// (the key material itself is irrelevant here). From worker/src/git.rs.
    fn openssh_key(cipher: &str) -> Secret {
        let mut body = OPENSSH_MAGIC.to_vec();
        for field in [cipher, "none", ""] {
            body.extend_from_slice(&(field.len() as u32).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        let pem = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            encode(body)
        );
        Secret::new(encode(pem))
    }

    fn parse(key: &str, passphrase: Option<&str>) -> Result<SshPrivateKey, PrivateKeyError> {
        let passphrase = passphrase.map(Secret::new);
        SshPrivateKey::parse(&Secret::new(key), passphrase.as_ref())
    }

    // Cases of validate.rs's `ssh_key_auth` and git.rs's
    // `private_key_must_be_base64_of_a_key`.
    #[test]
    fn refuses_what_is_not_a_private_key() {
        assert_eq!(parse("", None).unwrap_err(), PrivateKeyError::Empty);
        assert_eq!(
            parse("not base64!", None).unwrap_err(),
            PrivateKeyError::NotBase64
        );
        assert_eq!(
            parse(&encode("ssh-ed25519 AAAA user@host"), None).unwrap_err(),
            PrivateKeyError::NotPrivateKey
        );
        assert_eq!(
            parse(&encode("hello"), None).unwrap_err(),
            PrivateKeyError::NotPrivateKey
        );
        assert_eq!(
            parse(&encode([0xff, 0xfe]), None).unwrap_err(),
            PrivateKeyError::NotText
        );
        let with_nul = format!("{FAKE_KEY_TEXT}\0");
        assert_eq!(
            parse(&encode(with_nul), None).unwrap_err(),
            PrivateKeyError::NotText
        );
        assert_eq!(
            PrivateKeyError::NotBase64.to_string(),
            "not valid base64; encode the key file, e.g. with `base64 -w0 id_ed25519`"
        );
        assert_eq!(
            PrivateKeyError::NotPrivateKey.to_string(),
            "not base64 of a private key (expected \"-----BEGIN ... PRIVATE KEY-----\" text)"
        );
    }

    #[test]
    fn line_wrapped_base64_is_fine() {
        let wrapped = encode(FAKE_KEY_TEXT)
            .as_bytes()
            .chunks(20)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let key = parse(&wrapped, None).unwrap();
        assert_eq!(key.pem().expose(), FAKE_KEY_TEXT);
        assert!(!key.is_encrypted());
        assert!(key.passphrase().is_none());
    }

    #[test]
    fn an_empty_passphrase_is_refused() {
        assert_eq!(
            parse(&encode(FAKE_KEY_TEXT), Some("")).unwrap_err(),
            PrivateKeyError::EmptyPassphrase
        );
        assert!(check_passphrase(&Secret::new("pw")).is_ok());
    }

    // From worker/src/git.rs (`encrypted_keys_need_a_passphrase`).
    #[test]
    fn encrypted_keys_need_a_passphrase() {
        let encrypted = openssh_key("aes256-ctr");
        assert_eq!(
            SshPrivateKey::parse(&encrypted, None).unwrap_err(),
            PrivateKeyError::EncryptedWithoutPassphrase
        );
        let key = SshPrivateKey::parse(&encrypted, Some(&Secret::new("pw"))).unwrap();
        assert!(key.is_encrypted());
        assert_eq!(key.passphrase().map(Secret::expose), Some("pw"));
        let plain = SshPrivateKey::parse(&openssh_key("none"), None).unwrap();
        assert!(!plain.is_encrypted());
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(is_encrypted_key(pem));
        assert!(is_encrypted_key(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
        ));
        assert!(!is_encrypted_key(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
        ));
        assert!(!is_encrypted_key(FAKE_KEY_TEXT));
    }

    #[test]
    fn debug_never_shows_the_key_or_passphrase() {
        let key = SshPrivateKey::parse(&openssh_key("aes256-ctr"), Some(&Secret::new("pw-8c1d")))
            .unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("pw-8c1d"), "{debug}");
        assert!(!debug.contains("OPENSSH"), "{debug}");
    }
}
