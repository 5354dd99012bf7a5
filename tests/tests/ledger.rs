//! The job ledger against DynamoDB (moto's): a claim is one conditional write that one run
//! wins, a live lease keeps every other run out, an expired one is taken over with the
//! progress it recorded, a run whose fence is no longer the record's records nothing more,
//! a finished record is never claimed again, and a record past its expiry counts as absent.
//! Through the fault proxy, which gives moto DynamoDB's per-item atomicity.

use std::time::Duration;

use serde_json::json;
use shoal_common::event::{EventSource, JobEvent, JobStatus};
use shoal_common::job::Canary;
use shoal_common::ledger::{Claim, JobRef, Ledger, LedgerError, Status, RECORD_EXISTS};
use shoal_common::{Job, JobEnvelope, JobId, JobKind};
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
    job_of(id, JobKind::Snapshot, "digest-a")
}

/// A claim's view of a job of `kind` whose envelope has `digest`.
fn job_of<'a>(id: &'a JobId, kind: JobKind, digest: &'a str) -> JobRef<'a> {
    JobRef {
        job_id: id,
        kind,
        chain_id: id,
        parent_job_id: None,
        attempt: 1,
        digest,
        envelope: "{}",
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

fn canary_event(id: &str, chain: Option<&str>, status: JobStatus) -> JobEvent {
    let mut source = EventSource::not_run(
        Some(id.to_owned()),
        Some("canary".into()),
        1,
        format!("m-{id}"),
        "w-1".into(),
    );
    source.chain_id = chain.map(str::to_owned);
    source.parent_job_id = chain.filter(|c| *c != id).map(str::to_owned);
    JobEvent::new(source, status, Some(json!({"slept_ms": 0})), None)
}

/// Outcomes of kinds that take no lease go in batches: each its own result, a repeat of a
/// job id in one batch sent in the next (DynamoDB refuses a batch naming one key twice, and
/// a refusal of the whole batch would fail every other entry), and every record readable
/// as a finished one with the event as announced.
#[tokio::test]
async fn outcomes_are_written_in_batches_and_a_repeated_id_waits_for_the_next() {
    let (_proxy, ledger) = ledger(LONG).await;
    let events: Vec<JobEvent> = (0..25)
        .map(|i| canary_event(&format!("canary-{i:02}"), None, JobStatus::Succeeded))
        .collect();
    let mut items: Vec<_> = events
        .iter()
        .map(|e| ledger.outcome_item(e, &envelope_of(e)).expect("an item"))
        .collect();
    items[24] = items[3].clone();
    let refs: Vec<_> = items.iter().collect();
    let results = ledger.put_outcomes(&refs).await;
    assert_eq!(results.len(), 25);
    assert!(results[..24].iter().all(Result::is_ok), "{results:?}");
    let repeat = results[24].as_ref().expect_err("the repeat waits");
    assert_eq!(repeat.class, shoal_common::error::ErrorClass::Transient);
    for event in &events[..24] {
        let id = event.job_id.as_deref().expect("id");
        let record = ledger.get(id).await.expect("get").expect("on record");
        assert_eq!(record.status, Status::Succeeded);
        assert_eq!(record.kind.as_deref(), Some("canary"));
        assert_eq!(
            record.outcome.as_ref(),
            Some(event),
            "the event as announced"
        );
        assert_eq!(record.chain_id.as_deref(), Some(id), "a chain of one");
        assert_eq!(
            record.digest,
            Some(envelope_of(event).digest()),
            "which job the id names"
        );
        assert!(record.envelope.is_some(), "the job as recorded");
    }
}

/// The canary whose event `event` is.
fn envelope_of(event: &JobEvent) -> JobEnvelope {
    let id = |s: &str| JobId::parse(s).expect("id");
    let mut envelope = JobEnvelope::new(Job::new(Canary { sleep_ms: 0 }))
        .with_job_id(id(event.job_id.as_deref().expect("a job id")));
    envelope.parent_job_id = event.parent_job_id.as_deref().map(id);
    envelope.chain_id = envelope
        .parent_job_id
        .as_ref()
        .and(event.chain_id.as_deref().map(id));
    envelope
}

/// A job id names one job, whichever write comes first and when both come at once: a
/// lease-less outcome under the id of a running or finished job of another kind is refused
/// (`RECORD_EXISTS`) and the record keeps its kind, holder, fence and outcome; a claim under
/// the id of another kind's record, or of the same kind with another envelope, is `Reused`;
/// a lease-less job run again finds its own finished record (refused, to be announced as
/// recorded); and of a claim and an outcome write at the same instant exactly one wins.
#[tokio::test]
async fn a_job_id_names_one_job_in_either_order_and_at_the_same_instant() {
    let (_proxy, ledger) = ledger(LONG).await;
    let refused = |results: Vec<Result<(), shoal_common::error::Error>>| {
        let [result] = <[_; 1]>::try_from(results).expect("one result");
        let e = result.expect_err("refused");
        assert_eq!(e.code.as_deref(), Some(RECORD_EXISTS), "{e:?}");
    };

    // A snapshot runs; a canary, then another kind, then another snapshot, reuse its id.
    let id = JobId::parse("taken-1").expect("id");
    let lease = granted(ledger.claim(job(&id), "w-1", LONG).await.expect("claim"));
    let canary = canary_event("taken-1", None, JobStatus::Succeeded);
    let item = ledger
        .outcome_item(&canary, &envelope_of(&canary))
        .expect("item");
    refused(ledger.put_outcomes(&[&item]).await);
    for other in [
        job_of(&id, JobKind::RunInstances, "digest-a"),
        job_of(&id, JobKind::Snapshot, "digest-b"),
    ] {
        let claim = ledger
            .claim(other, "w-2", Duration::ZERO)
            .await
            .expect("claim");
        assert!(matches!(claim, Claim::Reused(_)), "{claim:?}");
    }
    let record = ledger.get(id.as_str()).await.expect("get").expect("record");
    assert_eq!(
        (
            record.kind.as_deref(),
            record.status,
            record.fence,
            record.holder.as_deref()
        ),
        (Some("snapshot"), Status::Running, 1, Some("w-1")),
        "the running job's record is untouched"
    );
    ledger.extend(&lease, LONG).await.expect("its lease holds");
    let event = succeeded(&id);
    ledger.finish(&lease, &event).await.expect("finish");
    refused(ledger.put_outcomes(&[&item]).await);
    let claim = ledger
        .claim(job_of(&id, JobKind::RunInstances, "digest-a"), "w-2", LONG)
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Reused(_)), "{claim:?}");
    let record = ledger.get(id.as_str()).await.expect("get").expect("record");
    assert_eq!(record.outcome.as_ref(), Some(&event), "the outcome stands");
    assert_eq!(record.kind.as_deref(), Some("snapshot"));

    // The other order: a canary's outcome first, then a snapshot under its id.
    let canary = canary_event("taken-2", None, JobStatus::Succeeded);
    let envelope = envelope_of(&canary);
    let item = ledger.outcome_item(&canary, &envelope).expect("item");
    assert!(ledger
        .put_outcomes(&[&item])
        .await
        .iter()
        .all(Result::is_ok));
    let id2 = JobId::parse("taken-2").expect("id");
    let claim = ledger.claim(job(&id2), "w-1", LONG).await.expect("claim");
    assert!(matches!(claim, Claim::Reused(_)), "{claim:?}");
    // The canary run again: its own record refuses the write, and is of this very job.
    refused(ledger.put_outcomes(&[&item]).await);
    let record = ledger.get("taken-2").await.expect("get").expect("record");
    assert!(record.is_of("canary", &envelope.digest()));
    assert_eq!(record.outcome.as_ref(), Some(&canary));

    // At the same instant: one wins, and the record is the winner's.
    for i in 0..6 {
        let name = format!("race-kind-{i}");
        let id = JobId::parse(&name).expect("id");
        let canary = canary_event(&name, None, JobStatus::Succeeded);
        let item = ledger
            .outcome_item(&canary, &envelope_of(&canary))
            .expect("item");
        let items = [&item];
        let (claim, put) = tokio::join!(
            ledger.claim(job(&id), "w-1", LONG),
            ledger.put_outcomes(&items)
        );
        let claimed = matches!(claim.expect("claim"), Claim::Granted(_));
        let put = put.into_iter().next().expect("a result");
        assert_ne!(claimed, put.is_ok(), "exactly one of the two: {put:?}");
        let record = ledger.get(&name).await.expect("get").expect("record");
        let expected = if claimed { "snapshot" } else { "canary" };
        assert_eq!(record.kind.as_deref(), Some(expected));
    }
}

