//! The EC2 handlers against the emulator's EC2: producer → worker → event, with each
//! result checked against what `Describe*` says, and the same job delivered several times
//! leaving one effect. (A worker killed between its EC2 call and its delete is, to the
//! handler, exactly such a repeated delivery.)
//!
//! Written to hold on AWS too: the AMI is one the emulator lists, counts are asserted
//! between min and max, and no test relies on the emulator accepting what AWS refuses.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceType};
use shoal_common::config::QueueTarget;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::job::{CreateImage, RunInstances, SetTerminationProtection, Snapshot, Tag};
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, job_filter, new_instance, unique, RunningWorker, TestStack};
use shoal_worker::handlers::{default_registry, registry_with, Ec2Settings};

const WAIT: Duration = Duration::from_secs(30);

async fn enqueue(t: &TestStack, job: Job, job_id: &str) -> JobEnvelope {
    let envelope = JobEnvelope::new(job).with_job_id(JobId::parse(job_id).expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&envelope, &SendOptions::default())
        .await
        .expect("enqueue");
    envelope
}

async fn run_one(t: &TestStack, job: Job, job_id: &str) -> (JobEvent, RunningWorker) {
    enqueue(t, job, job_id).await;
    let worker = t
        .start_worker(t.worker_config("ec2-worker"), default_registry())
        .await;
    let mut events = t.events(1, WAIT).await;
    assert_eq!(events.len(), 1, "one event for {job_id}");
    (events.remove(0), worker)
}

fn launch(image_id: &str, protect: bool) -> RunInstances {
    RunInstances {
        image_id: image_id.to_owned(),
        min_count: 1,
        max_count: 2,
        key_name: Some("shoal-test".into()),
        instance_type: "t2.micro".into(),
        availability_zone: Some("us-east-1a".into()),
        disable_api_termination: protect,
        tags: vec![Tag::new("Name", "web")],
        subnet_id: None,
        security_group_ids: vec![],
        user_data: Some("#!/bin/sh\necho hi\n".into()),
        wait: false,
        dry_run: false,
    }
}

async fn reservations_of(t: &TestStack, job_id: &str) -> Vec<aws_sdk_ec2::types::Reservation> {
    t.clients
        .ec2
        .describe_instances()
        .filters(job_filter(job_id))
        .send()
        .await
        .expect("describe instances")
        .reservations
        .unwrap_or_default()
}

async fn protected(t: &TestStack, id: &str) -> bool {
    t.clients
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .expect("attribute")
        .disable_api_termination()
        .and_then(|v| v.value())
        .unwrap_or(false)
}

async fn key_pair(t: &TestStack) {
    // AWS refuses unknown key pairs; create it so the test holds there too.
    let _ = t
        .clients
        .ec2
        .create_key_pair()
        .key_name("shoal-test")
        .send()
        .await;
}

#[tokio::test]
async fn run_instances_launches_tagged_protected_instances_and_protection_can_be_lifted() {
    let t = TestStack::new("run").await;
    key_pair(&t).await;
    let ami = t.stock_ami().await;
    let (event, worker) = run_one(&t, Job::new(launch(&ami, true)), "launch-1").await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    let result = event.result.expect("result");

    let reservations = reservations_of(&t, "launch-1").await;
    assert_eq!(reservations.len(), 1);
    assert_eq!(
        result["reservation_id"],
        reservations[0].reservation_id().unwrap_or_default()
    );
    let instances = reservations[0].instances();
    assert!((1..=2).contains(&instances.len()), "between min and max");
    assert_eq!(
        result["instances"].as_array().map(Vec::len),
        Some(instances.len())
    );
    let reported_instances = result["instances"].as_array().expect("instances");
    for actual in instances {
        let reported = reported_instances
            .iter()
            .find(|r| r["instance_id"] == actual.instance_id().unwrap_or_default())
            .unwrap_or_else(|| panic!("{:?} is not in the result", actual.instance_id()));
        assert_eq!(reported["image_id"], ami.as_str());
        assert_eq!(reported["instance_type"], "t2.micro");
        assert_eq!(reported["availability_zone"], "us-east-1a");
        assert_eq!(actual.instance_type(), Some(&InstanceType::T2Micro));
        assert_eq!(actual.key_name(), Some("shoal-test"));
        let tags: Vec<(&str, &str)> = actual
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
            .collect();
        assert!(
            tags.contains(&("Name", "web")) && tags.contains(&("shoal:job-id", "launch-1")),
            "{tags:?}"
        );
        let id = actual.instance_id().expect("id");
        assert!(protected(&t, id).await, "termination protection took");
        let refused = t
            .clients
            .ec2
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await;
        assert!(refused.is_err(), "a protected instance refuses termination");
    }

    // Lift the protection through Shoal, as the article does, then terminate.
    let ids: Vec<String> = instances
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    enqueue(
        &t,
        Job::new(SetTerminationProtection {
            instance_ids: ids.clone(),
            disable_api_termination: false,
        }),
        "unprotect-1",
    )
    .await;
    let events = t.events(1, WAIT).await;
    assert_eq!(events.len(), 1, "the unprotect job's event arrived");
    assert_eq!(
        events[0].status,
        JobStatus::Succeeded,
        "{:?}",
        events[0].error
    );
    assert_eq!(
        events[0].result.as_ref().expect("result")["instances"][0]["disable_api_termination"],
        false
    );
    for id in &ids {
        assert!(!protected(&t, id).await);
    }
    t.clients
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .expect("now it terminates");
    worker.stop().await;
}

