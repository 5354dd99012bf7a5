//! Shoal on AWS's bad days. Every test runs the worker through the fault proxy
//! (`shoal_tests::fault_proxy`), which makes the emulator throttle, fail, go down, lag behind
//! its own creates, or lose answers, while the test watches the truth as an observer. Each
//! asserts what must hold on real AWS too: no outcome lost or mislabelled, no EC2 effect
//! twice, no job dead-lettered because of a wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use shoal_common::config::QueueTarget;
use shoal_common::error::ErrorClass;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::job::{
    Canary, CopySnapshot, CreateImage, RegisterImage, RestoreVolume, RunInstances, Snapshot, Tag,
};
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::{AwsFault, Fault, FaultProxy, Rule, Service, Trigger};
use shoal_tests::{
    attribute, eventually, job_filter, metric, moto, new_instance, new_snapshot, new_volume,
    plain_launch, unique, RunningWorker, TestStack,
};
use shoal_worker::handlers::{registry_with, Ec2Settings};
use shoal_worker::{JobContext, JobError, Outcome, Registry, WorkerConfig};

async fn start(proxy: &FaultProxy, config: WorkerConfig, registry: Registry) -> RunningWorker {
    let sdk = proxy.sdk().await;
    TestStack::start_worker_with(&sdk, config, registry).await
}

async fn enqueue(t: &TestStack, job: Job, job_id: &str, options: &SendOptions) {
    let envelope = JobEnvelope::new(job).with_job_id(JobId::parse(job_id).expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&envelope, options)
        .await
        .expect("enqueue");
}

/// Enqueues a default canary under each of `ids`.
async fn enqueue_canaries(t: &TestStack, ids: &[String]) {
    for id in ids {
        enqueue(t, Job::new(Canary::default()), id, &SendOptions::default()).await;
    }
}

/// Watches the events for all but the last five seconds of `outage`: none may get out.
async fn assert_no_event_during(t: &TestStack, outage: Duration, why: &str) {
    let during = t
        .events(1, outage.saturating_sub(Duration::from_secs(5)))
        .await;
    assert!(during.is_empty(), "{why}: {during:?}");
}

/// Handler runs by job id, for asserting that none ran twice.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, usize>>>);

impl Runs {
    fn record(&self, job_id: &JobId) {
        *self
            .0
            .lock()
            .expect("lock")
            .entry(job_id.to_string())
            .or_default() += 1;
    }

    fn of(&self, job_id: &str) -> usize {
        self.0
            .lock()
            .expect("lock")
            .get(job_id)
            .copied()
            .unwrap_or(0)
    }
}

fn by_job(events: &[JobEvent]) -> HashMap<String, Vec<&JobEvent>> {
    let mut map: HashMap<String, Vec<&JobEvent>> = HashMap::new();
    for e in events {
        map.entry(e.job_id.clone().unwrap_or_default())
            .or_default()
            .push(e);
    }
    map
}

