//! # shoal-common
//!
//! What every Shoal process shares: the published job contract, configuration, AWS clients,
//! the error taxonomy and the local-stack provisioning.
//!
//! - [`job`] owns the contract: the versioned [`job::JobEnvelope`] that services in any
//!   language write onto the queue, the [`job::Job`] enum that declares every kind in one
//!   place, and validation whose errors name the offending field.
//! - [`validate`] holds the field checks the kinds share (ids, tags, shapes).
//! - [`error`] classifies failures as transient or permanent where they arise, so the worker
//!   decides retry versus dead-letter from the class alone.
//! - [`batch`] resends the entries a batch call failed through no fault of the sender.
//! - [`aws`] builds the SQS, SNS, DynamoDB (and, with the `ec2` feature, EC2) clients from the standard
//!   credential chain and the SDK's own endpoint settings.
//! - [`config`] holds the settings the producer and worker share (which queue).
//! - [`event`] is the completion event the worker publishes to SNS, a CloudEvent.
//! - [`logging`] sets up every binary's logs: `RUST_LOG`, less the SDK's wire-level trace.
//! - [`telemetry`] is tracing across the queue: OpenTelemetry spans, and the W3C trace
//!   context carried in message attributes.
//! - [`metrics`] declares every Prometheus metric and counts AWS calls with an interceptor.
//! - [`queue`] reads what a queue says of itself: redrive policy and depth.
//! - [`ledger`] is the job ledger on DynamoDB: one record per job id, claimed under a fenced
//!   lease, holding what a run created and the job's outcome.
//! - [`stack`] creates the queues and topic Shoal runs on, for the local emulator and tests.

// Unit tests index what they built themselves; the workspace denies both elsewhere.
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::string_slice))]

pub mod aws;
pub mod batch;
pub mod config;
pub mod error;
pub mod event;
pub mod job;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod stack;
pub mod tag;
pub mod telemetry;
pub mod validate;

pub use job::{Job, JobEnvelope, JobId, JobKind};
