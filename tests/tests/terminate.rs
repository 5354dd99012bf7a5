//! `terminate-instances` against the emulator's EC2: it ends what Shoal launched, once (a
//! redelivery finds it terminated and a resubmission of its job id announces the recorded
//! outcome); a dry run ends nothing; it refuses, before anything is terminated, an instance
//! Shoal did not launch unless the worker allows it; EC2's refusal of a protected instance
//! is a permanent failure that names it; and as the step after a launch it waits out EC2's
//! lag (the instance not listed yet is "not yet", not "gone").

use std::time::Duration;

use aws_sdk_ec2::types::AttributeBooleanValue;
use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::TerminateInstances;
use shoal_common::stack::StackSpec;
use shoal_common::Job;
use shoal_common::JobEnvelope;
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::Service;
use shoal_tests::{new_instance, plain_launch, unique, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

const WAIT: Duration = Duration::from_secs(30);

fn terminate(ids: &[&str], dry_run: bool) -> Job {
    Job::new(TerminateInstances {
        instance_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        dry_run,
    })
}

async fn state(t: &TestStack, id: &str) -> String {
    t.clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("describe")
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

fn ended(state: &str) -> bool {
    state == "shutting-down" || state == "terminated"
}

async fn launched_by_shoal(t: &TestStack, job_id: &str) -> String {
    let mut launch = plain_launch(&t.stock_ami().await);
    launch.max_count = 1;
    let event = t.run_job(&Job::new(launch), job_id, WAIT).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{event:?}");
    event.result.expect("result")["instances"][0]["instance_id"]
        .as_str()
        .expect("an instance id")
        .to_owned()
}

#[tokio::test]
async fn terminate_instances_ends_what_shoal_launched_once_and_refuses_the_rest() {
    let t = TestStack::new("terminate").await;
    let mut config = t.worker_config("w");
    config.ledger = Some(t.ledger(&t.sdk).await);
    let worker = t
        .start_worker(config, registry_with(Ec2Settings::default()))
        .await;
    let ours = launched_by_shoal(&t, "term-launch").await;
    let protected = launched_by_shoal(&t, "term-launch-protected").await;
    t.clients
        .ec2
        .modify_instance_attribute()
        .instance_id(&protected)
        .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .expect("protect");
    let foreign = new_instance(&t.clients.ec2, &t.stock_ami().await, None).await;

    let dry = t
        .run_job(&terminate(&[&ours], true), "term-dry", WAIT)
        .await;
    assert_eq!(dry.status, JobStatus::Succeeded, "{dry:?}");
    assert_eq!(dry.result.as_ref().expect("result")["dry_run"], true);
    assert!(!ended(&state(&t, &ours).await), "a dry run ends nothing");

    let done = t
        .run_job(&terminate(&[&ours], false), "term-ours", WAIT)
        .await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let result = &done.result.clone().expect("result")["instances"][0];
    assert_eq!(result["instance_id"], ours.as_str());
    assert!(
        ended(result["current_state"].as_str().unwrap_or_default()),
        "{result}"
    );
    assert!(ended(&state(&t, &ours).await));

    // The same job id again: the recorded outcome, nothing run. Another job for the same
    // instance: it is already ended, so nothing is called and it is done.
    let again = t
        .run_job(&terminate(&[&ours], false), "term-ours", WAIT)
        .await;
    assert_eq!(again, done, "the recorded outcome, announced again");
    let other = t
        .run_job(&terminate(&[&ours], false), "term-ours-later", WAIT)
        .await;
    assert_eq!(other.status, JobStatus::Succeeded, "{other:?}");
    let result = &other.result.expect("result")["instances"][0];
    assert_eq!(
        result["previous_state"], result["current_state"],
        "{result}"
    );

    let refused = t
        .run_job(&terminate(&[&foreign], false), "term-foreign", WAIT)
        .await;
    assert_eq!(refused.status, JobStatus::Failed);
    let error = refused.error.expect("a reason");
    assert_eq!(error.code.as_deref(), Some("NotAllowed"), "{error:?}");
    assert!(
        error.message.contains(&foreign) && error.message.contains("--allow-destroying-untagged"),
        "{error:?}"
    );
    assert!(
        !ended(&state(&t, &foreign).await),
        "refused before anything ended"
    );

    let protected_event = t
        .run_job(&terminate(&[&protected], false), "term-protected", WAIT)
        .await;
    assert_eq!(protected_event.status, JobStatus::Failed);
    let error = protected_event.error.expect("a reason");
    assert_eq!(
        error.code.as_deref(),
        Some("OperationNotPermitted"),
        "{error:?}"
    );
    assert_eq!(error.class, shoal_common::error::ErrorClass::Permanent);
    assert!(error.message.contains(&protected), "names it: {error:?}");
    assert!(!ended(&state(&t, &protected).await));
    assert_eq!(
        t.receive(&t.stack.dlq_url, 2, Duration::from_secs(5))
            .await
            .len(),
        2,
        "both refusals dead-lettered with their reasons"
    );
    worker.stop().await;

    // A worker told it may end what Shoal did not make.
    let settings = Ec2Settings {
        allow_destroying_untagged: true,
        ..Ec2Settings::default()
    };
    let worker = t
        .start_worker(t.worker_config("w2"), registry_with(settings))
        .await;
    let allowed = t
        .run_job(&terminate(&[&foreign], false), "term-foreign-allowed", WAIT)
        .await;
    assert_eq!(allowed.status, JobStatus::Succeeded, "{allowed:?}");
    assert!(ended(&state(&t, &foreign).await));
    worker.stop().await;
}

/// A launch, then its instance's termination as the chain's next step, while EC2 does not
/// list the new instance for 8 s: the step's `InvalidInstanceID.NotFound` is "not yet" (it
/// names what its parent just made), so the step looks again, as a wait, spending no attempt,
/// until EC2 shows the instance, then ends it. One launch, one `TerminateInstances`.
#[tokio::test]
async fn terminating_an_instance_ec2_does_not_list_yet_waits_for_it() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("terminate-lag"))).await;
    let ami = t.stock_ami().await;
    proxy.eventual_consistency(Duration::from_secs(8), Duration::from_secs(8));
    let sdk = proxy.sdk().await;
    let mut config = t.worker_config("w");
    config.consistency_window = Duration::from_secs(30);
    config.ledger = Some(t.ledger(&sdk).await);
    let worker =
        TestStack::start_worker_with(&sdk, config, registry_with(Ec2Settings::default())).await;

    let job = JobEnvelope::from_request(serde_json::json!({
        "job_id": "launch-then-end", "kind": "run-instances",
        "params": {"image_id": ami, "instance_type": "t2.micro"},
        "then": [{
            "kind": "terminate-instances",
            "params": {"instance_ids": [{"$from": "/instances/0/instance_id"}]},
        }],
    }))
    .expect("a valid chain");
    let outcome = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue_and_wait(
            &t.clients,
            &t.stack.topic_arn,
            &job,
            &SendOptions::default(),
            Duration::from_secs(60),
        )
        .await
        .expect("the chain finishes");
    assert!(outcome.succeeded, "{:?}", outcome.events);
    let launched = outcome.events[0].result.as_ref().expect("result")["instances"][0]
        ["instance_id"]
        .as_str()
        .expect("an instance")
        .to_owned();
    let ended_event = &outcome.events[1];
    assert_eq!(ended_event.kind.as_deref(), Some("terminate-instances"));
    assert_eq!(
        ended_event.attempts, 1,
        "looking again spent no attempt: {ended_event:?}"
    );
    assert!(
        proxy.count(Service::Ec2, "DescribeInstances").arrived >= 2,
        "the first look met EC2's lag"
    );
    assert!(ended(&state(&t, &launched).await));
    assert_eq!(proxy.creates_with("RunInstances", "launch-then-end"), 1);
    assert_eq!(proxy.count(Service::Ec2, "TerminateInstances").forwarded, 1);
    worker.stop().await;
}