/// The length of the SNS outage: 45 s, fifteen times what one delivery holds an announcement
/// in these tests (`announce_hold` is 3 s), so each outcome goes forward on several copies
/// before SNS is back; what matters is the outage outlasting the hold, not its length on a
/// clock. `SHOAL_SNS_OUTAGE_SECS=300` gives an operator's bad afternoon instead.
fn sns_outage() -> Duration {
    let secs = std::env::var("SHOAL_SNS_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    Duration::from_secs(secs)
}

#[tokio::test]
async fn an_sns_outage_longer_than_a_delivery_loses_no_outcome_and_reruns_no_handler() {
    let mut spec = StackSpec::new(unique("sns-outage"));
    spec.max_receive_count = 3;
    spec.visibility_timeout_secs = 5;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let outage = sns_outage();
    proxy.add(Rule::outage(
        Service::Sns,
        &["Publish", "PublishBatch"],
        AwsFault::ServiceUnavailable,
        outage,
    ));
    let outage_ends = Instant::now() + outage;

    let runs = Runs::default();
    let log = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, p: Canary| {
        log.record(&ctx.job_id);
        async move {
            if p.sleep_ms == 1 {
                Err(JobError::permanent(
                    "InvalidParameterValue",
                    "this job cannot succeed",
                ))
            } else {
                Ok(Outcome::Done(serde_json::json!({"attempt": ctx.attempt})))
            }
        }
    });
    let ok: Vec<String> = (0..4).map(|i| format!("outage-ok-{i}")).collect();
    enqueue_canaries(&t, &ok).await;
    enqueue(
        &t,
        Job::new(Canary { sleep_ms: 1 }),
        "outage-doomed",
        &SendOptions::default(),
    )
    .await;
    let mut config = t.worker_config("w");
    config.max_attempts = 3;
    config.retry_max = Duration::from_secs(20);
    let worker = start(&proxy, config, registry).await;

    // Nothing can be announced until the outage ends; then every outcome is.
    assert_no_event_during(&t, outage, "no event can get out during the outage").await;
    let events = t.events(5, Duration::from_secs(90)).await;
    assert!(Instant::now() >= outage_ends);
    let events = by_job(&events);
    for id in &ok {
        let e = events
            .get(id)
            .unwrap_or_else(|| panic!("{id}: no event arrived after the outage"));
        assert!(
            e.iter().all(|e| e.status == JobStatus::Succeeded),
            "{id}: {e:?}"
        );
        assert_eq!(runs.of(id), 1, "{id}: the handler ran once");
    }
    let doomed = events
        .get("outage-doomed")
        .expect("the failure is announced");
    assert!(doomed.iter().all(|e| e.status == JobStatus::Failed
        && e.error.as_ref().is_some_and(
            |err| err.dead_lettered && err.code.as_deref() == Some("InvalidParameterValue")
        )));
    assert_eq!(runs.of("outage-doomed"), 1, "the failing handler ran once");

    assert!(
        eventually(Duration::from_secs(30), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await,
        "every job left the queue"
    );
    let dead = t.receive(&t.stack.dlq_url, 2, Duration::from_secs(3)).await;
    assert_eq!(dead.len(), 1, "only the failing job is dead-lettered, once");
    assert_eq!(
        attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("InvalidParameterValue"),
        "with its reason"
    );
    let text = worker.get("/metrics").await.1;
    assert!(
        metric(&text, r#"shoal_announcements_carried_total{kind="canary"}"#) >= 5.0,
        "the outcomes went forward on copies"
    );
    worker.stop().await;
}

/// A dead-letter queue that refuses every `SendMessage` for longer than the job queue's
/// receives would last (`maxReceiveCount` 3, five-second visibility): a failure that cannot
/// reach the DLQ goes forward on copies that only dead-letter, so SQS's redrive never moves a
/// job without its reason, and no failing handler runs twice.
#[tokio::test]
async fn a_dlq_outage_longer_than_the_receives_keeps_every_reason_and_reruns_no_handler() {
    let mut spec = StackSpec::new(unique("dlq-outage"));
    spec.max_receive_count = 3;
    spec.visibility_timeout_secs = 5;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let outage = Duration::from_secs(45);
    let dlq = shoal_common::queue::name_from_url(&t.stack.dlq_url).to_owned();
    proxy.add(
        Rule::outage(
            Service::Sqs,
            &["SendMessage", "SendMessageBatch"],
            AwsFault::ServiceUnavailable,
            outage,
        )
        .on_queue(&dlq),
    );
    let outage_ends = Instant::now() + outage;

    let runs = Runs::default();
    let log = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, _: Canary| {
        log.record(&ctx.job_id);
        async move {
            Err::<Outcome, _>(JobError::permanent(
                "InvalidParameterValue",
                "this job cannot succeed",
            ))
        }
    });
    let doomed: Vec<String> = (0..5).map(|i| format!("dlq-down-{i}")).collect();
    enqueue_canaries(&t, &doomed).await;
    let mut config = t.worker_config("w");
    config.max_attempts = 3;
    config.retry_max = Duration::from_secs(8);
    let worker = start(&proxy, config, registry).await;

    assert_no_event_during(
        &t,
        outage,
        "no failure is announced before its job is in the DLQ",
    )
    .await;
    assert_eq!(
        t.depth(&t.stack.dlq_url).await,
        0,
        "SQS's redrive moved nothing without its reason"
    );
    let events = t.events(5, Duration::from_secs(90)).await;
    assert!(Instant::now() >= outage_ends);
    let events = by_job(&events);
    for id in &doomed {
        let e = events
            .get(id)
            .unwrap_or_else(|| panic!("{id}: no failure event after the outage"));
        assert_eq!(e.len(), 1, "{id}: one failure event: {e:?}");
        assert!(
            e[0].error.as_ref().is_some_and(
                |err| err.dead_lettered && err.code.as_deref() == Some("InvalidParameterValue")
            ),
            "{id}: {e:?}"
        );
        assert_eq!(runs.of(id), 1, "{id}: the failing handler ran once");
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await,
        "every job left the job queue"
    );
    let dead = t
        .receive(&t.stack.dlq_url, 10, Duration::from_secs(3))
        .await;
    assert_eq!(dead.len(), doomed.len(), "each job reached the DLQ once");
    for message in &dead {
        assert_eq!(
            attribute(message, "shoal-error-code").as_deref(),
            Some("InvalidParameterValue"),
            "with its reason"
        );
        assert_eq!(
            attribute(message, "shoal-state"),
            None,
            "and none of Shoal's carried state"
        );
    }
    let text = worker.get("/metrics").await.1;
    assert!(
        metric(&text, "shoal_dead_letters_carried_total") >= 5.0,
        "the failures went forward on copies"
    );
    worker.stop().await;
}

// ---- EC2 eventual consistency -------------------------------------------------------------

/// How long the proxy hides what was just created, and the worker's window: wider.
const HIDDEN: Duration = Duration::from_secs(15);

fn ec2_settings() -> Ec2Settings {
    Ec2Settings {
        wait_check_min: Duration::from_secs(1),
        consistency_window: Duration::from_secs(20),
        ..Ec2Settings::default()
    }
}

/// An instance with two attached volumes, launched by the observer (so visible at once).
async fn instance_with_two_volumes(t: &TestStack) -> String {
    let ami = t.stock_ami().await;
    let instance = new_instance(&t.clients.ec2, &ami, Some("us-east-1a")).await;
    let volume = new_volume(&t.clients.ec2, "us-east-1a").await;
    t.clients
        .ec2
        .attach_volume()
        .instance_id(&instance)
        .volume_id(volume)
        .device("/dev/sdf")
        .send()
        .await
        .expect("attach");
    instance
}

async fn snapshots_by_volume(t: &TestStack, job_id: &str) -> HashMap<String, usize> {
    let out = t
        .clients
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(job_filter(job_id))
        .send()
        .await
        .expect("snapshots");
    let mut by_volume = HashMap::new();
    for s in out.snapshots() {
        *by_volume
            .entry(s.volume_id().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    by_volume
}

fn launch(image_id: &str) -> RunInstances {
    RunInstances {
        max_count: 2,
        availability_zone: Some("us-east-1a".into()),
        disable_api_termination: true,
        tags: vec![Tag::new("Name", "lagging")],
        ..plain_launch(image_id)
    }
}

#[tokio::test]
async fn a_protected_launch_is_verified_while_ec2_still_hides_it() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("ec-launch"))).await;
    proxy.eventual_consistency(HIDDEN, HIDDEN);
    let ami = t.stock_ami().await;
    enqueue(
        &t,
        Job::new(launch(&ami)),
        "lag-launch",
        &SendOptions::default(),
    )
    .await;
    let worker = start(&proxy, t.worker_config("w"), registry_with(ec2_settings())).await;

    let events = t.events(1, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 1, "one event for the launch");
    let e = &events[0];
    assert_eq!(e.status, JobStatus::Succeeded, "{:?}", e.error);
    assert_eq!(
        proxy.creates_with("RunInstances", "lag-launch"),
        1,
        "launched once"
    );
    let instances = e.result.as_ref().expect("result")["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!instances.is_empty());
    for i in &instances {
        let id = i["instance_id"].as_str().expect("instance id");
        let protected = t
            .clients
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .expect("attribute")
            .disable_api_termination()
            .and_then(|v| v.value());
        assert_eq!(protected, Some(true), "{id} is protected");
    }
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "nothing dead-lettered");
    worker.stop().await;
}

