//! Chains and following: follow-ups enqueued by the worker when their parent succeeds, in
//! order, stopped by a failure, resolved from the parent's result (and fanned out over it),
//! never creating anything twice when the parent runs twice; and the follower that waits
//! for them (library and CLI), on a queue of its own.

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::JobEnvelope;
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::{AwsFault, Fault, FaultProxy, Rule, Service, Trigger};
use shoal_tests::{
    eventually, moto, new_instance, producer_cli, sdk_config, snapshot_listed, RunningWorker,
    TestStack,
};
use shoal_worker::handlers::default_registry;

const WAIT: Duration = Duration::from_secs(60);

fn chain(value: serde_json::Value) -> JobEnvelope {
    JobEnvelope::from_request(value).expect("a valid chain")
}

fn producer(t: &TestStack) -> Producer {
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
}

/// Sends `job` and waits for its chain's every event.
async fn run_chain(t: &TestStack, job: &JobEnvelope) -> shoal_producer::FollowOutcome {
    producer(t)
        .enqueue_and_wait(
            &t.clients,
            &t.stack.topic_arn,
            job,
            &SendOptions::default(),
            WAIT,
        )
        .await
        .expect("the chain finishes")
}

/// A stack behind a fault proxy, and a chain `job_id` that launches one instance and then
/// snapshots it.
async fn launch_then_snapshot(job_id: &str) -> (FaultProxy, TestStack, JobEnvelope) {
    let (proxy, t) = TestStack::behind_proxy(shoal_common::stack::StackSpec::new(
        shoal_tests::unique(job_id),
    ))
    .await;
    let ami = t.stock_ami().await;
    let job = chain(json!({
        "job_id": job_id, "kind": "run-instances",
        "params": {"image_id": ami, "instance_type": "t2.micro"},
        "then": [{
            "kind": "snapshot",
            "params": {"instance_id": {"$from": "/instances/0/instance_id"}, "wait": false},
        }],
    }));
    (proxy, t, job)
}

async fn worker(t: &TestStack) -> RunningWorker {
    t.start_worker(t.worker_config("chain-worker"), default_registry())
        .await
}

fn ids(events: &[JobEvent]) -> Vec<&str> {
    events.iter().filter_map(|e| e.job_id.as_deref()).collect()
}

