//! The job ledger against DynamoDB (moto's): a claim is one conditional write that one run
//! wins, a live lease keeps every other run out, an expired one is taken over with the
//! progress it recorded, a run whose fence is no longer the record's records nothing more,
//! a finished record is never claimed again, and a record past its expiry counts as absent.
//! Through the fault proxy, which gives moto DynamoDB's per-item atomicity.

use std::time::Duration;

use serde_json::json;
use shoal_common::event::{EventSource, JobEvent, JobStatus};
use shoal_common::ledger::{Claim, JobRef, Ledger, LedgerError, Status};
use shoal_common::{JobId, JobKind};
use shoal_tests::fault_proxy::FaultProxy;
use shoal_tests::{moto, sdk_config, unique};

const LONG: Duration = Duration::from_secs(60);

/// A ledger on a fresh table, reached through a fault proxy (kept alive by the caller).
async fn ledger(ttl: Duration) -> (FaultProxy, Ledger) {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let sdk = sdk_config(&proxy.endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("ledger");
    Ledger::create_table(&client, &table)
        .await
        .expect("create the table");
    Ledger::create_table(&client, &table)
        .await
        .expect("creating it again is a no-op");
    (proxy, Ledger::new(client, table, ttl))
}

fn job(id: &JobId) -> JobRef<'_> {
    JobRef {
        job_id: id,
        kind: JobKind::Snapshot,
        chain_id: id,
        parent_job_id: None,
        attempt: 1,
    }
}

fn granted(claim: Claim) -> shoal_common::ledger::Lease {
    match claim {
        Claim::Granted(lease) => lease,
        other => panic!("expected the claim granted, got {other:?}"),
    }
}

fn succeeded(id: &JobId) -> JobEvent {
    JobEvent::new(
        EventSource::not_run(
            Some(id.to_string()),
            Some("snapshot".into()),
            1,
            "m-1".into(),
            "w-2".into(),
        ),
        JobStatus::Succeeded,
        Some(json!({"snapshots": [{"snapshot_id": "snap-1"}]})),
        None,
    )
}

#[tokio::test]
async fn a_lease_keeps_others_out_until_it_expires_and_a_lost_one_records_nothing() {
    let (_proxy, ledger) = ledger(LONG).await;
    let id = JobId::parse("snap-job-1").expect("id");

    let first = granted(
        ledger
            .claim(job(&id), "w-1", Duration::from_millis(1500))
            .await
            .expect("claim"),
    );
    assert_eq!(first.fence, 1);
    assert!(first.progress.is_empty());
    match ledger.claim(job(&id), "w-2", LONG).await.expect("claim") {
        Claim::HeldElsewhere { holder, .. } => assert_eq!(holder, "w-1"),
        other => panic!("a live lease keeps the second run out: {other:?}"),
    }
    let mut progress = serde_json::Map::new();
    progress.insert("snapshots".into(), json!({"vol-1": "snap-1"}));
    ledger
        .record_progress(&first, &progress)
        .await
        .expect("the holder records what it created");

    // The holder stops extending (paused, partitioned, killed): its lease lapses.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let second = granted(ledger.claim(job(&id), "w-2", LONG).await.expect("claim"));
    assert_eq!(second.fence, 2, "every claim grows the fence");
    assert_eq!(
        second.progress, progress,
        "taken over with what the first created"
    );

    for (what, result) in [
        ("extend", ledger.extend(&first, LONG).await.map(|_| ())),
        ("progress", ledger.record_progress(&first, &progress).await),
        ("release", ledger.release(&first).await),
        ("finish", ledger.finish(&first, &succeeded(&id)).await),
    ] {
        assert!(
            matches!(result, Err(LedgerError::LeaseLost(_))),
            "{what} by the old holder: {result:?}"
        );
    }
    let record = ledger.get(id.as_str()).await.expect("get").expect("record");
    assert_eq!(record.holder.as_deref(), Some("w-2"));
    assert_eq!(record.status, Status::Running);

    ledger
        .extend(&second, LONG)
        .await
        .expect("the new holder extends");
    let event = succeeded(&id);
    ledger.finish(&second, &event).await.expect("finish");
    match ledger.claim(job(&id), "w-3", LONG).await.expect("claim") {
        Claim::Finished(record) => {
            assert_eq!(record.status, Status::Succeeded);
            assert_eq!(
                record.outcome.as_ref(),
                Some(&event),
                "the outcome as announced"
            );
            assert_eq!(record.fence, 2, "a finished record is not claimed");
        }
        other => panic!("a finished job runs nothing: {other:?}"),
    }
    assert_eq!(ledger.get("never-seen").await.expect("get"), None);
}

#[tokio::test]
async fn of_two_claims_at_the_same_instant_one_wins() {
    let (_proxy, ledger) = ledger(LONG).await;
    for i in 0..5 {
        let id = JobId::parse(&format!("race-{i}")).expect("id");
        let (a, b) = tokio::join!(
            ledger.claim(job(&id), "w-a", LONG),
            ledger.claim(job(&id), "w-b", LONG)
        );
        let claims = [a.expect("claim a"), b.expect("claim b")];
        let won = claims
            .iter()
            .filter(|c| matches!(c, Claim::Granted(_)))
            .count();
        assert_eq!(won, 1, "{claims:?}");
        assert!(claims
            .iter()
            .any(|c| matches!(c, Claim::HeldElsewhere { .. })));
    }
}

#[tokio::test]
async fn a_given_back_lease_is_claimed_at_once_and_keeps_the_progress() {
    let (_proxy, ledger) = ledger(LONG).await;
    let id = JobId::parse("waits-1").expect("id");
    let first = granted(ledger.claim(job(&id), "w-1", LONG).await.expect("claim"));
    let mut progress = serde_json::Map::new();
    progress.insert("image".into(), json!("ami-1"));
    ledger
        .record_progress(&first, &progress)
        .await
        .expect("progress");
    ledger.release(&first).await.expect("release");
    assert_eq!(
        ledger
            .get(id.as_str())
            .await
            .expect("get")
            .map(|r| r.status),
        Some(Status::Open)
    );
    let next = granted(ledger.claim(job(&id), "w-2", LONG).await.expect("claim"));
    assert_eq!((next.fence, next.progress), (2, progress));
}

#[tokio::test]
async fn a_record_past_its_expiry_counts_as_absent() {
    // Records that live no time at all: DynamoDB would delete them days later, and reads
    // return them until then.
    let (_proxy, ledger) = ledger(Duration::ZERO).await;
    let id = JobId::parse("old-1").expect("id");
    let lease = granted(ledger.claim(job(&id), "w-1", LONG).await.expect("claim"));
    ledger
        .finish(&lease, &succeeded(&id))
        .await
        .expect("finish");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ledger.get(id.as_str()).await.expect("get"), None);
    let again = granted(ledger.claim(job(&id), "w-2", LONG).await.expect("claim"));
    assert!(again.progress.is_empty());
    let item = raw_item(&ledger, &id).await;
    assert!(
        !item.contains_key("outcome") && !item.contains_key("finished_at"),
        "the old outcome is not this job's: {item:?}"
    );
    assert_eq!(item["holder"].as_s().map(String::as_str), Ok("w-2"));
}

/// The item as the table holds it, expired or not.
async fn raw_item(
    ledger: &Ledger,
    id: &JobId,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    let sdk = sdk_config(&moto().endpoint).await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .get_item()
        .table_name(ledger.table())
        .key(
            "job_id",
            aws_sdk_dynamodb::types::AttributeValue::S(id.to_string()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("the item is still there")
}
