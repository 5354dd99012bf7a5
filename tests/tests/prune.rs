//! `prune-snapshots` against the emulator's EC2: retention keeps the newest `keep_count` and
//! those younger than `keep_for`, never deletes a snapshot Shoal did not make (reported kept,
//! with why), lists without deleting in a dry run, is a no-op when repeated (also while EC2
//! still lists what it deleted moments ago), and works in another region (moto serves
//! several in one server).
//!
//! That a snapshot an AMI is registered from is kept is `worker/src/handlers/prune.rs`'s unit
//! test: moto's `RegisterImage` ignores the block device mappings it is given (the image gets
//! a snapshot of moto's own), and `CreateImage`'s snapshots belong to no volume a test can
//! snapshot again, so no emulator test can set that case up.

use std::time::Duration;

use shoal_common::job::PruneSnapshots;
use shoal_common::Job;
use shoal_tests::fault_proxy::Service;
use shoal_tests::{new_snapshot, new_volume, snapshot_listed, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

fn prune(volume: &str, keep_count: Option<u32>, keep_for: Option<&str>) -> PruneSnapshots {
    PruneSnapshots {
        volume_id: Some(volume.to_owned()),
        volume_name: None,
        instance_id: None,
        tags: vec![],
        keep_count,
        keep_for: keep_for.map(str::to_owned),
        region: None,
        dry_run: false,
    }
}

/// A snapshot of `volume`, tagged as a Shoal job's (`shoal:job-id`) when `ours`.
async fn snapshot(ec2: &aws_sdk_ec2::Client, volume: &str, ours: bool) -> String {
    let job_id = unique("snap");
    let tags: &[(&str, &str)] = if ours {
        &[("shoal:job-id", &job_id)]
    } else {
        &[]
    };
    let id = new_snapshot(ec2, volume, tags).await;
    // Start times a second apart: retention orders by them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    id
}

fn ids(result: &serde_json::Value, list: &str) -> Vec<String> {
    result[list]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v["snapshot_id"].as_str().map(str::to_owned))
        .collect()
}

fn reason<'a>(result: &'a serde_json::Value, id: &str) -> &'a str {
    result["kept"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["snapshot_id"] == id))
        .and_then(|v| v["reason"].as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn retention_keeps_the_newest_and_what_it_must_and_deletes_the_rest_once() {
    let t = TestStack::new("prune").await;
    let ec2 = &t.clients.ec2;
    let vol = new_volume(ec2, "us-east-1a").await;
    // Oldest first: one not Shoal's, two plain, the newest.
    let foreign = snapshot(ec2, &vol, false).await;
    let old_a = snapshot(ec2, &vol, true).await;
    let old_b = snapshot(ec2, &vol, true).await;
    let newest = snapshot(ec2, &vol, true).await;

    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&t.sdk).await);
    let worker = t
        .start_worker(config, registry_with(Ec2Settings::default()))
        .await;

    // Everything is younger than a day: nothing goes.
    let young = t
        .run_succeeding(&Job::new(prune(&vol, None, Some("1d"))), "prune-young")
        .await;
    let result = young.result.expect("result");
    assert!(ids(&result, "deleted").is_empty(), "{result}");

    let mut dry = prune(&vol, Some(1), None);
    dry.dry_run = true;
    let listed = t.run_succeeding(&Job::new(dry), "prune-dry").await;
    let result = listed.result.expect("result");
    let mut would = ids(&result, "deleted");
    would.sort();
    let mut expected = vec![old_a.clone(), old_b.clone()];
    expected.sort();
    assert_eq!(would, expected, "{result}");
    assert!(
        snapshot_listed(ec2, &old_a).await && snapshot_listed(ec2, &old_b).await,
        "a dry run deletes nothing"
    );

    let pruned = t
        .run_succeeding(&Job::new(prune(&vol, Some(1), None)), "prune-1")
        .await;
    let result = pruned.result.clone().expect("result");
    let mut deleted = ids(&result, "deleted");
    deleted.sort();
    assert_eq!(deleted, expected, "{result}");
    assert!(!snapshot_listed(ec2, &old_a).await && !snapshot_listed(ec2, &old_b).await);
    assert!(reason(&result, &newest).contains("newest 1"), "{result}");
    assert!(
        reason(&result, &foreign).contains("not made by Shoal"),
        "{result}"
    );
    for id in [&newest, &foreign] {
        assert!(snapshot_listed(ec2, id).await, "{id} kept");
    }

    // Again under its job id: the recorded outcome. Under another: nothing left to delete.
    let again = t
        .run_succeeding(&Job::new(prune(&vol, Some(1), None)), "prune-1")
        .await;
    assert_eq!(again, pruned);
    let later = t
        .run_succeeding(&Job::new(prune(&vol, Some(1), None)), "prune-1-later")
        .await;
    assert!(ids(&later.result.expect("result"), "deleted").is_empty());
    worker.stop().await;
}

