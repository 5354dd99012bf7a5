//! Completion events are CloudEvents 1.0 in structured mode: every event a worker publishes
//! (a success, a failure, a malformed message's failure, an unresolved follow-up's) passes
//! the official CloudEvents JSON Schema, as the CloudEvents JavaScript SDK (npm) ships it
//! compiled, and Shoal's own committed event schema; its attributes say what its `data`
//! says.
//!
//! `scripts/test` installs the SDK under the cache (`SHOAL_CLOUDEVENTS_DIR`); without it this
//! test fails and says how to get it, rather than passing without looking.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_common::config::QueueTarget;
use shoal_common::event::CloudEvent;
use shoal_common::JobEnvelope;
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{repo_path, TestStack};
use shoal_worker::handlers::default_registry;

/// One line per document: "valid", or "invalid: <errors>".
fn judge(program: &str, args: &[&str], documents: &[String], install_hint: &str) -> Vec<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({install_hint}): {e}"));
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for doc in documents {
            writeln!(stdin, "{doc}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("judge");
    assert!(
        out.status.success(),
        "{program} failed ({install_hint}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_published_event_is_a_valid_cloudevent() {
    let t = TestStack::new("cloudevents").await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    let chain = JobEnvelope::from_request(json!({
        "job_id": "ce-chain", "kind": "canary",
        "then": [{"kind": "snapshot", "params": {"volume_id": {"$from": "/no/such"}}}],
    }))
    .expect("chain");
    producer
        .enqueue(&chain, &SendOptions::default())
        .await
        .expect("enqueue");
    t.clients
        .sqs
        .send_message()
        .queue_url(&t.stack.queue_url)
        .message_body("{not json")
        .send()
        .await
        .expect("send a malformed message");
    let worker = t
        .start_worker(t.worker_config("ce-worker"), default_registry())
        .await;
    let messages = t
        .receive(&t.stack.events_queue_url, 3, Duration::from_secs(60))
        .await;
    worker.stop().await;
    assert_eq!(
        messages.len(),
        3,
        "a success, an unresolved follow-up, a malformed message"
    );
    let bodies: Vec<String> = messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();

    // The official schema, compiled by the CloudEvents SDK.
    let dir = std::env::var("SHOAL_CLOUDEVENTS_DIR").unwrap_or_default();
    let validator = format!("{dir}/node_modules/cloudevents/dist/schema/v1.js");
    let script = r#"
const validate = require(process.argv[1]);
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const line of lines) {
  const ok = validate(JSON.parse(line));
  console.log(ok ? "valid" : "invalid: " + JSON.stringify(validate.errors));
}
"#;
    let verdicts = judge(
        "node",
        &["-e", script, &validator],
        &bodies,
        "scripts/test installs cloudevents from npm and sets SHOAL_CLOUDEVENTS_DIR",
    );
    assert_eq!(verdicts, vec!["valid"; 3], "{bodies:?}");

    // Shoal's own schema of the event, committed beside the job's.
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    errors = [e.message for e in validator.iter_errors(json.loads(line))]
    print("valid" if not errors else "invalid: " + "; ".join(errors))
"#;
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let schema = repo_path("common/schema/job-event.schema.json");
    let verdicts = judge(
        &python,
        &["-c", script, &schema.to_string_lossy()],
        &bodies,
        "pip install jsonschema; scripts/test installs it",
    );
    assert_eq!(verdicts, vec!["valid"; 3], "{bodies:?}");

    for body in &bodies {
        let raw: Value = serde_json::from_str(body).expect("json");
        let event: CloudEvent = serde_json::from_str(body).expect("a CloudEvent");
        assert_eq!(event.specversion, "1.0");
        assert_eq!(event.source, t.stack.queue_url);
        assert_eq!(event.datacontenttype, "application/json");
        assert_eq!(
            raw["type"],
            format!("dev.shoal.job.{}", event.data.status.as_str())
        );
        assert_eq!(event.data.event_version, 2);
        assert_eq!(event.time, event.data.timings.finished_at);
        match event.data.job_id.as_deref() {
            Some(id) => assert_eq!(event.subject, id),
            None => assert_eq!(event.subject, event.data.message_id),
        }
    }
    let ids: std::collections::HashSet<_> = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).expect("json")["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "each outcome has its own id");
}