#[tokio::test]
async fn a_create_image_whose_answer_was_lost_reports_success_with_one_image() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("ec-image"))).await;
    proxy.eventual_consistency(HIDDEN, HIDDEN);
    // The first CreateImage goes through, and its answer is cut off.
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["CreateImage"],
        Fault::Truncate,
        Trigger::Next(1),
    ));
    let ami = t.stock_ami().await;
    let source = new_instance(&t.clients.ec2, &ami, None).await;
    let name = unique("lost answer");
    let job = Job::new(CreateImage {
        instance_id: source,
        name: name.clone(),
        description: None,
        no_reboot: true,
        tags: vec![],
        wait: false,
        dry_run: false,
    });
    enqueue(&t, job, "lag-image", &SendOptions::default()).await;
    let worker = start(&proxy, t.worker_config("w"), registry_with(ec2_settings())).await;

    let event = t.one_event(Duration::from_secs(90)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    let images = t
        .clients
        .ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(&name).build())
        .send()
        .await
        .expect("images");
    assert_eq!(images.images().len(), 1, "one image");
    assert_eq!(
        event.result.as_ref().expect("result")["image_id"].as_str(),
        images.images()[0].image_id()
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

fn snapshot_of(instance: &str, wait: bool) -> Job {
    Job::new(Snapshot {
        volume_id: None,
        volume_name: None,
        instance_id: Some(instance.to_owned()),
        name: None,
        description: None,
        tags: vec![],
        wait,
        dry_run: false,
    })
}

#[tokio::test]
async fn a_snapshot_failing_mid_loop_and_waiting_makes_one_snapshot_per_volume() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("ec-snap"))).await;
    proxy.eventual_consistency(HIDDEN, HIDDEN);
    proxy.slow_snapshots(Duration::from_secs(8));
    // The second volume's CreateSnapshot fails: the first snapshot exists, hidden.
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["CreateSnapshot"],
        Fault::Error(AwsFault::InternalError),
        Trigger::After { skip: 1, count: 1 },
    ));
    let instance = instance_with_two_volumes(&t).await;
    enqueue(
        &t,
        snapshot_of(&instance, true),
        "lag-snap",
        &SendOptions::default(),
    )
    .await;
    let worker = start(&proxy, t.worker_config("w"), registry_with(ec2_settings())).await;

    let event = t.one_event(Duration::from_secs(120)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    let snapshots = event.result.as_ref().expect("result")["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(snapshots.len(), 2);
    assert!(
        snapshots.iter().all(|s| s["state"] == "completed"),
        "{snapshots:?}"
    );
    let per_volume = snapshots_by_volume(&t, "lag-snap").await;
    assert_eq!(per_volume.len(), 2, "{per_volume:?}");
    assert!(
        per_volume.values().all(|n| *n == 1),
        "one per volume: {per_volume:?}"
    );
    let text = worker.get("/metrics").await.1;
    assert!(metric(&text, r#"shoal_jobs_waiting_total{kind="snapshot"}"#) >= 1.0);
    assert!(metric(&text, r#"shoal_jobs_retried_total{kind="snapshot"}"#) >= 1.0);
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_stopped_during_create_snapshot_leaves_no_second_snapshot() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("ec-stop"))).await;
    proxy.eventual_consistency(HIDDEN, HIDDEN);
    // The first CreateSnapshot takes effect, but its answer comes too late for the worker.
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["CreateSnapshot"],
        Fault::DelayAnswer(Duration::from_secs(10)),
        Trigger::Next(1),
    ));
    let instance = instance_with_two_volumes(&t).await;
    enqueue(
        &t,
        snapshot_of(&instance, false),
        "stop-snap",
        &SendOptions::default(),
    )
    .await;
    let mut config = t.worker_config("first");
    config.shutdown_grace = Duration::from_secs(1);
    let first = start(&proxy, config.clone(), registry_with(ec2_settings())).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            proxy.count(Service::Ec2, "CreateSnapshot").forwarded >= 1
        })
        .await,
        "the first worker sent CreateSnapshot"
    );
    let metrics = first.metrics.clone();
    first.stop().await;
    assert_eq!(metrics.released_on_shutdown.get(), 1);

    config.worker_id = "second".into();
    let second = start(&proxy, config, registry_with(ec2_settings())).await;
    let event = t.one_event(Duration::from_secs(90)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    let per_volume = snapshots_by_volume(&t, "stop-snap").await;
    assert_eq!(per_volume.len(), 2, "{per_volume:?}");
    assert!(
        per_volume.values().all(|n| *n == 1),
        "one per volume: {per_volume:?}"
    );
    second.stop().await;
}

