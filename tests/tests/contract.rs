//! The published job contract: the committed JSON Schema matches the Rust types, every
//! kind survives a round trip, and decoding errors name the field.

use shoal_common::job::{json_schema, Canary, ContractError, JobParams, RunInstances};
use shoal_common::{Job, JobEnvelope, JobKind};
use shoal_tests::repo_path;

const SCHEMA_FILE: &str = "common/schema/job-envelope.schema.json";

/// Fails when the types change without the committed schema. To accept a change, run the
/// test with `SHOAL_BLESS=1` and commit the rewritten file.
#[test]
fn committed_schema_matches_the_types() {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&json_schema()).expect("schema json")
    );
    let path = repo_path(SCHEMA_FILE);
    if std::env::var_os("SHOAL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA_FILE} is out of date with the job types: run `SHOAL_BLESS=1 cargo test -p shoal-tests --test contract` and commit it"
    );
}

#[test]
fn the_schema_lists_every_kind_and_refuses_unknown_fields() {
    let schema = json_schema();
    let kinds: Vec<&str> = schema["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .filter_map(|v| v["properties"]["kind"]["const"].as_str())
        .collect();
    let expected: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, expected);
    assert_eq!(schema["unevaluatedProperties"], false);
    for def in [
        "RunInstances",
        "CreateImage",
        "Snapshot",
        "SetTerminationProtection",
        "Canary",
    ] {
        assert_eq!(schema["$defs"][def]["additionalProperties"], false, "{def}");
    }
}

#[test]
fn a_minimal_request_gets_defaults_filled_in() {
    let job = JobEnvelope::from_request(serde_json::json!({"kind": "canary"})).expect("valid");
    assert_eq!(job.job, Job::Canary(Canary { sleep_ms: 0 }));
    assert_eq!(job.schema_version, 1);
    assert!(!job.job_id.as_str().is_empty());

    let job = JobEnvelope::from_request(serde_json::json!({
        "kind": "run-instances",
        "params": {"image_id": "ami-12345678", "instance_type": "t3.nano"},
    }))
    .expect("valid");
    let params = RunInstances::from_job(job.job).expect("run-instances");
    assert_eq!((params.min_count, params.max_count), (1, 1));
    assert!(!params.disable_api_termination);
}

/// A request body for `kind` as another language would write it; exhaustive, so a new kind
/// does not compile until it has one.
fn request_body(kind: JobKind) -> &'static str {
    match kind {
        JobKind::RunInstances => {
            r#"{"kind":"run-instances","params":{"image_id":"ami-12345678","min_count":2,"max_count":5,"key_name":"k","instance_type":"t2.micro","availability_zone":"us-east-1d","disable_api_termination":true,"tags":{"Name":"web"}}}"#
        }
        JobKind::CreateImage => {
            r#"{"kind":"create-image","params":{"instance_id":"i-12345678","name":"web image","description":"d","no_reboot":true,"tags":{"a":"b"}}}"#
        }
        JobKind::Snapshot => {
            r#"{"kind":"snapshot","params":{"instance_id":"i-12345678","name":"web"}}"#
        }
        JobKind::SetTerminationProtection => {
            r#"{"kind":"set-termination-protection","params":{"instance_ids":["i-12345678"],"disable_api_termination":false}}"#
        }
        JobKind::Canary => r#"{"kind":"canary","params":{"sleep_ms":10}}"#,
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    for &kind in JobKind::ALL {
        let body = request_body(kind);
        let first =
            JobEnvelope::from_request(serde_json::from_str(body).expect("json")).expect(body);
        let again = JobEnvelope::from_json(&first.to_json()).expect("re-decode");
        assert_eq!(first, again, "{body}");
        assert_eq!(first.kind(), kind);
        let example = JobEnvelope::new(shoal_tests::example_job(kind));
        assert_eq!(
            JobEnvelope::from_json(&example.to_json()).expect("example"),
            example
        );
    }
}

#[test]
fn decoding_errors_name_the_field() {
    let cases = [
        (
            r#"{"kind":"canary","params":{"sleep_ms":-1}}"#,
            "params.sleep_ms",
        ),
        (
            r#"{"kind":"run-instances","params":{"instance_type":"t2.micro"}}"#,
            "params.image_id",
        ),
        (
            r#"{"kind":"snapshot","params":{"volume_id":"vol-12345678","tags":{"Name":1}}}"#,
            "params.tags",
        ),
        (r#"{"kind":"canary","job_id":""}"#, "job_id"),
        (
            r#"{"kind":"canary","submitted_at":"yesterday"}"#,
            "submitted_at",
        ),
        (r#"{"kind":"nope"}"#, "kind"),
        (r#"{"kind":"canary","schema_version":7}"#, "schema_version"),
    ];
    for (body, field) in cases {
        let err =
            JobEnvelope::from_request(serde_json::from_str(body).expect("json")).expect_err(body);
        assert!(
            err.fields().iter().any(|f| f.starts_with(field)),
            "{body}: {err} (fields {:?})",
            err.fields()
        );
        assert!(err.to_string().starts_with(field), "{body}: {err}");
    }
    let err = JobEnvelope::from_json("{not json").expect_err("bad json");
    assert!(matches!(err, ContractError::Invalid(_)));
    assert_eq!(err.fields(), vec!["body".to_owned()]);
}
