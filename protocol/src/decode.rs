//! Decoding a job message: size limit, JSON syntax, protocol version, then
//! every problem at once: each field missing, unknown or of the wrong type
//! (at any depth), and what [`Job::validate`] finds in the parts whose shape
//! is right. At most [`MAX_PROBLEMS`] are listed.
//!
//! Serde alone stops at the first shape error, so the shape is checked by
//! walking the message against the JSON Schema the types generate
//! ([`job_schema`]). The schema is derived from the same types and serde
//! attributes serde decodes with, so the field lists, types, defaults and
//! tags are described once, in `job.rs`, not again here. Serde keeps the last
//! word: a job is accepted only when it also deserializes.

use std::fmt;
use std::sync::LazyLock;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};
use thiserror::Error;
use uuid::Uuid;

use crate::validate::{check_service_id, quoted, unsupported_version, MAX_QUOTED_CHARS};
use crate::{job_schema, Job, Problem, PROTOCOL_VERSION};

/// Largest job message a worker accepts, in bytes (1 MiB).
pub const MAX_JOB_BYTES: usize = 1024 * 1024;

/// Most problems one rejection lists; a last line counts the rest.
pub const MAX_PROBLEMS: usize = 100;

/// Longest field path and reason a listed problem keeps. Values a problem
/// quotes are already cut to 64 characters; this also bounds the messages
/// of the text grammars, which quote the part of a value they refuse.
const MAX_FIELD_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 320;

/// Why a job message was not accepted. Every variant names the field at
/// fault; none holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The message is larger than the limit.
    #[error("job: {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The message is not UTF-8 JSON; the text says where it breaks.
    #[error("job: not valid JSON: {0}")]
    NotJson(String),
    /// The message is JSON, but not an object.
    #[error("job: expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// `version` is missing or not the version this crate speaks. Checked
    /// before anything else, so a job of a later protocol is reported as
    /// such rather than by whichever fields changed shape.
    #[error(transparent)]
    Version(Problem),
    /// Fields are missing, unknown, repeated or of the wrong type: every
    /// such problem, then the rules the rest of the job breaks.
    #[error("{0}")]
    Shape(ProblemList),
    /// The job has the right shape but breaks one or more rules.
    #[error("{0}")]
    Invalid(ProblemList),
}

impl DecodeError {
    /// Every problem, each as `field: reason`: at most [`MAX_PROBLEMS`],
    /// then a line counting the rest.
    pub fn problems(&self) -> Vec<String> {
        match self {
            DecodeError::Version(problem) => vec![problem.to_string()],
            DecodeError::Shape(list) | DecodeError::Invalid(list) => list.messages(),
            other => vec![other.to_string()],
        }
    }
}

/// The problems of one job message, bounded: the first [`MAX_PROBLEMS`]
/// (each cut to a few hundred characters) and how many more there were.
/// Displays as its [`messages`](Self::messages) joined with `; `.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProblemList {
    listed: Vec<Problem>,
    more: usize,
}

impl ProblemList {
    /// The problems listed, in the order found.
    pub fn listed(&self) -> &[Problem] {
        &self.listed
    }

    /// How many problems were found beyond those listed.
    pub fn more(&self) -> usize {
        self.more
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.listed.len() + self.more
    }

    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each listed problem as `field: reason`, then `… and K more problems`
    /// when some were not listed.
    pub fn messages(&self) -> Vec<String> {
        let mut messages: Vec<String> = self.listed.iter().map(Problem::to_string).collect();
        match self.more {
            0 => {}
            1 => messages.push("… and 1 more problem".to_owned()),
            more => messages.push(format!("… and {more} more problems")),
        }
        messages
    }

    fn is_full(&self) -> bool {
        self.listed.len() >= MAX_PROBLEMS
    }

    /// Lists `problem` while there is room, else only counts it.
    fn push(&mut self, problem: Problem) {
        if self.is_full() {
            self.more += 1;
        } else {
            self.listed.push(Problem::new(
                cut(problem.field, MAX_FIELD_CHARS),
                cut(problem.reason, MAX_REASON_CHARS),
            ));
        }
    }
}

impl fmt::Display for ProblemList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.messages().join("; "))
    }
}

/// `text` cut after `max` characters, the cut marked with `…`.
fn cut(mut text: String, max: usize) -> String {
    if let Some((end, _)) = text.char_indices().nth(max) {
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Decodes and validates a job message of at most [`MAX_JOB_BYTES`].
pub fn decode_job(bytes: &[u8]) -> Result<Job, DecodeError> {
    decode_job_with_limit(bytes, MAX_JOB_BYTES)
}

/// [`decode_job`] with another size limit, for a worker configured to accept
/// larger (or only smaller) messages.
pub fn decode_job_with_limit(bytes: &[u8], limit: usize) -> Result<Job, DecodeError> {
    let mut value = parse_json(bytes, limit)?;
    let Value::Object(object) = &value else {
        return Err(DecodeError::NotAnObject(kind_of(&value)));
    };
    check_version(object.get("version")).map_err(DecodeError::Version)?;
    let shape = ShapeCheck::run(&JOB_SCHEMA, &mut value);
    if !shape.problems.is_empty() {
        return Err(DecodeError::Shape(shape.with_rule_problems(value)));
    }
    // Deserialized again from the bytes, not from `value`, so that a field
    // given twice is an error rather than silently the last one wins.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let job: Job = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let mut list = ProblemList::default();
        list.push(serde_problem(&error));
        DecodeError::Shape(list)
    })?;
    let mut rules = ProblemList::default();
    add_rule_problems(&job, &[], &mut rules);
    if rules.is_empty() {
        Ok(job)
    } else {
        Err(DecodeError::Invalid(rules))
    }
}

