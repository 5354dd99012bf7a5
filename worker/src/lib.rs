//! # shoal-worker
//!
//! The process the fleet runs: many copies side by side, sharing nothing but the queue.
//!
//! - [`runtime`] is the loop: long-poll, run, announce on SNS, delete; retries through the
//!   visibility timeout, dead-lettering, FIFO ordering and graceful shutdown.
//! - [`handler`] defines [`handler::JobHandler`] and the [`handler::Registry`] the runtime
//!   dispatches through; [`handlers`] holds the built-in handlers, one file per kind.
//! - [`batch`] batches deletes, visibility changes and event publishes, retrying the
//!   entries a batch call reports as failed.
//! - [`heartbeat`] extends the visibility of long-running jobs.
//! - [`queue_stats`] samples the job queue's and dead-letter queue's depth into gauges.
//! - [`retry`] computes backoff delays from the receive count; [`ec2_errors`] reads EC2's
//!   errors for the runtime and the handlers alike.
//! - [`guardrails`] limits what a job may ask of this worker, before any AWS call.
//! - [`config`] resolves flags against the queue's own settings; [`http`] serves
//!   `/metrics`, `/healthz` and `/readyz`; [`cli`] is the binary, and [`healthcheck`] its
//!   probe of a running worker; [`guide`] is the guide to writing a kind of one's own.
//!
//! A worker of one's own: the binary's flags (and their `SHOAL_*` variables) resolved against
//! the queue's settings, the built-in handlers with one replaced, run until Ctrl-C.
//!
//! ```no_run
//! use clap::Parser;
//! use shoal_common::aws::AwsClients;
//! use shoal_common::job::Canary;
//! use shoal_common::metrics::Metrics;
//! use shoal_worker::{cli::Cli, handlers, JobContext, Outcome, Worker};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let args = Cli::parse_from([
//!     "shoal-worker",
//!     "--queue-name", "shoal-jobs",
//!     "--topic-arn", "arn:aws:sns:us-east-1:123456789012:shoal-events",
//!     "--ledger-table", "shoal-ledger",
//! ])
//! .args;
//! let metrics = Metrics::new();
//! let clients = AwsClients::instrumented(&shoal_common::aws::load_sdk_config().await, &metrics);
//! let config = args.resolve(&clients).await?;
//!
//! let mut registry = handlers::registry_with(args.ec2_settings());
//! registry.register_fn(|ctx: JobContext, canary: Canary| async move {
//!     Ok(Outcome::Done(serde_json::json!({"job": ctx.job_id, "slept_ms": canary.sleep_ms})))
//! });
//! assert!(registry.missing().is_empty(), "every kind has a handler");
//!
//! let shutdown = CancellationToken::new();
//! let stop = shutdown.clone();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     stop.cancel();
//! });
//! Worker::new(config, clients, registry, metrics).run(shutdown, None).await;
//! # Ok(())
//! # }
//! ```

// Unit tests index what they built themselves; the workspace denies both elsewhere.
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::string_slice))]

pub mod batch;
pub mod cli;
pub mod config;
pub mod ec2_errors;
pub mod guardrails;
pub mod handler;
pub mod handlers;
pub mod healthcheck;
pub mod heartbeat;
pub mod http;
pub mod pause;
pub mod queue_stats;
pub mod retry;
pub mod runtime;

/// The guide to the built-in handlers and to writing a kind of one's own (the repository's
/// `docs/handlers.md`, whose example compiles as this crate's doctest).
#[doc = include_str!("../../docs/handlers.md")]
pub mod guide {}

pub use config::{WorkerArgs, WorkerConfig};
pub use guardrails::Guardrails;
pub use handler::{JobContext, JobError, JobHandler, Outcome, Registry};
pub use runtime::Worker;