// ---- Waits and deferrals spend no attempts ------------------------------------------------

#[tokio::test]
async fn deferred_jobs_never_spend_their_attempts() {
    let mut spec = StackSpec::new(unique("defer"));
    spec.max_receive_count = 2;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    // A deferred job never ran: its one run must not be told otherwise, or an EC2 handler
    // would wait out the consistency window for nothing.
    let told_earlier_runs = Arc::new(AtomicUsize::new(0));
    let told = told_earlier_runs.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, _: Canary| {
        if ctx.created_since.is_some() {
            told.fetch_add(1, Ordering::SeqCst);
        }
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(Outcome::Done(serde_json::Value::Null))
        }
    });
    for i in 0..6 {
        enqueue(
            &t,
            Job::new(Canary::default()),
            &format!("defer-{i}"),
            &SendOptions::default(),
        )
        .await;
    }
    let mut config = t.worker_config("w");
    config.max_attempts = 2;
    config.kind_limits.insert(shoal_common::JobKind::Canary, 1);
    config.retry_base = Duration::from_millis(300);
    let worker = start(&proxy, config, registry).await;
    let events = t.events(6, Duration::from_secs(90)).await;
    assert_eq!(
        events.len(),
        6,
        "DLQ depth {}",
        t.depth(&t.stack.dlq_url).await
    );
    assert!(events
        .iter()
        .all(|e| e.status == JobStatus::Succeeded && e.attempts == 1));
    assert!(
        worker
            .metrics
            .jobs_deferred
            .with_label_values(&["canary"])
            .get()
            >= 4,
        "jobs were deferred (more often than their two receives would allow)"
    );
    assert_eq!(
        told_earlier_runs.load(Ordering::SeqCst),
        0,
        "no run was told of earlier runs"
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_long_fifo_wait_spends_no_receives() {
    let mut spec = StackSpec::new(unique("fifo-wait"));
    spec.fifo = true;
    spec.max_receive_count = 2;
    spec.visibility_timeout_secs = 2;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let checks = Arc::new(AtomicUsize::new(0));
    let counter = checks.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, _: Canary| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n < 12 {
                Ok(Outcome::CheckAgainAfter(Duration::from_millis(500)))
            } else {
                Ok(Outcome::Done(serde_json::json!({"attempt": ctx.attempt})))
            }
        }
    });
    enqueue(
        &t,
        Job::new(Canary::default()),
        "fifo-wait-1",
        &SendOptions::default(),
    )
    .await;
    let mut config = t.worker_config("w");
    config.max_attempts = 2;
    config.visibility_timeout = Duration::from_secs(2);
    let worker = start(&proxy, config, registry).await;
    let events = t.events(1, Duration::from_secs(60)).await;
    assert_eq!(
        events.len(),
        1,
        "DLQ depth {}",
        t.depth(&t.stack.dlq_url).await
    );
    assert_eq!(events[0].status, JobStatus::Succeeded);
    assert_eq!(events[0].attempts, 1, "twelve checks, one attempt");
    assert_eq!(checks.load(Ordering::SeqCst), 12);
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn fifo_order_holds_behind_a_job_longer_than_the_visibility_timeout() {
    let mut spec = StackSpec::new(unique("fifo-long"));
    spec.fifo = true;
    spec.visibility_timeout_secs = 4;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let options = SendOptions {
        message_group_id: Some("tenant".into()),
        ..SendOptions::default()
    };
    for (i, sleep_ms) in [10_000, 0, 0].into_iter().enumerate() {
        enqueue(
            &t,
            Job::new(Canary { sleep_ms }),
            &format!("long-{i}"),
            &options,
        )
        .await;
    }
    type Span = (String, Instant, Instant);
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let registry = |spans: Arc<Mutex<Vec<Span>>>| {
        let mut registry = Registry::new();
        registry.register_fn(move |ctx: JobContext, p: Canary| {
            let spans = spans.clone();
            async move {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
                spans
                    .lock()
                    .expect("lock")
                    .push((ctx.job_id.to_string(), start, Instant::now()));
                Ok(Outcome::Done(serde_json::Value::Null))
            }
        });
        registry
    };
    let mut config = t.worker_config("a");
    config.visibility_timeout = Duration::from_secs(4);
    let a = start(&proxy, config.clone(), registry(spans.clone())).await;
    config.worker_id = "b".into();
    let b = start(&proxy, config, registry(spans.clone())).await;

    let events = t.events(3, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 3, "{} of 3 events arrived", events.len());
    let spans = spans.lock().expect("lock").clone();
    let order: Vec<&str> = spans.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(order, ["long-0", "long-1", "long-2"], "each once, in order");
    for pair in spans.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "{} started before {} ended",
            pair[1].0,
            pair[0].0
        );
    }
    a.stop().await;
    b.stop().await;
}

