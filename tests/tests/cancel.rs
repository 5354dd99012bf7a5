//! Cancelling jobs through the ledger, in both orders against a worker: a job cancelled
//! before a worker takes it never runs (the worker deletes it and announces it cancelled,
//! and its follow-ups never start); a job cancelled while it runs stops at its next lease
//! extension, creates nothing more, and its outcome names what it made; a finished job is
//! not cancelled; a cancelled job can be rerun.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::event::{CloudEvent, JobStatus};
use shoal_common::job::{Canary, Snapshot};
use shoal_common::ledger::Status;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{eventually, producer_cli, unique, TestStack};
use shoal_worker::{JobContext, Outcome, Registry};

const WAIT: Duration = Duration::from_secs(60);

fn snapshot() -> Snapshot {
    shoal_tests::snapshot_of_volume_named("cancelled-volume")
}

fn producer(t: &TestStack) -> Producer {
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, table))
}

/// A handler of the `snapshot` kind that "creates" one thing every 300 ms (noting each
/// before it, as a create must) until it has made `upto`, counting its runs and creates.
fn registry(runs: Arc<AtomicUsize>, creates: Arc<AtomicUsize>, upto: usize) -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, _: Snapshot| {
        let (runs, creates) = (runs.clone(), creates.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            for i in 0..upto {
                ctx.before_create("CreateSnapshot").await?;
                creates.fetch_add(1, Ordering::SeqCst);
                ctx.progress.set("made", serde_json::json!(i + 1));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(Outcome::Done(serde_json::json!({"made": upto})))
        }
    });
    registry.register_fn(|_: JobContext, _: Canary| async {
        Ok(Outcome::Done(serde_json::Value::Null))
    });
    registry
}

/// Cancelled while queued (sent with a delay, so no worker has it yet): the worker that
/// receives it runs nothing, announces it `cancelled` (its own CloudEvents type) and deletes
/// it; its follow-up never starts. A rerun of the cancelled job then runs it (run 2).
#[tokio::test]
async fn a_job_cancelled_before_it_runs_never_runs_and_its_follow_ups_never_start() {
    let t = TestStack::new("cancel-queued").await;
    let job = JobEnvelope::from_request(serde_json::json!({
        "job_id": "cancel-queued",
        "kind": "snapshot",
        "params": {"volume_name": "cancelled-volume"},
        "then": [{"kind": "canary", "params": {}}],
    }))
    .expect("a chain");
    let producer = producer(&t);
    let options = SendOptions {
        delay_seconds: Some(3),
        ..SendOptions::default()
    };
    producer.enqueue(&job, &options).await.expect("sent");
    let report = producer
        .cancel(std::slice::from_ref(&job.job_id), false, "alice")
        .await
        .expect("cancel");
    assert_eq!(report.cancelled, vec!["cancel-queued".to_owned()]);

    let (runs, creates) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
    let mut config = t.worker_config("w");
    let table = t.stack.ledger_table.clone().expect("a ledger");
    config.ledger = Some(t.ledger_named(&t.sdk, &table));
    let worker = t
        .start_worker(config, registry(runs.clone(), creates.clone(), 1))
        .await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Cancelled, "{event:?}");
    assert_eq!(event.job_id.as_deref(), Some("cancel-queued"));
    assert_eq!(
        CloudEvent::wrap(event.clone(), "s").event_type,
        "dev.shoal.job.cancelled"
    );
    let error = event.error.expect("the cancellation");
    assert_eq!(error.code.as_deref(), Some("Cancelled"));
    assert!(error.message.contains("alice"), "{error:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "never ran");
    assert!(
        t.events(1, Duration::from_secs(5)).await.is_empty(),
        "its follow-up never started"
    );
    assert!(eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await);
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);

    // Cancelled is not final for an operator: a rerun runs it, and its follow-up.
    let rerun = producer
        .retry(std::slice::from_ref(&job.job_id))
        .await
        .expect("retry");
    assert_eq!(rerun.rerun, vec![("cancel-queued".to_owned(), 2)]);
    let events = t.events(2, WAIT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.status == JobStatus::Succeeded));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    worker.stop().await;
}

/// Cancelled while it runs (a job making one thing every 300 ms, forty in all): the running
/// worker learns at its next lease extension (a third of the 6 s visibility timeout), makes
/// nothing more, and announces the cancellation with what it made; the message is deleted,
/// nothing dead-lettered, and a cancel of the finished job says so (exit 1). The timeout
/// leaves room for a loaded machine: at 3 s (extended every second), a lease call slower than
/// a second leaves less than the one-second create margin, and the run refuses its create.
#[tokio::test]
async fn a_running_job_cancelled_stops_at_its_next_lease_extension() {
    const UPTO: usize = 40;
    let mut spec = StackSpec::new(unique("cancel-running"));
    spec.visibility_timeout_secs = 6;
    let t = TestStack::with_spec(spec).await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let (runs, creates) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
    let mut config = t.worker_config("w");
    config.visibility_timeout = Duration::from_secs(6);
    config.ledger = Some(t.ledger_named(&t.sdk, &table));
    let worker = t
        .start_worker(config, registry(runs.clone(), creates.clone(), UPTO))
        .await;
    let id = JobId::parse("cancel-running").expect("id");
    producer(&t)
        .enqueue(
            &JobEnvelope::new(Job::new(snapshot())).with_job_id(id.clone()),
            &SendOptions::default(),
        )
        .await
        .expect("sent");
    assert!(eventually(WAIT, || async { creates.load(Ordering::SeqCst) >= 2 }).await);

    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let cancelled = producer_cli(
        &t.sdk,
        &[&stack[..], &["cancel", "cancel-running", "--by", "bob"]].concat(),
    )
    .await;
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert!(
        cancelled.stdout.contains("running on w: told to stop"),
        "{cancelled:?}"
    );
    let event = t.one_event(WAIT).await;
    let made = creates.load(Ordering::SeqCst);
    assert_eq!(event.status, JobStatus::Cancelled, "{event:?}");
    assert!(made < UPTO, "stopped before the end: made {made}");
    assert_eq!(
        event.result,
        Some(serde_json::json!({"progress": {"made": made}})),
        "its outcome names what it made"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(creates.load(Ordering::SeqCst), made, "nothing more made");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let record = t
        .ledger_named(&t.sdk, &table)
        .get("cancel-running")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(record.status, Status::Cancelled);
    assert_eq!(record.cancel_requested.as_deref(), Some("bob"));
    assert!(eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await);
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);

    let again = producer_cli(
        &t.sdk,
        &[&stack[..], &["cancel", "cancel-running"]].concat(),
    )
    .await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stdout.contains("cancelled already: not cancelled"),
        "{again:?}"
    );
    assert_eq!(
        worker
            .metrics
            .jobs_cancelled
            .with_label_values(&["snapshot"])
            .get(),
        1
    );
    worker.stop().await;
}
