//! The published job contract: the committed JSON Schemas (of a job, and of a completion
//! event) match the Rust types, every kind survives a round trip, and decoding errors name
//! the field.

use shoal_common::job::{json_schema, Canary, ContractError, RunInstances};
use shoal_common::{Job, JobEnvelope, JobKind};
use shoal_tests::repo_path;

const SCHEMA_FILE: &str = "common/schema/job-envelope.schema.json";
const EVENT_SCHEMA_FILE: &str = "common/schema/job-event.schema.json";

/// Fails when `generated` differs from the committed `file`. To accept a change, run the
/// test with `SHOAL_BLESS=1` and commit the rewritten file.
fn matches_committed(file: &str, generated: &serde_json::Value) {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(generated).expect("schema json")
    );
    let path = repo_path(file);
    if std::env::var_os("SHOAL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{file} is out of date with the types: run `SHOAL_BLESS=1 cargo test -p shoal-tests --test contract` and commit it"
    );
}

#[test]
fn committed_schema_matches_the_types() {
    matches_committed(SCHEMA_FILE, &json_schema());
}

#[test]
fn committed_event_schema_matches_the_types() {
    matches_committed(EVENT_SCHEMA_FILE, &shoal_common::event::json_schema());
}

#[test]
fn the_schema_lists_every_kind_and_refuses_unknown_fields() {
    let schema = json_schema();
    let kinds = shoal_tests::schema_kinds(&schema);
    let expected: Vec<&str> = JobKind::builtin().iter().map(|k| k.as_str()).collect();
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
    assert_eq!(job.job, Job::new(Canary { sleep_ms: 0 }));
    assert_eq!(job.schema_version, 1);
    assert!(!job.job_id.as_str().is_empty());

    let job = JobEnvelope::from_request(serde_json::json!({
        "kind": "run-instances",
        "params": {"image_id": "ami-12345678", "instance_type": "t3.nano"},
    }))
    .expect("valid");
    let params = job.job.params::<RunInstances>().expect("run-instances");
    assert_eq!((params.min_count, params.max_count), (1, 1));
    assert!(!params.disable_api_termination);
}