// ---- A panicking handler -----------------------------------------------------------------

#[tokio::test]
async fn a_panicking_handler_fails_its_job_with_the_panic_message() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("panic"))).await;
    let mut registry = Registry::new();
    registry.register_fn(|_, p: Canary| async move {
        if p.sleep_ms == 7 {
            panic!("the handler hit a bug");
        }
        Ok(Outcome::Done(serde_json::Value::Null))
    });
    enqueue(
        &t,
        Job::new(Canary { sleep_ms: 7 }),
        "panics",
        &SendOptions::default(),
    )
    .await;
    enqueue(
        &t,
        Job::new(Canary::default()),
        "after-panic",
        &SendOptions::default(),
    )
    .await;
    let worker = start(&proxy, t.worker_config("w"), registry).await;
    let events = by_job(&t.events(2, Duration::from_secs(30)).await)
        .into_iter()
        .map(|(id, e)| (id, e[0].clone()))
        .collect::<HashMap<_, _>>();
    let failed = events.get("panics").expect("a failure event");
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.as_ref().expect("error");
    assert_eq!(error.code.as_deref(), Some("HandlerPanicked"));
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(
        error.message.contains("the handler hit a bug"),
        "{}",
        error.message
    );
    assert!(error.dead_lettered);
    assert_eq!(
        events.get("after-panic").map(|e| e.status),
        Some(JobStatus::Succeeded),
        "the worker goes on"
    );
    let dead = t.receive(&t.stack.dlq_url, 1, Duration::from_secs(5)).await;
    assert_eq!(
        attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("HandlerPanicked")
    );
    let text = worker.get("/metrics").await.1;
    assert_eq!(
        metric(&text, r#"shoal_handler_panics_total{kind="canary"}"#),
        1.0
    );
    assert_eq!(metric(&text, r#"shoal_jobs_in_flight{kind="canary"}"#), 0.0);
    worker.stop().await;
}

/// The worker binary, told of a queue and topic that need not exist, with `args`; run to
/// its exit: settings refused at start-up are refused before any call.
async fn worker_refusing(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-worker-for-tests"))
        .args(["--queue-url", "http://127.0.0.1:9/000000000000/none"])
        .args(["--topic-arn", "arn:aws:sns:us-east-1:000000000000:none"])
        .args(args)
        .envs(shoal_tests::aws_env("http://127.0.0.1:9"))
        .env_remove("SHOAL_LEDGER_TABLE")
        .env_remove("SHOAL_NO_LEDGER")
        .output()
        .await
        .expect("run the worker");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn contradictory_settings_stop_the_worker_at_start_up_with_the_reason() {
    let (code, stderr) =
        worker_refusing(&["--wait-check-min", "10m", "--wait-check-max", "5m"]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("wait_check_min") && stderr.contains("wait_check_max"),
        "{stderr}"
    );
}

/// Settings past what SQS, DynamoDB or the worker itself can honour stop the worker at
/// start-up, naming the field: before, a 999999 s visibility timeout started and then retried
/// `ReceiveMessage` every 500 ms for ever, an `--ec2-rate` for no operation paced nothing,
/// and a ledger TTL of centuries panicked on every write.
#[tokio::test]
async fn settings_past_their_bounds_stop_the_worker_naming_the_field() {
    let cases: [(&[&str], &str); 6] = [
        (&["--visibility-timeout", "999999s"], "visibility_timeout"),
        (&["--ec2-rate", "Frobnicate=2"], "ec2_rate"),
        (&["--ledger-ttl", "100000d", "--no-ledger"], "ledger_ttl"),
        (&["--announce-hold", "30d"], "announce_hold"),
        (&["--wait-time-seconds", "21"], "wait_time_seconds"),
        (&["--allow-regions", "mars-north"], "allow_regions"),
    ];
    for (args, field) in cases {
        let (code, stderr) = worker_refusing(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    }
}

/// A dead-letter queue that does not exist stops the worker at start-up, naming it: before,
/// the worker started, and every failure then circled on copies while events said
/// "dead-lettered".
#[tokio::test]
async fn a_dead_letter_queue_that_does_not_exist_stops_the_worker() {
    let t = TestStack::new("no-dlq").await;
    let gone = format!(
        "{}/000000000000/{}",
        moto().endpoint.trim_end_matches('/'),
        unique("gone")
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-worker-for-tests"))
        .args(["--queue-url", &t.stack.queue_url])
        .args(["--topic-arn", &t.stack.topic_arn])
        .args(["--dlq-url", &gone, "--no-ledger"])
        .envs(shoal_tests::aws_env(&moto().endpoint))
        .env_remove("SHOAL_LEDGER_TABLE")
        .output()
        .await
        .expect("run the worker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("dlq_url") && stderr.contains(&gone),
        "{stderr}"
    );
}

/// A worker told of no ledger refuses to start, before any call, naming the setting and
/// what running without one gives up; `--no-ledger` is the only way round it.
#[tokio::test]
async fn a_worker_without_a_ledger_refuses_to_start_unless_told_no_ledger() {
    let (code, stderr) = worker_refusing(&[]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("ledger_table") && stderr.contains("--no-ledger"),
        "{stderr}"
    );
    let (code, stderr) = worker_refusing(&["--ledger-table", "t", "--no-ledger"]).await;
    assert_eq!(
        code,
        Some(2),
        "a table and --no-ledger contradict: {stderr}"
    );
}

// ---- The job ledger: one run per job id across the fleet --------------------------------

/// One job id sent twice, on two workers, while EC2 hides what was just created for 15 s:
/// without the ledger each copy was a "first run", trusted an empty lookup by tag, and
/// created again (two snapshots and two AMIs per job id). With it, the second copy finds
/// the first's claim (or its recorded outcome) and creates nothing: one `CreateSnapshot` per
/// volume, one `CreateImage`, `RunInstances`, `CopySnapshot`, `RegisterImage` and
/// `CreateVolume` per job id, and no failure event. The last three wait for what they made,
/// which EC2 does not list yet: the wait asks for the recorded id until EC2 shows it. Each
/// pair is sent 1.5 s apart, and one pair of each kind at the same instant.
#[tokio::test]
async fn a_job_id_sent_twice_to_two_workers_while_ec2_lags_creates_once() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("ledger-twice"))).await;
    // The instance and its volumes exist before EC2 starts to lag: the lag is for what the
    // jobs create.
    let instance = instance_with_two_volumes(&t).await;
    // A snapshot to copy, register and restore.
    let volume = new_volume(&t.clients.ec2, "us-east-1a").await;
    let source = new_snapshot(&t.clients.ec2, &volume, &[]).await;
    proxy.eventual_consistency(HIDDEN, HIDDEN);
    let sdk = proxy.sdk().await;
    let ledger = t.ledger(&sdk).await;
    let image = |i: usize| {
        Job::new(CreateImage {
            instance_id: instance.clone(),
            name: unique(&format!("twice {i}")),
            description: None,
            no_reboot: true,
            tags: vec![],
            wait: false,
            dry_run: false,
        })
    };
    let ami = t.stock_ami().await;
    let mut jobs: Vec<(String, Job)> = Vec::new();
    for i in 0..3 {
        jobs.push((format!("twice-snap-{i}"), snapshot_of(&instance, false)));
        jobs.push((format!("twice-image-{i}"), image(i)));
        // The emulator ignores `ClientToken` (AWS does not): here only the ledger keeps a
        // second launch from happening.
        jobs.push((
            format!("twice-launch-{i}"),
            Job::new(RunInstances {
                max_count: 1,
                ..plain_launch(&ami)
            }),
        ));
        jobs.push((
            format!("twice-copy-{i}"),
            Job::new(CopySnapshot {
                snapshot_id: source.clone(),
                destination_region: "us-west-2".into(),
                source_region: None,
                description: None,
                encrypted: false,
                kms_key_id: None,
                tags: vec![],
                wait: true,
                dry_run: false,
            }),
        ));
        jobs.push((
            format!("twice-register-{i}"),
            Job::new(RegisterImage {
                snapshot_id: source.clone(),
                name: unique(&format!("twice register {i}")),
                description: None,
                root_device_name: "/dev/xvda".into(),
                architecture: "x86_64".into(),
                virtualization_type: "hvm".into(),
                ena_support: true,
                boot_mode: None,
                tags: vec![],
                wait: true,
                dry_run: false,
            }),
        ));
        jobs.push((
            format!("twice-restore-{i}"),
            Job::new(RestoreVolume {
                snapshot_id: Some(source.clone()),
                volume_id: None,
                volume_name: None,
                availability_zone: "us-east-1a".into(),
                tags: vec![],
                instance_id: None,
                device: None,
                wait: true,
                dry_run: false,
            }),
        ));
    }
    let kinds = jobs.len() / 3;
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let mut config = t.worker_config(name);
        config.ledger = Some(ledger.clone());
        workers.push(start(&proxy, config, registry_with(ec2_settings())).await);
    }
    // The same message twice (an SQS duplicate, a producer's retry): the first pair of each
    // kind at the same instant, the rest 1.5 s apart.
    for (n, (id, job)) in jobs.iter().enumerate() {
        let envelope = JobEnvelope::new(job.clone()).with_job_id(JobId::parse(id).expect("id"));
        let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
        let options = SendOptions::default();
        if n < kinds {
            let (a, b) = tokio::join!(
                producer.enqueue(&envelope, &options),
                producer.enqueue(&envelope, &options)
            );
            a.expect("enqueue");
            b.expect("enqueue");
        } else {
            producer
                .enqueue(&envelope, &SendOptions::default())
                .await
                .expect("enqueue");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            producer
                .enqueue(&envelope, &SendOptions::default())
                .await
                .expect("enqueue");
        }
    }
    // Two events per job id (one per message), every one a success.
    let events = t.events(jobs.len() * 2, Duration::from_secs(120)).await;
    let events = by_job(&events);
    for (id, _) in &jobs {
        let e = events.get(id).unwrap_or_else(|| panic!("{id}: no event"));
        assert!(
            e.iter().all(|e| e.status == JobStatus::Succeeded),
            "{id}: no failure event: {e:?}"
        );
        let made_by = [
            ("snap", "CreateSnapshot"),
            ("image", "CreateImage"),
            ("launch", "RunInstances"),
            ("copy", "CopySnapshot"),
            ("register", "RegisterImage"),
            ("restore", "CreateVolume"),
        ];
        let operation = made_by
            .iter()
            .find(|(kind, _)| id.contains(kind))
            .map(|(_, op)| *op)
            .unwrap_or_else(|| panic!("{id}: which create?"));
        let creates = proxy.creates_with(operation, id);
        let expected = if id.contains("snap") { 2 } else { 1 };
        assert_eq!(creates, expected, "{id}: one effect per job id");
        // A re-announcement is the recorded outcome, so it keeps its result.
        let results: Vec<_> = e.iter().map(|e| e.result.clone()).collect();
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "{id}: {results:?}"
        );
    }
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "nothing dead-lettered");
    let reannounced: u64 = workers
        .iter()
        .map(|w| w.metrics.ledger_outcomes_reannounced.get())
        .sum();
    let refused: u64 = workers
        .iter()
        .map(|w| w.metrics.ledger_claims_refused.get())
        .sum();
    assert!(
        reannounced + refused >= jobs.len() as u64,
        "each second copy found the first's claim or its outcome: {reannounced} re-announced, {refused} set aside"
    );
    for worker in workers {
        worker.stop().await;
    }
}

