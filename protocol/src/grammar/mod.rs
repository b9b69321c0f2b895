//! One parser per text format a job carries, each turning the text into a
//! typed value once, with a typed error that says what is wrong without
//! ever repeating a credential. Validation ([`Job::validate`](crate::Job::validate))
//! and the worker consume the same values.
//!
//! | module | format | value |
//! | --- | --- | --- |
//! | [`base64`](mod@self::base64) | standard base64, line-wrapped or not | bytes |
//! | [`path`] | slash paths, cleaned lexically | [`CleanPath`], [`RelativePath`] |

pub mod base64;
pub mod path;

pub use self::base64::Base64Error;
pub use path::{CleanPath, PathError, RelativePath};
