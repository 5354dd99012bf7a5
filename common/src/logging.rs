//! The log filters every Shoal binary starts with: `RUST_LOG` as the operator sets it (or a
//! default level), and a cap that no setting lifts: the AWS SDK's and its HTTP stack's TRACE
//! output never gets through. At TRACE the SDK prints whole requests and responses, and with
//! them job bodies, a job's user data and EC2's answers; no log level of Shoal's may expose
//! those.

use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::{Layer, Registry};

/// Crates whose TRACE output carries message bodies.
const WIRE_LEVEL: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_smithy_query",
    "aws_smithy_json",
    "aws_runtime",
    "aws_sdk_sqs",
    "aws_sdk_sns",
    "aws_sdk_ec2",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
];

/// `RUST_LOG`, or `default` when it is unset or unreadable. The default keeps the SDK's own
/// warnings (an instance-metadata probe off EC2, a credential provider that found nothing)
/// out of the way: Shoal says what failed, in its words; `RUST_LOG` brings them back.
pub fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let quiet: Vec<String> = WIRE_LEVEL.iter().map(|k| format!("{k}=error")).collect();
        EnvFilter::new(format!("{default},{}", quiet.join(",")))
    })
}

/// Sets up a Shoal process's logs on standard error (`json` for one object a line), at
/// `default` unless `RUST_LOG` says otherwise, and its traces when the environment asks for
/// them (see [`crate::telemetry`]). Keep the returned guard until the process is done: its
/// drop flushes the traces.
pub fn init(default: &str, json: bool, service: &'static str) -> crate::telemetry::Telemetry {
    use tracing_subscriber::util::SubscriberInitExt;
    let provider = if crate::telemetry::export_requested() {
        match crate::telemetry::otlp_provider(service) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("warning: {e}; traces are not exported");
                None
            }
        }
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| crate::telemetry::layer(p, service).boxed());
    // Colours only for a person at a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(env_filter(default), json, ansi, std::io::stderr, otel).init();
    crate::telemetry::Telemetry::new(provider)
}

/// A layer of the process's subscriber, chosen at run time.
type DynLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The subscriber [`init`] installs: logs through `filter` (capped by [`WireCap`]) to
/// `writer`, and the trace exporter's layer when there is one.
fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    ansi: bool,
    writer: W,
    traces: Option<DynLayer>,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let fmt = if json {
        fmt.json().with_current_span(true).boxed()
    } else {
        fmt.boxed()
    };
    // Every filter sits on its own layer, and a layer that is off is left out rather than
    // added as `None` (which counts as a layer that wants everything). A span that no layer
    // wants, such as each of the SDK's several spans per AWS call when traces are off, is
    // then never created, instead of being built and tracked by the registry for nobody.
    let mut layers: Vec<DynLayer> = vec![fmt.with_filter(filter.and(WireCap)).boxed()];
    layers.extend(traces);
    tracing_subscriber::registry().with(layers)
}

/// Whether an event or span may be logged at all, whatever `RUST_LOG` says.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    !(*meta.level() == Level::TRACE
        && WIRE_LEVEL.iter().any(|krate| {
            meta.target()
                .strip_prefix(krate)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        }))
}

/// [`allowed`] as a filter for a layer, beside [`env_filter`]. It depends on the callsite
/// alone, so its answer is given once per callsite and cached, never asked per span.
#[derive(Debug, Clone, Copy)]
pub struct WireCap;

impl<S> Filter<S> for WireCap {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        allowed(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if allowed(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callsite's metadata, made up for a test and never registered with `tracing`.
    fn callsite(
        target: &'static str,
        level: Level,
        kind: tracing::metadata::Kind,
    ) -> &'static Metadata<'static> {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static PROBE: Probe = Probe;
        Box::leak(Box::new(Metadata::new(
            "probe",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&PROBE)),
            kind,
        )))
    }

    #[test]
    fn only_the_sdks_trace_is_held_back() {
        let meta = |target, level| callsite(target, level, tracing::metadata::Kind::EVENT);
        assert!(!allowed(meta(
            "aws_smithy_runtime::client::orchestrator",
            Level::TRACE
        )));
        assert!(!allowed(meta("hyper", Level::TRACE)));
        assert!(allowed(meta(
            "aws_smithy_runtime::client::orchestrator",
            Level::DEBUG
        )));
        assert!(allowed(meta("shoal_worker::runtime", Level::TRACE)));
        assert!(
            allowed(meta("hyperactive", Level::TRACE)),
            "a crate whose name only starts alike"
        );
    }

    /// What the log layer wrote, for a test to read.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn trace_everywhere_still_holds_back_the_wire() {
        let out = Captured::default();
        let sub = subscriber(EnvFilter::new("trace"), false, false, out.clone(), None);
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "body: secret");
            tracing::trace!(target: "shoal_worker::runtime", "shoal's own trace");
        });
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("shoal's own trace"), "{text}");
    }

    #[test]
    fn spans_no_layer_wants_are_never_created() {
        // Asked of the subscriber itself: what `tracing` caches per callsite is shared by
        // every subscriber in the process, and other tests run their own beside this one.
        // `never` is the answer that matters: `tracing` then builds no span there at all.
        use tracing::Subscriber;
        let sub = subscriber(
            EnvFilter::new("warn"),
            false,
            false,
            Captured::default(),
            None,
        );
        use tracing::metadata::Kind;
        let sdk = callsite(
            "aws_smithy_runtime::client::orchestrator",
            Level::DEBUG,
            Kind::SPAN,
        );
        assert!(
            sub.register_callsite(sdk).is_never(),
            "the SDK's per-call span is built for nobody"
        );
        let wanted = callsite("shoal_worker::runtime", Level::WARN, Kind::SPAN);
        assert!(sub.register_callsite(wanted).is_always());
    }
}
