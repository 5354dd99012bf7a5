//! A kind defined outside Shoal (`examples/modify-volume`) runs through the worker library
//! exactly as a built-in does: in a chain after `snapshot` with `$each` references into its
//! result, under the ledger's lease with its outcome on record, counted in the metrics under
//! its own name, and dead-lettered with its reason when EC2 cannot do it.

use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::{Kind, Snapshot};
use shoal_common::ledger::Status;
use shoal_common::queue::dead_letter_attribute;
use shoal_common::{Job, JobEnvelope, JobId, JobKind};
use shoal_example_modify_volume::{ModifyVolume, ModifyVolumeHandler};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, new_volume_tagged, TestStack};
use shoal_worker::handlers::{builtin_registry, Ec2Limiter, Ec2Settings};
use shoal_worker::Registry;

const WAIT: Duration = Duration::from_secs(60);

/// The built-ins and `modify-volume`, as the example's binary registers them.
fn registry() -> Registry {
    let limiter = std::sync::Arc::new(Ec2Limiter::new(Ec2Settings::default()));
    let mut registry = builtin_registry(&limiter);
    registry.register(ModifyVolumeHandler { limiter });
    registry
}

async fn volume_size(t: &TestStack, id: &str) -> Option<i32> {
    t.clients
        .ec2
        .describe_volumes()
        .volume_ids(id)
        .send()
        .await
        .expect("describe")
        .volumes()
        .first()
        .and_then(|v| v.size())
}

#[tokio::test]
async fn a_users_kind_runs_in_a_chain_with_the_ledger_and_dead_letters_with_its_reason() {
    let t = TestStack::new("own-kind").await;
    let volume = new_volume_tagged(&t.clients.ec2, "us-east-1a", &[("Name", "grow-me")]).await;
    let ledger = t.ledger(&t.sdk).await;
    let mut config = t.worker_config("w");
    config.ledger = Some(ledger.clone());
    let worker = t.start_worker(config, registry()).await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(ledger.clone());

    // Snapshot the volume, then grow every volume the snapshot step names.
    let chain = JobEnvelope::from_request(serde_json::json!({
        "job_id": "grow",
        "kind": "snapshot",
        "params": {"volume_name": "grow-me"},
        "then": [{
            "kind": "modify-volume",
            "for_each": "/snapshots",
            "params": {"volume_id": {"$each": "/volume_id"}, "size_gib": 16},
        }],
    }))
    .expect("a chain naming a kind this process registered");
    producer
        .enqueue(&chain, &SendOptions::default())
        .await
        .expect("sent");
    let events = t.events(2, WAIT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.iter().all(|e| e.status == JobStatus::Succeeded),
        "{events:?}"
    );
    let grown = events
        .iter()
        .find(|e| e.kind.as_deref() == Some("modify-volume"))
        .expect("the follow-up's event");
    assert_eq!(grown.job_id.as_deref(), Some("grow.1:0"));
    let result = grown.result.clone().expect("a result");
    assert_eq!(result["volume_id"], volume.as_str());
    assert_eq!(result["size_gib"], 16);
    assert_eq!(result["modified"], true);
    assert_eq!(volume_size(&t, &volume).await, Some(16), "EC2 grew it");
    let record = ledger
        .get("grow.1:0")
        .await
        .expect("read")
        .expect("the follow-up's record");
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.kind.as_deref(), Some("modify-volume"));
    let (_, metrics) = worker.get("/metrics").await;
    assert!(
        metrics.contains(r#"shoal_jobs_succeeded_total{kind="modify-volume"} 1"#),
        "{metrics}"
    );

    // The same chain again: the ledger answers both steps from their records, and EC2 is
    // not asked for a second modification.
    producer
        .enqueue(&chain, &SendOptions::default())
        .await
        .expect("sent again");
    let again = t.events(2, WAIT).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|e| e.status == JobStatus::Succeeded));
    let modifications = t
        .clients
        .ec2
        .describe_volumes_modifications()
        .volume_ids(&volume)
        .send()
        .await
        .expect("modifications");
    assert_eq!(modifications.volumes_modifications().len(), 1);

    // Shrinking is refused by the handler, permanently: dead-lettered with its reason.
    let shrink = JobEnvelope::new(ModifyVolume {
        volume_id: volume.clone(),
        size_gib: 4,
        wait: true,
        dry_run: false,
    })
    .with_job_id(JobId::parse("shrink").expect("id"));
    producer
        .enqueue(&shrink, &SendOptions::default())
        .await
        .expect("sent");
    let failed = t.one_event(WAIT).await;
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    let error = failed.error.expect("its error");
    assert_eq!(error.code.as_deref(), Some("VolumeCannotShrink"));
    let dead = t.receive(&t.stack.dlq_url, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        attribute(&dead[0], dead_letter_attribute::CODE).as_deref(),
        Some("VolumeCannotShrink")
    );
    assert_eq!(volume_size(&t, &volume).await, Some(16), "nothing shrank");
    worker.stop().await;
}

