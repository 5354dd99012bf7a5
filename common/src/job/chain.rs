//! Chains: a job may carry follow-up jobs (`then`) that its worker enqueues when it succeeds.
//!
//! ```json
//! {"kind": "run-instances", "params": {…},
//!  "then": [{"kind": "snapshot", "for_each": "/instances",
//!            "params": {"instance_id": {"$each": "/instance_id"}, "name": "web"}}]}
//! ```
//!
//! A follow-up's params may hold references in place of values: `{"$from": "/pointer"}`
//! reads the parent's result by JSON Pointer (RFC 6901), and in a follow-up with `for_each`
//! (a pointer to an array in the parent's result, one follow-up per element)
//! `{"$each": "/pointer"}` reads the element. A chain is checked whole at enqueue time
//! ([`check`]), every field but the references themselves, which only the parent's result can
//! settle; at run time [`expand`] resolves them, and one that does not resolve fails that
//! follow-up permanently, naming the pointer.
//!
//! Follow-up ids derive from the parent's (`<parent>.<n>`, and `<parent>.<n>:<i>` for
//! element `i` of a fan-out), so a parent that runs twice enqueues the same jobs twice, and
//! the second copy of each finds its work done (the job id is every handler's idempotency
//! key).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ContractError, Job, JobEnvelope, JobId, JobKind, SCHEMA_VERSION};
use crate::validate::{FieldError, Violations};

/// The key of a reference to the parent's result.
pub const FROM: &str = "$from";
/// The key of a reference to the fan-out element.
pub const EACH: &str = "$each";
/// Most follow-ups one `for_each` makes: a result with more elements fails that step.
pub const MAX_FAN_OUT: usize = 100;
/// Digits reserved for a fan-out index when checking that derived ids fit.
const FAN_OUT_DIGITS: usize = 2;

/// A job to enqueue when its parent succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub kind: JobKind,
    /// The kind's parameters; any value may instead be a reference, `{"$from": "/pointer"}`
    /// into the parent's result or, with `for_each`, `{"$each": "/pointer"}` into the element.
    #[serde(default)]
    #[schemars(schema_with = "params_schema")]
    pub params: Map<String, Value>,
    /// JSON Pointer to an array in the parent's result: one follow-up per element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(/.*)?$"))]
    pub for_each: Option<String>,
    /// Follow-ups of this follow-up, enqueued when it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<FollowUp>,
}

fn params_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The kind's params, where any value may be a reference.",
        "type": "object",
        "additionalProperties": {"$ref": "#/$defs/ParamValue"}
    })
}

/// The `$defs` the follow-up schema refers to: a parameter value, which is any JSON value,
/// a reference, or an array or object of such.
pub fn schema_defs() -> Vec<(&'static str, Value)> {
    let pointer = serde_json::json!({"type": "string", "pattern": "^(/.*)?$"});
    vec![
        (
            "Reference",
            serde_json::json!({
                "description": "A value taken from the parent's result ($from) or from the fan-out element ($each), by JSON Pointer (RFC 6901).",
                "oneOf": [
                    {"type": "object", "properties": {FROM: pointer}, "required": [FROM], "additionalProperties": false},
                    {"type": "object", "properties": {EACH: pointer}, "required": [EACH], "additionalProperties": false}
                ]
            }),
        ),
        (
            "ParamValue",
            serde_json::json!({
                "description": "A parameter value: a reference, or any JSON value (whose arrays and objects may hold references). An object with `$from` or `$each` is a reference and nothing else.",
                "anyOf": [
                    {"$ref": "#/$defs/Reference"},
                    {"type": ["string", "number", "integer", "boolean", "null"]},
                    {"type": "array", "items": {"$ref": "#/$defs/ParamValue"}},
                    {
                        "type": "object",
                        "not": {"anyOf": [{"required": [FROM]}, {"required": [EACH]}]},
                        "additionalProperties": {"$ref": "#/$defs/ParamValue"}
                    }
                ]
            }),
        ),
    ]
}

/// Where a reference reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Result,
    Element,
}

/// A reference found in a follow-up's params, at `path` (`instance_ids[0]`, `tags.Name`).
#[derive(Debug, Clone)]
struct Reference {
    path: String,
    source: Source,
    pointer: String,
}

impl Reference {
    fn key(&self) -> &'static str {
        match self.source {
            Source::Result => FROM,
            Source::Element => EACH,
        }
    }
}

