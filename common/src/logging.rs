//! The log filters every Shoal binary starts with: `RUST_LOG` as the operator sets it (or a
//! default level), and a cap that no setting lifts: the AWS SDK's and its HTTP stack's TRACE
//! output never gets through. At TRACE the SDK prints whole requests and responses, and with
//! them job bodies, a job's user data and EC2's answers; no log level of Shoal's may expose
//! those.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterFn};

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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
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
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_current_span(true).boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(env_filter(default)))
        .with(
            provider
                .as_ref()
                .map(|p| crate::telemetry::layer(p, service)),
        )
        .with(wire_cap())
        .init();
    crate::telemetry::Telemetry::new(provider)
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

/// [`allowed`] as a filter to layer on the subscriber beside [`env_filter`].
pub fn wire_cap() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(allowed as fn(&Metadata<'_>) -> bool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sdks_trace_is_held_back() {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static PROBE: Probe = Probe;
        let meta = |target: &'static str, level| {
            Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&PROBE)),
                tracing::metadata::Kind::EVENT,
            )
        };
        assert!(!allowed(&meta(
            "aws_smithy_runtime::client::orchestrator",
            Level::TRACE
        )));
        assert!(!allowed(&meta("hyper", Level::TRACE)));
        assert!(allowed(&meta(
            "aws_smithy_runtime::client::orchestrator",
            Level::DEBUG
        )));
        assert!(allowed(&meta("shoal_worker::runtime", Level::TRACE)));
        assert!(
            allowed(&meta("hyperactive", Level::TRACE)),
            "a crate whose name only starts alike"
        );
    }
}
