//! The gate in front of the worker's IAM role: its limits refuse what a job may not ask
//! for, before any EC2 call, and the contract refuses what cannot reach EC2 intact. Each
//! is tried both ways a job can arrive: raw on the queue (as a compromised or careless
//! producer in any language would send it) and through `shoal-producer`.

use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::job::{Canary, RunInstances, SetTerminationProtection, Tag};
use shoal_common::stack::StackSpec;
use shoal_common::validate::TagRules;
use shoal_common::{Job, JobEnvelope, JobId, JobKind};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::Service;
use shoal_tests::{attribute, moto, plain_launch, producer_cli, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};
use shoal_worker::Guardrails;

const WAIT: Duration = Duration::from_secs(30);

fn launch(image_id: &str, instance_type: &str, max_count: u32, dry_run: bool) -> Job {
    Job::new(launch_params(image_id, instance_type, max_count, dry_run))
}

fn launch_params(
    image_id: &str,
    instance_type: &str,
    max_count: u32,
    dry_run: bool,
) -> RunInstances {
    RunInstances {
        max_count,
        instance_type: instance_type.into(),
        tags: vec![Tag::new("Name", "gated")],
        dry_run,
        ..plain_launch(image_id)
    }
}

/// Sends a job's JSON straight to the queue, as a producer that skips validation would.
async fn send_raw(t: &TestStack, body: &str) {
    t.clients
        .sqs
        .send_message()
        .queue_url(&t.stack.queue_url)
        .message_body(body)
        .send()
        .await
        .expect("send");
}

fn raw(job: Job, job_id: &str) -> String {
    JobEnvelope::new(job)
        .with_job_id(JobId::parse(job_id).expect("id"))
        .to_json()
}

fn by_id<'a>(events: &'a [JobEvent], id: &str) -> &'a JobEvent {
    events
        .iter()
        .find(|e| e.job_id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no event for {id} among {events:?}"))
}

