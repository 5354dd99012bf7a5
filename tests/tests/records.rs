//! Records from the start: a producer with the job ledger records each job `queued` once it
//! is sent, 25 to a call, never over a record that exists; `job`, `jobs --status queued` and
//! `follow` then know a queued job from an id nobody sent; workers claim queued records as
//! they would claim none.

use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::Canary;
use shoal_common::ledger::Status;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::Service;
use shoal_tests::{plain_launch, producer_cli, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

const WAIT: Duration = Duration::from_secs(60);

fn job(job: Job, id: &str) -> JobEnvelope {
    JobEnvelope::new(job).with_job_id(JobId::parse(id).expect("id"))
}

/// Sixty canaries and a launch sent in bulk by a producer with the ledger: 61 `queued`
/// records in three `TransactWriteItems`; `job` and `jobs` show them, and `job`/`follow` of an
/// id nobody sent say there is no record. A worker then runs them all from their queued
/// records (the launch claims one, the canaries put their outcomes over theirs), and a
/// finished job sent again keeps its finished record.
#[tokio::test]
async fn queued_records_are_written_in_batches_and_never_over_a_record() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("queued"))).await;
    let sdk = proxy.sdk().await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let producer = Producer::new(
        aws_sdk_sqs::Client::new(&sdk),
        QueueTarget::new(&t.stack.queue_url),
    )
    .with_ledger(t.ledger_named(&sdk, &table));
    let ami = t.stock_ami().await;
    let mut jobs: Vec<JobEnvelope> = (0..60)
        .map(|i| job(Job::new(Canary::default()), &format!("queued-{i:02}")))
        .collect();
    jobs.push(job(Job::new(plain_launch(&ami)), "queued-launch"));
    let report = producer
        .enqueue_many(&jobs, &SendOptions::default(), &|_| {})
        .await
        .expect("valid jobs");
    assert_eq!(report.enqueued.len(), 61);
    assert!(report.unrecorded.is_empty(), "{:?}", report.unrecorded);
    assert_eq!(report.record_calls, 3, "25 records a call");
    assert_eq!(
        proxy
            .count(Service::DynamoDb, "TransactWriteItems")
            .forwarded,
        3
    );

    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let listed = producer_cli(
        &t.sdk,
        &[
            &stack[..],
            &["--json", "jobs", "--status", "queued", "--limit", "100"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.stdout.lines().count(), 61, "{}", listed.stdout);
    let queued = producer_cli(&t.sdk, &[&stack[..], &["job", "queued-launch"]].concat()).await;
    assert_eq!(queued.code, 0, "{queued:?}");
    assert!(queued.stdout.contains("queued"), "{queued:?}");
    let typo = producer_cli(&t.sdk, &[&stack[..], &["job", "queued-typo"]].concat()).await;
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(typo.stderr.contains("no record"), "{typo:?}");
    let followed = producer_cli(
        &t.sdk,
        &[
            &stack[..],
            &[
                "--topic-arn",
                &t.stack.topic_arn,
                "follow",
                "queued-typo",
                "--timeout",
                "3s",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(followed.code, 124, "{followed:?}");
    assert!(
        followed.stderr.contains("no record of job queued-typo"),
        "said at once: {followed:?}"
    );

    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&sdk, &table));
    let settings = Ec2Settings {
        consistency_window: Duration::from_secs(3),
        ..Ec2Settings::default()
    };
    let worker = TestStack::start_worker_with(&sdk, config, registry_with(settings)).await;
    let events = t.events(61, WAIT).await;
    assert_eq!(events.len(), 61);
    assert!(
        events.iter().all(|e| e.status == JobStatus::Succeeded),
        "{events:?}"
    );
    assert_eq!(proxy.creates_with("RunInstances", "queued-launch"), 1);
    let ledger = t.ledger_named(&t.sdk, &table);
    let launch = ledger
        .get("queued-launch")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!((launch.status, launch.fence), (Status::Succeeded, 1));

    // Sent again: its record stays as it is, and the worker answers from it.
    let again = producer
        .enqueue(&jobs[0], &SendOptions::default())
        .await
        .expect("sent");
    assert_eq!(again.job_id.as_str(), "queued-00");
    let repeat = t.one_event(WAIT).await;
    assert_eq!(repeat.status, JobStatus::Succeeded);
    let record = ledger
        .get("queued-00")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(record.status, Status::Succeeded, "not put back to queued");
    worker.stop().await;
}

/// A job its worker refuses (here: a kind its limits do not allow), sent by a producer with
/// the ledger: its queued record is its producer's, not another job's, so the failure event
/// names the job (a follower of it learns why), and the record is left queued.
#[tokio::test]
async fn a_refused_job_with_a_queued_record_is_named_in_its_failure() {
    let t = TestStack::new("queued-refused").await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, &table));
    producer
        .enqueue(
            &job(Job::new(Canary::default()), "queued-refused"),
            &SendOptions::default(),
        )
        .await
        .expect("sent");
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, &table));
    config.guardrails = shoal_worker::guardrails::Guardrails {
        kinds: vec![shoal_common::JobKind::RunInstances],
        ..Default::default()
    };
    let worker = t
        .start_worker(config, registry_with(Ec2Settings::default()))
        .await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Failed);
    assert_eq!(event.job_id.as_deref(), Some("queued-refused"), "{event:?}");
    assert_eq!(
        event.error.as_ref().and_then(|e| e.code.as_deref()),
        Some("NotAllowed")
    );
    let record = t
        .ledger_named(&t.sdk, &table)
        .get("queued-refused")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(record.status, Status::Queued);
    worker.stop().await;
}
