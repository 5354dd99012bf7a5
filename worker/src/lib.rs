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
//!   probe of a running worker.

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
pub mod queue_stats;
pub mod retry;
pub mod runtime;

pub use config::{WorkerArgs, WorkerConfig};
pub use guardrails::Guardrails;
pub use handler::{JobContext, JobError, JobHandler, Outcome, Registry};
pub use runtime::Worker;