#[tokio::test]
async fn each_limit_dead_letters_what_it_refuses_before_any_ec2_call() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("gate"))).await;
    let ami = t.stock_ami().await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    let through_producer = |job: Job, id: &str| {
        let envelope = JobEnvelope::new(job).with_job_id(JobId::parse(id).expect("id"));
        let producer = &producer;
        async move {
            producer
                .enqueue(&envelope, &SendOptions::default())
                .await
                .expect("a valid job is enqueued");
        }
    };
    // Raw on the queue, and through the producer: the worker is the gate either way.
    send_raw(&t, &raw(launch(&ami, "m5.24xlarge", 1, true), "big-type")).await;
    through_producer(launch(&ami, "t3.micro", 9, true), "too-many").await;
    send_raw(
        &t,
        &raw(
            launch("ami-0badbad0badbad0ba", "t3.micro", 1, true),
            "other-image",
        ),
    )
    .await;
    through_producer(launch(&ami, "t3.micro", 1, false), "not-dry").await;
    send_raw(
        &t,
        &raw(
            Job::new(SetTerminationProtection {
                instance_ids: vec!["i-12345678".into()],
                disable_api_termination: false,
            }),
            "unprotect",
        ),
    )
    .await;
    let slashed = RunInstances {
        tags: vec![Tag::new("team/owner", "core")],
        ..launch_params(&ami, "t3.micro", 1, true)
    };
    send_raw(&t, &raw(Job::new(slashed), "imds-tag")).await;
    through_producer(launch(&ami, "t3.micro", 2, true), "allowed").await;
    through_producer(Job::new(Canary::default()), "probe").await;

    let mut config = t.worker_config("gate");
    config.guardrails = Guardrails {
        kinds: vec![JobKind::RunInstances, JobKind::Canary],
        instance_types: vec!["t3.*".into()],
        images: vec![ami.clone()],
        max_instances_per_job: Some(4),
        dry_run_only: true,
        tag_rules: TagRules::InstanceMetadata,
        regions: vec![],
    };
    let sdk = proxy.sdk().await;
    let worker =
        TestStack::start_worker_with(&sdk, config, registry_with(Ec2Settings::default())).await;
    let events = t.events(8, WAIT).await;
    assert_eq!(events.len(), 8, "{} of 8 events arrived", events.len());

    for (id, setting) in [
        ("big-type", "--allow-instance-types"),
        ("too-many", "--max-instances-per-job"),
        ("other-image", "--allow-images"),
        ("not-dry", "--dry-run-only"),
        ("unprotect", "--allow-kinds"),
        ("imds-tag", "--tag-rules instance-metadata"),
    ] {
        let e = by_id(&events, id);
        assert_eq!(e.status, JobStatus::Failed, "{id}");
        let error = e.error.as_ref().expect("error");
        assert_eq!(error.code.as_deref(), Some("NotAllowed"), "{id}");
        assert!(error.message.contains(setting), "{id}: {}", error.message);
        assert!(error.dead_lettered);
    }
    assert_eq!(by_id(&events, "allowed").status, JobStatus::Succeeded);
    assert_eq!(by_id(&events, "probe").status, JobStatus::Succeeded);
    // The refused jobs made no EC2 call: the one dry run is the only RunInstances.
    assert_eq!(proxy.count(Service::Ec2, "RunInstances").arrived, 1);
    assert_eq!(
        proxy.count(Service::Ec2, "ModifyInstanceAttribute").arrived,
        0
    );

    let dead = t
        .receive(&t.stack.dlq_url, 6, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 6, "each refused job is in the DLQ once");
    assert!(dead
        .iter()
        .all(|m| attribute(m, "shoal-error-code").as_deref() == Some("NotAllowed")));
    let text = worker.get("/metrics").await.1;
    assert!(
        text.contains(
            r#"shoal_jobs_dead_lettered_total{kind="run-instances",reason="not_allowed"} 5"#
        ),
        "{text}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_ami_of_an_owner_not_allowed_is_refused_before_launch() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("owner"))).await;
    let ami = t.stock_ami().await;
    let owner = t
        .clients
        .ec2
        .describe_images()
        .image_ids(&ami)
        .send()
        .await
        .expect("image")
        .images()[0]
        .owner_id()
        .expect("owner")
        .to_owned();
    send_raw(&t, &raw(launch(&ami, "t3.micro", 1, true), "stranger")).await;
    let settings = Ec2Settings {
        allowed_image_owners: vec!["111111111111".into()],
        ..Ec2Settings::default()
    };
    let sdk = proxy.sdk().await;
    let worker =
        TestStack::start_worker_with(&sdk, t.worker_config("owner"), registry_with(settings)).await;
    let event = t.one_event(WAIT).await;
    let error = event.error.as_ref().expect("refused");
    assert_eq!(error.code.as_deref(), Some("NotAllowed"));
    assert!(
        error.message.contains(&owner) && error.message.contains("--allow-image-owners"),
        "{}",
        error.message
    );
    assert_eq!(
        proxy.count(Service::Ec2, "RunInstances").arrived,
        0,
        "nothing launched"
    );
    worker.stop().await;

    send_raw(&t, &raw(launch(&ami, "t3.micro", 1, true), "friend")).await;
    let settings = Ec2Settings {
        allowed_image_owners: vec![owner],
        ..Ec2Settings::default()
    };
    let worker =
        TestStack::start_worker_with(&sdk, t.worker_config("owner"), registry_with(settings)).await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    worker.stop().await;
}