/// A request body for `kind` as another language would write it; a built-in kind without
/// one fails `every_kind_round_trips_through_json`.
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
        JobKind::CopySnapshot => {
            r#"{"kind":"copy-snapshot","params":{"snapshot_id":"snap-12345678","destination_region":"us-west-2"}}"#
        }
        JobKind::RegisterImage => {
            r#"{"kind":"register-image","params":{"snapshot_id":"snap-12345678","name":"web restored"}}"#
        }
        JobKind::RestoreVolume => {
            r#"{"kind":"restore-volume","params":{"snapshot_id":"snap-12345678","availability_zone":"us-east-1a"}}"#
        }
        JobKind::PruneSnapshots => {
            r#"{"kind":"prune-snapshots","params":{"volume_id":"vol-12345678","keep_count":3}}"#
        }
        JobKind::TerminateInstances => {
            r#"{"kind":"terminate-instances","params":{"instance_ids":["i-12345678"]}}"#
        }
        JobKind::Canary => r#"{"kind":"canary","params":{"sleep_ms":10}}"#,
        other => panic!("`{other}` has no request body here"),
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    for kind in JobKind::builtin() {
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

/// Every invalid job below is refused by the Rust validator, naming its field, and by the
/// published schema under another language's validator (Python's `jsonschema`, draft
/// 2020-12), except the rules across fields, which JSON Schema cannot state and the schema
/// names in its descriptions: those the schema must accept, so the list stays honest.
#[test]
fn the_published_schema_refuses_what_the_validator_refuses() {
    let ami = r#""image_id":"ami-12345678","instance_type":"t2.micro""#;
    let cases: Vec<(String, &str, bool)> = vec![
        (r#""kind":"run-instances","params":{"image_id":"ami-zz","instance_type":"t2.micro"}"#.to_owned(), "params.image_id", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"min_count":0}}"#), "params.min_count", false),
        (r#""kind":"run-instances","params":{"image_id":"ami-12345678","instance_type":"t2micro"}"#.to_owned(), "params.instance_type", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"availability_zone":"us-east-1"}}"#), "params.availability_zone", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"subnet_id":"subnet-1"}}"#), "params.subnet_id", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"security_group_ids":["sg-xyz"]}}"#), "params.security_group_ids", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"key_name":"k\u00e9y"}}"#), "params.key_name", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{"aws:stack":"x"}}}}"#), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{"SHOAL:job-id":"x"}}}}"#), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{"Name":"a\u0001b"}}}}"#), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{"Name":"{}"}}}}"#, "v".repeat(257)), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{"{}":"v"}}}}"#, "k".repeat(129)), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"tags":{{{}}}}}"#, (0..50).map(|i| format!(r#""k{i}":"v""#)).collect::<Vec<_>>().join(",")), "params.tags", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"user_data":"{}"}}"#, "u".repeat(16 * 1024 + 1)), "params.user_data", false),
        (format!(r#""kind":"run-instances","params":{{{ami},"min_count":3,"max_count":2}}"#), "params.max_count", true),
        (r#""kind":"create-image","params":{"instance_id":"i-1","name":"web"}"#.to_owned(), "params.instance_id", false),
        (r#""kind":"create-image","params":{"instance_id":"i-12345678","name":"w"}"#.to_owned(), "params.name", false),
        (r#""kind":"create-image","params":{"instance_id":"i-12345678","name":"web#1"}"#.to_owned(), "params.name", false),
        (format!(r#""kind":"create-image","params":{{"instance_id":"i-12345678","name":"web","description":"{}"}}"#, "d".repeat(256)), "params.description", false),
        (r#""kind":"create-image","params":{"instance_id":"i-12345678","name":"web","description":"bell\u0007"}"#.to_owned(), "params.description", false),
        (r#""kind":"snapshot","params":{"volume_id":"vol-zz"}"#.to_owned(), "params.volume_id", false),
        (r#""kind":"snapshot","params":{"volume_name":""}"#.to_owned(), "params.volume_name", false),
        (r#""kind":"snapshot","params":{"instance_id":"i-12345678","name":"a\u001bb"}"#.to_owned(), "params.name", false),
        (r#""kind":"snapshot","params":{"volume_id":"vol-12345678","instance_id":"i-12345678"}"#.to_owned(), "params.volume_id", true),
        (r#""kind":"snapshot","params":{"volume_name":"web","name":"web"}"#.to_owned(), "params.name", true),
        (r#""kind":"set-termination-protection","params":{"instance_ids":[],"disable_api_termination":true}"#.to_owned(), "params.instance_ids", false),
        (r#""kind":"set-termination-protection","params":{"instance_ids":["i-XYZ"],"disable_api_termination":true}"#.to_owned(), "params.instance_ids", false),
        (r#""kind":"canary","params":{"sleep_ms":43200001}"#.to_owned(), "params.sleep_ms", false),
        (r#""kind":"canary","params":{},"then":[{"kind":"reboot"}]"#.to_owned(), "then[0].kind", false),
        (r#""kind":"canary","params":{},"then":[{"kind":"canary","for_each":"instances"}]"#.to_owned(), "then[0].for_each", false),
        (r#""kind":"canary","params":{},"then":[{"kind":"canary","wait":true}]"#.to_owned(), "then[0]", false),
        (r#""kind":"canary","params":{},"then":[{"kind":"canary","params":{"sleep_ms":{"$from":"/a","and":1}}}]"#.to_owned(), "then[0].params.sleep_ms", false),
        (r#""kind":"canary","params":{},"then":[{"kind":"canary","params":{"sleep_ms":{"$from":"slept"}}}]"#.to_owned(), "then[0].params.sleep_ms", false),
        // The schema cannot know which kind's params a follow-up holds.
        (r#""kind":"canary","params":{},"then":[{"kind":"snapshot","params":{"volume_id":"vol-zz"}}]"#.to_owned(), "then[0].params.volume_id", true),
    ];
    let bodies: Vec<String> = cases
        .iter()
        .map(|(fragment, _, _)| {
            format!(r#"{{"schema_version":1,"job_id":"j-1","submitted_at":"2026-11-26T00:00:00Z",{fragment}}}"#)
        })
        .collect();

    for ((_, field, _), body) in cases.iter().zip(&bodies) {
        let request: serde_json::Value = serde_json::from_str(body).expect(body);
        let error = JobEnvelope::from_request(request).expect_err(body);
        assert!(error.to_string().contains(field), "{field}: {error}");
    }

    // One Python process judges them all: a line per body, "valid" or "invalid".
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    print("valid" if validator.is_valid(json.loads(line)) else "invalid")
"#;
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .arg(repo_path(SCHEMA_FILE))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with jsonschema (pip install jsonschema)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for body in &bodies {
            writeln!(stdin, "{body}").expect("write");
        }
    }
    let output = child.wait_with_output().expect("python output");
    assert!(output.status.success(), "the Python validator ran");
    let verdicts: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    for ((fragment, field, across_fields), verdict) in cases.iter().zip(&verdicts) {
        let expected = if *across_fields { "valid" } else { "invalid" };
        assert_eq!(
            verdict, expected,
            "{field}: the schema judged {fragment:.120} {verdict}"
        );
    }
}

/// JSON can write an unpaired UTF-16 surrogate (`\ud800`), which no Rust string and no EC2
/// request can carry: the job is refused, naming the field it stands in.
#[test]
fn an_unpaired_surrogate_is_refused_naming_its_field() {
    let body = r#"{"schema_version":1,"job_id":"j-1","submitted_at":"2026-11-26T00:00:00Z","kind":"run-instances","params":{"image_id":"ami-12345678","instance_type":"t2.micro","tags":{"Name":"a\ud800b"}}}"#;
    let error = JobEnvelope::from_json(body).expect_err("refused");
    assert!(
        error.to_string().contains("params.tags.Name") && error.to_string().contains("surrogate"),
        "{error}"
    );
    let line = r#"{"kind":"canary","params":{"sleep_ms":1},"job_id":"a\udc00"}"#;
    let error = shoal_common::job::parse_request_line(line).expect_err("refused");
    assert!(
        error.contains("job_id") && error.contains("surrogate"),
        "{error}"
    );
}