/// Snapshots EC2 holds of volumes attached to `instance_id`.
async fn snapshots_of(t: &TestStack, instance_id: &str) -> usize {
    let described = t
        .clients
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe instance");
    let volumes: Vec<String> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
        .collect();
    assert!(!volumes.is_empty(), "{instance_id} has a volume");
    t.clients
        .ec2
        .describe_snapshots()
        .filters(
            Filter::builder()
                .name("volume-id")
                .set_values(Some(volumes))
                .build(),
        )
        .send()
        .await
        .expect("describe snapshots")
        .snapshots()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_step_chain_completes_in_order_and_the_follower_sees_every_step() {
    let t = TestStack::new("chain3").await;
    let _worker = worker(&t).await;
    let job = chain(json!({
        "job_id": "three", "kind": "canary",
        "then": [{"kind": "canary", "then": [{"kind": "canary"}]}],
    }));
    let outcome = run_chain(&t, &job).await;
    assert!(outcome.succeeded);
    assert_eq!(ids(&outcome.events), vec!["three", "three.1", "three.1.1"]);
    for pair in outcome.events.windows(2) {
        assert!(
            pair[0].timings.finished_at <= pair[1].timings.started_at,
            "each step starts after its parent finished: {pair:?}"
        );
        assert_eq!(pair[1].parent_job_id.as_deref(), pair[0].job_id.as_deref());
    }
    assert!(outcome
        .events
        .iter()
        .all(|e| e.chain_id.as_deref() == Some("three")));
    assert_eq!(outcome.events[0].follow_ups, vec!["three.1"]);

    // The follower's queue is gone, and the shared events queue still got every event.
    let events = t.events(3, WAIT).await;
    assert_eq!(
        events.len(),
        3,
        "followers consume nothing of the events queue"
    );
    let subscriptions = t
        .clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&t.stack.topic_arn)
        .send()
        .await
        .expect("subscriptions");
    assert_eq!(
        subscriptions.subscriptions().len(),
        1,
        "only the events queue is subscribed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_middle_step_stops_the_chain_and_the_cli_exits_1() {
    let t = TestStack::new("chainfail").await;
    let _worker = worker(&t).await;
    let file = std::env::temp_dir().join(format!("{}.json", shoal_tests::unique("chain")));
    // Written over many lines, as a chain file is.
    let body = serde_json::to_string_pretty(&json!({
        "job_id": "stops", "kind": "canary",
        "then": [{
            "kind": "set-termination-protection",
            "params": {"instance_ids": ["i-0123456789abcdef0"], "disable_api_termination": false},
            "then": [{"kind": "canary"}],
        }],
    }))
    .expect("json");
    std::fs::write(&file, body).expect("write chain file");
    let path = file.to_string_lossy().into_owned();
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--topic-arn",
            &t.stack.topic_arn,
            "--json",
            "submit",
            &path,
            "--follow",
            "--timeout",
            "60s",
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(run.code, 1, "{run:?}");
    let events: Vec<JobEvent> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one event a line"))
        .collect();
    assert_eq!(
        ids(&events),
        vec!["stops", "stops.1"],
        "the third step never ran: {run:?}"
    );
    let failed = &events[1];
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.kind.as_deref(), Some("set-termination-protection"));
    assert_eq!(failed.parent_job_id.as_deref(), Some("stops"));
    assert_eq!(
        failed.step.as_deref(),
        Some("then[0]"),
        "the event names the step"
    );
    let error = failed.error.as_ref().expect("the failure's reason");
    assert!(error.dead_lettered, "{error:?}");
    // The instance never shows: "not yet" for the consistency window (looking again spends
    // no attempt), then EC2's own code stands.
    assert_eq!(
        error.code.as_deref(),
        Some("InvalidInstanceID.NotFound"),
        "{error:?}"
    );
    assert_eq!(failed.attempts, 1, "{failed:?}");
    assert!(run.stderr.contains("1 failed: stops.1"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_that_does_not_resolve_fails_that_follow_up_naming_the_pointer() {
    let t = TestStack::new("chainref").await;
    let _worker = worker(&t).await;
    let job = chain(json!({
        "job_id": "unresolved", "kind": "canary",
        "then": [
            {"kind": "canary", "params": {"sleep_ms": {"$from": "/slept_ms"}}},
            {"kind": "snapshot", "params": {"volume_id": {"$from": "/volumes/0"}}},
        ],
    }));
    let outcome = run_chain(&t, &job).await;
    assert!(!outcome.succeeded);
    assert_eq!(
        ids(&outcome.events),
        vec!["unresolved", "unresolved.1", "unresolved.2"]
    );
    assert_eq!(
        outcome.events[1].status,
        JobStatus::Succeeded,
        "$from resolved: {:?}",
        outcome.events[1]
    );
    let error = outcome.events[2].error.as_ref().expect("a reason");
    assert_eq!(error.code.as_deref(), Some("UnresolvedReference"));
    assert!(
        error.message.contains("/volumes/0") && error.message.contains("then[1].params.volume_id"),
        "{error:?}"
    );
    assert!(!error.dead_lettered);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_over_three_launched_instances_creates_three_snapshots() {
    let t = TestStack::new("chainfan").await;
    let _worker = worker(&t).await;
    let ami = t.stock_ami().await;
    let job = chain(json!({
        "job_id": "fan", "kind": "run-instances",
        "params": {"image_id": ami, "instance_type": "t2.micro", "min_count": 3, "max_count": 3},
        "then": [{
            "kind": "snapshot", "for_each": "/instances",
            "params": {"instance_id": {"$each": "/instance_id"}, "name": "fanned", "wait": false},
        }],
    }));
    let outcome = run_chain(&t, &job).await;
    assert!(outcome.succeeded, "{:?}", outcome.events);
    assert_eq!(
        ids(&outcome.events),
        vec!["fan", "fan.1:0", "fan.1:1", "fan.1:2"]
    );
    let launched = outcome.events[0].result.as_ref().expect("result")["instances"]
        .as_array()
        .expect("instances")
        .clone();
    for (i, instance) in launched.iter().enumerate() {
        let id = instance["instance_id"].as_str().expect("id");
        assert_eq!(snapshots_of(&t, id).await, 1, "one snapshot of {id}");
        assert_eq!(
            outcome.events[i + 1].result.as_ref().expect("result")["instance_id"],
            id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_redelivered_after_enqueueing_its_follow_ups_creates_nothing_twice() {
    let (proxy, t, job) = launch_then_snapshot("redo").await;
    // Nothing can be deleted: the parent's message comes back after its visibility
    // timeout and runs again, after its follow-up was sent (and ran), until the proxy heals.
    proxy.add(Rule::new(
        Some(Service::Sqs),
        &["DeleteMessage", "DeleteMessageBatch"],
        Fault::Error(AwsFault::ServiceUnavailable),
        Trigger::Always,
    ));
    producer(&t)
        .enqueue(&job, &SendOptions::default())
        .await
        .expect("enqueue");
    let sdk = proxy.sdk().await;
    let worker =
        TestStack::start_worker_with(&sdk, t.worker_config("redo"), default_registry()).await;
    let mut events: Vec<JobEvent> = Vec::new();
    let of = |events: &[JobEvent], id: &str| {
        events
            .iter()
            .filter(|e| e.job_id.as_deref() == Some(id))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(of(&events, "redo") >= 2 && of(&events, "redo.1") >= 1)
        && std::time::Instant::now() < deadline
    {
        events.extend(t.events(1, Duration::from_secs(1)).await);
    }
    let redelivered = of(&events, "redo") >= 2 && of(&events, "redo.1") >= 1;
    assert!(
        redelivered,
        "the parent ran twice, its follow-up at least once: {:?}",
        ids(&events)
    );
    proxy.heal();
    // Every delivery can finish now; the queue drains.
    let drained = eventually(Duration::from_secs(60), || async {
        t.depth(&t.stack.queue_url).await == 0
    })
    .await;
    worker.stop().await;
    assert!(drained, "the job queue drains once deletes work again");
    assert!(
        proxy.count(Service::Sqs, "SendMessage").arrived >= 2,
        "each run of the parent sent its follow-up"
    );
    let instance = events[0].result.as_ref().expect("result")["instances"][0]["instance_id"]
        .as_str()
        .expect("instance")
        .to_owned();
    assert_eq!(proxy.creates_with("RunInstances", "redo"), 1, "one launch");
    assert_eq!(
        proxy.count(Service::Ec2, "CreateSnapshot").arrived,
        1,
        "one snapshot call"
    );
    assert_eq!(snapshots_of(&t, &instance).await, 1);
}

/// Following a job prints what it made under its line, as readable JSON.
#[tokio::test(flavor = "multi_thread")]
async fn follow_prints_each_jobs_result() {
    let t = TestStack::new("followresult").await;
    let _worker = worker(&t).await;
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--topic-arn",
            &t.stack.topic_arn,
            "canary",
            "--sleep-ms",
            "7",
            "--follow",
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("canary succeeded")),
        "{run:?}"
    );
    assert!(
        lines.iter().any(|l| l.trim() == "\"slept_ms\": 7,"),
        "the result under the line: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_exits_124_on_timeout_and_finds_a_dead_lettered_job() {
    let t = TestStack::new("followcli").await;
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = vec![
            "--queue-url".into(),
            t.stack.queue_url.clone(),
            "--topic-arn".into(),
            t.stack.topic_arn.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&["follow", "never-sent", "--timeout", "2s"]);
    let run = producer_cli(&t.sdk, &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(run.code, 124, "{run:?}");
    assert!(run.stderr.contains("never-sent"), "{}", run.stderr);

    // A job that failed before anyone followed it waits in the DLQ with its reason.
    let bad = json!({"schema_version": 1, "job_id": "early", "kind": "canary",
        "submitted_at": "2026-01-01T00:00:00Z", "params": {"sleep_ms": "x"}});
    t.clients
        .sqs
        .send_message()
        .queue_url(&t.stack.queue_url)
        .message_body(bad.to_string())
        .send()
        .await
        .expect("send");
    let w = worker(&t).await;
    assert_eq!(t.events(1, WAIT).await.len(), 1);
    w.stop().await;
    let a = args(&["--json", "follow", "early", "--timeout", "30s"]);
    let run = producer_cli(&t.sdk, &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(run.code, 1, "{run:?}");
    let event: JobEvent = serde_json::from_str(run.stdout.trim()).expect("one event");
    assert_eq!(event.job_id.as_deref(), Some("early"));
    assert!(event
        .error
        .expect("reason")
        .message
        .contains("params.sleep_ms"));

    // Without a topic, following is a usage error.
    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "canary", "--follow"],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("topic_arn"), "{}", run.stderr);
}

/// The article's whole flow, as `producer/examples/article-flow.json` writes it: launch
/// protected instances, then image one and snapshot its volume, then lift its protection,
/// then terminate it.
#[tokio::test(flavor = "multi_thread")]
async fn the_articles_flow_runs_as_one_chain() {
    let t = TestStack::new("article").await;
    let _worker = worker(&t).await;
    let text = std::fs::read_to_string(shoal_tests::repo_path(
        "producer/examples/article-flow.json",
    ))
    .expect("the example chain");
    let mut request: serde_json::Value = serde_json::from_str(&text).expect("json");
    request["params"]["image_id"] = json!(t.stock_ami().await);
    t.clients
        .ec2
        .create_key_pair()
        .key_name("demo")
        .send()
        .await
        .expect("key pair");
    let job = JobEnvelope::from_request(request).expect("the example is a valid chain");
    let outcome = run_chain(&t, &job).await;
    assert!(outcome.succeeded, "{:?}", outcome.events);
    let kinds: Vec<_> = outcome
        .events
        .iter()
        .filter_map(|e| e.kind.as_deref())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "run-instances",
            "create-image",
            "snapshot",
            "set-termination-protection",
            "terminate-instances"
        ]
    );
    let instance = outcome.events[0].result.as_ref().expect("result")["instances"][0]
        ["instance_id"]
        .as_str()
        .expect("instance")
        .to_owned();
    let protection = shoal_tests::termination_protection(&t.clients.ec2, &instance).await;
    assert_eq!(protection, Some(false), "a step lifted it");
    // The snapshot outlives the instance (and its volume, deleted with it).
    let snapshot = outcome.events[2].result.as_ref().expect("result")["snapshots"][0]
        ["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_owned();
    let listed = t
        .clients
        .ec2
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .expect("describe snapshots");
    assert_eq!(listed.snapshots().len(), 1);
    let state = t
        .clients
        .ec2
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await
        .expect("describe")
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|s| s.as_str().to_owned());
    assert!(
        matches!(state.as_deref(), Some("shutting-down" | "terminated")),
        "the last step ended it: {state:?}"
    );
}

/// A follower rides out a few seconds of SQS refusing its receives: the events wait on its
/// queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_outlives_an_sqs_outage() {
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let t = TestStack::new("followout").await;
    let _worker = worker(&t).await;
    let through_proxy = shoal_common::aws::AwsClients::new(&sdk_config(&proxy.endpoint).await);
    let job = chain(json!({"kind": "canary", "then": [{"kind": "canary"}]}));
    let (_, follower) = producer(&t)
        .enqueue_and_follow(
            &through_proxy,
            &t.stack.topic_arn,
            &job,
            &SendOptions::default(),
            WAIT,
        )
        .await
        .expect("follow");
    proxy.add(Rule::outage(
        Service::Sqs,
        &["ReceiveMessage"],
        AwsFault::ServiceUnavailable,
        Duration::from_secs(5),
    ));
    let outcome = follower
        .outcome(WAIT)
        .await
        .expect("the follow outlives the outage");
    assert!(outcome.succeeded);
    assert_eq!(outcome.events.len(), 2);
    assert!(proxy.count(Service::Sqs, "ReceiveMessage").arrived > 1);
}

/// SQS refuses to take the follow-ups for longer than a delivery holds on: the parent's
/// outcome is not announced without them; once SQS takes messages again the chain goes on,
/// and nothing is created twice.
#[tokio::test(flavor = "multi_thread")]
async fn follow_ups_that_cannot_be_sent_hold_the_parents_outcome_back_until_they_can() {
    let (proxy, t, job) = launch_then_snapshot("held").await;
    let outage = Duration::from_secs(10);
    proxy.add(Rule::outage(
        Service::Sqs,
        &["SendMessage"],
        AwsFault::ServiceUnavailable,
        outage,
    ));
    let outage_ends = std::time::Instant::now() + outage;
    let follower = shoal_producer::Follower::start(
        &t.clients,
        &t.stack.topic_arn,
        &[shoal_common::JobId::parse("held").expect("id")],
        WAIT,
    )
    .await
    .expect("follow");
    producer(&t)
        .enqueue(&job, &SendOptions::default())
        .await
        .expect("enqueue");
    let sdk = proxy.sdk().await;
    let worker =
        TestStack::start_worker_with(&sdk, t.worker_config("held"), default_registry()).await;
    // While its follow-up cannot be sent, the parent's outcome is not announced.
    let early = t
        .events(
            1,
            outage_ends.saturating_duration_since(std::time::Instant::now())
                - Duration::from_secs(1),
        )
        .await;
    assert!(
        early.is_empty(),
        "announced without its follow-up: {early:?}"
    );
    let outcome = follower.outcome(WAIT).await.expect("the chain finishes");
    worker.stop().await;
    assert!(outcome.succeeded, "{:?}", outcome.events);
    assert_eq!(ids(&outcome.events), vec!["held", "held.1"]);
    assert_eq!(proxy.creates_with("RunInstances", "held"), 1, "one launch");
    assert_eq!(
        proxy.count(Service::Ec2, "CreateSnapshot").arrived,
        1,
        "one snapshot call"
    );
}

/// A copy that carries a success whose follow-ups are still to be enqueued, but whose body
/// does not decode: nothing it carries is believed (a worker carries an outcome only for a
/// job it could read, so a sender wrote this one, with or without a ledger to ask). No success
/// is announced; the message goes to the dead-letter queue as what it is, a body that is no
/// job, and its failure event says so.
#[tokio::test]
async fn a_carried_outcome_of_a_body_that_does_not_decode_is_not_believed() {
    let t = TestStack::new("undecodable-chain").await;
    let event = JobEvent::new(
        shoal_common::event::EventSource::not_run(
            Some("cut-1".into()),
            Some("canary".into()),
            1,
            "m-0".into(),
            "w-0".into(),
        ),
        JobStatus::Succeeded,
        Some(json!({"slept_ms": 0})),
        None,
    );
    let mut event = event;
    event.follow_ups = vec!["cut-1.1".into()];
    let state = json!({
        "failures": 0, "runs": 1, "copies": 1,
        "outcome": event, "follow_ups_pending": true,
    });
    t.clients
        .sqs
        .send_message()
        .queue_url(&t.stack.queue_url)
        .message_body(r#"{"schema_version": 1, "job_id": "cut-1", "kind": "canary", "params": {"sleep_ms": "not a number"}}"#)
        .message_attributes(
            "shoal-state",
            shoal_common::queue::attribute_value("String", state.to_string()),
        )
        .send()
        .await
        .expect("send");
    let worker = t
        .start_worker(t.worker_config("w"), default_registry())
        .await;
    let events = t.events(2, Duration::from_secs(8)).await;
    assert_eq!(events.len(), 1, "one event: {events:?}");
    assert_eq!(
        events[0].status,
        JobStatus::Failed,
        "nothing carried is announced"
    );
    assert!(events[0].follow_ups.is_empty());
    let dead = t.receive(&t.stack.dlq_url, 1, WAIT).await;
    assert_eq!(dead.len(), 1, "the message is in the DLQ");
    assert_eq!(
        shoal_tests::attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("InvalidMessage")
    );
    let reason = shoal_tests::attribute(&dead[0], "shoal-error").unwrap_or_default();
    assert!(reason.contains("submitted_at"), "names the field: {reason}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await
    );
    worker.stop().await;
}

/// An instance launched by the test (visible at once), and `producer/examples/nightly.json`
/// set on it, keeping `keep` in each region.
async fn nightly_request(t: &TestStack, keep: u32) -> serde_json::Value {
    let instance = new_instance(&t.clients.ec2, &t.stock_ami().await, None).await;
    let text = std::fs::read_to_string(shoal_tests::repo_path("producer/examples/nightly.json"))
        .expect("the example chain");
    let mut request: serde_json::Value = serde_json::from_str(&text).expect("json");
    request["params"]["instance_id"] = json!(instance);
    request["then"][0]["params"]["keep_count"] = json!(keep);
    request["then"][1]["then"][0]["params"]["keep_count"] = json!(keep);
    request
}

/// One night of the nightly chain: every step's event, the snapshot it took and its copy.
struct Night {
    events: Vec<JobEvent>,
    taken: String,
    copied: String,
}

impl Night {
    async fn run(t: &TestStack, request: &serde_json::Value) -> Night {
        let job = JobEnvelope::from_request(request.clone()).expect("a valid chain");
        let outcome = run_chain(t, &job).await;
        assert!(outcome.succeeded, "{:?}", outcome.events);
        let mut night = Night {
            events: outcome.events,
            taken: String::new(),
            copied: String::new(),
        };
        night.taken = night.results("snapshot")[0]["snapshots"][0]["snapshot_id"]
            .as_str()
            .expect("id")
            .to_owned();
        night.copied = night.results("copy-snapshot")[0]["snapshot_id"]
            .as_str()
            .expect("id")
            .to_owned();
        // Start times a second apart, as nights are.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        night
    }

    fn results(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e.kind.as_deref() == Some(kind))
            .filter_map(|e| e.result.clone())
            .collect()
    }
}

fn west(sdk: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(sdk)
            .region(aws_sdk_ec2::config::Region::new("us-west-2"))
            .build(),
    )
}

/// Which of `ids` the observer's `ec2` still finds.
async fn still_there(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> Vec<bool> {
    let mut found = Vec::new();
    for id in ids {
        found.push(snapshot_listed(ec2, id).await);
    }
    found
}

/// The nightly flow as one chain (`producer/examples/nightly.json`): snapshot an instance's
/// volumes, prune them to the newest N, copy the new snapshot to a second region and prune
/// the copies there to the newest N. Run as a schedule runs it, night after night, with N = 2
/// (moto serves both regions in one server): after four nights each region holds two, the
/// newest, and every night's prunes say what they deleted.
#[tokio::test(flavor = "multi_thread")]
async fn the_nightly_chain_snapshots_copies_and_keeps_the_newest_in_each_region() {
    let t = TestStack::new("nightly").await;
    let _worker = worker(&t).await;
    let request = nightly_request(&t, 2).await;
    let mut taken = Vec::new();
    let mut copied = Vec::new();
    for night in 0..4 {
        let n = Night::run(&t, &request).await;
        let prunes = n.results("prune-snapshots");
        assert_eq!(prunes.len(), 2, "one prune in each region");
        for pruned in &prunes {
            let deleted = pruned["deleted"].as_array().expect("deleted").len();
            assert_eq!(deleted, usize::from(night >= 2), "night {night}: {pruned}");
        }
        taken.push(n.taken);
        copied.push(n.copied);
    }
    let kept = [false, false, true, true];
    assert_eq!(still_there(&t.clients.ec2, &taken).await, kept, "us-east-1");
    assert_eq!(still_there(&west(&t.sdk), &copied).await, kept, "us-west-2");
}

/// The same four nights while EC2 lags 2 s behind every create (new snapshots, copies and
/// their tags unlisted) and every delete (a deleted snapshot still listed). Each step waits
/// out what it cannot see yet; no night fails. Retention may only run late, never early: a
/// prune cannot count the snapshot taken moments before it, so a night may keep one more
/// than two, but after every night the newest two taken (and copied) so far are there, and
/// at the end each region holds two or three.
#[tokio::test(flavor = "multi_thread")]
async fn the_nightly_chain_keeps_the_newest_in_each_region_while_ec2_lags() {
    let (proxy, t) = TestStack::behind_proxy(shoal_common::stack::StackSpec::new(
        shoal_tests::unique("nightly-lag"),
    ))
    .await;
    let request = nightly_request(&t, 2).await;
    proxy.eventual_consistency(Duration::from_secs(2), Duration::from_secs(2));
    proxy.lingering_deletes(Duration::from_secs(2));
    // Windows well past the lag, as the 60 s default is past AWS's usual: a copy that waited
    // for its source to be listed pays one window before it creates (its earlier run might
    // have), so the window sets this test's length.
    let settings = shoal_worker::handlers::Ec2Settings {
        wait_check_min: Duration::from_secs(1),
        consistency_window: Duration::from_secs(6),
        ..Default::default()
    };
    let mut config = t.worker_config("nightly-lag");
    config.consistency_window = Duration::from_secs(6);
    let _worker = TestStack::start_worker_with(
        &proxy.sdk().await,
        config,
        shoal_worker::handlers::registry_with(settings),
    )
    .await;
    let west = west(&t.sdk);
    let mut taken = Vec::new();
    let mut copied = Vec::new();
    for night in 0..4 {
        let n = Night::run(&t, &request).await;
        taken.push(n.taken);
        copied.push(n.copied);
        for (ec2, ids, region) in [
            (&t.clients.ec2, &taken, "us-east-1"),
            (&west, &copied, "us-west-2"),
        ] {
            let there = still_there(ec2, ids).await;
            let newest = &there[there.len().saturating_sub(2)..];
            assert!(
                newest.iter().all(|kept| *kept),
                "{region}, night {night}: the newest two stay: {there:?}"
            );
            if night == 3 {
                let kept = there.iter().filter(|kept| **kept).count();
                assert!((2..=3).contains(&kept), "{region}: {there:?}");
            }
        }
    }
    assert_eq!(
        proxy.count(Service::Ec2, "CopySnapshot").forwarded,
        4,
        "one copy a night"
    );
}
