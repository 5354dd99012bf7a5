//! Traces across the queue: OpenTelemetry spans for enqueues, job attempts and the AWS calls
//! they make, joined into one trace by the W3C trace context (`traceparent`, `tracestate`)
//! that travels in SQS and SNS message attributes.
//!
//! Exporting is on when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: OTLP over HTTP, with `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)` read by the OpenTelemetry SDK
//! as usual. When it is not, no OpenTelemetry layer is installed: spans cost what a disabled
//! `tracing` span costs, and no context is written to messages.
//!
//! The AWS SDK opens a span per operation (`SQS.ReceiveMessage`, `EC2.RunInstances`, with
//! `rpc.*` attributes); those inside a traced span (a job's attempt, an enqueue) become its
//! children. The workers' background calls (long polls, batched deletes and publishes) are
//! left out: as traces of their own they would be nothing but noise.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The message attribute carrying the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The message attribute carrying the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// The trace context of `span` as message attributes: `traceparent`, and `tracestate` when
/// there is one. Empty when the span is not traced (no exporter, or not recorded).
pub fn context_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            carrier
                .remove(name)
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
        .collect()
}

/// What a message said of its trace.
#[derive(Debug)]
pub enum Incoming {
    /// No context: the job starts a trace of its own.
    None,
    /// The sender's context: the job's spans continue its trace.
    Context(opentelemetry::Context),
    /// A `traceparent` that is not one: ignored (the job starts a trace of its own), counted.
    Malformed,
}

/// Reads the trace context a message carries.
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Incoming {
    let Some(traceparent) = traceparent else {
        return Incoming::None;
    };
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        Incoming::Context(cx)
    } else {
        Incoming::Malformed
    }
}

/// Makes `span` continue the trace `incoming` names; true if it did.
pub fn continue_trace(span: &tracing::Span, incoming: Incoming) -> bool {
    match incoming {
        Incoming::Context(cx) => span.set_parent(cx).is_ok(),
        Incoming::None | Incoming::Malformed => false,
    }
}

/// Whether the standard environment asks for traces to be exported.
pub fn export_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The OTLP/HTTP exporter the standard environment describes, batched; `service` names the
/// process unless `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) does.
pub fn otlp_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let named_elsewhere = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut resource = Resource::builder();
    if !named_elsewhere {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The `tracing` layer that records Shoal's spans, and the AWS SDK's operation spans inside
/// them, as OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider, scope: &'static str) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(scope))
        .with_filter(tracing_subscriber::filter::DynFilterFn::new(traced))
}

/// What the OpenTelemetry layer records: Shoal's spans and warnings at INFO and above, and
/// the AWS SDK's per-operation span when a traced span is current.
fn traced<S>(meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let target = meta.target();
    if target.starts_with("shoal") {
        return meta.is_span() && *meta.level() <= Level::INFO
            || meta.is_event() && *meta.level() <= Level::WARN;
    }
    // `aws_sdk_sqs::operation::receive_message`: one span per call, at DEBUG.
    meta.is_span()
        && target.starts_with("aws_sdk_")
        && target.contains("::operation::")
        && cx.lookup_current().is_some()
}

/// Flushes the exporter when the process ends its work.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn new(provider: Option<SdkTracerProvider>) -> Self {
        Telemetry { provider }
    }

    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: traces may not all be exported: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_read_back_and_a_malformed_one_is_told_apart() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        match extract(Some(good), Some("vendor=1")) {
            Incoming::Context(cx) => {
                let sc = cx.span().span_context().clone();
                assert_eq!(
                    sc.trace_id().to_string(),
                    "4bf92f3577b34da6a3ce929d0e0e4736"
                );
                assert!(sc.is_sampled());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(extract(None, None), Incoming::None));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(
                matches!(extract(Some(bad), None), Incoming::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_untraced_span_carries_no_context() {
        assert!(context_of(&tracing::Span::none()).is_empty());
    }
}