/// The message as JSON, when it is within `limit` and UTF-8 JSON.
fn parse_json(bytes: &[u8], limit: usize) -> Result<Value, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DecodeError::NotJson(format!(
            "not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_version(version: Option<&Value>) -> Result<(), Problem> {
    match version {
        None => Err(Problem::new("version", "missing")),
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => Ok(()),
        Some(Value::Number(n)) => Err(Problem::new("version", unsupported_version(n))),
        Some(other) => Err(Problem::new(
            "version",
            format!(
                "expected the integer {PROTOCOL_VERSION}, found {}",
                kind_of(other)
            ),
        )),
    }
}

/// Adds what [`Job::validate`] finds in `job` to `list`, except problems at
/// or below a field in `repaired`: their value is a stand-in.
fn add_rule_problems(job: &Job, repaired: &[String], list: &mut ProblemList) {
    job.report_problems(&mut |problem| {
        if !repaired
            .iter()
            .any(|field| is_at_or_below(&problem.field, field))
        {
            list.push(problem);
        }
    });
}

/// True when `field` is `ancestor` or a field, item or entry inside it.
fn is_at_or_below(field: &str, ancestor: &str) -> bool {
    field
        .strip_prefix(ancestor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

// ---------------------------------------------------------------------------
// The shape, checked against the job's JSON Schema.
// ---------------------------------------------------------------------------

/// The job schema, generated once.
static JOB_SCHEMA: LazyLock<Value> = LazyLock::new(job_schema);

/// Deepest nesting of schemas the stand-ins and the secret search follow
/// (the job's is 5; a bound in case a type ever refers to itself).
const MAX_SCHEMA_DEPTH: usize = 16;

/// One step of the path to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A field of an object: `.name`.
    Field(String),
    /// An entry of a map with arbitrary keys: `["key"]`.
    Entry(String),
    /// An item of a list: `[i]`.
    Index(usize),
}

/// `repo.auth.private_key`, `image.tags[2]`, `build.builder.env["X"]`: the
/// style validation uses. A field name that is odd or long is shown as a
/// quoted (and cut) key, since it comes from the message.
fn render(path: &[Step]) -> String {
    let mut field = String::new();
    for step in path {
        match step {
            Step::Field(name) if is_plain_name(name) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(name);
            }
            Step::Field(key) | Step::Entry(key) => {
                field.push('[');
                field.push_str(&quoted(key));
                field.push(']');
            }
            Step::Index(index) => field.push_str(&format!("[{index}]")),
        }
    }
    if field.is_empty() {
        field.push_str("job");
    }
    field
}

fn is_plain_name(name: &str) -> bool {
    name.len() <= MAX_QUOTED_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A walk of a message against a schema that reports every shape problem
/// and leaves the message in a shape serde accepts: unknown fields removed,
/// missing and wrong-typed values replaced by stand-ins, so the rules can
/// still be checked on the rest.
struct ShapeCheck<'s> {
    defs: Option<&'s Map<String, Value>>,
    path: Vec<Step>,
    problems: ProblemList,
    /// Fields given a stand-in, recorded while every problem is listed:
    /// beyond the bound the rules are not checked at all.
    repaired: Vec<String>,
}

impl<'s> ShapeCheck<'s> {
    fn run(schema: &'s Value, value: &mut Value) -> Self {
        let mut check = ShapeCheck {
            defs: schema.get("$defs").and_then(Value::as_object),
            path: Vec::new(),
            problems: ProblemList::default(),
            repaired: Vec::new(),
        };
        check.check(value, schema);
        check
    }

    /// The shape problems, then the rules `repaired` (the message after the
    /// walk) breaks outside the stand-ins. When the shape problems alone
    /// overflow the list, the rules wait until the shape is fixed.
    fn with_rule_problems(mut self, repaired: Value) -> ProblemList {
        if self.problems.more() == 0 {
            // Should the stand-ins not make it deserialize, the shape check
            // missed something; the shape problems found still stand.
            if let Ok(job) = serde_json::from_value::<Job>(repaired) {
                add_rule_problems(&job, &self.repaired, &mut self.problems);
            }
        }
        self.problems
    }

    /// `schema`, or the definition its `$ref` names.
    fn resolve(&self, schema: &'s Value) -> &'s Value {
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| reference.strip_prefix("#/$defs/"))
            .and_then(|name| self.defs?.get(name))
            .unwrap_or(schema)
    }

    fn check(&mut self, value: &mut Value, schema: &'s Value) {
        let schema = self.resolve(schema);
        if !self.accepts(schema, value) {
            return self.wrong_type(value, schema);
        }
        if branches(schema, "oneOf").is_some() {
            self.tagged(value, schema);
        } else if let Some(branches) = branches(schema, "anyOf") {
            if let Some(branch) = branches.iter().find(|b| self.accepts(b, value)) {
                self.check(value, branch);
            }
        } else if let Some(reason) = value.as_str().and_then(|text| format_problem(text, schema)) {
            self.report(|_| reason);
            self.repair(value, schema);
        } else {
            match value {
                Value::Object(object) if schema.get("properties").is_some() => {
                    self.fields(object, schema, None)
                }
                Value::Object(object) => self.entries(object, schema),
                Value::Array(items) => self.items(items, schema),
                _ => {}
            }
        }
    }

    /// Whether `value` is of a JSON type (and, for an integer, in the
    /// range) `schema` allows. Patterns, lengths and ranges beyond the
    /// Rust type are rules: [`Job::validate`] checks and explains them.
    fn accepts(&self, schema: &'s Value, value: &Value) -> bool {
        let schema = self.resolve(schema);
        if let Some(branches) = branches(schema, "oneOf").or_else(|| branches(schema, "anyOf")) {
            return branches.iter().any(|branch| self.accepts(branch, value));
        }
        let format = schema.get("format").and_then(Value::as_str);
        let types = type_names(schema);
        types.is_empty() || types.iter().any(|name| type_accepts(name, format, value))
    }

    /// What `schema` expects, in words: `a string`, `an object or null`.
    fn describe(&self, schema: &'s Value) -> String {
        let schema = self.resolve(schema);
        let mut kinds: Vec<String> =
            match branches(schema, "oneOf").or_else(|| branches(schema, "anyOf")) {
                Some(branches) => branches.iter().map(|b| self.describe(b)).collect(),
                None => {
                    let format = schema.get("format").and_then(Value::as_str);
                    type_names(schema)
                        .into_iter()
                        .map(|name| describe_type(name, format))
                        .collect()
                }
            };
        kinds.dedup();
        kinds.join(" or ")
    }

    /// Whether a value of `schema` is or holds a credential, which a
    /// problem must not echo even when it is in the wrong place.
    fn holds_secret(&self, schema: &'s Value, depth: usize) -> bool {
        let schema = self.resolve(schema);
        depth > MAX_SCHEMA_DEPTH
            || schema.get("writeOnly") == Some(&Value::Bool(true))
            || subschemas(schema)
                .into_iter()
                .any(|sub| self.holds_secret(sub, depth + 1))
    }

    /// Reports a problem at the current path; `reason` is only worked out
    /// when the problem is listed.
    fn report(&mut self, reason: impl FnOnce(&Self) -> String) {
        if self.problems.is_full() {
            self.problems.more += 1;
        } else {
            let problem = Problem::new(render(&self.path), reason(self));
            self.problems.push(problem);
        }
    }

    fn wrong_type(&mut self, value: &mut Value, schema: &'s Value) {
        self.report(|check| {
            let found = describe_value(value, check.holds_secret(schema, 0));
            format!("expected {}, found {found}", check.describe(schema))
        });
        self.repair(value, schema);
    }

    /// Replaces `value` with a stand-in of `schema`'s shape.
    fn repair(&mut self, value: &mut Value, schema: &'s Value) {
        *value = self.stand_in(schema, 0);
        self.record_repair();
    }

    fn record_repair(&mut self) {
        if self.problems.more() == 0 {
            self.repaired.push(render(&self.path));
        }
    }

    /// A value of `schema`'s shape: empty, zero, false, the first variant,
    /// an object of stand-ins for its required fields. Not null where
    /// something else fits: a null builder image would break a rule
    /// (exactly one of image and dockerfile) outside the stand-in.
    fn stand_in(&self, schema: &'s Value, depth: usize) -> Value {
        let schema = self.resolve(schema);
        if depth > MAX_SCHEMA_DEPTH {
            return Value::Null;
        }
        if let Some(constant) = schema.get("const") {
            return constant.clone();
        }
        if let Some(branches) = branches(schema, "oneOf").or_else(|| branches(schema, "anyOf")) {
            let branch = branches
                .iter()
                .find(|b| type_names(self.resolve(b)) != ["null"])
                .or(branches.first());
            return branch.map_or(Value::Null, |b| self.stand_in(b, depth + 1));
        }
        let types = type_names(schema);
        let name = types.iter().find(|name| **name != "null").or(types.first());
        match name.copied() {
            Some("string") if schema.get("format") == Some(&Value::from("uuid")) => {
                Value::from(Uuid::nil().to_string())
            }
            Some("string") => Value::from(""),
            Some("integer" | "number") => Value::from(0),
            Some("boolean") => Value::Bool(false),
            Some("array") => Value::Array(Vec::new()),
            Some("object") => Value::Object(
                required_names(schema)
                    .filter_map(|name| {
                        let field = schema.get("properties")?.get(name)?;
                        Some((name.to_owned(), self.stand_in(field, depth + 1)))
                    })
                    .collect(),
            ),
            _ => Value::Null,
        }
    }

    /// An internally tagged enum (`{"type": "ssh_key", ...}`): the tag picks
    /// the variant whose fields are checked. Without a known tag the other
    /// fields cannot be judged, so the tag is the one problem.
    fn tagged(&mut self, value: &mut Value, schema: &'s Value) {
        let variants = branches(schema, "oneOf").unwrap_or_default();
        // Not internally tagged: the final deserialization judges it.
        let Some(tag) = self.tag_of(variants) else {
            return;
        };
        match self.variant(value, tag, variants) {
            Ok(variant) => {
                if let Value::Object(object) = value {
                    self.fields(object, variant, Some(tag));
                }
            }
            Err(reason) => {
                self.path.push(Step::Field(tag.to_owned()));
                self.report(|_| reason);
                self.path.pop();
                self.repair(value, schema);
            }
        }
    }

    /// The property every variant fixes with a `const`: the tag.
    fn tag_of(&self, variants: &'s [Value]) -> Option<&'s str> {
        let first = self.resolve(variants.first()?);
        first
            .get("properties")?
            .as_object()?
            .keys()
            .map(String::as_str)
            .find(|name| variants.iter().all(|v| self.tag_value(v, name).is_some()))
    }

    fn tag_value(&self, variant: &'s Value, tag: &str) -> Option<&'s str> {
        self.resolve(variant)
            .get("properties")?
            .get(tag)?
            .get("const")?
            .as_str()
    }

    /// The variant `value`'s tag names, or why there is none.
    fn variant(
        &self,
        value: &Value,
        tag: &str,
        variants: &'s [Value],
    ) -> Result<&'s Value, String> {
        let names: Vec<&str> = variants
            .iter()
            .filter_map(|v| self.tag_value(v, tag))
            .collect();
        match value.get(tag) {
            None => Err("missing field".to_owned()),
            Some(Value::String(name)) => variants
                .iter()
                .find(|v| self.tag_value(v, tag) == Some(name.as_str()))
                .map(|v| self.resolve(v))
                .ok_or_else(|| {
                    format!(
                        "unknown variant {}; expected {}",
                        quoted(name),
                        or_list(&names)
                    )
                }),
            Some(other) => Err(format!(
                "expected a string ({}), found {}",
                or_list(&names),
                describe_value(other, false)
            )),
        }
    }

    /// A struct's fields, in name order (the schema's own order depends on
    /// serde_json's `preserve_order` feature; sorting keeps every build's
    /// rejections the same): known ones checked, missing required ones and
    /// unknown ones reported. `tag` is the enum tag, not offered as a field.
    fn fields(&mut self, object: &mut Map<String, Value>, schema: &'s Value, tag: Option<&str>) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let mut names: Vec<String> = properties
            .into_iter()
            .flat_map(|p| p.keys())
            .chain(object.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let Some(field_schema) = properties.and_then(|p| p.get(&name)) else {
                self.unknown_field(object, name, schema, tag);
                continue;
            };
            let required = required_names(schema).any(|r| r == name);
            self.path.push(Step::Field(name.clone()));
            match object.get_mut(&name) {
                Some(field) => self.check(field, field_schema),
                None if required => {
                    self.report(|_| "missing field".to_owned());
                    object.insert(name, self.stand_in(field_schema, 0));
                    self.record_repair();
                }
                None => {}
            }
            self.path.pop();
        }
    }

    fn unknown_field(
        &mut self,
        object: &mut Map<String, Value>,
        name: String,
        schema: &'s Value,
        tag: Option<&str>,
    ) {
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                self.path.push(Step::Field(name.clone()));
                self.report(|_| {
                    let mut known: Vec<&str> = schema
                        .get("properties")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flat_map(|p| p.keys().map(String::as_str))
                        .filter(|known| Some(*known) != tag)
                        .collect();
                    known.sort_unstable();
                    format!("unknown field; expected {}", or_list(&known))
                });
                self.path.pop();
                object.remove(&name);
            }
            Some(extra @ Value::Object(_)) => {
                if let Some(value) = object.get_mut(&name) {
                    self.path.push(Step::Entry(name));
                    self.check(value, extra);
                    self.path.pop();
                }
            }
            _ => {}
        }
    }

    /// A map with arbitrary keys (`build_args`, `env`): every value checked.
    fn entries(&mut self, object: &mut Map<String, Value>, schema: &'s Value) {
        let Some(value_schema @ Value::Object(_)) = schema.get("additionalProperties") else {
            return;
        };
        for (key, value) in object.iter_mut() {
            self.path.push(Step::Entry(key.clone()));
            self.check(value, value_schema);
            self.path.pop();
        }
    }

    fn items(&mut self, items: &mut [Value], schema: &'s Value) {
        let Some(item_schema) = schema.get("items") else {
            return;
        };
        for (index, item) in items.iter_mut().enumerate() {
            self.path.push(Step::Index(index));
            self.check(item, item_schema);
            self.path.pop();
        }
    }
}

