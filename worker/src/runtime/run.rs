//! One delivery: decode it, announce an outcome it carries, or run its kind's handler and ask
//! [`settle`](super::settle) what follows.
//!
//! A panicking handler is a failure like any other: the panic is caught, its message goes
//! into the failure event, and every gauge it raised comes down (a guard does that, so an
//! abort at shutdown lowers them too).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use prometheus::IntGauge;
use shoal_common::error::{ErrorClass, ShoalCode};
use shoal_common::event::EventSource;
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::telemetry;
use shoal_common::JobEnvelope;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::carry_out::{self, Disposition, Ran};
use super::poll::Delivery;
use super::settle::{settle, AttemptOutcome, DeadLetterReason, Settle, Situation};
use super::Shared;
use crate::handler::{JobContext, JobError, Lease, Outcome};

/// What the runtime knows of the attempt when it carries out a decision.
pub(super) struct Attempt<'a> {
    pub envelope: Option<&'a JobEnvelope>,
    /// This run's number; for a delivery that never ran the handler, the one it would have.
    pub number: u32,
    pub started_at: DateTime<Utc>,
}

impl Attempt<'_> {
    /// The event's identity and timings for this attempt of `msg`.
    pub fn event_source(&self, shared: &Shared, msg: &Delivery) -> EventSource {
        let (job_id, kind) = match self.envelope {
            Some(e) => (
                Some(e.job_id.to_string()),
                Some(e.kind().as_str().to_owned()),
            ),
            None => EventSource::loose_identity(&msg.body),
        };
        EventSource {
            job_id,
            kind,
            chain_id: self.envelope.map(|e| e.chain_id().to_string()),
            parent_job_id: self
                .envelope
                .and_then(|e| e.parent_job_id.as_ref())
                .map(ToString::to_string),
            attempts: self.number,
            message_id: msg.message_id.clone(),
            worker_id: shared.worker_id.to_string(),
            submitted_at: self.envelope.map(|e| e.submitted_at),
            enqueued_at: msg.enqueued_at,
            started_at: self.started_at,
        }
    }
}

