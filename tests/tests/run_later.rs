//! Run later: a job whose `not_before` is ahead waits on the queue in hops of at most 15
//! minutes (SQS's longest delay), spending no attempt and no worker slot, runs at its time,
//! and can be cancelled meanwhile; `job` shows it `scheduled` and when it is due.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::{Canary, Snapshot};
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{producer_cli, unique, TestStack};
use shoal_worker::{JobContext, Outcome, Registry};

const WAIT: Duration = Duration::from_secs(60);

fn producer(t: &TestStack) -> Producer {
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, table))
}

fn counting(runs: Arc<AtomicUsize>) -> Registry {
    let mut registry = Registry::new();
    let r = runs.clone();
    registry.register_fn(move |_: JobContext, _: Canary| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok(Outcome::Done(serde_json::Value::Null)) }
    });
    registry.register_fn(move |_: JobContext, _: Snapshot| {
        runs.fetch_add(1, Ordering::SeqCst);
        async { Ok(Outcome::Done(serde_json::Value::Null)) }
    });
    registry
}

/// A job due in 6 s, sent with no SQS delay on a queue that dead-letters after two
/// receives: the worker receives it at once and sends it on (hops, no attempt), `job` shows
/// it scheduled and due, and it runs once, at its time, on its first attempt.
#[tokio::test]
async fn a_job_due_later_hops_without_attempts_and_runs_at_its_time() {
    let mut spec = StackSpec::new(unique("later"));
    spec.max_receive_count = 2;
    let t = TestStack::with_spec(spec).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let mut config = t.worker_config("w");
    let table = t.stack.ledger_table.clone().expect("a ledger");
    config.ledger = Some(t.ledger_named(&t.sdk, &table));
    let worker = t.start_worker(config, counting(runs.clone())).await;
    let due = Utc::now() + chrono::Duration::seconds(6);
    let job = JobEnvelope {
        not_before: Some(due),
        ..JobEnvelope::new(Job::new(Canary::default()))
            .with_job_id(JobId::parse("later-canary").expect("id"))
    };
    // No SQS delay: the worker meets the job early, as it would after a hop.
    let options = SendOptions {
        delay_seconds: Some(0),
        ..SendOptions::default()
    };
    let sent = Instant::now();
    producer(&t).enqueue(&job, &options).await.expect("sent");
    let stack = ["--ledger-table", &table];
    let shown = producer_cli(&t.sdk, &[&stack[..], &["job", "later-canary"]].concat()).await;
    assert!(
        shown.stdout.contains("scheduled") && shown.stdout.contains("due"),
        "{shown:?}"
    );
    let event = t.one_event(WAIT).await;
    assert!(
        sent.elapsed() >= Duration::from_secs(5),
        "not before its time"
    );
    assert_eq!(event.status, JobStatus::Succeeded);
    assert_eq!(event.attempts, 1, "the hops spent no attempt");
    assert!(event.timings.started_at >= due);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        worker
            .metrics
            .jobs_deferred
            .with_label_values(&["canary"])
            .get()
            >= 1,
        "it hopped"
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

/// A job scheduled through the command line (`--at`) and cancelled before its time never
/// runs: when it comes due its worker finds the cancellation and announces it.
#[tokio::test]
async fn a_scheduled_job_cancelled_before_its_time_never_runs() {
    let t = TestStack::new("later-cancel").await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let at = (Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let sent = producer_cli(
        &t.sdk,
        &[
            &stack[..],
            &[
                "snapshot",
                "--volume-name",
                "later",
                "--job-id",
                "later-cancelled",
                "--at",
                &at,
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    let cancelled = producer_cli(
        &t.sdk,
        &[&stack[..], &["cancel", "later-cancelled"]].concat(),
    )
    .await;
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    let runs = Arc::new(AtomicUsize::new(0));
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, &table));
    let worker = t.start_worker(config, counting(runs.clone())).await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Cancelled, "{event:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "never ran");
    worker.stop().await;
}

/// `--delay` beyond SQS's 900 s and `--at` a year and a day ahead: the first is taken (a
/// `not_before` in the body, a `scheduled` record), the second refused naming the field.
#[tokio::test]
async fn schedules_beyond_sqs_delay_are_taken_and_past_a_year_refused() {
    let t = TestStack::new("later-cli").await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let later = producer_cli(
        &t.sdk,
        &[
            &stack[..],
            &["canary", "--job-id", "in-two-hours", "--delay", "7200"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(later.code, 0, "{later:?}");
    let record = t
        .ledger_named(&t.sdk, &table)
        .get("in-two-hours")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(record.status, shoal_common::ledger::Status::Scheduled);
    let due = record.envelope.expect("envelope")["not_before"]
        .as_str()
        .map(str::to_owned)
        .expect("not_before");
    let due = chrono::DateTime::parse_from_rfc3339(&due).expect("a time");
    let ahead = due.with_timezone(&Utc) - Utc::now();
    assert!(ahead > chrono::Duration::minutes(119) && ahead <= chrono::Duration::hours(2));

    let too_far = (Utc::now() + chrono::Duration::days(367)).to_rfc3339();
    let refused = producer_cli(
        &t.sdk,
        &[&stack[..], &["canary", "--at", &too_far]].concat(),
    )
    .await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("not_before"), "{refused:?}");
}