/// Finds the references in `value` (at `path`), and what is wrong with any malformed one.
fn references(value: &Value, path: &str, found: &mut Vec<Reference>, bad: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            let key = [FROM, EACH].into_iter().find(|k| map.contains_key(*k));
            if let Some(key) = key {
                let source = if key == FROM {
                    Source::Result
                } else {
                    Source::Element
                };
                match map.get(key) {
                    Some(Value::String(pointer)) if map.len() == 1 => {
                        if let Err(message) = check_pointer(pointer) {
                            bad.push(field(path, format!("`{key}`: {message}")));
                        }
                        found.push(Reference {
                            path: path.to_owned(),
                            source,
                            pointer: pointer.clone(),
                        });
                    }
                    _ => {
                        bad.push(field(
                            path,
                            format!(
                                "a reference is {{\"{key}\": \"/json/pointer\"}} and nothing else"
                            ),
                        ));
                        // Still a reference in intent: stood in for, not decoded as a value.
                        found.push(Reference {
                            path: path.to_owned(),
                            source,
                            pointer: String::new(),
                        });
                    }
                }
                return;
            }
            for (k, v) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                references(v, &at, found, bad);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                references(v, &format!("{path}[{i}]"), found, bad);
            }
        }
        _ => {}
    }
}

fn field(path: &str, message: String) -> FieldError {
    FieldError {
        field: path.to_owned(),
        message,
    }
}

/// A JSON Pointer is empty (the whole document) or `/`-separated tokens where `~` is only
/// ever `~0` or `~1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`{pointer}` is not a JSON Pointer: it starts with `/` (or is empty, for the whole value)"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{pointer}` is not a JSON Pointer: `~` is written `~0` and `/` inside a name `~1`"
            ));
        }
    }
    Ok(())
}

/// Values tried in place of references at enqueue time, so the rest of the params can be
/// checked without knowing what the references will hold.
fn stand_ins() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::from(1),
        Value::Bool(false),
        Value::Array(Vec::new()),
        Value::Object(Map::new()),
    ]
}

/// Sets the value at `path` (as [`references`] writes it) inside `params`.
fn set_at(params: &mut Value, path: &str, new: Value) {
    let mut at = params;
    for segment in split_path(path) {
        let next = match (segment, at) {
            (Segment::Key(k), Value::Object(map)) => map.get_mut(k),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(i),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    *at = new;
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            segments.push(Segment::Key(key));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                segments.push(Segment::Index(i));
            }
        }
    }
    segments
}

