//! Pausing kinds during an incident: a paused kind's jobs wait on the queue without running
//! and without spending attempts (on a queue that dead-letters after two receives), other
//! kinds run meanwhile, a FIFO group keeps its order through the pause, and with every kind
//! paused the workers receive nothing at all. The workers read the pause from the ledger's
//! control item every `--pause-check-interval`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::event::JobStatus;
use shoal_common::job::{Canary, Snapshot};
use shoal_common::queue::QueueAttributes;
use shoal_common::stack::StackSpec;
use shoal_common::Job;
use shoal_tests::{eventually, producer_cli, unique, TestStack};
use shoal_worker::{JobContext, Outcome, Registry};

const WAIT: Duration = Duration::from_secs(60);

fn registry(ran: Arc<Mutex<Vec<String>>>) -> Registry {
    let mut registry = Registry::new();
    let log = ran.clone();
    registry.register_fn(move |ctx: JobContext, _: Canary| {
        log.lock().expect("lock").push(ctx.job_id.to_string());
        async { Ok(Outcome::Done(serde_json::Value::Null)) }
    });
    registry.register_fn(move |ctx: JobContext, _: Snapshot| {
        ran.lock().expect("lock").push(ctx.job_id.to_string());
        async { Ok(Outcome::Done(serde_json::Value::Null)) }
    });
    registry
}

fn snapshot() -> Job {
    Job::new(shoal_tests::snapshot_of_volume_named("any"))
}

async fn cli(t: &TestStack, args: &[&str]) -> shoal_tests::CliRun {
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    producer_cli(&t.sdk, &[&stack[..], args].concat()).await
}

/// `canary` paused on a queue that dead-letters after two receives: five canaries wait
/// (none runs in 6 s, nothing dead-lettered) while a snapshot job runs; `status` and the
/// `shoal_kind_paused` gauge show the pause. Resumed, each canary runs once, on its first
/// attempt.
#[tokio::test]
async fn a_paused_kind_waits_spending_no_attempts_while_others_run() {
    let mut spec = StackSpec::new(unique("pause"));
    spec.max_receive_count = 2;
    let t = TestStack::with_spec(spec).await;
    let paused = cli(&t, &["pause", "canary", "--by", "alice"]).await;
    assert_eq!(paused.code, 0, "{paused:?}");
    assert_eq!(paused.stdout.trim(), "paused: canary");

    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, t.stack.ledger_table.as_deref().expect("ledger")));
    let worker = t.start_worker(config, registry(ran.clone())).await;
    for i in 0..5 {
        t.enqueue_job(&Job::new(Canary::default()), &format!("paused-{i}"))
            .await;
    }
    t.enqueue_job(&snapshot(), "not-paused").await;
    let during = t.events(6, Duration::from_secs(6)).await;
    assert_eq!(during.len(), 1, "only the snapshot ran: {during:?}");
    assert_eq!(during[0].job_id.as_deref(), Some("not-paused"));
    assert_eq!(ran.lock().expect("lock").len(), 1);
    assert_eq!(
        worker
            .metrics
            .kind_paused
            .with_label_values(&["canary"])
            .get(),
        1
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "no receives spent");
    let status = cli(&t, &["status"]).await;
    assert!(status.stdout.contains("paused: canary"), "{status:?}");

    let resumed = cli(&t, &["resume", "canary"]).await;
    assert_eq!(resumed.stdout.trim(), "paused: nothing", "{resumed:?}");
    let after = t.events(5, WAIT).await;
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(after
        .iter()
        .all(|e| e.status == JobStatus::Succeeded && e.attempts == 1));
    assert_eq!(ran.lock().expect("lock").len(), 6, "each ran once");
    assert!(
        eventually(WAIT, || async {
            worker
                .metrics
                .kind_paused
                .with_label_values(&["canary"])
                .get()
                == 0
        })
        .await
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

/// On a FIFO queue, a paused kind's group is held in place: four canaries of one group sent
/// during the pause run in their order once it is resumed.
#[tokio::test]
async fn a_fifo_group_keeps_its_order_through_a_pause() {
    let mut spec = StackSpec::new(unique("pause-fifo"));
    spec.fifo = true;
    let t = TestStack::with_spec(spec).await;
    assert_eq!(cli(&t, &["pause", "canary"]).await.code, 0);
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, t.stack.ledger_table.as_deref().expect("ledger")));
    let worker = t.start_worker(config, registry(ran.clone())).await;
    let ids: Vec<String> = (0..4).map(|i| format!("fifo-paused-{i}")).collect();
    for id in &ids {
        t.enqueue_job(&Job::new(Canary::default()), id).await;
    }
    assert!(t.events(1, Duration::from_secs(4)).await.is_empty());
    assert_eq!(cli(&t, &["resume", "--all"]).await.code, 0);
    let events = t.events(4, WAIT).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(*ran.lock().expect("lock"), ids, "in their order");
    worker.stop().await;
}

/// Every kind paused: the worker receives nothing (the queue's messages stay visible, none
/// in flight), so nothing goes round the queue; resumed, they run.
#[tokio::test]
async fn with_every_kind_paused_nothing_is_received() {
    let t = TestStack::new("pause-all").await;
    assert_eq!(cli(&t, &["pause", "--all"]).await.code, 0);
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&t.sdk, t.stack.ledger_table.as_deref().expect("ledger")));
    let worker = t.start_worker(config, registry(ran.clone())).await;
    for i in 0..3 {
        t.enqueue_job(&Job::new(Canary::default()), &format!("all-{i}"))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attrs = QueueAttributes::fetch(&t.clients.sqs, &t.stack.queue_url)
        .await
        .expect("attributes");
    assert_eq!((attrs.visible, attrs.in_flight), (3, 0), "nothing received");
    assert_eq!(cli(&t, &["resume", "--all"]).await.code, 0);
    assert_eq!(t.events(3, WAIT).await.len(), 3);
    assert_eq!(ran.lock().expect("lock").len(), 3);
    worker.stop().await;
}
