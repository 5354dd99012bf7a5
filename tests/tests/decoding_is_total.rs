//! Decoding is total: whatever bytes a sender writes, the envelope decoder, every kind's
//! validation and the reference resolver return a value or an error, never a panic. Property
//! tests throw arbitrary text, arbitrary JSON, and envelopes of every kind made from a valid
//! example with some fields replaced by arbitrary values (so the values get past decoding and
//! reach each kind's own rules: durations, ids, tags, counts), and follow-ups whose fields
//! are references into an arbitrary result. Each case came from a panic found once: a
//! `keep_for` of `"1é"` cut inside its last character.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shoal_common::job::{chain, json_schema, parse_request_line, FollowUp};
use shoal_common::{JobEnvelope, JobKind};
use shoal_tests::example_job;

/// Every property name the envelope's schema declares, kinds' parameters included.
fn field_names() -> Vec<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    walk(&json_schema(), &mut names);
    names.into_iter().collect()
}

/// Text a sender might write: any characters, with the awkward ones (multi-byte, combining,
/// control, the units and digits the rules read) well represented.
fn text() -> impl Strategy<Value = String> {
    let awkward = prop::sample::select(vec![
        "é",
        "\u{1F600}",
        "\u{0301}",
        "\u{0}",
        "\u{7f}",
        "\n",
        "h",
        "d",
        "w",
        "0",
        "1",
        "9",
        "-",
        ".",
        ":",
        "*",
        "/",
        "~",
        "$from",
        "i-",
        "vol-",
        "snap-",
        "ami-",
        "us-west-2",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(awkward, 0..6).prop_map(|parts| parts.concat()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(text(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid example of `kind`'s parameters.
fn example(kind: JobKind) -> Map<String, Value> {
    match serde_json::to_value(example_job(kind)) {
        Ok(Value::Object(mut job)) => match job.remove("params") {
            Some(Value::Object(params)) => params,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// A value for one field: text most often (most rules read strings), else any JSON.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![3 => text().prop_map(Value::from), 1 => json_value()]
}

/// The fields `kind` takes, out of every name the schema declares: those its decoder does not
/// call unknown.
fn own_fields(kind: JobKind, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let mut params = example(kind);
            params.insert((*name).clone(), Value::Null);
            let body = json!({
                "schema_version": 1, "job_id": "job-1", "kind": kind.as_str(),
                "submitted_at": "2026-12-01T00:00:00Z", "params": params,
            });
            match JobEnvelope::from_value(body) {
                Ok(_) => true,
                Err(e) => !e.to_string().contains("unknown field"),
            }
        })
        .cloned()
        .collect()
}

/// A kind, and its example's parameters with up to three fields (mostly its own, sometimes
/// any the schema names) set to arbitrary values.
fn mutated() -> impl Strategy<Value = (JobKind, Map<String, Value>)> {
    let names = field_names();
    prop::sample::select(JobKind::builtin()).prop_flat_map(move |kind| {
        let own = own_fields(kind, &names);
        let name = prop_oneof![
            4 => prop::sample::select(own),
            1 => prop::sample::select(names.clone()),
        ];
        let changes = prop::collection::vec((name, field_value()), 1..4);
        (Just(kind), Just(example(kind)), changes).prop_map(|(kind, mut params, changes)| {
            for (name, value) in changes {
                params.insert(name, value);
            }
            (kind, params)
        })
    })
}

/// A kind, and its example's parameters with one to three of its fields made references to
/// `/v` in the parent's result.
fn referencing() -> impl Strategy<Value = (JobKind, Map<String, Value>)> {
    prop::sample::select(JobKind::builtin()).prop_flat_map(|kind| {
        let params = example(kind);
        let own: Vec<String> = params.keys().cloned().collect();
        let picks = prop::collection::vec(prop::sample::select(own), 1..4);
        (Just(kind), Just(params), picks).prop_map(|(kind, mut params, picks)| {
            for name in picks {
                params.insert(name, json!({"$from": "/v"}));
            }
            (kind, params)
        })
    })
}

proptest! {
    // No file of failures is written into the checkout: a failure prints its minimal case.
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_text_is_a_job_or_an_error(body in text()) {
        let _ = JobEnvelope::from_json(&body);
        let _ = parse_request_line(&body);
    }

    #[test]
    fn any_json_is_a_job_or_an_error(value in json_value()) {
        let _ = JobEnvelope::from_json(&value.to_string());
        let _ = JobEnvelope::from_request(value);
    }

    #[test]
    fn any_parameters_of_any_kind_are_a_job_or_an_error(
        (kind, params) in mutated(),
        job_id in prop_oneof![Just("job-1".to_owned()), text()],
    ) {
        let body = json!({
            "schema_version": 1, "job_id": job_id, "kind": kind.as_str(),
            "submitted_at": "2026-12-01T00:00:00Z", "params": params,
        });
        if let Ok(envelope) = JobEnvelope::from_json(&body.to_string()) {
            // What decodes is whole: it validates, has a digest, and encodes again.
            prop_assert!(envelope.validate().is_ok());
            prop_assert_eq!(envelope.digest().len(), 64);
            prop_assert!(JobEnvelope::from_json(&envelope.to_json()).is_ok());
        }
    }

    #[test]
    fn any_result_fed_through_references_is_a_job_or_a_reason(
        (kind, params) in referencing(),
        for_each in proptest::option::of(prop_oneof![Just("/items".to_owned()), text()]),
        value in field_value(),
        items in prop::collection::vec(field_value(), 0..3),
    ) {
        let parent = JobEnvelope {
            then: vec![FollowUp { kind, params, for_each, then: Vec::new() }],
            ..JobEnvelope::new(shoal_common::job::Canary::default())
        };
        let result = json!({"v": value, "items": items});
        for expanded in chain::expand(&parent, &result) {
            if let Ok(job) = expanded.job {
                prop_assert!(job.validate().is_ok());
            }
        }
    }
}
