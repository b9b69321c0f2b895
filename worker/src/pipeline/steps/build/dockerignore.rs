//! `.dockerignore` patterns with Docker's semantics.
//!
//! Owns reading a `.dockerignore` file and deciding which paths of a build
//! context it excludes. The rules are those of moby's `patternmatcher`
//! package and its `ignorefile.ReadAll`, which `docker build` uses:
//!
//! - Lines are trimmed; blank lines and lines starting with `#` are skipped.
//!   A leading `!` marks an exception. Each pattern is cleaned like Go's
//!   `filepath.Clean` and a leading `/` is dropped: every pattern is anchored
//!   at the context root.
//! - `*` matches a run of characters other than `/`, `?` one character other
//!   than `/`, `[...]` / `[^...]` a character class, `\` escapes the next
//!   character and `**` any number of directories, including none.
//! - A pattern that matches a directory matches everything under it.
//! - The last matching pattern decides; `!` re-includes.
//!
//! moby turns each pattern into a Go regexp, which leaks regexp meaning into
//! a few corners; here those follow Go's `filepath.Match`, which Docker
//! documents as the rule: `\x` is always the literal `x` (moby's `\d` would
//! be a digit class), `*` and `?` inside `[...]` are literal, and a reversed
//! range such as `[z-a]` is reported when the file is read rather than
//! failing the build at the first path.
//!
//! Hand-written rather than built on the `ignore` crate: that crate
//! implements gitignore semantics, which differ from Docker's. Gitignore
//! matches a slash-less pattern at any depth (an implicit `**/`), treats a
//! trailing `/` as "directories only", and cannot re-include a file once its
//! parent directory is excluded. Docker anchors every pattern at the context
//! root, cleans trailing slashes away, and lets `!docs/keep.md` bring back a
//! file inside an excluded `docs`.

use buildbot_protocol::grammar::path::CleanPath;
use std::iter::Peekable;
use std::str::Chars;
use thiserror::Error;

/// `path` cleaned like Go's `filepath.Clean` (the protocol's one path
/// cleaner), as the matcher's text.
fn clean(path: &str) -> String {
    CleanPath::new(path).as_str().to_owned()
}

/// A parsed `.dockerignore`: ordered patterns, the last match wins.
#[derive(Debug, Clone, Default)]
pub(super) struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// A `.dockerignore` line that is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(".dockerignore line {line}: invalid pattern {pattern:?}: {reason}")]
pub(crate) struct PatternError {
    /// 1-based line number in the file.
    line: usize,
    /// The line as written, trimmed.
    pattern: String,
    /// What is wrong with it.
    reason: &'static str,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub(super) fn parse(text: &str) -> Result<DockerIgnore, PatternError> {
        // Docker strips a UTF-8 byte order mark from the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let Some(entry) = read_line(line) else {
                continue;
            };
            let compiled = Pattern::compile(&entry).map_err(|reason| PatternError {
                line: index + 1,
                pattern: line.trim().to_owned(),
                reason,
            })?;
            patterns.extend(compiled);
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether `rel_path` (slash-separated, relative to the context root) is
    /// excluded from the context, directly or through a parent directory.
    pub(super) fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path);
        if path == "." {
            // The context root itself is never excluded, as in moby.
            return false;
        }
        let parents = parent_dirs(&path);
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that can flip the verdict needs evaluating; this
            // is moby's loop, and equivalent to "the last match wins".
            if pattern.exception != excluded {
                continue;
            }
            let hit = pattern.matcher.matches(&path)
                || parents.iter().any(|dir| pattern.matcher.matches(dir));
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether some exception (`!`) pattern could match a path under `dir`.
    ///
    /// A walker uses it to decide whether an excluded directory must still be
    /// descended into. It may answer `true` needlessly, never `false` wrongly:
    /// skipping a directory is only an optimisation. (moby's walkers make the
    /// same decision with a literal prefix test and walk everything as soon as
    /// one exception has a wildcard; this one runs the pattern itself.)
    pub(super) fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir = clean(dir);
        let prefix = if dir == "." {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.patterns
            .iter()
            .any(|p| p.exception && p.matcher.may_match_below(&prefix))
    }
}

/// One line of the file as `ignorefile.ReadAll` turns it into a pattern
/// string, or `None` for a comment or blank line.
fn read_line(line: &str) -> Option<String> {
    // Checked before trimming, as Docker does: "  # x" is a pattern.
    if line.starts_with('#') {
        return None;
    }
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (exception, body) = match line.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, line),
    };
    let mut pattern = String::new();
    if !body.is_empty() {
        let cleaned = clean(body);
        // A leading `/` means "at the context root", which every pattern is.
        pattern = match cleaned.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.to_owned(),
            _ => cleaned,
        };
    }
    Some(if exception {
        format!("!{pattern}")
    } else {
        pattern
    })
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    matcher: Matcher,
}

