//! The `shoal-worker` binary: flags, logging, signals, and the runtime; and
//! `shoal-worker healthcheck`, the container's health probe.
//!
//! The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once
//! (messages in flight then return after their visibility timeout, so nothing is lost).

use clap::Parser;
use shoal_common::aws::{load_sdk_config, AwsClients};
use shoal_common::metrics::Metrics;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{LogFormat, WorkerArgs};
use crate::handlers::registry_with;
use crate::runtime::Worker;

/// Consume Shoal jobs from SQS, do the EC2 work, announce outcomes on SNS.
#[derive(Debug, Parser)]
#[command(name = "shoal-worker", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub args: WorkerArgs,
}

/// The exit code when a second signal cuts shutdown short.
const EXIT_INTERRUPTED: i32 = 130;

pub fn main() -> i32 {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("healthcheck") {
        return crate::healthcheck::main(argv.skip(1));
    }
    let cli = Cli::parse();
    // Flushes the traces (if any are exported) when dropped, after the runtime is done.
    let _telemetry = shoal_common::logging::init(
        "info",
        cli.args.log_format == LogFormat::Json,
        "shoal-worker",
    );
    let mut builder = match cli.args.runtime_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return 1;
        }
    };
    runtime.block_on(run(cli.args))
}

async fn run(args: WorkerArgs) -> i32 {
    let metrics = Metrics::new();
    let sdk = load_sdk_config().await;
    // A worker that cannot talk to AWS stops here, saying why, rather than retrying.
    if let Err(e) = shoal_common::aws::check_setup(&sdk).await {
        tracing::error!("configuration: {e}");
        return 2;
    }
    let clients = AwsClients::instrumented(&sdk, &metrics);
    let config = match args.resolve(&clients).await {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return 2;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.metrics_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %args.metrics_addr, error = %e, "cannot listen for metrics");
            return 2;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }

    let shutdown = CancellationToken::new();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                tracing::info!(
                    "signal received: shutting down gracefully (signal again to exit at once)"
                );
                shutdown.cancel();
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                tracing::warn!("second signal: exiting now; messages in flight return after their visibility timeout");
                std::process::exit(EXIT_INTERRUPTED);
            });
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 2;
        }
    }

    let registry = registry_with(args.ec2_settings());
    let missing = registry.missing();
    if !missing.is_empty() {
        tracing::error!(?missing, "no handler for these kinds; refusing to start");
        return 2;
    }
    Worker::new(config, clients, registry, metrics)
        .run(shutdown, Some(listener))
        .await;
    0
}
