//! The images a Dockerfile takes from outside the build: every `FROM` and
//! `COPY --from` that names an image rather than an earlier stage or
//! `scratch`, with the global `ARG`s expanded as the Docker Engine does
//! (the job's `build_args` override their defaults).
//!
//! Parsed by `parse-dockerfile`; only the `$NAME`, `${NAME}`,
//! `${NAME:-default}` and `${NAME-default}` expansions are written here,
//! as no crate expands Dockerfile variables.

use std::collections::{HashMap, HashSet};

/// Why a Dockerfile's external images cannot be listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerfileError {
    /// The Dockerfile does not parse.
    #[error("{0}")]
    Syntax(String),
}

/// The external images `text` uses, in order of first use, each once.
pub(crate) fn external_images(
    text: &str,
    build_args: &HashMap<String, String>,
) -> Result<Vec<String>, DockerfileError> {
    let dockerfile =
        parse_dockerfile::parse(text).map_err(|e| DockerfileError::Syntax(e.to_string()))?;
    let args = global_args(&dockerfile, build_args);
    let mut stages = HashSet::new();
    let mut images = Vec::new();
    let mut note = |name: String, stages: &HashSet<String>| {
        let external = !stages.contains(&name.to_ascii_lowercase())
            && !name.eq_ignore_ascii_case("scratch")
            && !name.is_empty()
            && !images.contains(&name);
        if external {
            images.push(name);
        }
    };
    for instruction in &dockerfile.instructions {
        match instruction {
            parse_dockerfile::Instruction::From(from) => {
                note(expand(&from.image.value, &args), &stages);
                if let Some((_, alias)) = &from.as_ {
                    stages.insert(alias.value.to_ascii_lowercase());
                }
            }
            parse_dockerfile::Instruction::Copy(copy) => {
                let sources = copy.options.iter().filter(|f| f.name.value == "from");
                for source in sources.filter_map(|f| f.value.as_ref()) {
                    // A stage may also be named by its index.
                    let name = expand(&source.value, &args);
                    if name.parse::<usize>().is_err() {
                        note(name, &stages);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(images)
}

/// The image the built stage starts from: the last stage's, or
/// `target`'s, `FROM`, an earlier stage followed to its own base, with the
/// global `ARG`s expanded. None for `scratch` (or no `FROM`).
pub(crate) fn final_base(
    text: &str,
    build_args: &HashMap<String, String>,
    target: Option<&str>,
) -> Result<Option<String>, DockerfileError> {
    let dockerfile =
        parse_dockerfile::parse(text).map_err(|e| DockerfileError::Syntax(e.to_string()))?;
    let args = global_args(&dockerfile, build_args);
    // (stage alias, its FROM), in order.
    let mut stages: Vec<(Option<String>, String)> = Vec::new();
    for instruction in &dockerfile.instructions {
        if let parse_dockerfile::Instruction::From(from) = instruction {
            let alias = from.as_.as_ref().map(|(_, a)| a.value.to_ascii_lowercase());
            stages.push((alias, expand(&from.image.value, &args)));
        }
    }
    let built = match target {
        Some(target) => stages
            .iter()
            .position(|(alias, _)| alias.as_deref() == Some(&target.to_ascii_lowercase())),
        None => stages.len().checked_sub(1),
    };
    let Some(mut at) = built else {
        return Ok(None);
    };
    // An earlier stage's name (or index) leads to that stage's base; each
    // step goes back, so this ends.
    loop {
        let base = &stages[at].1;
        let earlier = stages[..at]
            .iter()
            .rposition(|(alias, _)| alias.as_deref() == Some(&base.to_ascii_lowercase()));
        let earlier = earlier.or_else(|| base.parse::<usize>().ok().filter(|i| *i < at));
        match earlier {
            Some(stage) => at = stage,
            None if base.eq_ignore_ascii_case("scratch") || base.is_empty() => return Ok(None),
            None => return Ok(Some(base.clone())),
        }
    }
}

/// The global `ARG`s (before the first `FROM`) with their values: the
/// job's `build_args` override their defaults.
fn global_args(
    dockerfile: &parse_dockerfile::Dockerfile<'_>,
    build_args: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut args = HashMap::new();
    for arg in dockerfile.global_args() {
        for (name, default) in arg_declarations(&arg.arguments.value) {
            // Declared without a default and not given: unset, so
            // `${NAME-default}` takes its default.
            if let Some(value) = build_args.get(&name).cloned().or(default) {
                args.insert(name, value);
            }
        }
    }
    args
}

/// What `COPY` (without `--from`) and `ADD` take from the build context,
/// as written; None when an `ADD` fetches a URL (content the context
/// cannot tell). Here-documents are in the Dockerfile's own text.
pub(crate) fn context_sources(text: &str) -> Result<Option<Vec<String>>, DockerfileError> {
    let dockerfile =
        parse_dockerfile::parse(text).map_err(|e| DockerfileError::Syntax(e.to_string()))?;
    let mut sources = Vec::new();
    for instruction in &dockerfile.instructions {
        let paths = match instruction {
            parse_dockerfile::Instruction::Copy(copy)
                if !copy.options.iter().any(|f| f.name.value == "from") =>
            {
                &copy.src
            }
            parse_dockerfile::Instruction::Add(add) => &add.src,
            _ => continue,
        };
        for source in paths {
            let parse_dockerfile::Source::Path(path) = source else {
                continue;
            };
            let path = path.value.to_string();
            if path.contains("://") || path.starts_with("git@") {
                return Ok(None);
            }
            sources.push(path);
        }
    }
    Ok(Some(sources))
}

/// `NAME[=default] …` of one `ARG` instruction.
fn arg_declarations(arguments: &str) -> Vec<(String, Option<String>)> {
    arguments
        .split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((name, default)) => (name.to_owned(), Some(unquote(default).to_owned())),
            None => (word.to_owned(), None),
        })
        .collect()
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// `text` with `$NAME`, `${NAME}`, `${NAME:-default}` and
/// `${NAME-default}` replaced from `args` (unset: empty, as the Engine).
fn expand(text: &str, args: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(braced) = rest.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                out.push('$');
                continue;
            };
            out.push_str(&braced_value(&braced[..end], args));
            rest = &braced[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
                continue;
            }
            out.push_str(args.get(&rest[..end]).map_or("", String::as_str));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The value of `NAME`, `NAME:-default` or `NAME-default`.
fn braced_value(inner: &str, args: &HashMap<String, String>) -> String {
    if let Some((name, default)) = inner.split_once(":-") {
        match args.get(name).filter(|v| !v.is_empty()) {
            Some(value) => value.clone(),
            None => default.to_owned(),
        }
    } else if let Some((name, default)) = inner.split_once('-') {
        args.get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    } else {
        args.get(inner).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_base_follows_stages_to_an_image() {
        let text = "ARG BASE=alpine:3.20\nFROM golang:1.22 AS build\nRUN make\n\
                    FROM $BASE AS runtime\nFROM runtime\nCOPY --from=build /app /app\n";
        let no_args = HashMap::new();
        assert_eq!(
            final_base(text, &no_args, None).unwrap().as_deref(),
            Some("alpine:3.20")
        );
        assert_eq!(
            final_base(text, &no_args, Some("build"))
                .unwrap()
                .as_deref(),
            Some("golang:1.22")
        );
        let args = HashMap::from([("BASE".to_owned(), "debian:12".to_owned())]);
        assert_eq!(
            final_base(text, &args, None).unwrap().as_deref(),
            Some("debian:12")
        );
        assert_eq!(final_base("FROM scratch\n", &no_args, None).unwrap(), None);
    }

    fn images(text: &str, build_args: &[(&str, &str)]) -> Vec<String> {
        let build_args = build_args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        external_images(text, &build_args).expect("parses")
    }

    #[test]
    fn stages_and_scratch_are_not_external() {
        let text = "FROM node:20 AS Deps\nRUN x\nFROM deps AS build\n\
                    FROM scratch\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n";
        assert_eq!(images(text, &[]), ["node:20"]);
    }

    #[test]
    fn copy_from_an_image_is_external() {
        let text = "FROM busybox\nCOPY --from=registry.example.com/secret:1 /s /s\n";
        assert_eq!(
            images(text, &[]),
            ["busybox", "registry.example.com/secret:1"]
        );
    }

    #[test]
    fn global_args_expand_with_build_args_overriding_defaults() {
        let text = "ARG BASE=debian\nARG TAG\nARG REG=\"r.example.com\"\n\
                    FROM ${BASE}:${TAG:-12}\nFROM $REG/app:${TAG-x}\nFROM ${NONE}x\n";
        assert_eq!(images(text, &[]), ["debian:12", "r.example.com/app:x", "x"]);
        assert_eq!(
            images(text, &[("BASE", "alpine"), ("TAG", "3")]),
            ["alpine:3", "r.example.com/app:3", "x"]
        );
    }

    #[test]
    fn platform_flags_and_duplicates() {
        let text = "FROM --platform=$BUILDPLATFORM golang:1 AS b\nFROM golang:1\n";
        assert_eq!(images(text, &[]), ["golang:1"]);
    }

    #[test]
    fn context_sources_are_what_copy_and_add_read_from_the_context() {
        let text = "FROM a AS b\nCOPY --chown=1 package.json lock.json ./\n\
                    COPY --from=b /x /y\nADD src/ /src\nRUN make\n";
        assert_eq!(
            context_sources(text).expect("parses"),
            Some(vec![
                "package.json".into(),
                "lock.json".into(),
                "src/".into()
            ])
        );
        let url = "FROM a\nADD https://example.com/x.tgz /x\n";
        assert_eq!(context_sources(url).expect("parses"), None);
    }

    #[test]
    fn a_broken_dockerfile_is_an_error() {
        assert!(external_images("FROM", &HashMap::new()).is_err());
    }
}
