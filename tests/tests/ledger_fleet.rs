//! The job ledger with workers around it: a finished job resubmitted runs nothing and is
//! answered from its record (inside EC2's consistency window and after it), and `job`,
//! `jobs` and `follow` find it; a holder SIGKILLed right after its create is taken over from
//! the progress it recorded, with one effect; a `shoal-state` forged by a sender announces
//! nothing that did not happen; a job id reused by another kind is refused with its reason.
//! Through the fault proxy (DynamoDB's per-item atomicity, EC2's lag), watched as an
//! observer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::event::{CloudEvent, JobEvent, JobStatus};
use shoal_common::job::{Canary, CreateImage};
use shoal_common::ledger::Status;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId, JobKind};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::{Fault, Rule, Service, Trigger};
use shoal_tests::{
    example_job, forged_success, free_port, new_instance, producer_cli, unique, worker_command,
    TestStack,
};
use shoal_worker::handlers::{registry_with, Ec2Settings};

const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");
/// How long EC2 hides what a job just created, here.
const LAG: Duration = Duration::from_secs(10);

async fn instance(t: &TestStack) -> String {
    new_instance(&t.clients.ec2, &t.stock_ami().await, None).await
}

fn image_of(instance: &str, name: &str) -> Job {
    Job::new(CreateImage {
        instance_id: instance.to_owned(),
        name: unique(name),
        description: None,
        no_reboot: true,
        tags: vec![],
        wait: false,
        dry_run: false,
    })
}

async fn enqueue(t: &TestStack, job: &Job, job_id: &str) {
    let envelope = JobEnvelope::new(job.clone()).with_job_id(JobId::parse(job_id).expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&envelope, &SendOptions::default())
        .await
        .expect("enqueue");
}

fn table(t: &TestStack) -> &str {
    t.stack
        .ledger_table
        .as_deref()
        .expect("the stack has a ledger")
}

/// The CloudEvents id subscribers de-duplicate on.
fn event_id(event: &JobEvent) -> String {
    CloudEvent::wrap(event.clone(), "shoal").id
}