impl Pattern {
    /// Compiles a `read_line` result the way `patternmatcher.New` does.
    /// `Ok(None)` for a pattern that can never match a context path.
    fn compile(entry: &str) -> Result<Option<Pattern>, &'static str> {
        let trimmed = entry.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let cleaned = clean(trimmed);
        let (exception, body) = match cleaned.strip_prefix('!') {
            Some("") => return Err("`!` needs a pattern after it"),
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        let matcher = Matcher::parse(body)?;
        // `.` and `/` name the context root, which is never matched.
        if body == "." || body == "/" {
            return Ok(None);
        }
        Ok(Some(Pattern { exception, matcher }))
    }
}

/// How one pattern matches a path.
#[derive(Debug, Clone)]
enum Matcher {
    /// `**` followed by plain text. moby matches this as a bare suffix, so
    /// `**.go` matches `a.go` and `**foo` matches `barfoo`; kept for
    /// fidelity.
    Suffix(String),
    /// Anything else, as a sequence of tokens.
    Glob(Vec<Token>),
}

/// One element of a glob.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A literal character.
    Char(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `[...]`: one character (possibly `/`) in or, negated, not in ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` (and a following `/`) before more pattern: nothing, or any text
    /// ending in `/`. Always followed by `DirStarBody`; this token is the
    /// choice between skipping the body and entering it.
    DirStar,
    /// The "any text ending in `/`" of a `DirStar`.
    DirStarBody,
    /// `**` at the end: anything.
    Rest,
}

const UNCLOSED: &str = "unclosed character class `[`";

impl Matcher {
    fn parse(body: &str) -> Result<Matcher, &'static str> {
        let tokens = parse_glob(body)?;
        if let Some(rest) = body.strip_prefix("**") {
            if !rest.contains(['*', '?', '[', ']', '\\']) {
                return Ok(Matcher::Suffix(rest.to_owned()));
            }
        }
        Ok(Matcher::Glob(tokens))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            Matcher::Glob(tokens) => run(tokens, path)[tokens.len()],
        }
    }

    /// Whether some path starting with `prefix` (a directory plus `/`) and
    /// continuing past it could match.
    fn may_match_below(&self, prefix: &str) -> bool {
        match self {
            // "<prefix>x<suffix>" always exists.
            Matcher::Suffix(_) => true,
            Matcher::Glob(tokens) => {
                let states = run(tokens, prefix);
                states[..tokens.len()].iter().any(|&alive| alive)
            }
        }
    }
}

/// Parses a cleaned pattern into tokens, reporting the syntax errors Go's
/// `filepath.Match` reports (Docker validates patterns with it).
fn parse_glob(body: &str) -> Result<Vec<Token>, &'static str> {
    let mut chars = body.chars().peekable();
    let mut tokens = Vec::new();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if chars.next_if_eq(&'*').is_some() => {
                // moby treats `**/` as `**`.
                chars.next_if_eq(&'/');
                if chars.peek().is_none() {
                    Token::Rest
                } else {
                    tokens.push(Token::DirStar);
                    Token::DirStarBody
                }
            }
            '*' => Token::Star,
            '?' => Token::AnyChar,
            // An escaped character is literal, as in `filepath.Match`.
            '\\' => Token::Char(chars.next().ok_or("trailing `\\` escapes nothing")?),
            '[' => parse_class(&mut chars)?,
            c => Token::Char(c),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Parses a character class after its `[`, by `filepath.Match`'s rules:
/// `^` negates, `a-z` is a range, `\` escapes, and `-` or `]` must be escaped
/// where a character is expected. Inside a class `*` and `?` are literal.
fn parse_class(chars: &mut Peekable<Chars<'_>>) -> Result<Token, &'static str> {
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = Vec::new();
    loop {
        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
            return Ok(Token::Class { negated, ranges });
        }
        let lo = class_char(chars)?;
        let hi = match chars.next_if_eq(&'-') {
            Some(_) => class_char(chars)?,
            None => lo,
        };
        // Go's Match accepts a reversed range, but Docker's regexp compiler
        // then fails on every path: reject it up front instead.
        if lo > hi {
            return Err("character range is out of order");
        }
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &mut Peekable<Chars<'_>>) -> Result<char, &'static str> {
    match chars.next() {
        None => Err(UNCLOSED),
        Some('-' | ']') => Err("`-` or `]` in a character class must be escaped"),
        Some('\\') => chars.next().ok_or(UNCLOSED),
        Some(c) => Ok(c),
    }
}

impl Token {
    /// How many tokens ahead matching may move without consuming anything:
    /// to the next (an empty match), or past a `DirStar`'s body too.
    fn skips(&self) -> &'static [usize] {
        match self {
            Token::Star | Token::Rest => &[1],
            Token::DirStar => &[1, 2],
            _ => &[],
        }
    }

    /// Whether the token can consume `c` and stay active (a repetition).
    fn repeats_on(&self, c: char) -> bool {
        match self {
            Token::Star => c != '/',
            Token::DirStarBody | Token::Rest => true,
            _ => false,
        }
    }

    /// Whether the token can consume `c` and be done.
    fn completes_on(&self, c: char) -> bool {
        match self {
            Token::Char(want) => c == *want,
            Token::AnyChar => c != '/',
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            // `.*/`: the last character consumed is a `/`.
            Token::DirStarBody => c == '/',
            Token::Star | Token::Rest | Token::DirStar => false,
        }
    }
}

/// Runs the glob as a non-deterministic automaton over `text`: the result
/// says, for each token index (and `tokens.len()` for "all matched"),
/// whether matching can be there after the whole text. Linear in the text
/// times the pattern, unlike backtracking, whatever the stars.
fn run(tokens: &[Token], text: &str) -> Vec<bool> {
    let mut states = vec![false; tokens.len() + 1];
    states[0] = true;
    skip_empty(tokens, &mut states);
    for c in text.chars() {
        let mut next = vec![false; tokens.len() + 1];
        for (i, token) in tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            if token.repeats_on(c) {
                next[i] = true;
            }
            if token.completes_on(c) {
                next[i + 1] = true;
            }
        }
        skip_empty(tokens, &mut next);
        states = next;
        if !states.contains(&true) {
            break;
        }
    }
    states
}

/// Lets every active token that can match nothing pass control on. Tokens
/// only hand on forwards, so one ascending pass reaches the closure.
fn skip_empty(tokens: &[Token], states: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if states[i] {
            for step in token.skips() {
                states[i + step] = true;
            }
        }
    }
}

/// The proper ancestors of a clean relative path: `a/b/c` gives `a`, `a/b`.
fn parent_dirs(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(at, _)| &path[..at]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        match DockerIgnore::parse(text) {
            Ok(ignore) => ignore,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    /// Asserts which of `paths` the file excludes.
    fn check(text: &str, excluded: &[&str], included: &[&str]) {
        let ignore = ignore(text);
        for path in excluded {
            assert!(ignore.is_excluded(path), "{text:?} should exclude {path:?}");
        }
        for path in included {
            assert!(!ignore.is_excluded(path), "{text:?} should keep {path:?}");
        }
    }

    fn matches(pattern: &str, path: &str) -> bool {
        ignore(pattern).is_excluded(path)
    }

    #[test]
    fn reading_follows_ignorefile_read_all() {
        let ignore = ignore(
            "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# comment\n! /inverted/abs/path\n",
        );
        let exceptions: Vec<_> = ignore.patterns.iter().map(|p| p.exception).collect();
        assert_eq!(exceptions, [false, false, false, false, true]);
        assert!(ignore.is_excluded("test1"));
        assert!(ignore.is_excluded("test2"));
        assert!(ignore.is_excluded("a/file/here"));
        assert!(ignore.is_excluded("lastfile"));
        assert!(!ignore.is_excluded("# comment"));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        check(
            "# comment\n\n   \n  build  \r\n\t# not a comment\n",
            &["build", "build/x", "# not a comment"],
            &["# comment", "comment"],
        );
    }

    #[test]
    fn docker_docs_example_temp() {
        let text = "# comment\n*/temp*\n*/*/temp*\ntemp?\n";
        check(
            text,
            &[
                "somedir/temporary.txt",
                "somedir/temp",
                "somedir/temp/inner.txt",
                "somedir/subdir/temporary.txt",
                "tempa",
                "tempb",
            ],
            &[
                "temporary.txt",
                "temp",
                "tempab",
                "a/b/c/temp.txt",
                "somedir/xtemp",
            ],
        );
    }

    #[test]
    fn docker_docs_example_double_star() {
        check(
            "**/*.go",
            &["main.go", "cmd/main.go", "a/b/c/d.go"],
            &["main.rs", "go", "cmd/go.mod"],
        );
    }

    #[test]
    fn docker_docs_example_exception() {
        check(
            "*.md\n!README.md\n",
            &["CHANGELOG.md", "docs.md"],
            &["README.md", "main.rs"],
        );
    }

    #[test]
    fn docker_docs_example_order_secret_last() {
        check(
            "*.md\n!README*.md\nREADME-secret.md\n",
            &["CHANGELOG.md", "README-secret.md"],
            &["README.md", "README-public.md"],
        );
    }

    #[test]
    fn docker_docs_example_order_exception_last() {
        check(
            "*.md\nREADME-secret.md\n!README*.md\n",
            &["CHANGELOG.md"],
            &["README.md", "README-secret.md", "README-public.md"],
        );
    }

    #[test]
    fn excluded_dir_with_reincluded_file() {
        let text = "docs\n!docs/keep.md\n";
        check(
            text,
            &["docs", "docs/other.md", "docs/sub/keep.md"],
            &["docs/keep.md", "keep.md", "docsx"],
        );
        let ignore = ignore(text);
        assert!(ignore.may_reinclude_under("docs"));
        assert!(!ignore.may_reinclude_under("docs/sub"));
        assert!(!ignore.may_reinclude_under("other"));
    }

    #[test]
    fn exception_of_a_whole_dir_reincludes_its_contents() {
        check(
            "**\n!util/docker/web\n",
            &["util", "util/docker", "other/file"],
            &["util/docker/web", "util/docker/web/foo"],
        );
        // ...unless a later pattern excludes again.
        check(
            "**\n!util/docker/web\nutil/docker/web/foo\n",
            &["util/docker/web/foo"],
            &["util/docker/web/bar"],
        );
    }

    #[test]
    fn exception_before_exclusion_does_not_reinclude() {
        check("!keep.go\n*.go\n", &["keep.go", "x.go"], &[]);
    }

    #[test]
    fn parent_match_excludes_contents() {
        check(
            "build\na*\n",
            &["build/x/y", "abc/def", "a/b/c"],
            &["xbuild/y", "b/abc"],
        );
        // Trailing slash and `./` prefix are cleaned away.
        check("./build/\n", &["build", "build/x"], &["x/build"]);
    }

    #[test]
    fn leading_slash_is_relative_to_the_root() {
        check(
            "/secret\n!/secret/ok\n",
            &["secret/a"],
            &["secret/ok", "x/secret"],
        );
    }

    #[test]
    fn single_char_and_classes() {
        assert!(matches("abc?def", "abcZdef"));
        assert!(!matches("abc?def", "abcdef"));
        assert!(!matches("a?b", "a/b"));
        assert!(matches("a[b-d]e", "ace"));
        assert!(!matches("a[b-d]e", "aae"));
        assert!(matches("a[^b-d]e", "aze"));
        assert!(!matches("ab[^c]", "abc"));
        assert!(matches("[\\]a]", "]"));
        assert!(matches("[x\\-]", "-"));
        assert!(!matches("[x\\-]", "z"));
        assert!(matches("[a-ζ]*", "α"));
        assert!(matches("a?b", "a☺b"));
        // A class is not restricted to one path element, as in Go.
        assert!(matches("a[^x]b", "a/b"));
        // Inside a class `*` is literal.
        assert!(matches("a[*]", "a*"));
        assert!(!matches("a[*]", "ab"));
    }

    #[test]
    fn escapes_and_regex_characters_are_literal() {
        assert!(matches("a\\*b", "a*b"));
        assert!(!matches("a\\*b", "axb"));
        assert!(matches("a\\\\", "a\\"));
        assert!(matches("\\#file", "#file"));
        assert!(matches("\\!important", "!important"));
        assert!(matches("a(b)c/def", "a(b)c/def"));
        assert!(matches("a.|)$(}+{bc", "a.|)$(}+{bc"));
        assert!(!matches("abc.def", "abcZdef"));
        assert!(matches(".*", ".foo"));
        assert!(!matches(".*", "foo"));
    }

    #[test]
    fn star_stays_within_one_element() {
        assert!(matches("a*/b", "abc/b"));
        assert!(!matches("a*/b", "a/c/b"));
        assert!(matches("a*b*c*d*e*/f", "axbxcxdxexxx/f"));
        assert!(!matches("a*b*c*d*e*/f", "axbxcxdxe/xxx/f"));
        assert!(matches("a*b?c*x", "abxbbxdbxebxczzx"));
        assert!(!matches("a*b?c*x", "abxbbxdbxebxczzy"));
        assert!(matches("*x", "xxx"));
        assert!(matches("*", "anything"));
        assert!(matches("a/*.txt", "a/file.txt"));
        assert!(!matches("a/*.txt", "a/dir/file.txt"));
    }

    #[test]
    fn double_star_forms() {
        for (pattern, path) in [
            ("**", "file"),
            ("**", "dir/file"),
            ("**/", "dir/file"),
            ("**/**", "dir/file"),
            ("dir/**", "dir/dir2/file"),
            ("**/dir", "dir"),
            ("**/dir", "a/dir/file"),
            ("**/dir2/*", "dir/dir2/file"),
            ("**/dir2/**", "dir/dir2/dir3/file"),
            ("**/file*.txt", "dir/dir/file.txt"),
            ("**/**/*.txt", "file.txt"),
            ("a**/*.txt", "a/file.txt"),
            ("a**/*.txt", "a/dir/dir/file.txt"),
            ("a/*.txt**", "a/file.txt"),
            ("a/**/b", "a/b"),
            ("a/**/b", "a/x/y/b"),
            ("**/.foo", ".foo"),
            ("a**b", "ab"),
            ("a**b", "ax/y/b"),
        ] {
            assert!(matches(pattern, path), "{pattern:?} should match {path:?}");
        }
        for (pattern, path) in [
            ("**/**/*.txt2", "dir/dir/file.txt"),
            ("abc/**", "abc"),
            ("**/.foo", "bar.foo"),
            ("a/**/b", "a/xb"),
            ("a/**/b", "a/x/yb"),
            // moby's `(.*/)?`: `**` inside a name only spans whole directories.
            ("a**b", "axb"),
        ] {
            assert!(
                !matches(pattern, path),
                "{pattern:?} should not match {path:?}"
            );
        }
    }

    #[test]
    fn leading_double_star_with_plain_text_is_a_suffix() {
        // moby's suffix shortcut: `**file` matches any path ending in "file".
        assert!(matches("**file", "file"));
        assert!(matches("**file", "dir/dir/file"));
        assert!(matches("**file", "dir/myfile"));
        assert!(matches("**.go", "cmd/main.go"));
    }

    #[test]
    fn may_reinclude_under_follows_the_patterns() {
        let ignore = ignore("*\n!src/*.rs\n!**/keep\n");
        assert!(ignore.may_reinclude_under("src"));
        assert!(ignore.may_reinclude_under("target/deep"));
        let ignore = self::ignore("*\n!src/*.rs\n");
        assert!(!ignore.may_reinclude_under("target"));
        assert!(!ignore.may_reinclude_under("src/sub"));
        let ignore = self::ignore("target\n");
        assert!(!ignore.may_reinclude_under("target"));
        let ignore = self::ignore("a\n!a*/x\n");
        assert!(ignore.may_reinclude_under("a"));
        assert!(ignore.may_reinclude_under("abc"));
        assert!(!ignore.may_reinclude_under("b"));
    }

    #[test]
    fn noop_patterns_are_skipped() {
        let ignore = ignore(".\n/\n./\n!.\n");
        assert!(ignore.patterns.is_empty());
        assert!(!ignore.is_excluded("a"));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, reason) in [
            ("ok\n[abc\n", 2, UNCLOSED),
            ("[", 1, UNCLOSED),
            ("a[", 1, UNCLOSED),
            ("[^", 1, UNCLOSED),
            ("[^bc", 1, UNCLOSED),
            ("x\ny\n\\", 3, "trailing `\\` escapes nothing"),
            ("[]a]", 1, "`-` or `]` in a character class must be escaped"),
            ("[-x]", 1, "`-` or `]` in a character class must be escaped"),
            ("[x-]", 1, "`-` or `]` in a character class must be escaped"),
            (
                "[a-b-c]",
                1,
                "`-` or `]` in a character class must be escaped",
            ),
            ("[Local-Only]", 1, "character range is out of order"),
            ("a\n!\n", 2, "`!` needs a pattern after it"),
            ("!/", 1, "`!` needs a pattern after it"),
        ] {
            let err = match DockerIgnore::parse(text) {
                Ok(_) => panic!("{text:?} should not parse"),
                Err(e) => e,
            };
            assert_eq!((err.line, err.reason), (line, reason), "{text:?}");
        }
        let err = DockerIgnore::parse("\n  [abc  \n").err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(".dockerignore line 2: invalid pattern \"[abc\": unclosed character class `[`")
        );
    }

    #[test]
    fn long_paths_and_many_stars_stay_fast() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*b";
        let path = "a".repeat(10_000);
        assert!(!matches(pattern, &path));
    }
}