fn branches<'s>(schema: &'s Value, keyword: &str) -> Option<&'s [Value]> {
    schema.get(keyword)?.as_array().map(Vec::as_slice)
}

/// The JSON types `schema` allows: its `type`, one name or a list.
fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn required_names(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The schemas directly inside `schema`.
fn subschemas(schema: &Value) -> Vec<&Value> {
    let mut inner: Vec<&Value> = Vec::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        inner.extend(properties.values());
    }
    for keyword in ["oneOf", "anyOf"] {
        inner.extend(branches(schema, keyword).unwrap_or_default());
    }
    inner.extend(schema.get("items"));
    inner.extend(
        schema
            .get("additionalProperties")
            .filter(|extra| extra.is_object()),
    );
    inner
}

fn type_accepts(name: &str, format: Option<&str>, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.as_number().is_some_and(|n| integer_fits(n, format)),
        // A type this check does not know: serde judges it.
        _ => true,
    }
}

fn integer_fits(number: &Number, format: Option<&str>) -> bool {
    let value = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from));
    let (min, max) = integer_range(format);
    value.is_some_and(|value| (min..=max).contains(&value))
}

/// The range of schemars' integer formats (`uint64`, `int32`, ...): the
/// Rust type's, which serde enforces.
fn integer_range(format: Option<&str>) -> (i128, i128) {
    let bits = |digits: &str| digits.parse::<u32>().ok().filter(|b| (8..=64).contains(b));
    let format = format.unwrap_or_default();
    if let Some(bits) = format.strip_prefix("uint").and_then(bits) {
        (0, (1_i128 << bits) - 1)
    } else if let Some(bits) = format.strip_prefix("int").and_then(bits) {
        (-(1_i128 << (bits - 1)), (1_i128 << (bits - 1)) - 1)
    } else {
        (i128::from(i64::MIN), i128::from(u64::MAX))
    }
}