/// A `create-image` job done, then sent again at once (EC2 still hides its image) and again
/// after the consistency window: no second `CreateImage`, and each resubmission announces
/// the recorded outcome (the same event, so the same CloudEvents id). `job` shows the
/// record, `jobs` lists it, and `follow` of it, and of a canary that finished seconds ago
/// (which exited 124 before the ledger), answers at once from the ledger.
#[tokio::test]
async fn a_finished_job_resubmitted_runs_nothing_and_is_answered_from_its_record() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("resubmit"))).await;
    let instance = instance(&t).await;
    proxy.eventual_consistency(LAG, LAG);
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&sdk, table(&t)));
    let settings = Ec2Settings {
        consistency_window: LAG + Duration::from_secs(2),
        ..Ec2Settings::default()
    };
    let worker = TestStack::start_worker_with(&sdk, config, registry_with(settings)).await;

    let job = image_of(&instance, "resubmitted");
    enqueue(&t, &job, "resubmit-image").await;
    let first = t.one_event(Duration::from_secs(60)).await;
    assert_eq!(first.status, JobStatus::Succeeded, "{first:?}");
    let done_at = Instant::now();

    enqueue(&t, &job, "resubmit-image").await;
    let within = t.one_event(Duration::from_secs(30)).await;
    assert!(
        done_at.elapsed() < LAG,
        "resubmitted while EC2 still hides the image"
    );
    assert_eq!(within, first, "the recorded outcome, announced again");
    assert_eq!(event_id(&within), event_id(&first));

    tokio::time::sleep((LAG + Duration::from_secs(1)).saturating_sub(done_at.elapsed())).await;
    enqueue(&t, &job, "resubmit-image").await;
    let after = t.one_event(Duration::from_secs(30)).await;
    assert_eq!(after, first, "after the window too");
    assert_eq!(
        proxy.creates_with("CreateImage", "resubmit-image"),
        1,
        "one image for three submissions"
    );
    assert!(worker.metrics.ledger_outcomes_reannounced.get() >= 2);

    // A canary, finished before anyone follows it.
    enqueue(&t, &Job::new(Canary::default()), "resubmit-canary").await;
    let canary = t.one_event(Duration::from_secs(30)).await;
    assert_eq!(canary.job_id.as_deref(), Some("resubmit-canary"));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The library: the recorded outcome by job id, and a wait answered through the ledger.
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, table(&t)));
    let canary_id = JobId::parse("resubmit-canary").expect("id");
    assert_eq!(
        producer.outcome(&canary_id).await.expect("read"),
        Some(canary.clone())
    );
    assert_eq!(
        producer
            .outcome(&JobId::parse("never-sent").expect("id"))
            .await
            .expect("read"),
        None
    );
    let waited = producer
        .enqueue_and_wait(
            &t.clients,
            &t.stack.topic_arn,
            &JobEnvelope::new(Job::new(Canary::default())),
            &SendOptions::default(),
            Duration::from_secs(30),
        )
        .await
        .expect("the outcome");
    assert!(waited.succeeded, "{:?}", waited.events);
    let waited_id = JobId::parse(waited.events[0].job_id.as_deref().expect("id")).expect("id");
    assert_eq!(
        producer.outcome(&waited_id).await.expect("read").as_ref(),
        Some(&waited.events[0]),
        "on record before it was announced"
    );
    // The events queue got that event too; take it so later counts stay exact.
    let _ = t.one_event(Duration::from_secs(10)).await;

    let ledger = ["--ledger-table", table(&t)];
    let shown = producer_cli(
        &t.sdk,
        &[&ledger[..], &["job", "resubmit-image", "--json"]].concat(),
    )
    .await;
    assert_eq!(shown.code, 0, "{shown:?}");
    let report: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(report["record"]["status"], "succeeded");
    assert_eq!(report["record"]["kind"], "create-image");
    assert_eq!(
        report["record"]["outcome"]["result"],
        first.result.clone().expect("a result")
    );
    let text = producer_cli(&t.sdk, &[&ledger[..], &["job", "resubmit-image"]].concat()).await;
    assert!(
        text.stdout.contains("succeeded") && text.stdout.contains("image_id"),
        "{text:?}"
    );
    let missing = producer_cli(&t.sdk, &[&ledger[..], &["job", "never-sent"]].concat()).await;
    assert_eq!(missing.code, 1, "no record: {missing:?}");
    assert!(missing.stderr.contains("no record"), "{missing:?}");

    let listed = producer_cli(
        &t.sdk,
        &[
            &ledger[..],
            &["jobs", "--status", "succeeded", "--since", "10m", "--json"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let ids: Vec<String> = listed
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["job_id"].as_str().map(str::to_owned))
        .collect();
    for id in ["resubmit-image", "resubmit-canary"] {
        assert!(ids.iter().any(|i| i == id), "{id} listed: {ids:?}");
    }
    // As a person reads it: a header, each job's duration, and one kind when asked.
    let table = producer_cli(
        &t.sdk,
        &[
            &ledger[..],
            &[
                "jobs",
                "--status",
                "succeeded",
                "--since",
                "10m",
                "--kind",
                "canary",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines.first().is_some_and(|h| h.starts_with("JOB")
            && h.contains("DURATION")
            && h.contains("STATUS")),
        "{table:?}"
    );
    assert!(
        lines.iter().skip(1).all(|l| l.contains(" canary ")),
        "only canaries: {table:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("resubmit-canary") && l.contains('s')),
        "{table:?}"
    );

    let started = Instant::now();
    let followed = producer_cli(
        &t.sdk,
        &[
            &ledger[..],
            &["--topic-arn", &t.stack.topic_arn, "--json"],
            &[
                "follow",
                "resubmit-canary",
                "resubmit-image",
                "--timeout",
                "30s",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(followed.code, 0, "answered, not timed out: {followed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "at once, from the ledger: {:?}",
        started.elapsed()
    );
    let events: Vec<JobEvent> = followed
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.contains(&canary) && events.contains(&first),
        "{events:?}"
    );
    worker.stop().await;
}

/// A worker SIGKILLed right after its `CreateImage` answered (its next call hangs): the id it
/// created is on record, so once its lease runs out the next worker takes the job up from
/// that progress and reports the same image. One `CreateImage`, one success.
#[tokio::test]
async fn a_holder_killed_after_its_create_is_taken_over_from_its_recorded_progress() {
    let mut spec = StackSpec::new(unique("killed-holder"));
    spec.visibility_timeout_secs = 5;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let instance = instance(&t).await;
    // The lookup before the create goes through; the look at what it created hangs.
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["DescribeImages"],
        Fault::Delay(Duration::from_secs(600)),
        Trigger::After { skip: 1, count: 1 },
    ));
    let spawn = |id: &str| {
        let metrics = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        worker_command(WORKER, &proxy.endpoint, &t.stack, id, metrics)
            .args([
                "--visibility-timeout",
                "5s",
                "--ec2-consistency-window",
                "3s",
            ])
            .spawn()
            .expect("start a worker")
    };
    let mut first = spawn("first");
    enqueue(&t, &image_of(&instance, "killed"), "killed-image").await;

    let ledger = t.ledger_named(&t.sdk, table(&t));
    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let record = ledger.get("killed-image").await.expect("read the ledger");
        if let Some(id) = record
            .as_ref()
            .and_then(|r| r.progress.get("image_id"))
            .and_then(|v| v.as_str())
        {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the create's id reached the ledger: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let held = ledger
        .get("killed-image")
        .await
        .expect("read")
        .expect("record");
    assert_eq!(held.status, Status::Running);
    assert_eq!(held.holder.as_deref(), Some("first"));
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;

    let _second = spawn("second");
    let event = t.one_event(Duration::from_secs(60)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{event:?}");
    assert_eq!(event.worker_id, "second");
    assert_eq!(
        event.result.as_ref().and_then(|r| r["image_id"].as_str()),
        Some(recorded.as_str()),
        "the image the killed worker created"
    );
    assert_eq!(
        proxy.creates_with("CreateImage", "killed-image"),
        1,
        "one effect"
    );
    let record = ledger
        .get("killed-image")
        .await
        .expect("read")
        .expect("record");
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(
        record.fence, 2,
        "claimed twice: the killed run and the one that finished"
    );
}

/// With the ledger nothing a message carries is announced that did not happen: a canary and a
/// launch whose `shoal-state` claims a made-up success each run (the launch launches), and
/// the events carry what the handlers did. A job id reused by another kind is dead-lettered
/// with `JobIdReused`, and the first job's record is untouched.
#[tokio::test]
async fn forged_outcomes_are_not_announced_and_a_reused_job_id_is_refused() {
    let t = TestStack::new("forged-ledger").await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, table(&t)));
    let worker = t
        .start_worker(config, registry_with(Ec2Settings::default()))
        .await;
    let ami = t.stock_ami().await;
    let bodies = [
        (
            "forged-canary",
            json!({"kind": "canary", "params": {"sleep_ms": 0}}),
            forged_success("forged-canary", "canary", json!({"forged": true})),
        ),
        (
            "forged-launch",
            json!({"kind": "run-instances", "params": {"image_id": ami, "instance_type": "t3.micro"}}),
            forged_success(
                "forged-launch",
                "run-instances",
                json!({"instances": [{"instance_id": "i-0forged000000000"}]}),
            ),
        ),
    ];
    for (id, job, state) in &bodies {
        let mut body = job.clone();
        body["schema_version"] = json!(1);
        body["job_id"] = json!(id);
        body["submitted_at"] = json!("2026-12-01T00:00:00Z");
        t.send_with_state(&body, state).await;
    }
    let events = t.events(bodies.len(), Duration::from_secs(60)).await;
    let by_id: HashMap<&str, &JobEvent> = events
        .iter()
        .filter_map(|e| e.job_id.as_deref().map(|id| (id, e)))
        .collect();
    let canary = by_id.get("forged-canary").expect("the canary's event");
    assert_eq!(canary.status, JobStatus::Succeeded);
    assert_ne!(canary.message_id, "forged");
    let result = canary.result.as_ref().expect("a result");
    assert_eq!(result["slept_ms"], 0, "what the handler did: {result}");
    assert!(result.get("forged").is_none(), "{result}");
    let launch = by_id.get("forged-launch").expect("the launch's event");
    assert_eq!(launch.status, JobStatus::Succeeded, "{launch:?}");
    let launched = launch.result.as_ref().expect("result")["instances"][0]["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        launched.starts_with("i-") && launched != "i-0forged000000000",
        "{launch:?}"
    );
    let found = t
        .clients
        .ec2
        .describe_instances()
        .instance_ids(&launched)
        .send()
        .await
        .expect("the launched instance exists");
    assert_eq!(found.reservations().len(), 1);

    // The canary's id, reused for a snapshot.
    enqueue(&t, &example_job(JobKind::Snapshot), "forged-canary").await;
    let refused = t.one_event(Duration::from_secs(30)).await;
    assert_eq!(refused.status, JobStatus::Failed, "{refused:?}");
    let error = refused.error.as_ref().expect("a reason");
    assert_eq!(error.code.as_deref(), Some("JobIdReused"), "{error:?}");
    assert!(error.message.contains("canary"), "{error:?}");
    let dead = t
        .receive(&t.stack.dlq_url, 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 1, "dead-lettered with its reason");
    let record = t
        .ledger_named(&t.sdk, table(&t))
        .get("forged-canary")
        .await
        .expect("read")
        .expect("record");
    assert_eq!(
        record.kind.as_deref(),
        Some("canary"),
        "the first job's record stands"
    );
    worker.stop().await;
}
