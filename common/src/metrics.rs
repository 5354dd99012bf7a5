//! Every Prometheus metric Shoal exports, declared in one place, and the SDK interceptor
//! that counts AWS API calls and errors for all clients at once.
//!
//! Names carry the `shoal_` prefix and a `kind` label where one applies. Kinds are known in
//! advance, so their series start at zero and dashboards see a flat line, not a gap.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::job::JobKind;

/// The label for messages whose kind could not be read.
pub const UNKNOWN_KIND: &str = "unknown";

/// Shoal's metrics. Cloning the handles inside is cheap; share one `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub jobs_received: IntCounterVec,
    pub jobs_succeeded: IntCounterVec,
    /// Failed attempts, by `class` (transient or permanent).
    pub jobs_failed: IntCounterVec,
    pub jobs_retried: IntCounterVec,
    /// By `reason`: permanent, attempts_exhausted, malformed, no_handler, not_allowed,
    /// job_id_reused.
    pub jobs_dead_lettered: IntCounterVec,
    /// Runs an operator cancelled while they ran, by kind.
    pub jobs_cancelled: IntCounterVec,
    /// Returned to the queue unstarted because their kind was at its concurrency limit.
    pub jobs_deferred: IntCounterVec,
    /// Put back on the queue, still waiting for an EC2 operation to finish.
    pub jobs_waiting: IntCounterVec,
    pub job_duration: HistogramVec,
    /// From `SentTimestamp` to the start of the attempt.
    pub job_queue_wait: HistogramVec,
    pub jobs_in_flight: IntGaugeVec,
    /// 1 for each kind an operator paused, as this worker last read the ledger.
    pub kind_paused: IntGaugeVec,
    pub api_calls: IntCounterVec,
    pub api_errors: IntCounterVec,
    pub visibility_extensions: IntCounter,
    pub heartbeat_failures: IntCounter,
    pub empty_receives: IntCounter,
    pub events_published: IntCounterVec,
    /// Deletes or visibility changes refused because the receipt handle went stale: the
    /// message was (or will be) delivered again.
    pub stale_receipts: IntCounter,
    /// Messages whose `traceparent` was not a W3C trace context: ignored, the job traced on
    /// its own.
    pub trace_contexts_invalid: IntCounter,
    pub released_on_shutdown: IntCounter,
    pub batch_entry_retries: IntCounterVec,
    pub ready: IntGauge,
    /// Messages on the job queue and its dead-letter queue (`queue`: jobs, dead-letter) by
    /// `state` (visible, in_flight, delayed), as this worker last sampled them. Every worker
    /// samples the same queues: aggregate with `max`, not `sum`.
    pub queue_messages: IntGaugeVec,
    pub queue_sample_failures: IntCounter,
    /// Handlers that panicked; each is also a failed attempt.
    pub handler_panics: IntCounterVec,
    /// Outcomes that could not be announced while one delivery held the message, and went
    /// forward on a fresh copy that only announces.
    pub announcements_carried: IntCounterVec,
    /// Failures the dead-letter queue could not take while one delivery held the message,
    /// carried forward on a fresh copy that only dead-letters.
    pub dead_letters_carried: IntCounter,
    /// Outcomes SNS (or SQS, for follow-ups) refused for good: never announced, their jobs
    /// dead-lettered with the reason (`EventRefused`).
    pub events_refused: IntCounter,
    /// Deliveries set aside because another run holds the job's ledger claim.
    pub ledger_claims_refused: IntCounter,
    /// Claims lost to another run mid-job: this run recorded and announced nothing more.
    pub ledger_leases_lost: IntCounter,
    /// Ledger calls that did not go through (a claim, an outcome) while the message was held.
    pub ledger_unavailable: IntCounter,
    /// Deliveries of a finished job that announced its recorded outcome and ran nothing.
    pub ledger_outcomes_reannounced: IntCounter,
    /// Every HTTP attempt of an AWS call, the SDK's own retries included.
    pub api_attempts: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c =
        IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    c
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    registry
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    h
}

