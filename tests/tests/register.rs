//! `register-image` against the emulator's EC2: an AMI registered from a snapshot; its job id
//! sent again registers nothing (`RegisterImage` takes no token: the recorded image and the
//! ledger hold it to one; on AWS the job's tag, which moto drops, is a third line); a dry
//! run registers nothing; a snapshot another account owns (shared with this one) is refused
//! before any call that registers.

use shoal_common::event::JobStatus;
use shoal_common::job::{RegisterImage, Tag};
use shoal_common::stack::StackSpec;
use shoal_common::Job;
use shoal_tests::fault_proxy::{Fault, Rule, Service, Trigger};
use shoal_tests::{new_snapshot, new_volume, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

/// A `register-image` job from `snapshot`, as these tests send it.
fn register_from(snapshot: &str, name: &str, tags: Vec<Tag>, wait: bool, dry_run: bool) -> Job {
    Job::new(RegisterImage {
        snapshot_id: snapshot.to_owned(),
        name: name.to_owned(),
        description: None,
        root_device_name: "/dev/xvda".into(),
        architecture: "x86_64".into(),
        virtualization_type: "hvm".into(),
        ena_support: true,
        boot_mode: None,
        tags,
        wait,
        dry_run,
    })
}

#[tokio::test]
async fn an_ami_is_registered_from_a_snapshot_once() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("register"))).await;
    let ec2 = &t.clients.ec2;
    let volume = new_volume(ec2, "us-east-1a").await;
    let snapshot = new_snapshot(ec2, &volume, &[]).await;
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&sdk).await);
    let worker =
        TestStack::start_worker_with(&sdk, config, registry_with(Ec2Settings::default())).await;
    let name = unique("restored");
    let register = |dry_run: bool| {
        register_from(
            &snapshot,
            &name,
            vec![Tag::new("Name", "restored")],
            true,
            dry_run,
        )
    };
    let dry = t.run_succeeding(&register(true), "register-dry").await;
    assert_eq!(dry.result.expect("result")["dry_run"], true);
    assert_eq!(proxy.creates_with("RegisterImage", "register-dry"), 0);

    let event = t.run_succeeding(&register(false), "register-1").await;
    let result = event.result.clone().expect("result");
    let image = result["image_id"].as_str().expect("an image").to_owned();
    assert_eq!(result["state"], "available", "{result}");
    let described = ec2
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .expect("describe");
    let found = &described.images()[0];
    assert_eq!(found.name(), Some(name.as_str()));
    // (moto's RegisterImage drops the tag specification, which AWS applies with the image:
    // the tag is not asserted here, and the job's one image rests on what it recorded.)
    assert_eq!(proxy.creates_with("RegisterImage", "register-1"), 1);

    let again = t.run_succeeding(&register(false), "register-1").await;
    assert_eq!(again, event, "the recorded outcome");
    assert_eq!(
        proxy.creates_with("RegisterImage", "register-1"),
        1,
        "one image"
    );
    worker.stop().await;
}

/// A snapshot that EC2 says another account owns (one shared with this account; moto cannot
/// share across accounts, so the proxy answers as AWS would): the job is refused as
/// `NotAllowed` naming the owner, and no `RegisterImage` reaches EC2. An AMI registered from
/// it would be this account's and pass `--allow-image-owners` whatever it boots.
#[tokio::test]
async fn a_snapshot_another_account_owns_is_refused() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("register-theirs"))).await;
    let ec2 = &t.clients.ec2;
    let volume = new_volume(ec2, "us-east-1a").await;
    let snapshot = new_snapshot(ec2, &volume, &[]).await;
    let own = ec2
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .expect("describe")
        .snapshots()[0]
        .owner_id()
        .unwrap_or_default()
        .to_owned();
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["DescribeSnapshots"],
        Fault::RewriteAnswer {
            from: format!("<ownerId>{own}</ownerId>"),
            to: "<ownerId>999999999999</ownerId>".into(),
        },
        Trigger::Always,
    ));
    let sdk = proxy.sdk().await;
    let worker = TestStack::start_worker_with(
        &sdk,
        t.worker_config("w"),
        registry_with(Ec2Settings::default()),
    )
    .await;
    let job = register_from(&snapshot, &unique("theirs"), vec![], false, false);
    let event = t
        .run_job(&job, "register-theirs", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(event.status, JobStatus::Failed, "{event:?}");
    let error = event.error.expect("a reason");
    assert_eq!(error.code.as_deref(), Some("NotAllowed"), "{error:?}");
    assert!(error.message.contains("999999999999"), "{error:?}");
    assert_eq!(proxy.count(Service::Ec2, "RegisterImage").arrived, 0);
    worker.stop().await;
}