/// Whether the error `field` (relative to the params) lies at or under `path`.
fn under(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Checks a chain at enqueue time: every follow-up of `parent` (recursively), all but what
/// the references will hold. Errors are named from the envelope (`then[0].params.name`).
pub fn check(parent: &JobId, then: &[FollowUp]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_level(parent.as_str(), then, "then", &mut errors);
    errors
}

fn check_level(parent: &str, then: &[FollowUp], at: &str, errors: &mut Vec<FieldError>) {
    for (n, follow_up) in then.iter().enumerate() {
        let step = format!("{at}[{n}]");
        let mut id = follow_up_id(parent, n, None);
        if let Some(pointer) = &follow_up.for_each {
            if let Err(message) = check_pointer(pointer) {
                errors.push(field(&format!("{step}.for_each"), message));
            }
            id = format!("{id}:{}", "9".repeat(FAN_OUT_DIGITS));
        }
        if let Err(message) = JobId::parse(&id) {
            errors.push(field(
                &step,
                format!("its job id `{id}…` {message}: shorten the parent's job_id or the chain"),
            ));
        }
        check_params(follow_up, &step, errors);
        check_level(&id, &follow_up.then, &format!("{step}.then"), errors);
    }
}

fn check_params(follow_up: &FollowUp, step: &str, errors: &mut Vec<FieldError>) {
    let params = Value::Object(follow_up.params.clone());
    let mut refs = Vec::new();
    let mut bad = Vec::new();
    references(&params, "", &mut refs, &mut bad);
    let name = |path: &str| {
        if path.is_empty() {
            format!("{step}.params")
        } else {
            format!("{step}.params.{path}")
        }
    };
    for e in bad {
        errors.push(field(&name(&e.field), e.message));
    }
    if follow_up.for_each.is_none() {
        for r in refs.iter().filter(|r| r.source == Source::Element) {
            errors.push(field(
                &name(&r.path),
                format!("`{EACH}` reads a fan-out element; this follow-up has no `for_each`"),
            ));
        }
    }
    // Each reference tries the stand-ins in turn until decoding stops failing at it: what
    // still fails is a fault of the values the caller wrote.
    let stand_ins = stand_ins();
    let mut choice = vec![0usize; refs.len()];
    for _ in 0..=refs.len() * stand_ins.len() {
        let mut value = params.clone();
        for (r, c) in refs.iter().zip(&choice) {
            set_at(&mut value, &r.path, stand_ins[*c].clone());
        }
        let job = match Job::decode(follow_up.kind, value) {
            Ok(job) => job,
            Err(ContractError::Invalid(found)) => {
                let Some(first) = found.into_iter().next() else {
                    return;
                };
                let relative = first.field.strip_prefix("params").unwrap_or(&first.field);
                let relative = relative.strip_prefix('.').unwrap_or(relative);
                match refs.iter().position(|r| under(relative, &r.path)) {
                    Some(i) if choice[i] + 1 < stand_ins.len() => {
                        choice[i] += 1;
                        continue;
                    }
                    // No stand-in fits: what the reference holds decides, at run time.
                    Some(_) => return,
                    None => {
                        errors.push(field(&name(relative), first.message));
                        return;
                    }
                }
            }
            Err(other) => {
                errors.push(field(&format!("{step}.kind"), other.to_string()));
                return;
            }
        };
        let mut v = Violations::under("");
        job.validate_params(&mut v);
        for e in v.into_errors() {
            if !refs.iter().any(|r| under(&e.field, &r.path)) {
                errors.push(field(&name(&e.field), e.message));
            }
        }
        return;
    }
}

/// Where a follow-up is in its chain, read off its id: `root.2.1` is `then[1].then[0]`, and
/// `root.1:3` is element 3 of `then[0]`'s fan-out, `then[0][3]`. `None` for the chain's first
/// job, or an id that does not descend from `chain_id`.
pub fn step_of(job_id: &str, chain_id: &str) -> Option<String> {
    let rest = job_id.strip_prefix(chain_id)?.strip_prefix('.')?;
    let mut step = String::new();
    for part in rest.split('.') {
        let (n, element) = match part.split_once(':') {
            Some((n, i)) => (n, Some(i.parse::<usize>().ok()?)),
            None => (part, None),
        };
        let n: usize = n.parse().ok()?;
        if !step.is_empty() {
            step.push('.');
        }
        step.push_str(&format!("then[{}]", n.checked_sub(1)?));
        if let Some(i) = element {
            step.push_str(&format!("[{i}]"));
        }
    }
    Some(step)
}

/// The id of follow-up `n` (0-based in `then`, 1-based in the id) of `parent`, and of
/// element `element` of its fan-out.
pub fn follow_up_id(parent: &str, n: usize, element: Option<usize>) -> String {
    match element {
        Some(i) => format!("{parent}.{}:{i}", n + 1),
        None => format!("{parent}.{}", n + 1),
    }
}

/// One follow-up of a succeeded job: the job to enqueue, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub job_id: String,
    pub kind: JobKind,
    /// Where it is in the parent's chain (`then[1]`), for messages.
    pub step: String,
    pub job: Result<JobEnvelope, String>,
}

/// The follow-ups of `parent`, which succeeded with `result`, with their references
/// resolved. A fan-out whose pointer does not name an array fails as one entry, under the
/// id the step would have had without `for_each`.
pub fn expand(parent: &JobEnvelope, result: &Value) -> Vec<Expanded> {
    let mut out = Vec::new();
    for (n, follow_up) in parent.then.iter().enumerate() {
        let step = format!("then[{n}]");
        let Some(pointer) = &follow_up.for_each else {
            let id = follow_up_id(parent.job_id.as_str(), n, None);
            let job = build(parent, follow_up, &step, &id, result, None);
            out.push(expanded(id, follow_up, &step, job));
            continue;
        };
        match result.pointer(pointer).map(|v| v.as_array()) {
            Some(Some(items)) if items.len() <= MAX_FAN_OUT => {
                for (i, item) in items.iter().enumerate() {
                    let id = follow_up_id(parent.job_id.as_str(), n, Some(i));
                    let job = build(parent, follow_up, &step, &id, result, Some(item));
                    out.push(expanded(id, follow_up, &step, job));
                }
            }
            found => {
                let why = match found {
                    None => format!("`{pointer}` is not in the result of job {}", parent.job_id),
                    Some(None) => format!(
                        "`{pointer}` in the result of job {} is not an array",
                        parent.job_id
                    ),
                    Some(Some(items)) => format!(
                        "`{pointer}` in the result of job {} has {} elements; at most {MAX_FAN_OUT} follow-ups fan out",
                        parent.job_id,
                        items.len()
                    ),
                };
                let id = follow_up_id(parent.job_id.as_str(), n, None);
                out.push(expanded(
                    id,
                    follow_up,
                    &step,
                    Err(format!("{step}.for_each: {why}")),
                ));
            }
        }
    }
    out
}

