//! Base64 as every base64 field of a job is read: the standard alphabet
//! with `=` padding, ASCII whitespace ignored (so the line-wrapped output
//! of `base64` is fine), trailing bits zero.
//!
//! The one decoder for job fields (SSH key, docker config and its `auth`
//! entries, signature, known_hosts keys). Errors say what is wrong, never
//! which character: the text may be a credential.

use ::base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ::base64::{DecodeError, Engine as _};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a text is not base64. Names no character of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Base64Error {
    /// A character outside the standard alphabet (`A-Z a-z 0-9 + /`).
    #[error("not valid base64: a character outside the standard alphabet")]
    InvalidCharacter,
    /// The length does not fit base64 groups of four characters.
    #[error("not valid base64: wrong length")]
    InvalidLength,
    /// `=` padding missing, misplaced or superfluous.
    #[error("not valid base64: wrong padding")]
    InvalidPadding,
    /// The last character encodes bits beyond the data (not canonical).
    #[error("not valid base64: the last character has trailing bits set")]
    TrailingBits,
}

impl From<DecodeError> for Base64Error {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::InvalidByte(_, b'=') | DecodeError::InvalidPadding => Self::InvalidPadding,
            DecodeError::InvalidByte(..) => Self::InvalidCharacter,
            DecodeError::InvalidLength(_) => Self::InvalidLength,
            DecodeError::InvalidLastSymbol(..) => Self::TrailingBits,
        }
    }
}

/// Decodes `text`: standard alphabet, padding required, ASCII whitespace
/// ignored. The empty text decodes to no bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let compact = without_whitespace(text);
    Ok(STANDARD.decode(compact.as_bytes())?)
}

/// [`decode`], also accepting text without its `=` padding. For masking
/// (a secret that merely looks like base64 is masked decoded too), not for
/// job fields, whose padding is required.
pub fn decode_padding_optional(text: &str) -> Result<Vec<u8>, Base64Error> {
    let compact = without_whitespace(text);
    STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| STANDARD_NO_PAD.decode(compact.as_bytes()))
        .map_err(Base64Error::from)
}

/// Standard base64 with padding, as jobs carry binary values.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// The text without ASCII whitespace; zeroed on drop, since it may be a
/// copy of a credential.
fn without_whitespace(text: &str) -> Zeroizing<String> {
    Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_padded_standard_base64() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("+/8=").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn ignores_ascii_whitespace_such_as_line_wrapping() {
        let wrapped = "aGVs\nbG8g\r\nd29y\tbGQ=\n";
        assert_eq!(decode(wrapped).unwrap(), b"hello world");
        assert_eq!(decode("  aGVsbG8=  ").unwrap(), b"hello");
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(decode("not base64!"), Err(Base64Error::InvalidCharacter));
        assert_eq!(decode("%%%"), Err(Base64Error::InvalidCharacter));
        assert_eq!(decode("***"), Err(Base64Error::InvalidCharacter));
        assert_eq!(decode("aGVsbG8"), Err(Base64Error::InvalidPadding));
        assert_eq!(decode("aGVsbG8=="), Err(Base64Error::InvalidPadding));
        assert_eq!(decode("aGVsbG9="), Err(Base64Error::TrailingBits));
        assert_eq!(decode("a"), Err(Base64Error::InvalidLength));
        // URL-safe alphabet is not the standard one.
        assert_eq!(decode("-_8="), Err(Base64Error::InvalidCharacter));
    }

    #[test]
    fn errors_never_echo_the_text() {
        for text in ["s3cr3t!", "hunter2=", "x"] {
            let message = decode(text).unwrap_err().to_string();
            assert!(!message.contains(text), "{message}");
        }
    }

    #[test]
    fn padding_optional_accepts_both_forms() {
        assert_eq!(decode_padding_optional("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_padding_optional("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_padding_optional("aGVs\nbG8").unwrap(), b"hello");
        assert!(decode_padding_optional("not base64!").is_err());
    }

    #[test]
    fn encode_round_trips() {
        for bytes in [&b""[..], b"a", b"ab", b"abc", &[0, 255, 7]] {
            assert_eq!(decode(&encode(bytes)).unwrap(), bytes);
        }
    }
}