fn describe_type(name: &str, format: Option<&str>) -> String {
    match name {
        "null" => "null".to_owned(),
        "boolean" => "a boolean".to_owned(),
        "string" => "a string".to_owned(),
        "array" => "an array".to_owned(),
        "object" => "an object".to_owned(),
        "number" => "a number".to_owned(),
        "integer" => match integer_range(format) {
            (0, max) if max == i128::from(u64::MAX) => "a non-negative integer".to_owned(),
            (min, max) if (min, max) == integer_range(None) => "an integer".to_owned(),
            (min, max) => format!("an integer from {min} to {max}"),
        },
        other => format!("a {other}"),
    }
}

/// `a string "x"`, `a number 2`, `an array`; only the kind when the value
/// may be a credential.
fn describe_value(value: &Value, secret: bool) -> String {
    let kind = kind_of(value);
    match value {
        _ if secret => kind.to_owned(),
        Value::String(text) => format!("{kind} {}", quoted(text)),
        Value::Number(number) => format!("{kind} {number}"),
        Value::Bool(boolean) => format!("{kind} {boolean}"),
        _ => kind.to_owned(),
    }
}

/// Why `text` does not have the string format `schema` names.
fn format_problem(text: &str, schema: &Value) -> Option<String> {
    match schema.get("format").and_then(Value::as_str) {
        Some("uuid") => Uuid::parse_str(text)
            .err()
            .map(|error| format!("not a UUID: {error}")),
        _ => None,
    }
}