pub(super) async fn process(
    shared: &Shared,
    msg: &Delivery,
    lease: Lease,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Disposition {
    // One span per delivery: the attempt, continuing the sender's trace when the message
    // carries one. Its AWS calls are its children; its event carries its context on.
    let span = tracing::info_span!(
        "job",
        otel.name = "shoal.job",
        otel.kind = "consumer",
        messaging.system = "aws_sqs",
        messaging.message.id = %msg.message_id,
        job_id = tracing::field::Empty,
        kind = tracing::field::Empty,
        attempt = msg.attempt(),
        queue_wait_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let attribute = |name: &str| msg.attributes.get(name).and_then(|v| v.string_value());
    let incoming = telemetry::extract(
        attribute(telemetry::TRACEPARENT),
        attribute(telemetry::TRACESTATE),
    );
    if matches!(incoming, telemetry::Incoming::Malformed) {
        shared.metrics.trace_contexts_invalid.inc();
        tracing::warn!(message_id = %msg.message_id, "the message's traceparent is not a W3C trace context; ignored");
    }
    telemetry::continue_trace(&span, incoming);
    let disposition = deliver(shared, msg, lease, permit, &span)
        .instrument(span.clone())
        .await;
    span.record("outcome", disposition.as_str());
    disposition
}

async fn deliver(
    shared: &Shared,
    msg: &Delivery,
    lease: Lease,
    permit: &mut Option<OwnedSemaphorePermit>,
    span: &tracing::Span,
) -> Disposition {
    if let Some(event) = msg.carried.outcome.clone() {
        return carry_out::announce_carried(shared, msg, event).await;
    }
    let started_at = Utc::now();
    let envelope = match JobEnvelope::from_json(&msg.body) {
        Ok(envelope) => envelope,
        Err(e) => {
            shared
                .metrics
                .jobs_received
                .with_label_values(&[UNKNOWN_KIND])
                .inc();
            let error = JobError::shoal(ShoalCode::InvalidMessage, e.to_string());
            tracing::warn!(message_id = %msg.message_id, error = %error, "not a valid job: dead-lettering");
            let attempt = Attempt {
                envelope: None,
                number: msg.attempt(),
                started_at,
            };
            return refuse(shared, msg, &attempt, error, DeadLetterReason::Malformed).await;
        }
    };
    span.record("job_id", tracing::field::display(&envelope.job_id));
    span.record("kind", envelope.kind().as_str());
    run_job(shared, msg, &envelope, lease, permit).await
}

/// Lowers a gauge when dropped, however the attempt ends.
struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn run_job(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    lease: Lease,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Disposition {
    let kind = envelope.kind();
    let k = kind.as_str();
    let metrics = &shared.metrics;
    let cfg = &shared.config;
    let policy = shared.policy();
    metrics.jobs_received.with_label_values(&[k]).inc();
    let mut attempt = Attempt {
        envelope: Some(envelope),
        number: msg.attempt(),
        started_at: Utc::now(),
    };
    if !shared.registry.contains(kind) {
        let error = JobError::shoal(
            ShoalCode::NoHandler,
            format!("this worker has no handler for `{kind}` jobs"),
        );
        return refuse(shared, msg, &attempt, error, DeadLetterReason::NoHandler).await;
    }

    if let Err(error) = cfg.guardrails.check(&envelope.job) {
        return refuse(shared, msg, &attempt, error, DeadLetterReason::NotAllowed).await;
    }

    let _same_job = shared.job_locks.lock(&envelope.job_id).await;
    let _kind_slot = match shared.kind_slots.get(&kind) {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                // Holding the message while its kind is saturated would starve other kinds.
                let situation = situation(shared, msg, &attempt, AttemptOutcome::KindBusy);
                match settle(situation, policy) {
                    Settle::HoldForSlot => slots.clone().acquire_owned().await.ok(),
                    decision => {
                        return carry_out::apply(shared, msg, &attempt, decision, Ran::NoResult)
                            .await
                    }
                }
            }
        },
    };

    // Runs of the handler in this delivery (on FIFO, a wait or retry runs it again here).
    let mut runs_here = 0u32;
    loop {
        attempt.started_at = Utc::now();
        if let Some(enqueued_at) = msg.enqueued_at {
            let wait_ms = (attempt.started_at - enqueued_at).num_milliseconds().max(0);
            metrics
                .job_queue_wait
                .with_label_values(&[k])
                .observe(wait_ms as f64 / 1000.0);
            tracing::Span::current().record("queue_wait_ms", wait_ms);
        }
        let ctx = JobContext {
            job_id: envelope.job_id.clone(),
            kind,
            attempt: attempt.number,
            max_attempts: cfg.max_attempts,
            earlier_runs: msg.earlier_runs() + runs_here > 0,
            received_at: msg.received_at,
            lease: lease.clone(),
            progress: msg.progress.clone(),
            worker_id: shared.worker_id.clone(),
            clients: shared.clients.clone(),
            enqueued_at: msg.enqueued_at,
            started_at: attempt.started_at,
        };
        let result = run_handler(shared, ctx, envelope)
            .await
            .map_err(|e| not_yet_for_a_follow_up(shared, msg, envelope, e));
        runs_here += 1;
        let (outcome, ran) = match result {
            Ok(Outcome::Done(value)) => (AttemptOutcome::Done, Ran::Done(value)),
            Ok(Outcome::CheckAgainAfter(delay)) => {
                (AttemptOutcome::CheckAgain(delay), Ran::NoResult)
            }
            Err(error) => (AttemptOutcome::Failed(error.class), Ran::Failed(error)),
        };
        let decision = settle(situation(shared, msg, &attempt, outcome), policy);
        if let Ran::Failed(error) = &ran {
            metrics
                .jobs_failed
                .with_label_values(&[k, error.class.as_str()])
                .inc();
            tracing::info!(error = %error, code = ?error.code, decision = ?decision, "attempt failed");
        }
        match decision {
            Settle::HoldAndRunAgain(delay) => {
                if matches!(ran, Ran::Failed(_)) {
                    attempt.number += 1;
                    metrics.jobs_retried.with_label_values(&[k]).inc();
                } else {
                    metrics.jobs_waiting.with_label_values(&[k]).inc();
                }
                hold_without_slot(permit, delay).await;
            }
            decision => return carry_out::apply(shared, msg, &attempt, decision, ran).await,
        }
    }
}

/// A follow-up names what its parent created moments before, which EC2 may not show yet:
/// within the consistency window after the follow-up was enqueued, `…NotFound` is "not yet"
/// (retried), not the resource's absence.
fn not_yet_for_a_follow_up(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    error: JobError,
) -> JobError {
    let young = msg.enqueued_at.is_none_or(|at| {
        (Utc::now() - at).to_std().unwrap_or_default() < shared.config.consistency_window
    });
    if envelope.parent_job_id.is_some()
        && error.class == ErrorClass::Permanent
        && crate::handlers::consistency::is_not_found(&error)
        && young
    {
        tracing::info!(code = ?error.code, "a follow-up's resource is not visible yet; trying again");
        JobError {
            class: ErrorClass::Transient,
            ..error
        }
    } else {
        error
    }
}

/// A delivery refused before any run: [`settle`] decides its fate like any other's.
async fn refuse(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    error: JobError,
    reason: DeadLetterReason,
) -> Disposition {
    let policy = shared.policy();
    let decision = settle(
        situation(shared, msg, attempt, AttemptOutcome::Refused(reason)),
        policy,
    );
    carry_out::apply(shared, msg, attempt, decision, Ran::Failed(error)).await
}

fn situation(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    outcome: AttemptOutcome,
) -> Situation {
    Situation {
        outcome,
        attempt: attempt.number,
        max_attempts: shared.config.max_attempts,
        fifo: shared.config.fifo,
        new_progress: msg.progress.changed(),
        copies: msg.carried.copies,
    }
}

/// Waits `delay` while still holding the message but not a worker slot, then takes a slot
/// again: a FIFO job waiting for EC2 blocks its group, not the worker.
async fn hold_without_slot(permit: &mut Option<OwnedSemaphorePermit>, delay: Duration) {
    let semaphore = permit.as_ref().map(|p| p.semaphore().clone());
    permit.take();
    tokio::time::sleep(delay).await;
    if let Some(semaphore) = semaphore {
        *permit = semaphore.acquire_owned().await.ok();
    }
}

/// Runs the kind's handler, with its metrics, turning a panic into a failure.
async fn run_handler(
    shared: &Shared,
    ctx: JobContext,
    envelope: &JobEnvelope,
) -> Result<Outcome, JobError> {
    let k = ctx.kind.as_str();
    let metrics = &shared.metrics;
    let in_flight = metrics.jobs_in_flight.with_label_values(&[k]);
    in_flight.inc();
    let _in_flight = InFlight(in_flight);
    let clock = std::time::Instant::now();
    let run = match shared.registry.run(ctx, envelope.job.clone()) {
        Some(run) => run,
        None => {
            return Err(JobError::shoal(
                ShoalCode::NoHandler,
                format!("no handler for `{k}`"),
            ))
        }
    };
    let result = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            metrics.handler_panics.with_label_values(&[k]).inc();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(panic = %message, "the handler panicked");
            Err(JobError {
                class: shared.config.on_panic,
                ..JobError::shoal(
                    ShoalCode::HandlerPanicked,
                    format!("the handler panicked: {message}"),
                )
            })
        }
    };
    let status = match &result {
        Ok(Outcome::Done(_)) => "succeeded",
        Ok(Outcome::CheckAgainAfter(_)) => "waiting",
        Err(_) => "failed",
    };
    metrics
        .job_duration
        .with_label_values(&[k, status])
        .observe(clock.elapsed().as_secs_f64());
    result
}
