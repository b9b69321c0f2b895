//! The original buildbot's conventions, read from a checkout: marker
//! comment lines that repositories written for it carry.
//!
//! - `build.sh` with `#build_inside_docker_image=<image>`: the script runs
//!   as `./build.sh` in that image, in `/project`, and the whole directory
//!   becomes the runtime build context.
//! - A Dockerfile with `#test_in_container_entrypoint=<cmd>`: `<cmd>` runs
//!   in the built image before the push.
//!
//! This is the one place their lines are parsed; the steps get typed
//! values.

use buildbot_protocol::parse_reference;
use std::path::Path;

/// The script the builder convention runs, relative to the checkout.
pub(crate) const BUILD_SCRIPT: &str = "build.sh";
/// Where the builder convention places the checkout in its container.
pub(crate) const PROJECT_DIR: &str = "/project";

const BUILD_INSIDE_MARKER: &str = "build_inside_docker_image";
const TEST_MARKER: &str = "test_in_container_entrypoint";

/// A marker line whose value is unusable. Messages name the file and the
/// marker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConventionError {
    /// The builder image is not an image reference.
    #[error(
        "{BUILD_SCRIPT}: #{BUILD_INSIDE_MARKER}={value}: not a valid image reference: {reason}"
    )]
    BadImage {
        /// The marker's value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The test command is empty.
    #[error("{file}: #{TEST_MARKER}= names no command")]
    EmptyTest {
        /// The job's Dockerfile field's value.
        file: String,
    },
}

/// `build.sh`'s builder image: the image the original ran it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildInside {
    /// The image reference, checked to parse.
    pub(crate) image: String,
}

/// The Dockerfile's test command, split on whitespace as the original's
/// shell split `docker run --rm <image> <cmd>`; it is passed after the
/// image's entrypoint, as `docker run` passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestEntrypoint {
    /// The words of the command.
    pub(crate) args: Vec<String>,
}

/// The builder convention of the checkout at `checkout`: None when it has
/// no `build.sh` (or no marker in it).
pub(crate) fn build_inside(checkout: &Path) -> Result<Option<BuildInside>, ConventionError> {
    // A missing or unreadable script means the convention is not used.
    let Ok(text) = std::fs::read(checkout.join(BUILD_SCRIPT)) else {
        return Ok(None);
    };
    parse_build_inside(&String::from_utf8_lossy(&text))
}

/// The `#build_inside_docker_image=` marker of a `build.sh`'s text.
pub(crate) fn parse_build_inside(text: &str) -> Result<Option<BuildInside>, ConventionError> {
    let Some(value) = marker(text, BUILD_INSIDE_MARKER) else {
        return Ok(None);
    };
    match parse_reference(value) {
        Ok(_) => Ok(Some(BuildInside {
            image: value.to_owned(),
        })),
        Err(e) => Err(ConventionError::BadImage {
            value: value.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The `#test_in_container_entrypoint=` marker of a Dockerfile's text;
/// `file` names it in errors.
pub(crate) fn parse_test_entrypoint(
    text: &str,
    file: &str,
) -> Result<Option<TestEntrypoint>, ConventionError> {
    let Some(value) = marker(text, TEST_MARKER) else {
        return Ok(None);
    };
    let args: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    if args.is_empty() {
        return Err(ConventionError::EmptyTest {
            file: file.to_owned(),
        });
    }
    Ok(Some(TestEntrypoint { args }))
}

/// The value of the first `#<key>=<value>` line (the original grepped
/// for the first one), trimmed.
fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix('#')?.trim_start();
        rest.strip_prefix(key)?.strip_prefix('=').map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_inside_reads_the_first_marker() {
        let script = "#!/bin/sh\n# build the site\n#build_inside_docker_image=node:20\n\
                      #build_inside_docker_image=other\nnpm run build\n";
        assert_eq!(
            parse_build_inside(script).unwrap(),
            Some(BuildInside {
                image: "node:20".into()
            })
        );
        assert_eq!(parse_build_inside("#!/bin/sh\nmake\n").unwrap(), None);
        // A mention that is not a marker line.
        assert_eq!(
            parse_build_inside("echo build_inside_docker_image=x\n").unwrap(),
            None
        );
    }

    #[test]
    fn a_bad_builder_image_is_named() {
        let error = parse_build_inside("#build_inside_docker_image=Bad Image\n").unwrap_err();
        assert!(
            error.to_string().starts_with(
                "build.sh: #build_inside_docker_image=Bad Image: not a valid image reference"
            ),
            "{error}"
        );
    }

    #[test]
    fn test_entrypoint_is_split_into_words() {
        let dockerfile = "FROM alpine\n#test_in_container_entrypoint= /bin/check  --all \n";
        assert_eq!(
            parse_test_entrypoint(dockerfile, "Dockerfile").unwrap(),
            Some(TestEntrypoint {
                args: vec!["/bin/check".into(), "--all".into()]
            })
        );
        assert_eq!(
            parse_test_entrypoint("FROM alpine\n", "Dockerfile").unwrap(),
            None
        );
        let error =
            parse_test_entrypoint("#test_in_container_entrypoint=\n", "Dockerfile").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Dockerfile: #test_in_container_entrypoint= names no command"
        );
    }
}