/// `a`, `a or b`, `one of a, b, c`.
fn or_list(names: &[&str]) -> String {
    match names {
        [] => "no field".to_owned(),
        [one] => (*one).to_owned(),
        [first, second] => format!("{first} or {second}"),
        many => format!("one of {}", many.join(", ")),
    }
}

/// Serde's refusal of a job the shape check passed (a field given twice),
/// as `field: reason`: the path names the field, and a missing, unknown or
/// repeated field's name moves from the message into the path.
fn serde_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    use serde_path_to_error::Segment;
    let mut path: Vec<Step> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } | Segment::Enum { variant: key } => Some(Step::Field(key.clone())),
            Segment::Unknown => None,
        })
        .collect();
    let inner = error.inner();
    let message = inner.to_string();
    // serde_json appends the position; the path says it better.
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    for reason in ["duplicate field", "missing field", "unknown field"] {
        let Some(name) = quoted_after(message, &format!("{reason} `")) else {
            continue;
        };
        if path.last() != Some(&Step::Field(name.to_owned())) {
            path.push(Step::Field(name.to_owned()));
        }
        return Problem::new(render(&path), reason);
    }
    Problem::new(render(&path), message)
}

/// `name` in `` prefix`name`... `` when the message starts with `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

// ---------------------------------------------------------------------------
// What a rejection can still say about the job.
// ---------------------------------------------------------------------------

/// What a worker can still tell about a job message it rejects: its id and
/// service, each only when well-formed, since they come from a message that
/// failed its checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobEnvelope {
    /// `job_id`, when it is a UUID other than the nil one.
    pub job_id: Option<Uuid>,
    /// `service_id`, when it follows the rule for service ids.
    pub service_id: Option<String>,
}

/// Reads `job_id` and `service_id` from a job message however invalid the
/// rest of it is, so that a worker can route the rejection as
/// `<service_id>.<job_id>.result` and name the service. Either is `None`
/// when absent, malformed or given twice; both are when the message is not
/// a JSON object. Every other field is skipped without being kept, so this
/// costs one pass over the bytes whatever the message holds.
pub fn read_envelope(bytes: &[u8]) -> JobEnvelope {
    let Ok(raw) = serde_json::from_slice::<RawEnvelope>(bytes) else {
        return JobEnvelope::default();
    };
    JobEnvelope {
        job_id: raw
            .job_id
            .value()
            .and_then(|id| Uuid::parse_str(&id).ok())
            .filter(|id| !id.is_nil()),
        service_id: raw
            .service_id
            .value()
            .filter(|id| check_service_id(id).is_ok()),
    }
}

/// The two fields as found, before their checks.
struct RawEnvelope {
    job_id: Sighting,
    service_id: Sighting,
}

/// A field's short string value and how often the field was given: a field
/// given twice is ambiguous, so it says nothing.
#[derive(Default)]
struct Sighting {
    value: Option<String>,
    times: usize,
}

impl Sighting {
    fn see(&mut self, value: ShortString) {
        self.times += 1;
        self.value = value.0;
    }

    fn value(self) -> Option<String> {
        self.value.filter(|_| self.times == 1)
    }
}

impl<'de> Deserialize<'de> for RawEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = RawEnvelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnvelope, A::Error> {
        let mut envelope = RawEnvelope {
            job_id: Sighting::default(),
            service_id: Sighting::default(),
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "job_id" => envelope.job_id.see(map.next_value()?),
                "service_id" => envelope.service_id.see(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

/// Longest string [`read_envelope`] keeps: longer than any valid job id
/// (45, as a URN) or service id (128).
const MAX_ENVELOPE_STRING: usize = 256;

/// A string of at most [`MAX_ENVELOPE_STRING`] bytes, or `None` for any
/// other value, which is skipped rather than refused.
struct ShortString(Option<String>);

impl<'de> Deserialize<'de> for ShortString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShortStringVisitor)
    }
}

struct ShortStringVisitor;

