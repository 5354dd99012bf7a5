//! The worker runtime against the emulator: what happens to a message on success,
//! transient and permanent failure, malformed input, long jobs, FIFO groups and per-kind
//! limits, and what the metrics say about it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_common::config::QueueTarget;
use shoal_common::error::ErrorClass;
use shoal_common::event::JobStatus;
use shoal_common::job::Canary;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, eventually, metric, metric_value, unique, TestStack};
use shoal_worker::handlers::default_registry;
use shoal_worker::{JobContext, JobError, Outcome, Registry};

const WAIT: Duration = Duration::from_secs(30);

async fn enqueue_canary(t: &TestStack, job_id: &str) -> JobEnvelope {
    let envelope = JobEnvelope::new(Job::new(Canary::default()))
        .with_job_id(JobId::parse(job_id).expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&envelope, &SendOptions::default())
        .await
        .expect("enqueue");
    envelope
}

/// A registry whose canary handler is `f`.
fn canary_handler<F, Fut>(f: F) -> Registry
where
    F: Fn(JobContext, Canary) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Outcome, JobError>> + Send + 'static,
{
    let mut registry = Registry::new();
    registry.register_fn(f);
    registry
}

#[tokio::test]
async fn a_successful_job_publishes_one_event_and_leaves_the_queue() {
    let t = TestStack::new("success").await;
    let job = enqueue_canary(&t, "ok-1").await;
    let worker = t
        .start_worker(t.worker_config("w1"), default_registry())
        .await;

    let events = t.events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    let e = &events[0];
    assert_eq!(e.job_id.as_deref(), Some("ok-1"));
    assert_eq!(e.kind.as_deref(), Some("canary"));
    assert_eq!(e.status, JobStatus::Succeeded);
    assert_eq!(e.attempts, 1);
    assert_eq!(e.worker_id, "w1");
    assert_eq!(
        e.result.as_ref().map(|r| r["worker_id"].clone()),
        Some(serde_json::json!("w1"))
    );
    assert_eq!(e.timings.submitted_at, Some(job.submitted_at));
    assert!(e.timings.enqueued_at.is_some() && e.timings.queue_ms.is_some());
    assert!(
        eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await,
        "the message was deleted"
    );
    worker.stop().await;
    assert!(
        t.events(1, Duration::from_secs(2)).await.is_empty(),
        "exactly one event"
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
}

#[tokio::test]
async fn a_transient_failure_is_redelivered_after_the_backoff_with_the_receive_count_rising() {
    let t = TestStack::new("transient").await;
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let log = seen.clone();
    let registry = canary_handler(move |ctx: JobContext, _| {
        let log = log.clone();
        async move {
            log.lock()
                .expect("lock")
                .push((ctx.attempt, Instant::now()));
            if ctx.attempt < 3 {
                Err(JobError::transient("RequestLimitExceeded", "slow down"))
            } else {
                Ok(Outcome::Done(serde_json::json!({"attempt": ctx.attempt})))
            }
        }
    });
    enqueue_canary(&t, "flaky-1").await;
    let worker = t.start_worker(t.worker_config("w1"), registry).await;

    let events = t.events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    assert_eq!(events[0].status, JobStatus::Succeeded);
    assert_eq!(events[0].attempts, 3);
    let seen = seen.lock().expect("lock").clone();
    let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        attempts,
        vec![1, 2, 3],
        "the receive count rises with each delivery"
    );
    for pair in seen.windows(2) {
        // retry_base 1 s, jittered ±50%: never sooner than half a second.
        assert!(
            pair[1].1 - pair[0].1 >= Duration::from_millis(500),
            "redelivered after the backoff"
        );
    }
    let text = worker.get("/metrics").await.1;
    assert_eq!(
        metric(&text, r#"shoal_jobs_retried_total{kind="canary"}"#),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"shoal_jobs_failed_total{class="transient",kind="canary"}"#
        ),
        2.0
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_job_failing_on_every_attempt_lands_in_the_dead_letter_queue_after_the_last() {
    let mut spec = StackSpec::new(unique("exhaust"));
    spec.max_receive_count = 3;
    let t = TestStack::with_spec(spec).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let registry = canary_handler(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err(JobError::transient("InternalError", "try later")) }
    });
    enqueue_canary(&t, "doomed-1").await;
    let mut config = t.worker_config("w1");
    config.max_attempts = 3;
    let worker = t.start_worker(config, registry).await;

    let events = t.events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    let error = events[0].error.as_ref().expect("error");
    assert_eq!(events[0].status, JobStatus::Failed);
    assert_eq!(events[0].attempts, 3);
    assert_eq!(error.code.as_deref(), Some("AttemptsExhausted"));
    assert!(error.dead_lettered);
    assert!(error.message.contains("InternalError"), "{}", error.message);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let dead = t.receive(&t.stack.dlq_url, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("AttemptsExhausted")
    );
    assert_eq!(attribute(&dead[0], "shoal-attempts").as_deref(), Some("3"));
    assert_eq!(
        attribute(&dead[0], "kind").as_deref(),
        Some("canary"),
        "the sender's attributes travel along"
    );
    assert!(eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await);
    worker.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_lands_in_the_dead_letter_queue_at_once_with_its_reason() {
    let t = TestStack::new("permanent").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let registry = canary_handler(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            Err(JobError::permanent(
                "InvalidAMIID.NotFound",
                "The image id '[ami-12345678]' does not exist",
            ))
        }
    });
    let job = enqueue_canary(&t, "bad-ami-1").await;
    let worker = t.start_worker(t.worker_config("w1"), registry).await;

    let events = t.events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    assert_eq!(events[0].attempts, 1, "not retried");
    let error = events[0].error.as_ref().expect("error");
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("InvalidAMIID.NotFound"));
    let dead = t.receive(&t.stack.dlq_url, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].body(),
        Some(job.to_json().as_str()),
        "the DLQ holds the job as sent"
    );
    assert_eq!(
        attribute(&dead[0], "shoal-error-class").as_deref(),
        Some("permanent")
    );
    assert_eq!(
        attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("InvalidAMIID.NotFound")
    );
    assert!(attribute(&dead[0], "shoal-error")
        .unwrap_or_default()
        .contains("does not exist"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let text = worker.get("/metrics").await.1;
    assert_eq!(
        metric(
            &text,
            r#"shoal_jobs_dead_lettered_total{kind="canary",reason="permanent"}"#
        ),
        1.0
    );
    worker.stop().await;
}

#[tokio::test]
async fn each_malformed_message_lands_in_the_dead_letter_queue_and_the_worker_goes_on() {
    let t = TestStack::new("malformed").await;
    let ok = r#""schema_version":1,"job_id":"m","submitted_at":"2026-11-24T00:00:00Z""#;
    let cases = [
        ("not json".to_owned(), "body"),
        ("{}".to_owned(), "schema_version"),
        ("[1,2,3]".to_owned(), "body"),
        (format!(r#"{{{ok},"kind":"launch-rockets","params":{{}}}}"#), "kind"),
        (format!(r#"{{{ok},"kind":"canary","params":{{"sleep_ms":1,"colour":"red"}}}}"#), "params.colour"),
        (format!(r#"{{{ok},"kind":"run-instances","params":{{"image_id":"ami-xyz","instance_type":"t2.micro"}}}}"#), "params.image_id"),
        (r#"{"schema_version":9,"job_id":"m","submitted_at":"2026-11-24T00:00:00Z","kind":"canary"}"#.to_owned(), "schema_version"),
        (format!(r#"{{{ok},"kind":"canary","params":{{}},"priority":1}}"#), "priority"),
    ];
    for (body, _) in &cases {
        t.clients
            .sqs
            .send_message()
            .queue_url(&t.stack.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send raw");
    }
    enqueue_canary(&t, "after-the-junk").await;
    let worker = t
        .start_worker(t.worker_config("w1"), default_registry())
        .await;

    let events = t.events(cases.len() + 1, WAIT).await;
    assert_eq!(events.len(), cases.len() + 1);
    let succeeded: Vec<_> = events
        .iter()
        .filter(|e| e.status == JobStatus::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 1, "the worker went on to the valid job");
    assert_eq!(succeeded[0].job_id.as_deref(), Some("after-the-junk"));

    let dead = t.receive(&t.stack.dlq_url, cases.len(), WAIT).await;
    assert_eq!(dead.len(), cases.len());
    for (body, field) in &cases {
        let msg = dead
            .iter()
            .find(|m| m.body() == Some(body.as_str()))
            .unwrap_or_else(|| panic!("{body} is in the DLQ"));
        assert_eq!(
            attribute(msg, "shoal-error-code").as_deref(),
            Some("InvalidMessage")
        );
        let reason = attribute(msg, "shoal-error").unwrap_or_default();
        assert!(
            reason.starts_with(field),
            "{body}: reason `{reason}` names `{field}`"
        );
    }
    assert!(eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await);
    let text = worker.get("/metrics").await.1;
    assert_eq!(
        metric(
            &text,
            r#"shoal_jobs_dead_lettered_total{kind="unknown",reason="malformed"}"#
        ),
        cases.len() as f64
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_job_longer_than_three_visibility_timeouts_runs_once_thanks_to_the_heartbeat() {
    let t = TestStack::new("long").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let registry = canary_handler(move |ctx: JobContext, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(7)).await;
            Ok(Outcome::Done(serde_json::json!({"attempt": ctx.attempt})))
        }
    });
    enqueue_canary(&t, "long-1").await;
    let mut config = t.worker_config("w1");
    config.visibility_timeout = Duration::from_secs(2);
    let first = t.start_worker(config.clone(), registry.clone()).await;
    // A second worker polls the same queue the whole time and must never see the job.
    config.worker_id = "w2".into();
    let second = t.start_worker(config, registry).await;

    let events = t.events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    assert_eq!(events[0].attempts, 1);
    assert!(events[0].timings.run_ms >= 7000);
    assert!(t.events(1, Duration::from_secs(3)).await.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "processed once");
    let extended =
        first.metrics.visibility_extensions.get() + second.metrics.visibility_extensions.get();
    assert!(
        extended >= 3,
        "the heartbeat extended the message ({extended} times)"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn fifo_messages_of_one_group_run_in_order_one_at_a_time() {
    let mut spec = StackSpec::new(unique("fifo-order"));
    spec.fifo = true;
    let t = TestStack::with_spec(spec).await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    let jobs: Vec<JobEnvelope> = (0..6)
        .map(|i| {
            JobEnvelope::new(Job::new(Canary { sleep_ms: 50 }))
                .with_job_id(JobId::parse(&format!("step-{i}")).expect("id"))
        })
        .collect();
    let options = SendOptions {
        message_group_id: Some("tenant-1".into()),
        ..SendOptions::default()
    };
    for job in &jobs {
        producer.enqueue(job, &options).await.expect("enqueue");
    }
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (o, r, m) = (order.clone(), running.clone(), most.clone());
    let registry = canary_handler(move |ctx: JobContext, params: Canary| {
        let (o, r, m) = (o.clone(), r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            o.lock().expect("lock").push(ctx.job_id.to_string());
            tokio::time::sleep(Duration::from_millis(params.sleep_ms)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome::Done(serde_json::Value::Null))
        }
    });
    let worker = t.start_worker(t.worker_config("w1"), registry).await;
    let events = t.events(jobs.len(), WAIT).await;
    assert_eq!(
        events.len(),
        jobs.len(),
        "{} of {} events arrived",
        events.len(),
        jobs.len()
    );
    let expected: Vec<String> = jobs.iter().map(|j| j.job_id.to_string()).collect();
    assert_eq!(*order.lock().expect("lock"), expected, "in the order sent");
    assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
    worker.stop().await;
}

/// FIFO, custom groups and a kind limit of one, with fewer worker slots than groups: the
/// holder of the kind's slot gives its worker slot back while it waits for EC2, and the
/// messages of the other groups take them all to wait for the kind's slot. If they waited
/// holding those worker slots, the holder could never run again, and neither could they.
#[tokio::test]
async fn fifo_waiters_for_a_kind_slot_never_starve_its_holder() {
    let mut spec = StackSpec::new(unique("fifo-stall"));
    spec.fifo = true;
    let t = TestStack::with_spec(spec).await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    let ids: Vec<String> = (0..4).map(|i| format!("stall-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let envelope = JobEnvelope::new(Job::new(Canary::default()))
            .with_job_id(JobId::parse(id).expect("id"));
        let options = SendOptions {
            message_group_id: Some(format!("tenant-{i}")),
            ..SendOptions::default()
        };
        producer
            .enqueue(&envelope, &options)
            .await
            .expect("enqueue");
    }
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let s = seen.clone();
    // Each job waits once for "EC2", long enough for the poller to fill every free slot.
    let registry = canary_handler(move |ctx: JobContext, _| {
        let first = s.lock().expect("lock").insert(ctx.job_id.to_string());
        async move {
            Ok(if first {
                Outcome::CheckAgainAfter(Duration::from_millis(1500))
            } else {
                Outcome::Done(serde_json::Value::Null)
            })
        }
    });
    let mut config = t.worker_config("w1");
    config.concurrency = 2;
    config.kind_limits.insert(shoal_common::JobKind::Canary, 1);
    let worker = t.start_worker(config, registry).await;
    let events = t.events(ids.len(), Duration::from_secs(60)).await;
    assert_eq!(
        events.len(),
        ids.len(),
        "the worker stalled: {} of {} jobs finished; queue depth {}",
        events.len(),
        ids.len(),
        t.depth(&t.stack.queue_url).await
    );
    assert!(events.iter().all(|e| e.status == JobStatus::Succeeded));
    worker.stop().await;
}

#[tokio::test]
async fn a_kind_limit_bounds_that_kind_and_its_jobs_still_all_complete() {
    let t = TestStack::new("kind-limit").await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let registry = canary_handler(move |_, _| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome::Done(serde_json::Value::Null))
        }
    });
    for i in 0..4 {
        enqueue_canary(&t, &format!("limited-{i}")).await;
    }
    let mut config = t.worker_config("w1");
    config.kind_limits.insert(shoal_common::JobKind::Canary, 1);
    config.max_attempts = 50;
    let worker = t.start_worker(config, registry).await;
    let events = t.events(4, Duration::from_secs(60)).await;
    assert_eq!(
        events.len(),
        4,
        "events {events:?}; queue depth {}, DLQ depth {}",
        t.depth(&t.stack.queue_url).await,
        t.depth(&t.stack.dlq_url).await
    );
    assert!(events.iter().all(|e| e.status == JobStatus::Succeeded));
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "never more than the kind's limit at once"
    );
    worker.stop().await;
}

#[tokio::test]
async fn metrics_health_and_readiness_report_what_the_worker_did() {
    let t = TestStack::new("metrics").await;
    let registry = canary_handler(|ctx: JobContext, params: Canary| async move {
        if params.sleep_ms == 1 {
            return Err(JobError::permanent("InvalidParameterValue", "no"));
        }
        tokio::time::sleep(Duration::from_millis(params.sleep_ms)).await;
        Ok(Outcome::Done(serde_json::json!({"attempt": ctx.attempt})))
    });
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    for sleep_ms in [0, 0, 0, 0, 0, 1] {
        producer
            .enqueue(
                &JobEnvelope::new(Job::new(Canary { sleep_ms })),
                &SendOptions::default(),
            )
            .await
            .expect("enqueue");
    }
    let mut config = t.worker_config("w1");
    config.shutdown_grace = Duration::from_secs(20);
    let worker = t.start_worker(config, registry).await;
    assert_eq!(worker.get("/healthz").await.0, 200);
    assert_eq!(worker.get("/readyz").await.0, 200);
    assert_eq!(t.events(6, WAIT).await.len(), 6);

    let (status, text) = worker.get("/metrics").await;
    assert_eq!(status, 200);
    let m = |series: &str| metric(&text, series);

    assert_eq!(m(r#"shoal_jobs_received_total{kind="canary"}"#), 6.0);
    assert_eq!(m(r#"shoal_jobs_succeeded_total{kind="canary"}"#), 5.0);
    assert_eq!(
        m(r#"shoal_jobs_failed_total{class="permanent",kind="canary"}"#),
        1.0
    );
    assert_eq!(
        m(r#"shoal_jobs_dead_lettered_total{kind="canary",reason="permanent"}"#),
        1.0
    );
    assert_eq!(
        m(r#"shoal_events_published_total{kind="canary",status="succeeded"}"#),
        5.0
    );
    assert_eq!(
        m(r#"shoal_events_published_total{kind="canary",status="failed"}"#),
        1.0
    );
    assert_eq!(
        m(r#"shoal_job_duration_seconds_count{kind="canary",status="succeeded"}"#),
        5.0
    );
    assert_eq!(
        m(r#"shoal_job_queue_wait_seconds_count{kind="canary"}"#),
        6.0
    );
    assert_eq!(m(r#"shoal_jobs_in_flight{kind="canary"}"#), 0.0);
    assert_eq!(
        metric_value(&text, r#"shoal_jobs_succeeded_total{kind="run-instances"}"#),
        Some(0.0),
        "every kind starts at zero"
    );
    assert!(m(r#"shoal_aws_api_calls_total{operation="ReceiveMessage",service="sqs"}"#) >= 1.0);
    assert!(m(r#"shoal_aws_api_calls_total{operation="DeleteMessageBatch",service="sqs"}"#) >= 1.0);
    assert!(m(r#"shoal_aws_api_calls_total{operation="PublishBatch",service="sns"}"#) >= 1.0);
    assert!(
        m(r#"shoal_aws_api_calls_total{operation="SendMessage",service="sqs"}"#) >= 1.0,
        "the DLQ copy"
    );
    assert_eq!(m("shoal_worker_ready"), 1.0);

    // While shutting down with a job still running, the worker is alive but not ready.
    producer
        .enqueue(
            &JobEnvelope::new(Job::new(Canary { sleep_ms: 3000 })),
            &SendOptions::default(),
        )
        .await
        .expect("enqueue");
    assert!(
        eventually(WAIT, || async {
            metric(
                &worker.get("/metrics").await.1,
                r#"shoal_jobs_in_flight{kind="canary"}"#,
            ) == 1.0
        })
        .await
    );
    worker.shutdown.cancel();
    assert!(
        eventually(Duration::from_secs(2), || async {
            worker.get("/readyz").await.0 == 503
        })
        .await
    );
    assert_eq!(worker.get("/healthz").await.0, 200);
    worker.task.await.expect("worker");
    assert_eq!(
        t.events(1, WAIT).await.len(),
        1,
        "the job in flight finished within the grace period"
    );
}

/// Anyone who may send to the queue can write `shoal-state`. Counters near `u32::MAX` and a
/// state that is not JSON are sent straight to the queue: no panic (this test's worker is a
/// debug build, where an overflow would be one), no stall, no spinning on a forged attempt
/// number; each job is handled or dead-lettered with its reason.
#[tokio::test]
async fn forged_counters_and_unreadable_state_neither_panic_nor_stall() {
    let t = TestStack::new("forged").await;
    let registry = canary_handler(|_, params: Canary| async move {
        if params.sleep_ms == 1 {
            Err(JobError::transient("InternalError", "try again later"))
        } else {
            Ok(Outcome::Done(
                serde_json::json!({"slept_ms": params.sleep_ms}),
            ))
        }
    });
    let huge = u32::MAX;
    let cases = [
        (
            "forged-fails",
            1,
            format!(r#"{{"failures": {huge}, "runs": {huge}, "copies": {huge}}}"#),
        ),
        (
            "forged-works",
            0,
            format!(
                r#"{{"failures": {}, "runs": {huge}, "copies": {huge}}}"#,
                huge - 1
            ),
        ),
        ("unreadable", 0, "{not json".to_owned()),
        (
            "wrong-shape",
            0,
            r#"{"failures": -1, "progress": [1, 2]}"#.to_owned(),
        ),
    ];
    for (id, sleep_ms, state) in &cases {
        let body = serde_json::json!({
            "schema_version": 1, "job_id": id, "submitted_at": "2026-12-01T00:00:00Z",
            "kind": "canary", "params": {"sleep_ms": sleep_ms},
        });
        t.send_with_state(&body, state).await;
    }
    let mut config = t.worker_config("w1");
    config.max_attempts = 3;
    let worker = t.start_worker(config, registry).await;
    let events = t.events(cases.len(), WAIT).await;
    let status = |id: &str| {
        events
            .iter()
            .find(|e| e.job_id.as_deref() == Some(id))
            .map(|e| (e.status, e.error.as_ref().and_then(|err| err.code.clone())))
    };
    assert_eq!(
        status("forged-fails"),
        Some((JobStatus::Failed, Some("AttemptsExhausted".into()))),
        "a forged attempt count past the limit ends the job at once, with its reason: {events:?}"
    );
    for id in ["forged-works", "unreadable", "wrong-shape"] {
        assert_eq!(
            status(id),
            Some((JobStatus::Succeeded, None)),
            "{id}: {events:?}"
        );
    }
    let dead = t.receive(&t.stack.dlq_url, 2, Duration::from_secs(3)).await;
    assert_eq!(dead.len(), 1, "only the failing job is dead-lettered");
    assert_eq!(
        attribute(&dead[0], "shoal-error-code").as_deref(),
        Some("AttemptsExhausted")
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await,
        "every job left the queue"
    );
    assert_eq!(
        worker
            .metrics
            .handler_panics
            .with_label_values(&["canary"])
            .get(),
        0
    );
    worker.stop().await;
}
