//! `restore-volume` against the emulator's EC2: a volume from the newest completed snapshot
//! of a volume, tagged, attached to an instance, waited on until `in-use`; its job id sent
//! again creates nothing (the emulator ignores `ClientToken`, so the ledger and the recorded
//! volume are what hold); a dry run creates nothing; and while EC2 does not list the new
//! volume yet, the job waits for it (recorded, never created again) and attaches it once.

use std::time::Duration;

use shoal_common::job::{RestoreVolume, Tag};
use shoal_common::stack::StackSpec;
use shoal_common::Job;
use shoal_tests::fault_proxy::Service;
use shoal_tests::{new_instance, new_snapshot, new_volume, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

/// A volume with two snapshots (a second apart, oldest first) and an instance in its zone,
/// made by the observer: they exist before any lag the test injects.
async fn volume_snapshots_and_instance(t: &TestStack) -> (String, Vec<String>, String) {
    let ec2 = &t.clients.ec2;
    let volume = new_volume(ec2, "us-east-1a").await;
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        snapshots.push(new_snapshot(ec2, &volume, &[]).await);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let instance = new_instance(ec2, &t.stock_ami().await, Some("us-east-1a")).await;
    (volume, snapshots, instance)
}

#[tokio::test]
async fn a_volume_is_restored_from_the_newest_snapshot_and_attached_once() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("restore"))).await;
    let ec2 = &t.clients.ec2;
    let (volume, snapshots, instance) = volume_snapshots_and_instance(&t).await;
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&sdk).await);
    let settings = Ec2Settings {
        wait_check_min: Duration::from_millis(500),
        ..Ec2Settings::default()
    };
    let worker = TestStack::start_worker_with(&sdk, config, registry_with(settings)).await;

    let restore = |dry_run: bool| {
        Job::new(RestoreVolume {
            snapshot_id: None,
            volume_id: Some(volume.clone()),
            volume_name: None,
            availability_zone: "us-east-1a".into(),
            tags: vec![Tag::new("Name", "restored")],
            instance_id: Some(instance.clone()),
            device: Some("/dev/sdf".into()),
            wait: true,
            dry_run,
        })
    };
    let dry = t.run_succeeding(&restore(true), "restore-dry").await;
    assert_eq!(dry.result.expect("result")["dry_run"], true);
    assert_eq!(
        proxy.creates_with("CreateVolume", "restore-dry"),
        0,
        "a dry run creates nothing"
    );

    let event = t.run_succeeding(&restore(false), "restore-1").await;
    let result = event.result.clone().expect("result");
    assert_eq!(
        result["snapshot_id"],
        snapshots[1].as_str(),
        "the newest: {result}"
    );
    assert_eq!(result["state"], "in-use", "{result}");
    assert_eq!(result["attachment"]["instance_id"], instance.as_str());
    let restored = result["volume_id"].as_str().expect("id").to_owned();
    let described = ec2
        .describe_volumes()
        .volume_ids(&restored)
        .send()
        .await
        .expect("describe");
    let v = &described.volumes()[0];
    assert_eq!(v.snapshot_id(), Some(snapshots[1].as_str()));
    assert!(v
        .tags()
        .iter()
        .any(|t| t.key() == Some("shoal:job-id") && t.value() == Some("restore-1")));
    assert!(v
        .tags()
        .iter()
        .any(|t| t.key() == Some("Name") && t.value() == Some("restored")));
    assert_eq!(proxy.creates_with("CreateVolume", "restore-1"), 1);

    let again = t.run_succeeding(&restore(false), "restore-1").await;
    assert_eq!(again, event, "the recorded outcome");
    assert_eq!(
        proxy.creates_with("CreateVolume", "restore-1"),
        1,
        "one volume"
    );
    worker.stop().await;
}

/// EC2 lags: the new volume stays unlisted (and its id unknown to EC2) for 8 s. The run that
/// made it records its id and waits; the next check asks for that id until EC2 shows it, then
/// attaches it and waits for `in-use`. One `CreateVolume`, one `AttachVolume`, no failure.
#[tokio::test]
async fn a_volume_ec2_does_not_list_yet_is_waited_for_and_attached_once() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("restore-lag"))).await;
    let (_, snapshots, instance) = volume_snapshots_and_instance(&t).await;
    proxy.eventual_consistency(Duration::from_secs(8), Duration::from_secs(8));
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&sdk).await);
    let settings = Ec2Settings {
        wait_check_min: Duration::from_millis(500),
        consistency_window: Duration::from_secs(20),
        ..Ec2Settings::default()
    };
    let worker = TestStack::start_worker_with(&sdk, config, registry_with(settings)).await;

    let job = Job::new(RestoreVolume {
        snapshot_id: Some(snapshots[0].clone()),
        volume_id: None,
        volume_name: None,
        availability_zone: "us-east-1a".into(),
        tags: vec![],
        instance_id: Some(instance.clone()),
        device: Some("/dev/sdg".into()),
        wait: true,
        dry_run: false,
    });
    let event = t.run_succeeding(&job, "restore-lag").await;
    let result = event.result.expect("result");
    assert_eq!(result["snapshot_id"], snapshots[0].as_str(), "{result}");
    assert_eq!(result["state"], "in-use", "{result}");
    assert_eq!(result["attachment"]["instance_id"], instance.as_str());
    assert_eq!(result["attachment"]["device"], "/dev/sdg");
    assert_eq!(proxy.creates_with("CreateVolume", "restore-lag"), 1);
    assert_eq!(proxy.count(Service::Ec2, "AttachVolume").forwarded, 1);
    let restored = result["volume_id"].as_str().expect("id");
    let attached = t
        .clients
        .ec2
        .describe_volumes()
        .volume_ids(restored)
        .send()
        .await
        .expect("describe");
    assert_eq!(
        attached.volumes()[0].attachments()[0].instance_id(),
        Some(instance.as_str())
    );
    worker.stop().await;
}
