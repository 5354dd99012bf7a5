//! The log filter every Shoal binary starts with: `RUST_LOG` as the operator sets it (or a
//! default level), except that the AWS SDK's and its HTTP stack's wire-level trace never
//! gets through. At TRACE the SDK prints whole requests and responses, and with them job
//! bodies, a job's user data and EC2's answers; no log level of Shoal's may expose those.

use tracing_subscriber::filter::{Directive, EnvFilter};

/// Crates whose TRACE output carries message bodies; they are capped at DEBUG.
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

/// `RUST_LOG`, or `default` when it is unset or unreadable, with the wire-level cap.
pub fn env_filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for target in WIRE_LEVEL {
        if let Ok(cap) = format!("{target}=debug").parse::<Directive>() {
            filter = filter.add_directive(cap);
        }
    }
    filter
}