#[tokio::test]
async fn the_same_job_delivered_three_times_has_one_effect_of_each_kind() {
    let t = TestStack::new("once").await;
    key_pair(&t).await;
    let ami = t.stock_ami().await;
    let source = new_instance(&t.clients.ec2, &ami, None).await;
    let image_name = unique("once image");

    let jobs = [
        (Job::new(launch(&ami, false)), "once-launch"),
        (
            Job::new(CreateImage {
                instance_id: source.clone(),
                name: image_name.clone(),
                description: Some("thrice".into()),
                no_reboot: true,
                tags: vec![],
                wait: false,
                dry_run: false,
            }),
            "once-image",
        ),
        (
            Job::new(Snapshot {
                volume_id: None,
                volume_name: None,
                instance_id: Some(source.clone()),
                name: Some("once".into()),
                description: None,
                tags: vec![],
                wait: true,
                dry_run: false,
            }),
            "once-snapshot",
        ),
    ];
    for (job, id) in &jobs {
        for _ in 0..3 {
            enqueue(&t, job.clone(), id).await;
        }
    }
    let worker = t
        .start_worker(t.worker_config("w"), default_registry())
        .await;
    let events = t.events(9, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 9, "{} of 9 events arrived", events.len());
    assert!(
        events.iter().all(|e| e.status == JobStatus::Succeeded),
        "{events:?}"
    );

    assert_eq!(
        reservations_of(&t, "once-launch").await.len(),
        1,
        "one reservation"
    );
    let images = t
        .clients
        .ec2
        .describe_images()
        .owners("self")
        .filters(job_filter("once-image"))
        .send()
        .await
        .expect("images");
    assert_eq!(images.images().len(), 1, "one image");
    assert_eq!(images.images()[0].name(), Some(image_name.as_str()));
    let snapshots = t
        .clients
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(job_filter("once-snapshot"))
        .send()
        .await
        .expect("snapshots");
    assert_eq!(
        snapshots.snapshots().len(),
        1,
        "one snapshot of the instance's one volume"
    );
    // Every delivery reports the same resources (their states may move on in between).
    let ids = |e: &JobEvent| -> Vec<serde_json::Value> {
        let r = e.result.clone().expect("result");
        let mut ids = vec![r["reservation_id"].clone(), r["image_id"].clone()];
        for list in ["instances", "snapshots"] {
            for item in r[list].as_array().cloned().unwrap_or_default() {
                ids.push(item["instance_id"].clone());
                ids.push(item["snapshot_id"].clone());
            }
        }
        ids
    };
    for id in ["once-launch", "once-image", "once-snapshot"] {
        let reported: Vec<_> = events
            .iter()
            .filter(|e| e.job_id.as_deref() == Some(id))
            .map(ids)
            .collect();
        assert_eq!(reported.len(), 3);
        assert!(
            reported.windows(2).all(|w| w[0] == w[1]),
            "{id}: {reported:?}"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn the_articles_snapshot_flow_names_the_instance_and_volume_and_snapshots_it() {
    let t = TestStack::new("snap").await;
    let ami = t.stock_ami().await;
    let instance = new_instance(&t.clients.ec2, &ami, None).await;
    // Unique, as the emulator's EC2 is shared by this file's tests.
    let name = unique("web");
    let snap_description = format!("{name} Snap");
    let snapshot = Snapshot {
        volume_id: None,
        volume_name: None,
        instance_id: Some(instance.clone()),
        name: Some(name.clone()),
        description: None,
        tags: vec![Tag::new("backup", "daily")],
        wait: true,
        dry_run: false,
    };
    let (event, worker) = run_one(&t, Job::new(snapshot), "snap-1").await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    let result = event.result.expect("result");
    let reported = result["snapshots"].as_array().expect("snapshots").clone();

    // Every volume attached to the instance is named and has exactly one snapshot.
    let volumes = t
        .clients
        .ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&instance)
                .build(),
        )
        .send()
        .await
        .expect("volumes");
    assert!(!volumes.volumes().is_empty());
    assert_eq!(
        reported.len(),
        volumes.volumes().len(),
        "one snapshot per attached volume"
    );
    for volume in volumes.volumes() {
        let id = volume.volume_id().unwrap_or_default();
        let snap = reported
            .iter()
            .find(|s| s["volume_id"] == id)
            .expect("a snapshot of each volume");
        assert_eq!(snap["description"], snap_description.as_str());
        assert_eq!(snap["state"], "completed");
        assert_eq!(snap["volume_size"], volume.size().unwrap_or_default());
        assert!(
            volume
                .tags()
                .iter()
                .any(|t| t.key() == Some("Name") && t.value() == Some(name.as_str())),
            "the volume was named"
        );
        let described = t
            .clients
            .ec2
            .describe_snapshots()
            .snapshot_ids(snap["snapshot_id"].as_str().expect("id"))
            .send()
            .await
            .expect("snapshot");
        let s = &described.snapshots()[0];
        assert_eq!(s.volume_id(), Some(id));
        assert_eq!(s.description(), Some(snap_description.as_str()));
        assert!(s
            .tags()
            .iter()
            .any(|t| t.key() == Some("backup") && t.value() == Some("daily")));
        assert!(s
            .tags()
            .iter()
            .any(|t| t.key() == Some("shoal:job-id") && t.value() == Some("snap-1")));
    }
    let tagged = t
        .clients
        .ec2
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await
        .expect("instance");
    let tags = tagged.reservations()[0].instances()[0].tags();
    assert!(
        tags.iter()
            .any(|t| t.key() == Some("Name") && t.value() == Some(name.as_str())),
        "the instance was named"
    );

    // Then by Name tag, as the article finds the volume.
    enqueue(
        &t,
        Job::new(Snapshot {
            volume_id: None,
            volume_name: Some(name.clone()),
            instance_id: None,
            name: None,
            description: None,
            tags: vec![],
            wait: true,
            dry_run: false,
        }),
        "snap-by-name",
    )
    .await;
    let events = t.events(1, WAIT).await;
    assert_eq!(events.len(), 1, "the snapshot-by-name job's event arrived");
    let by_name = events[0].result.as_ref().expect("result")["snapshots"]
        .as_array()
        .expect("snapshots")
        .clone();
    let mut named: Vec<&serde_json::Value> = by_name.iter().map(|s| &s["volume_id"]).collect();
    let mut attached: Vec<&serde_json::Value> = reported.iter().map(|s| &s["volume_id"]).collect();
    named.sort_by_key(|v| v.to_string());
    attached.sort_by_key(|v| v.to_string());
    assert_eq!(named, attached, "the volumes so named are the instance's");
    assert!(by_name
        .iter()
        .all(|s| s["description"] == snap_description.as_str()));
    worker.stop().await;
}

#[tokio::test]
async fn each_permanent_ec2_error_lands_in_the_dead_letter_queue_with_its_aws_code() {
    let t = TestStack::new("ec2-errors").await;
    let cases = [
        (
            Job::new(SetTerminationProtection {
                instance_ids: vec!["i-0123456789abcdef0".into()],
                disable_api_termination: false,
            }),
            "err-instance",
            "InvalidInstanceID.NotFound",
        ),
        (
            Job::new(Snapshot {
                volume_id: Some("vol-0123456789abcdef0".into()),
                volume_name: None,
                instance_id: None,
                name: None,
                description: None,
                tags: vec![],
                wait: true,
                dry_run: false,
            }),
            "err-volume",
            "InvalidVolume.NotFound",
        ),
        (
            Job::new(CreateImage {
                instance_id: "i-0123456789abcdef0".into(),
                name: "never made".into(),
                description: None,
                no_reboot: false,
                tags: vec![],
                wait: false,
                dry_run: false,
            }),
            "err-image",
            "InvalidInstanceID.NotFound",
        ),
    ];
    for (job, id, _) in &cases {
        enqueue(&t, job.clone(), id).await;
    }
    let worker = t
        .start_worker(t.worker_config("w"), default_registry())
        .await;
    let events = t.events(cases.len(), WAIT).await;
    assert_eq!(
        events.len(),
        cases.len(),
        "{} of {} events arrived",
        events.len(),
        cases.len()
    );
    let dead = t.receive(&t.stack.dlq_url, cases.len(), WAIT).await;
    assert_eq!(dead.len(), cases.len());
    for (_, id, code) in &cases {
        let event = events
            .iter()
            .find(|e| e.job_id.as_deref() == Some(*id))
            .expect("event");
        let error = event.error.as_ref().expect("error");
        assert_eq!(
            error.code.as_deref(),
            Some(*code),
            "{id}: {}",
            error.message
        );
        assert_eq!(event.attempts, 1, "{id}: not retried");
        assert!(error.dead_lettered);
        let copy = dead
            .iter()
            .find(|m| {
                m.body()
                    .is_some_and(|b| b.contains(&format!("\"job_id\":\"{id}\"")))
            })
            .expect("in the DLQ");
        assert_eq!(attribute(copy, "shoal-error-code").as_deref(), Some(*code));
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_dry_run_checks_permissions_and_launches_nothing() {
    let t = TestStack::new("dry").await;
    let ami = t.stock_ami().await;
    let mut params = launch(&ami, false);
    params.key_name = None;
    params.dry_run = true;
    let (event, worker) = run_one(&t, Job::new(params), "dry-1").await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    assert_eq!(event.result.expect("result")["would_succeed"], true);
    assert!(
        reservations_of(&t, "dry-1").await.is_empty(),
        "nothing launched"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_wait_survives_a_worker_restart_and_leaves_no_slot_held() {
    // maxReceiveCount 2: the wait continues on a fresh copy instead of using up receives.
    let mut spec = StackSpec::new(unique("wait"));
    spec.max_receive_count = 2;
    let t = TestStack::with_spec(spec).await;
    key_pair(&t).await;
    let ami = t.stock_ami().await;
    let settings = Ec2Settings {
        wait_check_min: Duration::from_secs(3),
        ..Ec2Settings::default()
    };
    let mut params = launch(&ami, false);
    params.wait = true;
    enqueue(&t, Job::new(params), "wait-1").await;

    let mut config = t.worker_config("before");
    config.max_attempts = 2;
    let before = t
        .start_worker(config.clone(), registry_with(settings.clone()))
        .await;
    // The launch happens, then the job goes back to the queue to be checked later.
    let launched = shoal_tests::eventually(WAIT, || async {
        !reservations_of(&t, "wait-1").await.is_empty()
    })
    .await;
    assert!(launched);
    assert!(
        shoal_tests::eventually(WAIT, || async {
            before
                .metrics
                .jobs_waiting
                .with_label_values(&["run-instances"])
                .get()
                == 1
        })
        .await
    );
    assert_eq!(
        before
            .metrics
            .jobs_in_flight
            .with_label_values(&["run-instances"])
            .get(),
        0,
        "no slot held while waiting"
    );
    before.stop().await;

    config.worker_id = "after".into();
    let after = t.start_worker(config, registry_with(settings)).await;
    let event = t.one_event(WAIT).await;
    let e = &event;
    assert_eq!(e.status, JobStatus::Succeeded, "{:?}", e.error);
    assert_eq!(e.worker_id, "after");
    let result = e.result.as_ref().expect("result");
    assert_eq!(
        result["reused_existing_launch"], false,
        "the launch was this job's own, found by the delivery that finished the wait"
    );
    let first = e.timings.first_started_at.expect("the job's first start");
    assert!(first < e.timings.started_at, "{:?}", e.timings);
    assert!(
        e.timings
            .job_ms
            .is_some_and(|ms| ms >= 3000 && ms > e.timings.run_ms),
        "the whole job's time, waits included: {:?}",
        e.timings
    );
    assert!(result["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .all(|i| i["state"] == "running"));
    assert_eq!(
        reservations_of(&t, "wait-1").await.len(),
        1,
        "one launch across both workers"
    );
    assert_eq!(
        t.depth(&t.stack.dlq_url).await,
        0,
        "the wait did not use up the receive count"
    );

    // The same job id sent again as a new message: another job's launch, reused.
    let mut params = launch(&ami, false);
    params.wait = true;
    enqueue(&t, Job::new(params), "wait-1").await;
    let again = t.one_event(WAIT).await;
    let result = again.result.as_ref().expect("result");
    assert_eq!(result["reused_existing_launch"], true, "{result}");
    assert_eq!(
        reservations_of(&t, "wait-1").await.len(),
        1,
        "still one launch"
    );
    after.stop().await;
}
