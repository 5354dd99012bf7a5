//! `copy-snapshot` against the emulator's EC2, two regions in one server: the copy lands in
//! the destination with the source's tags, the job's and `shoal:job-id`; a redelivery finds
//! it (by the id it recorded) and copies nothing again; a dry run copies nothing; retention
//! then runs in the destination, choosing the copies by their tags; and an encrypted copy
//! asks EC2 for its key.

use std::time::Duration;

use shoal_common::job::{CopySnapshot, PruneSnapshots, Tag};
use shoal_common::Job;
use shoal_tests::{job_filter, new_snapshot, new_volume, snapshots_where, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

fn west(sdk: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(sdk)
            .region(aws_sdk_ec2::config::Region::new("us-west-2"))
            .build(),
    )
}

async fn source_snapshot(t: &TestStack) -> String {
    let volume = new_volume(&t.clients.ec2, "us-east-1a").await;
    new_snapshot(
        &t.clients.ec2,
        &volume,
        &[("backup", "nightly"), ("shoal:job-id", "the-snapshot-job")],
    )
    .await
}

fn copy_of(snapshot: &str) -> Job {
    Job::new(CopySnapshot {
        snapshot_id: snapshot.to_owned(),
        destination_region: "us-west-2".into(),
        source_region: None,
        description: None,
        encrypted: false,
        kms_key_id: None,
        tags: vec![Tag::new("copy", "dr")],
        wait: true,
        dry_run: false,
    })
}

async fn copies_of(ec2: &aws_sdk_ec2::Client, job_id: &str) -> Vec<aws_sdk_ec2::types::Snapshot> {
    snapshots_where(ec2, job_filter(job_id)).await
}

#[tokio::test]
async fn a_copy_lands_in_the_other_region_once_and_retention_runs_there() {
    let (proxy, t) =
        TestStack::behind_proxy(shoal_common::stack::StackSpec::new(unique("copy"))).await;
    let west = west(&t.sdk);
    let source = source_snapshot(&t).await;
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&sdk).await);
    let worker =
        TestStack::start_worker_with(&sdk, config, registry_with(Ec2Settings::default())).await;

    let dry = copy_of(&source).edited(|p: &mut CopySnapshot| {
        p.dry_run = true;
    });
    let checked = t.run_succeeding(&dry, "copy-dry").await;
    assert_eq!(checked.result.expect("result")["dry_run"], true);
    assert!(
        copies_of(&west, "copy-dry").await.is_empty(),
        "a dry run copies nothing"
    );

    let event = t.run_succeeding(&copy_of(&source), "copy-1").await;
    let result = event.result.clone().expect("result");
    assert_eq!(result["source_snapshot_id"], source.as_str());
    assert_eq!(result["destination_region"], "us-west-2");
    let copies = copies_of(&west, "copy-1").await;
    assert_eq!(copies.len(), 1, "one copy in us-west-2");
    assert_eq!(
        result["snapshot_id"],
        copies[0].snapshot_id().unwrap_or_default()
    );
    let tag = |key: &str| {
        copies[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(
        tag("backup").as_deref(),
        Some("nightly"),
        "the source's tags"
    );
    assert_eq!(tag("copy").as_deref(), Some("dr"), "the job's");
    assert_eq!(
        tag("shoal:job-id").as_deref(),
        Some("copy-1"),
        "this job's id, not the source's"
    );
    assert_eq!(proxy.creates_with("CopySnapshot", "copy-1"), 1);

    // The same job again: its record is announced, nothing copied.
    let again = t.run_succeeding(&copy_of(&source), "copy-1").await;
    assert_eq!(again, event);
    assert_eq!(copies_of(&west, "copy-1").await.len(), 1);

    // A second night's copy, then retention in us-west-2 by the copies' tags: the newest stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.run_succeeding(&copy_of(&source), "copy-2").await;
    let prune = Job::new(PruneSnapshots {
        volume_id: None,
        volume_name: None,
        instance_id: None,
        tags: vec![Tag::new("copy", "dr")],
        keep_count: Some(1),
        keep_for: None,
        region: Some("us-west-2".into()),
        dry_run: false,
    });
    let pruned = t.run_succeeding(&prune, "prune-west").await;
    let result = pruned.result.expect("result");
    let deleted: Vec<&str> = result["deleted"]
        .as_array()
        .expect("deleted")
        .iter()
        .filter_map(|v| v["snapshot_id"].as_str())
        .collect();
    assert_eq!(
        deleted,
        [copies[0].snapshot_id().unwrap_or_default()],
        "{result}"
    );
    assert!(copies_of(&west, "copy-1").await.is_empty());
    assert_eq!(copies_of(&west, "copy-2").await.len(), 1);
    worker.stop().await;
}

/// An encrypted copy with a key named by alias: `alias/aws/ebs`, the account's AWS-managed
/// EBS key, which every region of every account has, so this holds on AWS too. moto ignores
/// `Encrypted` on a copy (it copies the source's), so what is asserted is the request EC2
/// received: encrypted, with that key, once.
#[tokio::test]
async fn an_encrypted_copy_asks_ec2_for_its_key() {
    let (proxy, t) =
        TestStack::behind_proxy(shoal_common::stack::StackSpec::new(unique("copy-kms"))).await;
    let source = source_snapshot(&t).await;
    let sdk = proxy.sdk().await;
    let worker = TestStack::start_worker_with(
        &sdk,
        t.worker_config("w"),
        registry_with(Ec2Settings::default()),
    )
    .await;
    let job = copy_of(&source).edited(|p: &mut CopySnapshot| {
        p.encrypted = true;
        p.kms_key_id = Some("alias/aws/ebs".into());
    });
    let event = t.run_succeeding(&job, "copy-kms").await;
    assert_eq!(
        event.result.expect("result")["source_snapshot_id"],
        source.as_str()
    );
    let sent = proxy.creates("CopySnapshot");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].get("Encrypted").map(String::as_str), Some("true"));
    assert_eq!(
        sent[0].get("KmsKeyId").map(String::as_str),
        Some("alias/aws/ebs")
    );
    assert_eq!(
        sent[0].get("SourceRegion").map(String::as_str),
        Some("us-east-1")
    );
    worker.stop().await;
}
