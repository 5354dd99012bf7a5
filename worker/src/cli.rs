//! The `shoal-worker` binary: flags, logging, signals, and the runtime;
//! `shoal-worker healthcheck`, the container's health probe; `shoal-worker schema`, the
//! envelope's JSON Schema for the kinds it runs. [`main_with`] is the same binary with a
//! user's kinds beside the built-ins.
//!
//! The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once
//! (messages in flight then return after their visibility timeout, so nothing is lost).

use clap::Parser;
use shoal_common::aws::{load_sdk_config, AwsClients};
use shoal_common::metrics::Metrics;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{LogFormat, WorkerArgs};
use std::sync::Arc;

use crate::handler::Registry;
use crate::handlers::{builtin_registry, Ec2Limiter, Ec2Settings};
use crate::runtime::Worker;

/// Consume Shoal jobs from SQS, do the EC2 work, announce outcomes on SNS.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-worker",
    version,
    about,
    after_help = "Commands:\n  \
        shoal-worker healthcheck [--addr ADDR] [--path /readyz]   probe a running worker (exit 0 when ready)\n  \
        shoal-worker schema                                       print the job envelope's JSON Schema for the kinds this binary runs"
)]
pub struct Cli {
    #[command(flatten)]
    pub args: WorkerArgs,
}

/// The exit code when a second signal cuts shutdown short.
const EXIT_INTERRUPTED: i32 = 130;

/// Adds a binary's own kinds to the built-in registry: given the registry and the EC2 rate
/// limiter the built-in handlers share.
pub type AddKinds = fn(&mut Registry, &Arc<Ec2Limiter>);

/// The `shoal-worker` binary: the built-in kinds.
pub fn main() -> i32 {
    main_with(|_, _| {})
}

/// A worker binary with kinds of its own beside the built-ins: the whole `main` of a user's
/// worker is `std::process::exit(shoal_worker::cli::main_with(add))`, where `add` registers
/// the user's handlers. It runs once before the flags are read (so `--allow-kinds`,
/// `--kind-concurrency` and `schema` know the kinds) and once for the worker's registry.
pub fn main_with(add: AddKinds) -> i32 {
    add(
        &mut Registry::new(),
        &Arc::new(Ec2Limiter::new(Ec2Settings::default())),
    );
    let mut argv = std::env::args().skip(1).peekable();
    match argv.peek().map(String::as_str) {
        Some("healthcheck") => return crate::healthcheck::main(argv.skip(1)),
        Some("schema") => {
            // The envelope's schema for every kind this binary runs, for `shoal-producer
            // send --schema` and other languages' producers.
            println!("{:#}", shoal_common::job::json_schema());
            return 0;
        }
        _ => {}
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
    runtime.block_on(run(cli.args, add))
}

async fn run(args: WorkerArgs, add: AddKinds) -> i32 {
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
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::error!(
                addr = %args.metrics_addr,
                "cannot listen for metrics: the address is in use, most likely by another worker on this host; give this one another with --metrics-addr (SHOAL_METRICS_ADDR), such as 127.0.0.1:0 for any free port"
            );
            return 2;
        }
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

    let limiter = Arc::new(Ec2Limiter::new(args.ec2_settings()));
    let mut registry = builtin_registry(&limiter);
    add(&mut registry, &limiter);
    let missing = registry.missing();
    if !missing.is_empty() {
        tracing::error!(?missing, "no handler for these kinds; refusing to start");
        return 2;
    }
    if let Err(e) = registry.check() {
        tracing::error!("kinds: {e}; refusing to start");
        return 2;
    }
    Worker::new(config, clients, registry, metrics)
        .run(shutdown, Some(listener))
        .await;
    0
}