/// The ledger down for 20 s, on a queue that dead-letters after two receives: no create runs
/// without a claim, the jobs wait without spending attempts (nothing reaches the DLQ because
/// of the outage), and once the ledger is back each completes, once, with one effect.
#[tokio::test]
async fn a_ledger_outage_creates_nothing_spends_no_attempt_and_every_job_completes_after() {
    let mut spec = StackSpec::new(unique("ledger-down"));
    spec.max_receive_count = 2;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let instance = instance_with_two_volumes(&t).await;
    let sdk = proxy.sdk().await;
    let ledger = t.ledger(&sdk).await;
    let outage = Duration::from_secs(20);
    proxy.add(Rule::outage(
        Service::DynamoDb,
        &[],
        AwsFault::ServiceUnavailable,
        outage,
    ));
    let outage_ends = Instant::now() + outage;
    let ids: Vec<String> = (0..2).map(|i| format!("ledger-down-{i}")).collect();
    for id in &ids {
        enqueue(
            &t,
            snapshot_of(&instance, false),
            id,
            &SendOptions::default(),
        )
        .await;
    }
    let mut config = t.worker_config("w");
    config.max_attempts = 2;
    config.ledger = Some(ledger);
    let worker = start(&proxy, config, registry_with(ec2_settings())).await;

    assert_no_event_during(
        &t,
        outage,
        "nothing is announced while no job can be claimed",
    )
    .await;
    for id in &ids {
        assert_eq!(
            proxy.creates_with("CreateSnapshot", id),
            0,
            "{id}: nothing created without a claim"
        );
    }
    let events = t.events(ids.len(), Duration::from_secs(60)).await;
    assert!(Instant::now() >= outage_ends);
    let events = by_job(&events);
    for id in &ids {
        let e = events.get(id).unwrap_or_else(|| panic!("{id}: no event"));
        assert!(
            e.iter().all(|e| e.status == JobStatus::Succeeded),
            "{id}: {e:?}"
        );
        assert_eq!(
            proxy.creates_with("CreateSnapshot", id),
            2,
            "{id}: one per volume"
        );
    }
    assert_eq!(
        t.depth(&t.stack.dlq_url).await,
        0,
        "the outage dead-lettered nothing"
    );
    assert!(worker.metrics.ledger_unavailable.get() >= 1);
    worker.stop().await;
}