#[tokio::test]
async fn retention_runs_in_another_region() {
    let t = TestStack::new("prune-region").await;
    let west = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&t.sdk)
            .region(aws_sdk_ec2::config::Region::new("us-west-2"))
            .build(),
    );
    let vol = new_volume(&west, "us-west-2a").await;
    let older = snapshot(&west, &vol, true).await;
    let newer = snapshot(&west, &vol, true).await;
    let worker = t
        .start_worker(t.worker_config("w"), registry_with(Ec2Settings::default()))
        .await;
    let mut job = prune(&vol, Some(1), None);
    job.region = Some("us-west-2".into());
    let event = t.run_succeeding(&Job::new(job), "prune-west").await;
    let result = event.result.expect("result");
    assert_eq!(ids(&result, "deleted"), vec![older.clone()], "{result}");
    assert!(!snapshot_listed(&west, &older).await && snapshot_listed(&west, &newer).await);
    worker.stop().await;
}

/// EC2 may list a snapshot for a while after it was deleted. A second prune (another job id,
/// the same retention) reads the stale list: the snapshots gone are "already deleted" (their
/// `InvalidSnapshot.NotFound` is the deletion done), the job succeeds, and the newest, which
/// the stale entries could have pushed out of the count, stays.
#[tokio::test]
async fn a_snapshot_deleted_moments_ago_and_still_listed_is_already_deleted() {
    let (proxy, t) =
        TestStack::behind_proxy(shoal_common::stack::StackSpec::new(unique("prune-stale"))).await;
    let ec2 = &t.clients.ec2;
    let vol = new_volume(ec2, "us-east-1a").await;
    let old_a = snapshot(ec2, &vol, true).await;
    let old_b = snapshot(ec2, &vol, true).await;
    let middle = snapshot(ec2, &vol, true).await;
    let newest = snapshot(ec2, &vol, true).await;
    proxy.lingering_deletes(Duration::from_secs(60));
    let sdk = proxy.sdk().await;
    let worker = TestStack::start_worker_with(
        &sdk,
        t.worker_config("w"),
        registry_with(Ec2Settings::default()),
    )
    .await;

    let first = t
        .run_succeeding(&Job::new(prune(&vol, Some(2), None)), "prune-a")
        .await;
    let mut deleted = ids(&first.result.expect("result"), "deleted");
    deleted.sort();
    let mut gone = vec![old_a.clone(), old_b.clone()];
    gone.sort();
    assert_eq!(deleted, gone);

    // Within the window: the two deleted are still listed, four in all; keep the newest one.
    let second = t
        .run_succeeding(&Job::new(prune(&vol, Some(1), None)), "prune-b")
        .await;
    let result = second.result.expect("result");
    let verdicts = result["deleted"].as_array().expect("deleted");
    let mut deleted = ids(&result, "deleted");
    deleted.sort();
    let mut expected = vec![old_a.clone(), old_b.clone(), middle.clone()];
    expected.sort();
    assert_eq!(deleted, expected, "{result}");
    for v in verdicts {
        let already = v["reason"] == "already deleted";
        assert_eq!(already, v["snapshot_id"] != middle.as_str(), "{v}");
    }
    assert!(reason(&result, &newest).contains("newest 1"), "{result}");
    assert!(snapshot_listed(ec2, &newest).await, "the newest stays");
    assert!(!snapshot_listed(ec2, &middle).await);
    assert_eq!(
        proxy.count(Service::Ec2, "DeleteSnapshot").forwarded,
        5,
        "two deletions, two already done, one more"
    );
    worker.stop().await;
}