/// The indexes answer `job` (a chain's every step) and `jobs` (recent records of a status,
/// newest first), as queries: a step of another chain, a record of another status and one
/// older than `since` are not listed.
#[tokio::test]
async fn a_chain_and_recent_jobs_are_looked_up_through_the_indexes() {
    let (_proxy, ledger) = ledger(LONG).await;
    let steps = [
        canary_event("nightly", Some("nightly"), JobStatus::Succeeded),
        canary_event("nightly.1", Some("nightly"), JobStatus::Succeeded),
        canary_event("nightly.2", Some("nightly"), JobStatus::Failed),
        canary_event("other", Some("other"), JobStatus::Failed),
    ];
    let items: Vec<_> = steps
        .iter()
        .map(|e| ledger.outcome_item(e, &envelope_of(e)).expect("item"))
        .collect();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let results = ledger.put_outcomes(&items.iter().collect::<Vec<_>>()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let chain = ledger.chain("nightly").await.expect("query the chain");
    let ids: Vec<&str> = chain.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids, ["nightly", "nightly.1", "nightly.2"]);
    assert_eq!(chain[1].parent_job_id.as_deref(), Some("nightly"));

    let failed = ledger
        .recent(Status::Failed, before, 10)
        .await
        .expect("query by status");
    let mut ids: Vec<&str> = failed.iter().map(|r| r.job_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["nightly.2", "other"]);
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert!(ledger
        .recent(Status::Failed, later, 10)
        .await
        .expect("query")
        .is_empty());
    assert_eq!(
        ledger
            .recent(Status::Succeeded, before, 1)
            .await
            .expect("query")
            .len(),
        1,
        "at most the limit"
    );
}