fn expanded(
    job_id: String,
    follow_up: &FollowUp,
    step: &str,
    job: Result<JobEnvelope, String>,
) -> Expanded {
    Expanded {
        job_id,
        kind: follow_up.kind,
        step: step.to_owned(),
        job,
    }
}

fn build(
    parent: &JobEnvelope,
    follow_up: &FollowUp,
    step: &str,
    id: &str,
    result: &Value,
    element: Option<&Value>,
) -> Result<JobEnvelope, String> {
    let mut params = Value::Object(follow_up.params.clone());
    let mut refs = Vec::new();
    let mut bad = Vec::new();
    references(&params, "", &mut refs, &mut bad);
    if let Some(e) = bad.first() {
        return Err(format!("{step}.params.{}: {}", e.field, e.message));
    }
    for r in &refs {
        let (document, whose) = match (r.source, element) {
            (Source::Result, _) => (result, format!("the result of job {}", parent.job_id)),
            (Source::Element, Some(item)) => (item, "the fan-out element".to_owned()),
            (Source::Element, None) => {
                return Err(format!(
                    "{step}.params.{}: `{EACH}` outside a fan-out",
                    r.path
                ))
            }
        };
        match document.pointer(&r.pointer) {
            Some(value) => set_at(&mut params, &r.path, value.clone()),
            None => {
                return Err(format!(
                    "{step}.params.{}: `{}` `{}` is not in {whose}",
                    r.path,
                    r.key(),
                    r.pointer
                ))
            }
        }
    }
    let job_id = JobId::parse(id).map_err(|m| format!("{step}: job id `{id}` {m}"))?;
    let job = Job::decode(follow_up.kind, params).map_err(|e| in_step(step, e))?;
    let envelope = JobEnvelope {
        schema_version: SCHEMA_VERSION,
        job_id,
        submitted_at: chrono::Utc::now(),
        job,
        then: follow_up.then.clone(),
        chain_id: Some(parent.chain_id().clone()),
        parent_job_id: Some(parent.job_id.clone()),
    };
    envelope.validate().map_err(|e| in_step(step, e))?;
    Ok(envelope)
}

