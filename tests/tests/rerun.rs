//! Reruns under the same job id, with the job ledger: a failed job runs again once its cause
//! is fixed, by `retry` (from its record) and by `dlq redrive` (from its dead letter), with
//! exactly one more run, its progress kept so nothing it created is created again; a redrive
//! moves each dead letter at most once, even when the job it moved fails again while it
//! pages; two retries at the same instant open one run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::job::Snapshot;
use shoal_common::ledger::Status;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobId};
use shoal_producer::operate::{self, RedriveFilter};
use shoal_producer::Producer;
use shoal_tests::fault_proxy::FaultProxy;
use shoal_tests::{eventually, producer_cli, unique, RunningWorker, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};
use shoal_worker::{JobContext, JobError, Outcome, Registry};

const WAIT: Duration = Duration::from_secs(60);

fn snapshot_of_volume_named(name: &str) -> Job {
    Job::new(shoal_tests::snapshot_of_volume_named(name))
}

/// A volume carrying the `Name` tag `name`, made by the observer.
async fn volume_named(t: &TestStack, name: &str) -> String {
    shoal_tests::new_volume_tagged(&t.clients.ec2, "us-east-1a", &[("Name", name)]).await
}

fn producer(t: &TestStack) -> Producer {
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, table))
}

async fn worker(proxy: &FaultProxy, t: &TestStack, registry: Registry) -> RunningWorker {
    let sdk = proxy.sdk().await;
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger_named(&sdk, table));
    TestStack::start_worker_with(&sdk, config, registry).await
}

fn of(events: &[JobEvent], id: &str) -> Vec<JobEvent> {
    events
        .iter()
        .filter(|e| e.job_id.as_deref() == Some(id))
        .cloned()
        .collect()
}

/// Two snapshots of volumes that do not exist yet fail for good and are dead-lettered. The
/// volumes are made; one job is rerun by `retry`, the other by `dlq redrive`. Each runs once
/// more (run 2, a success), makes one snapshot, and its record shows the failed run.
#[tokio::test]
async fn a_failed_job_reruns_once_its_cause_is_fixed_by_retry_and_by_redrive() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("rerun"))).await;
    let worker = worker(&proxy, &t, registry_with(Ec2Settings::default())).await;
    let names = [unique("rerun-retried"), unique("rerun-redriven")];
    let ids = ["rerun-by-retry", "rerun-by-redrive"];
    for (name, id) in names.iter().zip(ids) {
        t.enqueue_job(&snapshot_of_volume_named(name), id).await;
    }
    let failed = t.events(2, WAIT).await;
    assert_eq!(failed.len(), 2);
    for e in &failed {
        assert_eq!(e.status, JobStatus::Failed, "{e:?}");
        assert_eq!(e.run, 1);
    }
    assert!(
        eventually(WAIT, || async { t.depth(&t.stack.dlq_url).await == 2 }).await,
        "both dead-lettered"
    );

    for name in &names {
        volume_named(&t, name).await;
    }
    // Both verbs through the command line, as an operator runs them.
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let retried = producer_cli(&t.sdk, &[&stack[..], &["retry", ids[0]]].concat()).await;
    assert_eq!(retried.code, 0, "{retried:?}");
    assert_eq!(retried.stdout.trim(), format!("{} run 2", ids[0]));
    let redriven = producer_cli(
        &t.sdk,
        &[&stack[..], &["--json", "dlq", "redrive", "--job", ids[1]]].concat(),
    )
    .await;
    assert_eq!(redriven.code, 0, "{redriven:?}");
    let report: serde_json::Value = serde_json::from_str(&redriven.stdout).expect("JSON");
    assert_eq!(
        report["moved"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["rerun"], json!([[ids[1], 2]]), "{report}");

    let events = t.events(2, WAIT).await;
    for id in ids {
        let e = of(&events, id);
        assert_eq!(e.len(), 1, "{id}: one more event: {events:?}");
        assert_eq!(e[0].status, JobStatus::Succeeded, "{id}: {:?}", e[0].error);
        assert_eq!(e[0].run, 2, "{id}: the second run");
        assert_eq!(
            proxy.creates_with("CreateSnapshot", id),
            1,
            "{id}: one snapshot"
        );
        let record = t
            .ledger_named(&t.sdk, &table)
            .get(id)
            .await
            .expect("read")
            .expect("a record");
        assert_eq!(record.status, Status::Succeeded);
        assert_eq!(record.run, 2);
        assert_eq!(record.earlier_failures.len(), 1, "{record:?}");
        assert_eq!(
            record.earlier_failures[0]["error"]["code"], "InvalidVolume.NotFound",
            "{record:?}"
        );
        let shown = producer_cli(&t.sdk, &[&stack[..], &["job", id]].concat()).await;
        assert!(
            shown.stdout.contains("run        2")
                && shown.stdout.contains("run 1 failed InvalidVolume.NotFound"),
            "{shown:?}"
        );
    }
    // A job that succeeded is not rerun, and says why.
    let again = producer_cli(&t.sdk, &[&stack[..], &["retry", ids[0]]].concat()).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("it succeeded"), "{again:?}");
    // The retried job's dead letter is still there (retry needs none and leaves it); a later
    // redrive of it is answered from the record.
    assert_eq!(t.depth(&t.stack.dlq_url).await, 1);
    worker.stop().await;
}

