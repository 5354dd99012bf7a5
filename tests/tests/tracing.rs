//! One trace from enqueue to completion event.
//!
//! In process: the producer and a worker run here, under Shoal's own OpenTelemetry layer
//! (`shoal_common::telemetry::layer`) exporting to a collector in this test; the worker's
//! attempt span has the producer's enqueue span as parent, a chain's second job continues
//! the first's trace, the event carries the attempt's context (SNS attribute and CloudEvent
//! extension), a message without a context starts a trace of its own, and a malformed one is
//! ignored and counted.
//!
//! End to end: both binaries run as processes with the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at an OTLP/HTTP receiver this test serves on loopback (no OpenTelemetry
//! Collector can be installed from the package registries here; the receiver decodes the
//! protocol with the official `opentelemetry-proto` types).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::event::CloudEvent;
use shoal_common::JobEnvelope;
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, metric, moto, TestStack};
use shoal_worker::handlers::default_registry;

const WAIT: Duration = Duration::from_secs(60);

/// Every span ended in this process.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

impl Collected {
    fn named(&self, name: &str) -> Vec<SpanData> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The process-wide subscriber: Shoal's layer over a provider that hands each ended span to
/// the collector at once.
fn collected() -> &'static Collected {
    static COLLECTED: OnceLock<Collected> = OnceLock::new();
    COLLECTED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(shoal_common::telemetry::layer(&provider, "shoal-tests"));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        // The provider lives as long as the process.
        std::mem::forget(provider);
        collected
    })
}

fn job_span(spans: &Collected, job_id: &str) -> SpanData {
    let found: Vec<_> = spans
        .named("shoal.job")
        .into_iter()
        .filter(|s| attr(s, "job_id").as_deref() == Some(job_id))
        .collect();
    assert_eq!(found.len(), 1, "one attempt span for {job_id}: {found:#?}");
    found[0].clone()
}