/// A contract error of a resolved follow-up, its fields named inside the parent's chain.
fn in_step(step: &str, e: ContractError) -> String {
    match e {
        ContractError::Invalid(errors) => errors
            .iter()
            .map(|e| format!("{step}.{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{step}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn follow_ups(then: Value) -> Vec<FollowUp> {
        serde_json::from_value(then).expect("follow-ups")
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn parent(then: Value) -> JobEnvelope {
        JobEnvelope::from_request(json!({
            "job_id": "root", "kind": "canary", "params": {}, "then": then,
        }))
        .expect("a valid chain")
    }

    #[test]
    fn references_are_left_unchecked_and_everything_else_is_checked() {
        let then = follow_ups(json!([
            {"kind": "set-termination-protection",
             "params": {"instance_ids": [{"$from": "/instances/0/instance_id"}], "disable_api_termination": false}},
            {"kind": "snapshot", "for_each": "/instances",
             "params": {"instance_id": {"$each": "/instance_id"}, "name": {"$from": "/name"}, "tags": {"Owner": {"$from": "/owner"}}}},
        ]));
        assert_eq!(check(&JobId::parse("root").expect("id"), &then), vec![]);
    }

    #[test]
    fn faults_outside_references_are_named_from_the_envelope() {
        let then = follow_ups(json!([
            {"kind": "run-instances", "params": {"image_id": {"$from": "/image_id"}, "instance_type": "t2.micro", "min_count": 0}},
            {"kind": "snapshot", "params": {"instance_id": {"$each": "/id"}}},
            {"kind": "canary", "then": [{"kind": "snapshot", "params": {"volume_id": "vol-nope"}}]},
            {"kind": "canary", "params": {"sleep_ms": {"$from": "x"}}},
            {"kind": "canary", "params": {"sleep_ms": {"$from": "/a", "extra": 1}}},
            {"kind": "canary", "params": {"sleep_ms": "slow"}},
        ]));
        let errors = check(&JobId::parse("root").expect("id"), &then);
        assert_eq!(
            fields(&errors),
            vec![
                "then[0].params.min_count",
                "then[1].params.instance_id",
                "then[2].then[0].params.volume_id",
                "then[3].params.sleep_ms",
                "then[4].params.sleep_ms",
                "then[5].params.sleep_ms",
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn a_follow_ups_step_is_read_off_its_id() {
        assert_eq!(
            step_of("root.2.1", "root").as_deref(),
            Some("then[1].then[0]")
        );
        assert_eq!(step_of("root.1:3", "root").as_deref(), Some("then[0][3]"));
        assert_eq!(
            step_of("root.1:3.2", "root").as_deref(),
            Some("then[0][3].then[1]")
        );
        assert_eq!(step_of("root", "root"), None);
        assert_eq!(step_of("rooted.1", "root"), None);
        assert_eq!(step_of("root.x", "root"), None);
    }

    #[test]
    fn a_derived_id_that_would_be_too_long_is_refused() {
        let long = JobId::parse(&"x".repeat(127)).expect("id");
        let errors = check(&long, &follow_ups(json!([{"kind": "canary"}])));
        assert_eq!(fields(&errors), vec!["then[0]"]);
    }

    #[test]
    fn expand_resolves_references_and_derives_ids() {
        let p = parent(json!([
            {"kind": "set-termination-protection",
             "params": {"instance_ids": [{"$from": "/instances/0/instance_id"}], "disable_api_termination": false},
             "then": [{"kind": "canary"}]},
            {"kind": "snapshot", "for_each": "/instances",
             "params": {"instance_id": {"$each": "/instance_id"}}},
        ]));
        let result = json!({"instances": [
            {"instance_id": "i-0123456789abcdef0"}, {"instance_id": "i-0123456789abcdef1"}]});
        let out = expand(&p, &result);
        let ids: Vec<_> = out.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(ids, vec!["root.1", "root.2:0", "root.2:1"]);
        let first = out[0].job.as_ref().expect("resolved");
        assert_eq!(first.chain_id.as_ref().map(JobId::as_str), Some("root"));
        assert_eq!(
            first.parent_job_id.as_ref().map(JobId::as_str),
            Some("root")
        );
        assert_eq!(
            first.then.len(),
            1,
            "the grandchildren travel with the child"
        );
        let Job::Snapshot(s) = &out[2].job.as_ref().expect("resolved").job else {
            panic!("a snapshot job");
        };
        assert_eq!(s.instance_id.as_deref(), Some("i-0123456789abcdef1"));
        // The grandchild keeps the root as its chain.
        let grand = expand(first, &json!({}));
        let grand = grand[0].job.as_ref().expect("resolved");
        assert_eq!(grand.job_id.as_str(), "root.1.1");
        assert_eq!(grand.chain_id.as_ref().map(JobId::as_str), Some("root"));
    }

    #[test]
    fn a_reference_that_does_not_resolve_fails_its_follow_up_naming_the_pointer() {
        let p = parent(json!([
            {"kind": "set-termination-protection",
             "params": {"instance_ids": [{"$from": "/instances/5/instance_id"}], "disable_api_termination": false}},
            {"kind": "snapshot", "for_each": "/volumes", "params": {"volume_id": {"$each": ""}}},
            {"kind": "snapshot", "params": {"volume_id": {"$from": "/kind"}}},
        ]));
        let out = expand(&p, &json!({"instances": [], "kind": "not-a-volume"}));
        let errors: Vec<_> = out
            .iter()
            .map(|e| e.job.as_ref().expect_err("unresolved").clone())
            .collect();
        assert!(
            errors[0].contains("then[0].params.instance_ids[0]")
                && errors[0].contains("/instances/5/instance_id"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("then[1].for_each") && errors[1].contains("/volumes"),
            "{errors:?}"
        );
        assert!(errors[2].contains("then[2].params.volume_id"), "{errors:?}");
        assert_eq!(out[1].job_id, "root.2");
    }
}