/// A job that created something and then failed keeps what it created through a rerun: the
/// second run finds it in its progress and creates nothing. (A handler of the `snapshot`
/// kind that notes a create and records its id, failing for good the first time.)
#[tokio::test]
async fn a_rerun_takes_up_what_the_failed_run_created() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("rerun-progress"))).await;
    let creates = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let (c, r) = (creates.clone(), runs.clone());
    registry.register_fn(move |ctx: JobContext, _: Snapshot| {
        let (creates, runs) = (c.clone(), r.clone());
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let made = match ctx.progress.get("made") {
                Some(made) => made,
                None => {
                    ctx.before_create("CreateSnapshot").await?;
                    creates.fetch_add(1, Ordering::SeqCst);
                    let made = serde_json::json!("snap-made-once");
                    ctx.progress.set("made", made.clone());
                    made
                }
            };
            if run == 1 {
                return Err(JobError::permanent(
                    "InvalidParameterValue",
                    "failed after its create",
                ));
            }
            Ok(Outcome::Done(serde_json::json!({ "made": made })))
        }
    });
    let worker = worker(&proxy, &t, registry).await;
    t.enqueue_job(&snapshot_of_volume_named("anything"), "rerun-progress")
        .await;
    let first = t.one_event(WAIT).await;
    assert_eq!(first.status, JobStatus::Failed);

    let report = producer(&t)
        .retry(&[JobId::parse("rerun-progress").expect("id")])
        .await
        .expect("retry");
    assert_eq!(report.rerun, vec![("rerun-progress".to_owned(), 2)]);
    let second = t.one_event(WAIT).await;
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    assert_eq!(second.run, 2);
    assert_eq!(
        second.result,
        Some(serde_json::json!({"made": "snap-made-once"}))
    );
    assert_eq!(creates.load(Ordering::SeqCst), 1, "created once");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "two runs, no more");
    worker.stop().await;
}

/// A redrive of a job whose cause is not fixed: the rerun fails again and is dead-lettered
/// while the redrive still pages, and the redrive leaves that new dead letter alone. One
/// move, one more run, two failure events; before, the redrive found each new dead letter
/// and sent it again (hundreds of failure events a minute) and the job never ran.
#[tokio::test]
async fn a_redrive_moves_each_dead_letter_once_even_when_the_job_fails_again() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("redrive-once"))).await;
    let worker = worker(&proxy, &t, registry_with(Ec2Settings::default())).await;
    let id = "redrive-once";
    t.enqueue_job(&snapshot_of_volume_named(&unique("never-made")), id)
        .await;
    assert_eq!(t.one_event(WAIT).await.status, JobStatus::Failed);
    assert!(eventually(WAIT, || async { t.depth(&t.stack.dlq_url).await == 1 }).await);

    let producer = producer(&t);
    let at = operate::Redrive {
        sqs: &t.clients.sqs,
        dlq_url: &t.stack.dlq_url,
        queue_url: &t.stack.queue_url,
        ledger: producer.ledger(),
    };
    // Paging on for a while after the move, as a long dead-letter queue would keep it.
    let report = operate::redrive(
        at,
        &RedriveFilter::default(),
        Duration::from_secs(2),
        None,
        tokio::time::sleep(Duration::from_secs(8)),
    )
    .await
    .expect("redrive");
    assert_eq!(report.moved.len(), 1, "{report:?}");
    assert_eq!(report.rerun, vec![(id.to_owned(), 2)]);
    println!(
        "redrive: {} dead-lettered since it began",
        report.arrived_since
    );

    let again = t.events(5, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1, "one more run: {again:?}");
    assert_eq!(again[0].status, JobStatus::Failed);
    assert_eq!(again[0].run, 2);
    assert!(
        eventually(WAIT, || async { t.depth(&t.stack.dlq_url).await == 1 }).await,
        "its new dead letter waits for the next redrive"
    );
    let record = producer
        .ledger()
        .expect("ledger")
        .get(id)
        .await
        .expect("read")
        .expect("a record");
    assert_eq!((record.status, record.run), (Status::Failed, 2));
    worker.stop().await;
}