/// The kind's own facts: its name joins the known kinds, its example is a valid job that
/// round-trips, and the published schema (what `shoal-worker schema` prints) lists it.
#[test]
fn a_users_kind_is_known_by_name_and_in_the_schema() {
    let kind = shoal_common::job::register::<ModifyVolume>().expect("registered");
    assert_eq!(JobKind::parse("modify-volume"), Some(kind));
    assert!(kind.takes_lease());
    let job = JobEnvelope::new(ModifyVolume::example());
    assert_eq!(
        JobEnvelope::from_json(&job.to_json()).expect("decodes"),
        job
    );
    let bad = JobEnvelope::from_request(serde_json::json!({
        "kind": "modify-volume",
        "params": {"volume_id": "vol-12345678", "size_gib": 0},
    }))
    .expect_err("refused");
    assert_eq!(bad.fields(), vec!["params.size_gib".to_owned()]);
    let schema = shoal_common::job::json_schema();
    let kinds = shoal_tests::schema_kinds(&schema);
    assert!(kinds.contains(&"modify-volume"), "{kinds:?}");
    assert_eq!(
        schema["$defs"]["ModifyVolume"]["additionalProperties"], false,
        "as strict as a built-in"
    );
    // Another type cannot take a known name.
    assert!(Job::new(Snapshot::example()).kind() == JobKind::Snapshot);
}

/// A producer binary that has no type for `modify-volume` sends one by name with JSON
/// parameters, checked against the schema a worker with the kind publishes: a bad size is
/// refused naming the field before anything is sent, a good job runs on that worker; without
/// the schema, the kind is unknown.
#[tokio::test]
async fn a_producer_without_the_type_sends_the_kind_checked_against_the_workers_schema() {
    const PRODUCER: &str = env!("CARGO_BIN_EXE_shoal-producer-for-tests");
    let t = TestStack::new("own-kind-cli").await;
    let volume = new_volume_tagged(&t.clients.ec2, "us-east-1a", &[]).await;
    // What `shoal-worker schema` prints in a binary registering the kind.
    shoal_common::job::register::<ModifyVolume>().expect("registered");
    let schema_file = std::env::temp_dir().join(format!("{}.json", shoal_tests::unique("kinds")));
    std::fs::write(
        &schema_file,
        serde_json::to_string_pretty(&shoal_common::job::json_schema()).expect("json"),
    )
    .expect("write the schema");
    let schema = schema_file.to_string_lossy().into_owned();
    let send = |params: String, with_schema: bool| {
        let (t, schema) = (&t, schema.clone());
        async move {
            let mut args = vec!["--queue-url".to_owned(), t.stack.queue_url.clone()];
            if with_schema {
                args.extend(["--kinds-schema".to_owned(), schema]);
            }
            args.extend([
                "send".into(),
                "modify-volume".into(),
                "--params".into(),
                params,
            ]);
            tokio::process::Command::new(PRODUCER)
                .args(&args)
                .envs(shoal_tests::aws_env(&shoal_tests::moto().endpoint))
                .output()
                .await
                .expect("run the producer")
        }
    };
    let good = serde_json::json!({"volume_id": volume, "size_gib": 12}).to_string();
    let unknown = send(good.clone(), false).await;
    assert_ne!(unknown.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown job kind `modify-volume`"),
        "{unknown:?}"
    );
    let bad = send(
        serde_json::json!({"volume_id": volume, "size_gib": 0}).to_string(),
        true,
    )
    .await;
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("params.size_gib"),
        "{bad:?}"
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 0, "nothing sent");

    let sent = send(good, true).await;
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    // An operator's verbs name it as they name a built-in.
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let paused = tokio::process::Command::new(PRODUCER)
        .args(["--queue-url", &t.stack.queue_url, "--ledger-table", &table])
        .args([
            "--kinds-schema",
            &schema,
            "pause",
            "modify-volume",
            "--by",
            "ops",
        ])
        .envs(shoal_tests::aws_env(&shoal_tests::moto().endpoint))
        .output()
        .await
        .expect("run the producer");
    assert_eq!(paused.status.code(), Some(0), "{paused:?}");
    let ledger = t.ledger_named(&t.sdk, &table);
    assert!(ledger
        .paused()
        .await
        .expect("read")
        .covers(kind_of_modify_volume()));
    ledger
        .resume(&[kind_of_modify_volume()], false, "ops")
        .await
        .expect("resume");
    let mut config = t.worker_config("w");
    config.ledger = Some(ledger);
    let worker = t.start_worker(config, registry()).await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{event:?}");
    assert_eq!(event.kind.as_deref(), Some("modify-volume"));
    assert_eq!(volume_size(&t, &volume).await, Some(12));
    worker.stop().await;
    let _ = std::fs::remove_file(&schema_file);
}

fn kind_of_modify_volume() -> JobKind {
    shoal_common::job::register::<ModifyVolume>().expect("registered")
}

/// The worker's flags know a kind its binary registers before they are read
/// (`cli::main_with` does so), and refuse one it does not.
#[test]
fn the_workers_flags_name_a_users_kind() {
    use clap::Parser;
    kind_of_modify_volume();
    let args = |kinds: &str| {
        shoal_worker::cli::Cli::try_parse_from([
            "shoal-worker",
            "--queue-url",
            "http://127.0.0.1:1/1/q",
            "--topic-arn",
            "arn:aws:sns:us-east-1:123456789012:t",
            "--allow-kinds",
            kinds,
            "--kind-concurrency",
            "modify-volume=2",
        ])
    };
    let cli = args("modify-volume,snapshot").expect("known kinds");
    assert_eq!(
        cli.args.allow_kinds,
        vec![kind_of_modify_volume(), JobKind::Snapshot]
    );
    assert!(args("grow-volume").is_err(), "a kind no handler runs");
}