#[tokio::test]
async fn a_control_character_that_xml_cannot_carry_is_refused_naming_the_field() {
    let t = TestStack::new("xml").await;
    // Through the producer: refused, nothing sent.
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--instance-type",
            "t3.micro",
            "--tag",
            "Name=a\u{1}b",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("params.tags.Name") && run.stderr.contains("U+0001"),
        "{}",
        run.stderr
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 0, "nothing was sent");
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "run-instances",
            "--tag-rules",
            "portable",
            "--image-id",
            "ami-12345678",
            "--instance-type",
            "t3.micro",
            "--tag",
            "cost#center=42",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("params.tags.cost#center")
            && run.stderr.contains("--tag-rules portable"),
        "{}",
        run.stderr
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 0, "nothing was sent");

    // Raw on the queue: the worker dead-letters it as malformed, naming the field, and
    // never reaches EC2 (where it would fail as an XML parse error).
    let body = serde_json::json!({
        "schema_version": 1, "job_id": "ctl-1", "submitted_at": "2026-11-26T00:00:00Z",
        "kind": "create-image",
        "params": {"instance_id": "i-12345678", "name": "web", "description": "bell\u{7}"},
    });
    send_raw(&t, &body.to_string()).await;
    // And half a surrogate pair, which JSON can write but no string can hold.
    send_raw(
        &t,
        r#"{"schema_version":1,"job_id":"ctl-2","submitted_at":"2026-11-26T00:00:00Z","kind":"run-instances","params":{"image_id":"ami-12345678","instance_type":"t3.micro","tags":{"Name":"\ud800"}}}"#,
    )
    .await;
    let worker = t
        .start_worker(
            t.worker_config("xml"),
            registry_with(Ec2Settings::default()),
        )
        .await;
    let events = t.events(2, WAIT).await;
    assert_eq!(events.len(), 2, "{} of 2 events arrived", events.len());
    let surrogate = by_id(&events, "ctl-2").error.as_ref().expect("refused");
    assert!(
        surrogate.message.contains("params.tags.Name") && surrogate.message.contains("surrogate"),
        "{}",
        surrogate.message
    );
    let events: Vec<JobEvent> = events
        .into_iter()
        .filter(|e| e.job_id.as_deref() == Some("ctl-1"))
        .collect();
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    let error = events[0].error.as_ref().expect("refused");
    assert_eq!(error.code.as_deref(), Some("InvalidMessage"));
    assert!(
        error.message.contains("params.description") && error.message.contains("U+0007"),
        "{}",
        error.message
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_jobs_user_data_appears_in_no_log_line_at_any_level_and_no_event() {
    let t = TestStack::new("secret").await;
    let secret = format!("shoal-secret-{}", unique("ud"));
    let encoded = aws_smithy_types::base64::encode(format!("#!/bin/sh\necho {secret}\n"));
    let ami = t.stock_ami().await;
    let job = RunInstances {
        user_data: Some(format!("#!/bin/sh\necho {secret}\n")),
        ..launch_params(&ami, "t3.micro", 1, false)
    };
    let envelope = JobEnvelope::new(job).with_job_id(JobId::parse("secret-1").expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&envelope, &SendOptions::default())
        .await
        .expect("enqueue");
    // Also a malformed job carrying user data, whose whole body is in the DLQ but must not
    // be in the logs or the event.
    let mut broken: serde_json::Value = serde_json::from_str(&envelope.to_json()).expect("json");
    broken["job_id"] = "secret-2".into();
    broken["params"]["surprise"] = true.into();
    send_raw(&t, &broken.to_string()).await;

    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", shoal_tests::free_port())
        .parse()
        .expect("addr");
    let mut child = shoal_tests::worker_command(
        env!("CARGO_BIN_EXE_shoal-worker-for-tests"),
        &moto().endpoint,
        &t.stack,
        "secret",
        metrics,
    )
    .env("RUST_LOG", "trace")
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start the worker");
    // Drained as it comes, or a full pipe would stall the worker's logging.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let drain = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut logs = Vec::new();
        let _ = stderr.read_to_end(&mut logs).await;
        logs
    });
    let events = t.events(2, WAIT).await;
    assert_eq!(events.len(), 2, "{} of 2 events arrived", events.len());
    let page = shoal_tests::http_get(metrics, "/metrics").await.1;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let logs = drain.await.expect("logs");
    let logs = String::from_utf8_lossy(&logs);
    assert!(logs.lines().count() > 100, "trace logging was on");
    for (what, text) in [
        ("the logs", logs.to_string()),
        ("the events", serde_json::to_string(&events).expect("json")),
        ("/metrics", page),
    ] {
        let leaks: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&secret))
            .map(|l| &l[..l.len().min(300)])
            .collect();
        assert!(leaks.is_empty(), "user data in {what}: {leaks:#?}");
        assert!(!text.contains(&encoded), "base64 user data in {what}");
    }
}