/// Two operators retry one failed job at the same instant: the record opens for one run
/// (run 2), whichever write lands first; the job runs once more, and every event of it is
/// that run's.
#[tokio::test]
async fn two_retries_at_the_same_instant_open_one_run() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("retry-race"))).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |_: JobContext, _: Snapshot| {
        let runs = r.clone();
        async move {
            match runs.fetch_add(1, Ordering::SeqCst) {
                0 => Err(JobError::permanent(
                    "InvalidParameterValue",
                    "first run fails",
                )),
                _ => Ok(Outcome::Done(serde_json::Value::Null)),
            }
        }
    });
    let worker = worker(&proxy, &t, registry).await;
    let id = "retry-race";
    t.enqueue_job(&snapshot_of_volume_named("anything"), id)
        .await;
    assert_eq!(t.one_event(WAIT).await.status, JobStatus::Failed);

    let job = [JobId::parse(id).expect("id")];
    let (a, b) = (producer(&t), producer(&t));
    let (first, second) = tokio::join!(a.retry(&job), b.retry(&job));
    let (first, second) = (first.expect("retry"), second.expect("retry"));
    for report in [&first, &second] {
        assert!(
            report.rerun == vec![(id.to_owned(), 2)] || !report.refused.is_empty(),
            "each sees run 2 (opened, or already open and sent again), or is refused: {report:?}"
        );
    }
    // Each retry may have sent the job (the later one finding it open, no lease): the second
    // copy finds the run's outcome on record and announces it again, the same event.
    let events = t.events(3, Duration::from_secs(15)).await;
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e == &events[0]), "{events:?}");
    assert_eq!(events[0].status, JobStatus::Succeeded);
    assert_eq!(events[0].run, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let record = a.ledger().expect("ledger").get(id).await.expect("read");
    assert_eq!(record.map(|r| r.run), Some(2));
    worker.stop().await;
}

/// A kind that takes no lease (a canary, `terminate-instances`) writes its outcome as a whole
/// record; a rerun's record holds its run and its earlier failures, which that put would drop.
/// Rerun by `retry`, such a job is announced as run 2 and its record keeps run 1's failure.
#[tokio::test]
async fn a_rerun_of_a_kind_without_a_lease_is_run_two_and_keeps_its_failure() {
    let t = TestStack::new("rerun-leaseless").await;
    let (registry, ran) = shoal_tests::failing_once::<shoal_common::job::Canary>();
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let config = t.worker_config_with_ledger("w");
    let _worker = t.start_worker(config, registry).await;
    let id = "leaseless-rerun";
    t.enqueue_job(&Job::new(shoal_common::job::Canary::default()), id)
        .await;
    let first = t.one_event(WAIT).await;
    assert_eq!(first.status, JobStatus::Failed, "{first:?}");

    let stack = ["--queue-url", &t.stack.queue_url, "--ledger-table", &table];
    let retried = producer_cli(&t.sdk, &[&stack[..], &["retry", id]].concat()).await;
    assert_eq!(retried.stdout.trim(), format!("{id} run 2"), "{retried:?}");
    let second = t.one_event(WAIT).await;
    assert_eq!(second.status, JobStatus::Succeeded, "{second:?}");
    assert_eq!(second.run, 2, "announced as the second run: {second:?}");
    let record = t
        .ledger_named(&t.sdk, &table)
        .get(id)
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.run, 2, "{record:?}");
    assert_eq!(
        record.earlier_failures.len(),
        1,
        "run 1's failure is kept: {record:?}"
    );
    assert_eq!(record.outcome.map(|o| o.run), Some(2));
    assert_eq!(ran.load(Ordering::SeqCst), 2, "ran twice in all");
}