/// From a millisecond canary to an hour-long EC2 wait.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let kind = &["kind"];
        let m = Metrics {
            jobs_received: counter_vec(
                &r,
                "shoal_jobs_received_total",
                "Job messages received",
                kind,
            ),
            jobs_succeeded: counter_vec(
                &r,
                "shoal_jobs_succeeded_total",
                "Jobs completed successfully",
                kind,
            ),
            jobs_failed: counter_vec(
                &r,
                "shoal_jobs_failed_total",
                "Failed job attempts by error class",
                &["kind", "class"],
            ),
            jobs_retried: counter_vec(
                &r,
                "shoal_jobs_retried_total",
                "Jobs returned to the queue for another attempt",
                kind,
            ),
            jobs_dead_lettered: counter_vec(
                &r,
                "shoal_jobs_dead_lettered_total",
                "Jobs moved to the dead-letter queue",
                &["kind", "reason"],
            ),
            jobs_cancelled: counter_vec(
                &r,
                "shoal_jobs_cancelled_total",
                "Runs an operator cancelled while they ran (a cancelled job not running is announced by whoever receives it)",
                kind,
            ),
            jobs_deferred: counter_vec(
                &r,
                "shoal_jobs_deferred_total",
                "Jobs returned unstarted because their kind was at its limit",
                kind,
            ),
            jobs_waiting: counter_vec(
                &r,
                "shoal_jobs_waiting_total",
                "Jobs returned to the queue to check an EC2 operation later",
                kind,
            ),
            job_duration: histogram_vec(
                &r,
                "shoal_job_duration_seconds",
                "Time to run one job attempt",
                &["kind", "status"],
                DURATION_BUCKETS.to_vec(),
            ),
            job_queue_wait: histogram_vec(
                &r,
                "shoal_job_queue_wait_seconds",
                "Time from enqueue (SentTimestamp) to the start of an attempt",
                kind,
                DURATION_BUCKETS.to_vec(),
            ),
            jobs_in_flight: gauge_vec(&r, "shoal_jobs_in_flight", "Jobs held by this worker", kind),
            kind_paused: gauge_vec(
                &r,
                "shoal_kind_paused",
                "1 while an operator has paused the kind (shoal-producer pause), as last read",
                kind,
            ),
            api_calls: counter_vec(
                &r,
                "shoal_aws_api_calls_total",
                "AWS API calls by service and operation",
                &["service", "operation"],
            ),
            api_errors: counter_vec(
                &r,
                "shoal_aws_api_errors_total",
                "AWS API calls that failed, by service and operation",
                &["service", "operation"],
            ),
            visibility_extensions: counter(
                &r,
                "shoal_visibility_extensions_total",
                "Visibility timeouts extended by the heartbeat",
            ),
            heartbeat_failures: counter(
                &r,
                "shoal_heartbeat_failures_total",
                "Visibility extensions that failed",
            ),
            empty_receives: counter(
                &r,
                "shoal_empty_receives_total",
                "Receives that returned no message",
            ),
            events_published: counter_vec(
                &r,
                "shoal_events_published_total",
                "Completion events published to SNS",
                &["kind", "status"],
            ),
            stale_receipts: counter(
                &r,
                "shoal_stale_receipts_total",
                "Receipt handles found stale (the message is redelivered)",
            ),
            trace_contexts_invalid: counter(
                &r,
                "shoal_trace_contexts_invalid_total",
                "Messages whose traceparent could not be read (the job starts a trace of its own)",
            ),
            released_on_shutdown: counter(
                &r,
                "shoal_released_on_shutdown_total",
                "Unfinished jobs released to other workers at shutdown",
            ),
            batch_entry_retries: counter_vec(
                &r,
                "shoal_batch_entry_retries_total",
                "Batch entries resent after the batch call failed them",
                &["operation"],
            ),
            ready: {
                let g = IntGauge::new(
                    "shoal_worker_ready",
                    "1 while the worker can reach its queue and is not shutting down",
                )
                .unwrap_or_else(|e| unreachable!("static metric: {e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| unreachable!("registered once: {e}"));
                g
            },
            queue_messages: gauge_vec(
                &r,
                "shoal_queue_messages",
                "Messages on the job queue and its dead-letter queue, by state",
                &["queue", "state"],
            ),
            queue_sample_failures: counter(
                &r,
                "shoal_queue_sample_failures_total",
                "Samples of the queues' depth that failed",
            ),
            handler_panics: counter_vec(
                &r,
                "shoal_handler_panics_total",
                "Handler runs that panicked",
                kind,
            ),
            announcements_carried: counter_vec(
                &r,
                "shoal_announcements_carried_total",
                "Outcomes carried forward on a fresh copy because SNS could not take them",
                kind,
            ),
            dead_letters_carried: counter(
                &r,
                "shoal_dead_letters_carried_total",
                "Failures carried forward on a fresh copy because the dead-letter queue could not take them",
            ),
            events_refused: counter(
                &r,
                "shoal_events_refused_total",
                "Outcomes refused for good by SNS (or SQS, for follow-ups), dead-lettered instead",
            ),
            ledger_claims_refused: counter(
                &r,
                "shoal_ledger_claims_refused_total",
                "Deliveries set aside because another run holds the job's ledger claim",
            ),
            ledger_leases_lost: counter(
                &r,
                "shoal_ledger_leases_lost_total",
                "Ledger claims lost to another run mid-job",
            ),
            ledger_unavailable: counter(
                &r,
                "shoal_ledger_unavailable_total",
                "Ledger claims and outcome writes that did not go through while the message was held",
            ),
            ledger_outcomes_reannounced: counter(
                &r,
                "shoal_ledger_outcomes_reannounced_total",
                "Deliveries of a finished job that announced its recorded outcome and ran nothing",
            ),
            api_attempts: counter_vec(
                &r,
                "shoal_aws_api_attempts_total",
                "AWS API call attempts, the SDK's own retries included",
                &["service", "operation"],
            ),
            registry: r,
        };
        m.show_kinds(JobKind::builtin());
        Arc::new(m)
    }

    /// Makes `kinds`' per-kind series show at zero before their first job, so a rate over
    /// them is defined from the start: the built-ins always, and a worker's own kinds when it
    /// starts.
    pub fn show_kinds(&self, kinds: impl IntoIterator<Item = JobKind>) {
        for kind in kinds {
            let k = kind.as_str();
            self.jobs_received.with_label_values(&[k]);
            self.jobs_succeeded.with_label_values(&[k]);
            self.jobs_retried.with_label_values(&[k]);
            self.jobs_in_flight.with_label_values(&[k]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Makes `service`'s `operations` show in the call, attempt and error counts at zero
    /// before their first call, so a rate over them (an alert's error ratio) is defined
    /// from the start.
    pub fn count_from_zero(&self, service: &str, operations: &[&str]) {
        for operation in operations {
            for counter in [&self.api_calls, &self.api_errors, &self.api_attempts] {
                counter.with_label_values(&[service, operation]);
            }
        }
    }

    /// An interceptor to install on every AWS client, counting its calls.
    pub fn api_call_counter(&self) -> ApiCallCounter {
        ApiCallCounter {
            calls: self.api_calls.clone(),
            errors: self.api_errors.clone(),
            attempts: self.api_attempts.clone(),
        }
    }

    pub fn observe_duration(histogram: &Histogram, seconds: f64) {
        histogram.observe(seconds.max(0.0));
    }
}

/// Counts each SDK operation once per execution (retries included in one execution), and
/// the executions that ended in an error, labelled by service and operation.
#[derive(Debug, Clone)]
pub struct ApiCallCounter {
    calls: IntCounterVec,
    errors: IntCounterVec,
    attempts: IntCounterVec,
}

fn operation_labels(cfg: &ConfigBag) -> (String, String) {
    cfg.load::<Metadata>()
        .map(|m| (m.service().to_ascii_lowercase(), m.name().to_owned()))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()))
}

impl Intercept for ApiCallCounter {
    fn name(&self) -> &'static str {
        "ShoalApiCallCounter"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = operation_labels(cfg);
        let labels = [service.as_str(), operation.as_str()];
        self.calls.with_label_values(&labels).inc();
        if matches!(context.output_or_error(), Some(Err(_))) {
            self.errors.with_label_values(&labels).inc();
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = operation_labels(cfg);
        self.attempts
            .with_label_values(&[service.as_str(), operation.as_str()])
            .inc();
        Ok(())
    }
}
