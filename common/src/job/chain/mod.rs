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
//! ([`check()`]), every field but the references themselves, which only the parent's result can
//! settle; at run time [`expand`] resolves them, and one that does not resolve fails that
//! follow-up permanently, naming the pointer.
//!
//! Follow-up ids derive from the parent's (`<parent>.<n>`, and `<parent>.<n>:<i>` for
//! element `i` of a fan-out), so a parent that runs twice enqueues the same jobs twice, and
//! the second copy of each finds its work done (the job id is every handler's idempotency
//! key).
//!
//! The types and ids are here; the check at enqueue is `check.rs`, the expansion at run time
//! `expand.rs`, and the reading of references both share `references.rs`.

mod check;
mod expand;
mod references;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use check::check;
pub use expand::{expand, Expanded};

use super::JobKind;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::FieldError;
    use crate::{JobEnvelope, JobId};
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
        let s = out[2]
            .job
            .as_ref()
            .expect("resolved")
            .job
            .params::<crate::job::Snapshot>()
            .expect("a snapshot job");
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