/// The ledger refuses, for 15 s, the one write that notes a launch before it is sent: no
/// `RunInstances` goes out meanwhile (a later run could not know of it), the wait spends no
/// attempt on a queue that dead-letters after two receives, and once the note is taken the
/// job launches, once.
#[tokio::test]
async fn a_create_the_ledger_did_not_note_is_not_sent() {
    let mut spec = StackSpec::new(unique("unnoted"));
    spec.max_receive_count = 2;
    let (proxy, t) = TestStack::behind_proxy(spec).await;
    let sdk = proxy.sdk().await;
    let ledger = t.ledger(&sdk).await;
    let outage = Duration::from_secs(15);
    proxy.add(
        Rule::outage(
            Service::DynamoDb,
            &["UpdateItem"],
            AwsFault::ServiceUnavailable,
            outage,
        )
        .containing("RunInstances"),
    );
    let id = "unnoted-launch";
    let ami = t.stock_ami().await;
    enqueue(
        &t,
        Job::new(plain_launch(&ami)),
        id,
        &SendOptions::default(),
    )
    .await;
    let mut config = t.worker_config("w");
    config.max_attempts = 2;
    config.ledger = Some(ledger);
    // Each try at the note takes seconds of the SDK's retries and the hold: a visibility
    // timeout of a few seconds would let a busy machine's heartbeat fall behind, and a
    // redelivery would count as a receive, which is not what this test is about.
    config.visibility_timeout = Duration::from_secs(30);
    let worker = start(&proxy, config, registry_with(ec2_settings())).await;

    assert_no_event_during(
        &t,
        outage,
        "nothing is announced while the launch cannot be noted",
    )
    .await;
    assert_eq!(
        proxy.creates_with("RunInstances", id),
        0,
        "nothing launched without its note"
    );
    assert!(
        worker.metrics.ledger_unavailable.get() >= 1,
        "the launch waited for its note"
    );
    let event = t.one_event(Duration::from_secs(60)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{:?}", event.error);
    assert_eq!(event.attempts, 1, "waiting for the note spent no attempt");
    assert_eq!(proxy.creates_with("RunInstances", id), 1, "launched once");
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    worker.stop().await;
}

/// An instance still changing state: EC2 answers `IncorrectInstanceState` (nothing done) to
/// the first two `ModifyInstanceAttribute` calls. Within the consistency window the job looks
/// again as a wait, spending no attempt, and succeeds once EC2 takes the call; before, the
/// code was permanent and the job was dead-lettered at once.
#[tokio::test]
async fn an_instance_still_changing_state_is_waited_for_not_dead_lettered() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("changing"))).await;
    let instance = new_instance(&t.clients.ec2, &t.stock_ami().await, None).await;
    // One Shoal launched, as the kind requires.
    t.clients
        .ec2
        .create_tags()
        .resources(&instance)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(shoal_common::validate::JOB_ID_TAG)
                .value("launched-earlier")
                .build(),
        )
        .send()
        .await
        .expect("tag");
    proxy.add(Rule::new(
        Some(Service::Ec2),
        &["ModifyInstanceAttribute"],
        Fault::Error(AwsFault::IncorrectInstanceState),
        Trigger::Next(2),
    ));
    let mut config = t.worker_config("w");
    config.consistency_window = Duration::from_secs(20);
    let worker = start(&proxy, config, registry_with(ec2_settings())).await;
    let job = Job::new(shoal_common::job::SetTerminationProtection {
        instance_ids: vec![instance.clone()],
        disable_api_termination: true,
    });
    enqueue(&t, job, "changing-1", &SendOptions::default()).await;
    let event = t.one_event(Duration::from_secs(40)).await;
    assert_eq!(event.status, JobStatus::Succeeded, "{event:?}");
    assert_eq!(event.attempts, 1, "the waits spent no attempt");
    assert_eq!(
        proxy.count(Service::Ec2, "ModifyInstanceAttribute").faulted,
        2
    );
    worker.stop().await;
}