impl<'de> Visitor<'de> for ShortStringVisitor {
    type Value = ShortString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShortString, E> {
        Ok(ShortString(
            (text.len() <= MAX_ENVELOPE_STRING).then(|| text.to_owned()),
        ))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ShortString, E> {
        Ok(ShortString(None))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ShortString, E> {
        Ok(ShortString(None))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ShortString, E> {
        Ok(ShortString(None))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ShortString, E> {
        Ok(ShortString(None))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<ShortString, E> {
        Ok(ShortString(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShortString, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ShortString(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShortString, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ShortString(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{b64, job_json, FAKE_KEY_TEXT};
    use serde_json::json;

    fn decode(value: &Value) -> Result<Job, DecodeError> {
        decode_job(&serde_json::to_vec(value).unwrap())
    }

    fn problems_of(value: &Value) -> Vec<String> {
        decode(value).unwrap_err().problems()
    }

    /// The fixture with `pointer` (a JSON pointer) set to `new`, or removed.
    fn with(pointer: &str, new: Option<Value>) -> Value {
        let mut value = job_json();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let object = value.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match new {
            Some(new) => object.insert(key.to_owned(), new),
            None => object.remove(key),
        };
        value
    }

    #[test]
    fn decodes_the_fixture() {
        let job = decode(&job_json()).unwrap();
        assert_eq!(job.service_id, "web-app");
        assert_eq!(job.timeout_secs, 1800);
    }

    #[test]
    fn job_round_trips_through_json() {
        let original = job_json();
        let job = decode(&original).unwrap();
        let encoded = serde_json::to_value(&job).unwrap();
        assert_eq!(encoded, original);
        let again = serde_json::to_value(decode(&encoded).unwrap()).unwrap();
        assert_eq!(again, encoded);
    }

    #[test]
    fn defaults_are_filled_in_and_serialized() {
        let minimal = json!({
            "version": 1,
            "job_id": "6f1c2a3e-9b7d-4c1e-8f00-0123456789ab",
            "service_id": "app",
            "repo": {"url": "https://git.example.com/app.git", "revision": "main"},
            "image": {"repository": "localhost:5000/app", "tags": ["latest"]}
        });
        let job = decode(&minimal).unwrap();
        assert_eq!(job.build.context, ".");
        assert_eq!(job.build.dockerfile, "Dockerfile");
        assert!(job.image.push);
        assert_eq!(job.timeout_secs, crate::DEFAULT_TIMEOUT_SECS);
        let encoded = serde_json::to_value(&job).unwrap();
        assert_eq!(encoded["repo"]["auth"], json!({"type": "none"}));
        assert_eq!(decode(&encoded).unwrap().build.context, ".");
    }

    #[test]
    fn unknown_version_is_reported_before_the_shape() {
        // A later protocol may change everything else; the version is what
        // the author needs to hear about.
        let future = json!({"version": 2, "job": {"something": "else"}});
        assert_eq!(
            problems_of(&future),
            ["version: unsupported protocol version 2; this worker speaks 1"]
        );
        assert!(matches!(decode(&future), Err(DecodeError::Version(_))));
        assert_eq!(problems_of(&json!({"job_id": "x"})), ["version: missing"]);
        assert_eq!(
            problems_of(&with("/version", Some(json!("1")))),
            ["version: expected the integer 1, found a string"]
        );
        assert_eq!(
            problems_of(&with("/version", Some(json!(0)))),
            ["version: unsupported protocol version 0; this worker speaks 1"]
        );
    }

    #[test]
    fn size_limit() {
        let big = vec![b' '; MAX_JOB_BYTES + 1];
        assert_eq!(
            decode_job(&big).unwrap_err().problems(),
            ["job: 1048577 bytes exceeds the 1048576-byte limit"]
        );
        let bytes = serde_json::to_vec(&job_json()).unwrap();
        assert_eq!(
            decode_job_with_limit(&bytes, 10).unwrap_err(),
            DecodeError::TooLarge {
                size: bytes.len(),
                limit: 10
            }
        );
        assert!(decode_job_with_limit(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn not_json() {
        assert_eq!(
            decode_job(b"{\"version\": 1,\n  \"job_id\": }")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: expected value at line 2 column 13"]
        );
        assert_eq!(
            decode_job(b"{\"version\": 1} trailing")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: trailing characters at line 1 column 16"]
        );
        assert_eq!(
            decode_job(b"{\"service_id\": \"\xff\"}")
                .unwrap_err()
                .problems(),
            ["job: not valid JSON: not UTF-8 (invalid byte at offset 16)"]
        );
        assert_eq!(
            decode_job(b"").unwrap_err().problems(),
            ["job: not valid JSON: EOF while parsing a value at line 1 column 0"]
        );
        for (text, kind) in [
            ("[]", "an array"),
            ("\"job\"", "a string"),
            ("1", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            assert_eq!(
                decode_job(text.as_bytes()).unwrap_err().problems(),
                [format!("job: expected a JSON object, found {kind}")]
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (
                with("/repo/revision", None),
                "repo.revision: missing field",
            ),
            (with("/image", None), "image: missing field"),
            (
                with("/build/dockerfil", Some(json!("Dockerfile"))),
                "build.dockerfil: unknown field; expected one of build_args, builder, cache_from, cache_inline, context, conventions, dockerfile, engine, labels, no_cache, pull, secrets, target, version_file",
            ),
            (
                with("/extra", Some(json!(1))),
                "extra: unknown field; expected one of build, envelope, image, job_id, registry_auth, repo, service_id, signature, test, timeout_secs, version",
            ),
            (
                with("/image/tags", Some(json!("x"))),
                "image.tags: expected an array, found a string \"x\"",
            ),
            (
                with("/image/tags", Some(json!(["a", 2]))),
                "image.tags[1]: expected a string, found a number 2",
            ),
            (
                with("/repo/auth", Some(json!({"type": "sshkey"}))),
                "repo.auth.type: unknown variant \"sshkey\"; expected one of none, ssh_key, https",
            ),
            (
                with("/repo/auth", Some(json!({"type": 3}))),
                "repo.auth.type: expected a string (one of none, ssh_key, https), found a number 3",
            ),
            (
                with("/repo/auth", Some(json!({"private_key": "x"}))),
                "repo.auth.type: missing field",
            ),
            (
                with("/repo/auth", Some(json!({"type": "ssh_key"}))),
                "repo.auth.private_key: missing field",
            ),
            (
                with("/repo/auth", Some(json!({"type": "ssh_key", "private_key": b64(FAKE_KEY_TEXT), "pasphrase": "y"}))),
                "repo.auth.pasphrase: unknown field; expected passphrase or private_key",
            ),
            (
                with("/repo/auth", Some(json!({"type": "none", "user": "y"}))),
                "repo.auth.user: unknown field; expected no field",
            ),
            (
                with("/registry_auth", Some(json!({"type": "basic", "username": "u"}))),
                "registry_auth.password: missing field",
            ),
            (
                with("/job_id", Some(json!("not-a-uuid"))),
                "job_id: not a UUID: invalid character: found `n` at 0",
            ),
            (
                with("/timeout_secs", Some(json!(-1))),
                "timeout_secs: expected a non-negative integer, found a number -1",
            ),
            (
                with("/timeout_secs", Some(json!(1.5))),
                "timeout_secs: expected a non-negative integer, found a number 1.5",
            ),
            (
                with("/build/build_args", Some(json!({"A": 1}))),
                "build.build_args[\"A\"]: expected a string, found a number 1",
            ),
            (
                with("/build/builder", Some(json!({"image": "debian", "command": "make", "artifacts": "dist"}))),
                "build.builder.command: expected an array, found a string \"make\"",
            ),
            (
                with("/build/builder", Some(json!(["make"]))),
                "build.builder: expected an object or null, found an array",
            ),
            (
                with("/build/target", Some(json!(false))),
                "build.target: expected a string or null, found a boolean false",
            ),
            (
                with("/build", Some(Value::Null)),
                "build: expected an object, found null",
            ),
            (
                with("/repo/submodules", Some(json!("yes"))),
                "repo.submodules: expected a boolean, found a string \"yes\"",
            ),
        ];
        for (value, expected) in cases {
            let error = decode(&value).unwrap_err();
            assert!(matches!(error, DecodeError::Shape(_)), "{error:?}");
            assert_eq!(error.problems(), [expected]);
        }
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let text = serde_json::to_string(&job_json()).unwrap().replacen(
            "\"service_id\":\"web-app\"",
            "\"service_id\":\"web-app\",\"service_id\":\"other\"",
            1,
        );
        assert_eq!(
            decode_job(text.as_bytes()).unwrap_err().problems(),
            ["service_id: duplicate field"]
        );
        // Inside a tagged object, too: serde reports it at the object.
        let text = serde_json::to_string(&job_json()).unwrap().replacen(
            "\"username\":\"ci\"",
            "\"username\":\"ci\",\"username\":\"other\"",
            1,
        );
        assert_eq!(
            decode_job(text.as_bytes()).unwrap_err().problems(),
            ["registry_auth.username: duplicate field"]
        );
    }

    #[test]
    fn wrong_typed_secrets_are_not_echoed() {
        let secret = 987_654_321_u64;
        let secret_text = "hunter2-987654321";
        for value in [
            with(
                "/repo/auth",
                Some(json!({"type": "ssh_key", "private_key": secret})),
            ),
            with(
                "/repo/auth",
                Some(
                    json!({"type": "ssh_key", "private_key": b64(FAKE_KEY_TEXT), "passphrase": secret}),
                ),
            ),
            with(
                "/repo/auth",
                Some(json!({"type": "https", "username": "u", "token": secret})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "basic", "username": "u", "password": secret})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "docker_config", "config": [secret]})),
            ),
            with(
                "/registry_auth",
                Some(json!({"type": "docker_config", "config": {"auths": secret}})),
            ),
            // A credential where an object holding one belongs.
            with("/repo/auth", Some(json!(secret_text))),
            with("/registry_auth", Some(json!(secret_text))),
            with("/repo", Some(json!(secret_text))),
        ] {
            let problems = decode(&value).unwrap_err().problems();
            assert!(!problems.is_empty());
            for problem in &problems {
                assert!(!problem.contains(&secret.to_string()), "{problems:?}");
                assert!(!problem.contains(secret_text), "{problems:?}");
            }
            assert!(problems[0].contains(": expected "), "{problems:?}");
        }
        assert_eq!(
            problems_of(&with(
                "/repo/auth",
                Some(json!({"type": "https", "username": "u", "token": secret}))
            )),
            [
                "repo.auth.token: expected a string, found a number",
                // The rest of the job is checked too: the fixture's URL is ssh://.
                "repo.auth: https needs an https:// repo.url",
            ]
        );
        assert_eq!(
            problems_of(&with(
                "/registry_auth",
                Some(json!({"type": "basic", "username": "u", "password": true}))
            )),
            ["registry_auth.password: expected a string, found a boolean"]
        );
        assert_eq!(
            problems_of(&with("/repo/auth", Some(json!(secret_text)))),
            ["repo.auth: expected an object, found a string"]
        );
    }

    #[test]
    fn the_rest_of_a_misshapen_job_is_validated() {
        let mut value = job_json();
        value["image"]["tags"] = json!(["not a tag", 7]);
        value["service_id"] = json!("web app");
        value["build"].as_object_mut().unwrap().remove("context");
        value["build"]["dockerfile"] = json!(["Dockerfile"]);
        value["repo"]["known_hosts"] = json!(1);
        let error = decode(&value).unwrap_err();
        assert!(matches!(error, DecodeError::Shape(_)), "{error:?}");
        // Shape problems in field-name order, then the rules' problems.
        assert_eq!(
            error.problems(),
            [
                "build.dockerfile: expected a string, found an array",
                "image.tags[1]: expected a string, found a number 7",
                "repo.known_hosts: expected a string or null, found a number 1",
                // Rules, except at the stand-ins the shape check put in.
                "service_id: only letters, digits, \".\", \"_\" and \"-\" are allowed",
                "image.tags[0]: not a valid tag; a tag is up to 128 letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\"",
            ]
        );
    }

    #[test]
    fn problem_lists_are_bounded() {
        let mut list = ProblemList::default();
        for i in 0..MAX_PROBLEMS + 2 {
            list.push(Problem::new(format!("f{i}"), "x".repeat(10_000)));
        }
        assert_eq!(list.len(), MAX_PROBLEMS + 2);
        assert_eq!(list.more(), 2);
        let messages = list.messages();
        assert_eq!(messages.len(), MAX_PROBLEMS + 1);
        assert_eq!(messages[MAX_PROBLEMS], "… and 2 more problems");
        assert!(messages[0].chars().count() <= 5 + MAX_REASON_CHARS + 1);
        assert!(messages[0].ends_with("x…"));
        list.push(Problem::new("f", "r"));
        assert_eq!(list.messages()[MAX_PROBLEMS], "… and 3 more problems");
        let mut one_more = ProblemList::default();
        (0..=MAX_PROBLEMS).for_each(|_| one_more.push(Problem::new("f", "r")));
        assert_eq!(one_more.messages()[MAX_PROBLEMS], "… and 1 more problem");
        assert_eq!(one_more.to_string(), one_more.messages().join("; "));
    }

    /// Every keyword of the generated schema, and every string format, is
    /// one the shape check handles or one that is a rule for `validate`:
    /// a type described with anything else fails here rather than being
    /// waved through.
    #[test]
    fn the_shape_check_knows_every_keyword_of_the_schema() {
        const HANDLED: [&str; 11] = [
            "$ref",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "oneOf",
            "anyOf",
            "format",
            "const",
            "writeOnly",
        ];
        const RULES: [&str; 6] = [
            "pattern",
            "minLength",
            "maxLength",
            "minItems",
            "minimum",
            "maximum",
        ];
        const ANNOTATIONS: [&str; 5] = ["description", "default", "title", "$schema", "$defs"];
        const FORMATS: [&str; 4] = ["uuid", "password", "uint64", "uint32"];
        fn visit(schema: &Value, seen: &mut Vec<String>) {
            let Some(object) = schema.as_object() else {
                return;
            };
            for (keyword, value) in object {
                seen.push(keyword.clone());
                if keyword == "format" {
                    let format = value.as_str().unwrap();
                    assert!(FORMATS.contains(&format), "format {format}");
                }
                match keyword.as_str() {
                    "properties" | "$defs" => value
                        .as_object()
                        .unwrap()
                        .values()
                        .for_each(|v| visit(v, seen)),
                    "oneOf" | "anyOf" => value
                        .as_array()
                        .unwrap()
                        .iter()
                        .for_each(|v| visit(v, seen)),
                    "items" | "additionalProperties" => visit(value, seen),
                    _ => {}
                }
            }
        }
        let mut seen = Vec::new();
        visit(&JOB_SCHEMA, &mut seen);
        for keyword in seen {
            assert!(
                HANDLED.contains(&keyword.as_str())
                    || RULES.contains(&keyword.as_str())
                    || ANNOTATIONS.contains(&keyword.as_str()),
                "the shape check does not know {keyword:?}"
            );
        }
    }

    /// The stand-ins the shape check puts in make a job serde accepts, so
    /// the rules can run on the rest of a misshapen job.
    #[test]
    fn a_job_of_stand_ins_deserializes() {
        let check = ShapeCheck::run(&JOB_SCHEMA, &mut Value::Null);
        let mut stand_in = check.stand_in(&JOB_SCHEMA, 0);
        stand_in["version"] = json!(PROTOCOL_VERSION);
        let job: Job = serde_json::from_value(stand_in.clone()).unwrap();
        assert!(job.job_id.is_nil());
        let mut again = stand_in.clone();
        assert!(ShapeCheck::run(&JOB_SCHEMA, &mut again).problems.is_empty());
        assert_eq!(again, stand_in);
        // Every variant's stand-in too, as a wrong-typed auth gets one.
        for (pointer, variants) in [("/repo/auth", 3), ("/registry_auth", 2)] {
            for variant in 0..variants {
                let mut value = job_json();
                let auth_schema = match pointer {
                    "/repo/auth" => &JOB_SCHEMA["$defs"]["RepoAuth"]["oneOf"][variant],
                    _ => &JOB_SCHEMA["$defs"]["RegistryAuth"]["oneOf"][variant],
                };
                *value.pointer_mut(pointer).unwrap() = check.stand_in(auth_schema, 0);
                assert!(
                    serde_json::from_value::<Job>(value).is_ok(),
                    "{pointer} {variant}"
                );
            }
        }
    }

    #[test]
    fn paths_render_as_validation_renders_them() {
        let path = [
            Step::Field("build".into()),
            Step::Field("builder".into()),
            Step::Field("env".into()),
            Step::Entry("X".into()),
        ];
        assert_eq!(render(&path), "build.builder.env[\"X\"]");
        let path = [
            Step::Field("image".into()),
            Step::Field("tags".into()),
            Step::Index(2),
        ];
        assert_eq!(render(&path), "image.tags[2]");
        assert_eq!(render(&[]), "job");
        assert_eq!(render(&[Step::Field("odd key".into())]), "[\"odd key\"]");
        let long = "a".repeat(1000);
        assert_eq!(
            render(&[Step::Field(long)]),
            format!("[\"{}\"…]", "a".repeat(MAX_QUOTED_CHARS))
        );
        assert!(is_at_or_below("image.tags[2]", "image.tags"));
        assert!(is_at_or_below("image.tags", "image.tags"));
        assert!(is_at_or_below("repo.auth.token", "repo.auth"));
        assert!(!is_at_or_below("repo.authority", "repo.auth"));
        assert!(!is_at_or_below("repo", "repo.auth"));
    }

    #[test]
    fn validation_problems_come_after_a_good_shape() {
        let mut value = job_json();
        value["repo"]["revision"] = json!("");
        value["image"]["tags"] = json!(["ok", "not a tag"]);
        value["build"]["dockerfile"] = json!("../../../etc/passwd");
        let error = decode(&value).unwrap_err();
        let DecodeError::Invalid(errors) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(errors.len(), 3);
        let problems = error.problems();
        assert_eq!(problems[0], "repo.revision: empty");
        assert_eq!(problems[1], "build.dockerfile: escapes the checkout");
        assert!(problems[2].starts_with("image.tags[1]: not a valid tag"));
        assert_eq!(error.to_string(), problems.join("; "));
    }
}