fn traceparent_ids(traceparent: &str) -> (TraceId, SpanId) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (
        TraceId::from_hex(parts[1]).expect("trace id"),
        SpanId::from_hex(parts[2]).expect("span id"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workers_attempt_continues_the_producers_trace_and_the_event_carries_it() {
    let spans = collected();
    let t = TestStack::new("traced").await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    let job = JobEnvelope::from_request(json!({
        "job_id": "traced", "kind": "canary", "then": [{"kind": "canary"}],
    }))
    .expect("job");
    producer
        .enqueue(&job, &SendOptions::default())
        .await
        .expect("enqueue");
    // What reached SQS carries the enqueue's context.
    let queued = t.receive(&t.stack.queue_url, 1, WAIT).await;
    let sent_traceparent = attribute(&queued[0], "traceparent").expect("a traceparent attribute");
    t.clients
        .sqs
        .change_message_visibility()
        .queue_url(&t.stack.queue_url)
        .receipt_handle(queued[0].receipt_handle().unwrap_or_default())
        .visibility_timeout(0)
        .send()
        .await
        .expect("release");

    let worker = t
        .start_worker(t.worker_config("traced"), default_registry())
        .await;
    let events = t.receive(&t.stack.events_queue_url, 2, WAIT).await;
    worker.stop().await;
    assert_eq!(events.len(), 2);

    let enqueue = spans
        .named("shoal.enqueue")
        .into_iter()
        .find(|s| attr(s, "job_id").as_deref() == Some("traced"))
        .expect("the enqueue span");
    let trace_id = enqueue.span_context.trace_id();
    assert_eq!(
        traceparent_ids(&sent_traceparent),
        (trace_id, enqueue.span_context.span_id())
    );
    assert!(
        spans
            .named("SQS.SendMessage")
            .iter()
            .any(|s| s.parent_span_id == enqueue.span_context.span_id()),
        "the SDK's call is a child of the enqueue"
    );

    let first = job_span(spans, "traced");
    assert_eq!(first.span_context.trace_id(), trace_id, "one trace");
    assert_eq!(
        first.parent_span_id,
        enqueue.span_context.span_id(),
        "the attempt's parent is the enqueue"
    );
    assert_eq!(attr(&first, "kind").as_deref(), Some("canary"));
    // The test's own look at the message was its first receive.
    assert_eq!(attr(&first, "attempt").as_deref(), Some("2"));
    assert!(attr(&first, "queue_wait_ms").is_some());
    assert_eq!(attr(&first, "outcome").as_deref(), Some("done"));
    let follow_up = job_span(spans, "traced.1");
    assert_eq!(
        follow_up.span_context.trace_id(),
        trace_id,
        "a chain is one trace"
    );
    assert_eq!(follow_up.parent_span_id, first.span_context.span_id());

    for message in &events {
        let event: CloudEvent =
            serde_json::from_str(message.body().unwrap_or_default()).expect("event");
        let job_id = event.data.job_id.clone().expect("job id");
        let attempt = job_span(spans, &job_id);
        let carried = attribute(message, "traceparent").expect("the SNS attribute");
        assert_eq!(
            traceparent_ids(&carried),
            (trace_id, attempt.span_context.span_id()),
            "{job_id}'s event continues its attempt"
        );
        assert_eq!(event.traceparent.as_deref(), Some(carried.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_context_starts_a_trace_and_a_malformed_one_is_ignored_and_counted() {
    let spans = collected();
    let t = TestStack::new("untraced").await;
    for (job_id, traceparent) in [("plain", None), ("garbled", Some("00-not-a-trace-01"))] {
        let body = json!({"schema_version": 1, "job_id": job_id, "kind": "canary",
            "submitted_at": "2026-11-26T00:00:00Z", "params": {}});
        let mut send = t
            .clients
            .sqs
            .send_message()
            .queue_url(&t.stack.queue_url)
            .message_body(body.to_string());
        if let Some(value) = traceparent {
            send = send.message_attributes(
                "traceparent",
                shoal_common::queue::attribute_value("String", value),
            );
        }
        send.send().await.expect("send");
    }
    let worker = t
        .start_worker(t.worker_config("untraced"), default_registry())
        .await;
    let events = t.events(2, WAIT).await;
    assert!(events
        .iter()
        .all(|e| e.status == shoal_common::event::JobStatus::Succeeded));
    let (_, text) = worker.get("/metrics").await;
    worker.stop().await;
    assert_eq!(metric(&text, "shoal_trace_contexts_invalid_total"), 1.0);
    for job_id in ["plain", "garbled"] {
        let span = job_span(spans, job_id);
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "{job_id} starts a trace of its own"
        );
    }
}

// ---- End to end, through OTLP/HTTP ---------------------------------------------------------

/// Spans an OTLP/HTTP receiver got: (service.name, name, trace id, span id, parent span id).
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>, Vec<u8>, Vec<u8>)>>>;

/// Serves `POST /v1/traces` (protobuf) on a loopback port.
async fn otlp_receiver() -> (String, Received) {
    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(request) if path == "/v1/traces" => {
                                    let mut store = store.lock().expect("lock");
                                    for resource_spans in request.resource_spans {
                                        let service = resource_spans
                                            .resource
                                            .iter()
                                            .flat_map(|r| &r.attributes)
                                            .find(|kv| kv.key == "service.name")
                                            .and_then(|kv| kv.value.as_ref())
                                            .map(|v| format!("{:?}", v.value))
                                            .unwrap_or_default();
                                        for scope in resource_spans.scope_spans {
                                            for span in scope.spans {
                                                store.push((
                                                    service.clone(),
                                                    span.name,
                                                    span.trace_id,
                                                    span.span_id,
                                                    span.parent_span_id,
                                                ));
                                            }
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            ));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn both_binaries_export_one_trace_over_otlp_http() {
    const PRODUCER: &str = env!("CARGO_BIN_EXE_shoal-producer-for-tests");
    const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");
    let t = TestStack::new("otlp").await;
    let (endpoint, received) = otlp_receiver().await;
    let otel: HashMap<&str, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ]);
    let mut worker = shoal_tests::worker_command(
        WORKER,
        &moto().endpoint,
        &t.stack,
        "otlp-worker",
        format!("127.0.0.1:{}", shoal_tests::free_port())
            .parse()
            .expect("addr"),
    )
    .envs(&otel)
    .spawn()
    .expect("start the worker");
    let out = tokio::process::Command::new(PRODUCER)
        .args([
            "--queue-url",
            &t.stack.queue_url,
            "canary",
            "--job-id",
            "otlp-1",
        ])
        .envs(shoal_tests::aws_env(&moto().endpoint))
        .envs(&otel)
        .output()
        .await
        .expect("run the producer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.events(1, WAIT).await.len(), 1);

    let deadline = std::time::Instant::now() + WAIT;
    let linked = loop {
        let spans = received.lock().expect("lock").clone();
        let enqueue = spans.iter().find(|s| s.1 == "shoal.enqueue");
        let attempt = spans.iter().find(|s| s.1 == "shoal.job");
        if let (Some(enqueue), Some(attempt)) = (enqueue, attempt) {
            break Some((enqueue.clone(), attempt.clone()));
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = worker.start_kill();
    let (enqueue, attempt) = linked.expect("both processes exported their spans");
    assert!(enqueue.0.contains("shoal-producer"), "{:?}", enqueue.0);
    assert!(attempt.0.contains("shoal-worker"), "{:?}", attempt.0);
    assert_eq!(attempt.2, enqueue.2, "one trace id");
    assert_eq!(attempt.4, enqueue.3, "the attempt's parent is the enqueue");
}
