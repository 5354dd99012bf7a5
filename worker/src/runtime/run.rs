//! One delivery: decode it, finish what an earlier copy carried (an outcome to announce, a
//! failure to dead-letter), or run its kind's handler, ask [`settle`](super::settle) what
//! follows each run, and carry that out.
//!
//! A panicking handler is a failure like any other: the panic is caught, its message goes
//! into the failure event, and every gauge it raised comes down (a guard does that, so an
//! abort at shutdown lowers them too). While the job waits in this process (for EC2 on a
//! FIFO queue, for its kind's slot, for another delivery of its id) it holds no worker slot.

use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use prometheus::IntGauge;
use shoal_common::error::{ErrorClass, ShoalCode};
use shoal_common::event::EventSource;
use shoal_common::ledger::{Ledger, Record, Status};
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::telemetry;
use shoal_common::JobEnvelope;
use tracing::Instrument;

use super::carry_out::{self, RunFate};
use super::claim::{self, Entry, JobClaim};
use super::delivery::{Attempt, Delivery, Disposition};
use super::settle::{settle, AttemptOutcome, DeadLetterReason, Fate, Purpose, Settle, Situation};
use super::slots::{KindGate, WorkerSlots};
use super::Shared;
use crate::ec2_errors::{is_changing_state, is_not_found};
use crate::handler::{JobContext, JobError, Lease, Outcome};

/// Runs one delivery in its own trace span: the attempt, continuing the sender's trace when
/// the message carries one. Its AWS calls are its children; its event carries its context on.
pub(super) async fn process(
    shared: &Shared,
    msg: &Delivery,
    lease: Lease,
    slots: &mut WorkerSlots,
) -> Disposition {
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
    let disposition = deliver(shared, msg, lease, slots, &span)
        .instrument(span.clone())
        .await;
    span.record("outcome", disposition.as_str());
    disposition
}

async fn deliver(
    shared: &Shared,
    msg: &Delivery,
    lease: Lease,
    slots: &mut WorkerSlots,
    span: &tracing::Span,
) -> Disposition {
    let decoded = JobEnvelope::from_json(&msg.body);
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(e) => {
            // Nothing a copy carries is believed of a body that does not decode: a worker
            // carries an outcome or a reason only for a job it could read, so these were
            // written by a sender. The refusal is worked out again from the body.
            if msg.carried.outcome.is_some() || msg.carried.dead_letter.is_some() {
                tracing::warn!(message_id = %msg.message_id, "a message that is no job carries an outcome or a reason; neither is believed");
            }
            shared
                .metrics
                .jobs_received
                .with_label_values(&[UNKNOWN_KIND])
                .inc();
            let error = JobError::shoal(ShoalCode::InvalidMessage, e.to_string());
            tracing::warn!(message_id = %msg.message_id, error = %error, "not a valid job: dead-lettering");
            let attempt = Attempt::of(msg, None);
            return refuse(shared, msg, attempt, error, DeadLetterReason::Malformed).await;
        }
    };
    span.record("job_id", tracing::field::display(&envelope.job_id));
    span.record("kind", envelope.kind().as_str());
    if msg.carried.outcome.is_some() || msg.carried.dead_letter.is_some() {
        match shared.config.ledger.as_ref() {
            // No ledger to ask: the copy is all there is (what `--no-ledger` gives up).
            None => {
                if let Some(event) = msg.carried.outcome.clone() {
                    return carry_out::announce_carried(shared, msg, &envelope, event).await;
                }
                if let Some(failure) = msg.carried.dead_letter.clone() {
                    return carry_out::dead_letter_carried(shared, msg, &envelope, failure).await;
                }
            }
            // The ledger speaks for the job: an outcome (or a failure) is announced as it
            // records it, never as a copy tells it. A worker records an outcome before it
            // carries one forward, so a carried outcome not on record is a sender's, and the
            // job goes on as if the copy carried nothing (a lease-less kind runs again; a
            // leasing one meets its claim).
            Some(ledger) => match ledger.get(envelope.job_id.as_str()).await {
                Ok(Some(record)) if record.status.is_finished() => {
                    return carry_out::announce_recorded(shared, msg, &envelope, record).await;
                }
                _ => tracing::warn!(
                    "a copy carries an outcome or a reason the ledger does not record; neither is believed"
                ),
            },
        }
    }
    run_job(shared, msg, &envelope, lease, slots).await
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
    slots: &mut WorkerSlots,
) -> Disposition {
    let kind = envelope.kind();
    let k = kind.as_str();
    let metrics = &shared.metrics;
    let cfg = &shared.config;
    let policy = shared.policy();
    metrics.jobs_received.with_label_values(&[k]).inc();
    let mut attempt = Attempt::of(msg, Some(envelope));
    if let Err(error) = cfg.guardrails.check(&envelope.job) {
        return refuse(shared, msg, attempt, error, DeadLetterReason::NotAllowed).await;
    }

    let _same_job = slots
        .released_while(shared.job_locks.lock(&envelope.job_id))
        .await;
    let mut kind_slot = KindGate::new(shared.kind_slots.get(&kind).cloned());
    let ledger = cfg.ledger.as_ref().filter(|_| kind.takes_lease());
    let mut job_claim: Option<JobClaim> = None;
    // Runs of the handler in this delivery (on FIFO, a wait or retry runs it again here).
    let mut runs_here = 0u32;
    loop {
        let entered = enter(
            shared,
            msg,
            envelope,
            ledger,
            &mut kind_slot,
            &mut job_claim,
            attempt.number,
        );
        let outcome = match entered.await {
            Gate::Over(record) => {
                return carry_out::announce_recorded(shared, msg, envelope, *record).await
            }
            Gate::Reused(record) => {
                return carry_out::refuse_reused(shared, msg, envelope, &record).await
            }
            Gate::Closed(not_run) => not_run,
            Gate::Open => {
                attempt.started_at = Utc::now();
                // Cancelled while it waited for its claim (the lease had lapsed): not run.
                if job_claim.as_ref().is_some_and(JobClaim::cancel_requested) {
                    return carry_out::cancelled(shared, msg, &attempt, job_claim.take()).await;
                }
                if attempt.first_started_at.is_none() {
                    attempt.first_started_at = msg.first_started_at(attempt.started_at);
                }
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
                    created_since: created_since(msg, job_claim.is_some(), runs_here),
                    received_at: msg.received_at,
                    lease: match &job_claim {
                        Some(c) => lease.with_ledger(c.until_ms()),
                        None => lease.clone(),
                    },
                    progress: msg.progress.clone(),
                    cancel: job_claim.as_ref().map(JobClaim::cancel).unwrap_or_default(),
                    worker_id: shared.worker_id.clone(),
                    clients: shared.clients.clone(),
                    enqueued_at: msg.enqueued_at,
                    started_at: attempt.started_at,
                };
                let Some(run) = shared.registry.run(ctx, &envelope.job) else {
                    let error = JobError::shoal(
                        ShoalCode::NoHandler,
                        format!("this worker has no handler for `{kind}` jobs"),
                    );
                    return refuse(shared, msg, attempt, error, DeadLetterReason::NoHandler).await;
                };
                runs_here += 1;
                let ran = match &job_claim {
                    None => run_handler(shared, k, run).await,
                    Some(c) => run_keeping(shared, msg, c, run_handler(shared, k, run)).await,
                };
                // What the run created is on record before anything else (written as the
                // handler recorded it; again here if that write did not go through).
                if let Some(c) = &job_claim {
                    if c.record_progress(shared, msg.progress.to_map())
                        .await
                        .is_err()
                    {
                        metrics.ledger_leases_lost.inc();
                        tracing::warn!("the job's claim was lost to another run; this delivery records nothing more");
                        return Disposition::Left;
                    }
                }
                // Cancelled while it ran: a success that came first stands; anything else
                // (a failure, a wait, a create refused) ends as the cancellation.
                let cancelled = job_claim.as_ref().is_some_and(JobClaim::cancel_requested);
                if cancelled && !matches!(ran, Ok(Outcome::Done(_))) {
                    return carry_out::cancelled(shared, msg, &attempt, job_claim.take()).await;
                }
                match ran {
                    Ok(Outcome::Done(value)) => AttemptOutcome::Done(value),
                    Ok(Outcome::CheckAgainAfter(delay)) => AttemptOutcome::CheckAgain(delay),
                    // The ledger did not take the note a create needs first: nothing was
                    // sent, and, as when it does not answer a claim, no attempt is spent.
                    Err(error) if error.is(ShoalCode::CreateNotNoted) => {
                        metrics.ledger_unavailable.inc();
                        tracing::warn!(error = %error, "a create could not be noted in the ledger; looking again later");
                        AttemptOutcome::NotClaimed(None)
                    }
                    Err(error) => match not_yet(shared, msg, envelope, error) {
                        Ok(look_again) => AttemptOutcome::CheckAgain(look_again),
                        Err(error) => {
                            metrics
                                .jobs_failed
                                .with_label_values(&[k, error.class.as_str()])
                                .inc();
                            tracing::info!(error = %error, code = ?error.code, "attempt failed");
                            AttemptOutcome::Failed(error)
                        }
                    },
                }
            }
        };
        let situation = Situation {
            outcome,
            attempt: attempt.number,
            max_attempts: cfg.max_attempts,
            fifo: cfg.fifo,
            new_progress: msg.progress.changed(),
        };
        match settle(situation, policy) {
            Settle::Let(fate) => {
                return carry_out::apply(shared, msg, &attempt, fate, job_claim).await
            }
            Settle::HoldAndRunAgain { after, purpose } => {
                match purpose {
                    Purpose::Retry => {
                        attempt.number = attempt.number.saturating_add(1);
                        metrics.jobs_retried.with_label_values(&[k]).inc();
                    }
                    Purpose::Wait => metrics.jobs_waiting.with_label_values(&[k]).inc(),
                    Purpose::Defer => metrics.jobs_deferred.with_label_values(&[k]).inc(),
                }
                // The job is not this process's while it waits: the claim goes back, and is
                // taken again before the next run.
                if let Some(c) = job_claim.take() {
                    c.release().await;
                }
                // A FIFO job waiting for EC2 blocks its group, not the worker.
                slots.released_while(tokio::time::sleep(after)).await;
            }
            Settle::HoldForSlot => slots.released_while(kind_slot.enter()).await,
        }
    }
}

/// Since when an earlier run of the job may have created something EC2 does not list yet
/// ([`JobContext::created_since`]). With the job's claim, the progress is the ledger's, where
/// every run put each create on record before sending it: its latest note says (none: no
/// create went out, whatever runs died before). Without, any earlier run counts, and every
/// one of its calls came before this delivery was received.
fn created_since(msg: &Delivery, claimed: bool, runs_here: u32) -> Option<tokio::time::Instant> {
    if !claimed {
        let earlier = msg.earlier_runs().saturating_add(runs_here) > 0;
        return earlier.then_some(msg.received_at);
    }
    let noted = msg.progress.latest_create()?;
    let ago = (Utc::now() - noted).to_std().unwrap_or_default();
    let now = tokio::time::Instant::now();
    Some(now.checked_sub(ago).unwrap_or(now))
}

/// What stands between a delivery and its handler's run, this time round the loop.
enum Gate {
    /// The handler may run.
    Open,
    /// Not now, for this reason; nothing runs and nothing is created.
    Closed(AttemptOutcome<serde_json::Value, JobError>),
    /// The ledger records the job as over.
    Over(Box<Record>),
    /// The ledger records the job id for another job.
    Reused(Box<Record>),
}

/// Takes what the run needs: a slot of its kind, and, for a kind the ledger records, the
/// job's claim (once; kept across the loop until given back), adopting what the ledger
/// recorded as the run's progress.
async fn enter(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    ledger: Option<&Ledger>,
    kind_slot: &mut KindGate,
    job_claim: &mut Option<JobClaim>,
    attempt: u32,
) -> Gate {
    if let Some(left) = envelope
        .not_before
        .and_then(|at| (at - Utc::now()).to_std().ok())
        .filter(|left| !left.is_zero())
    {
        return Gate::Closed(AttemptOutcome::NotDue(left));
    }
    if shared.paused.covers(envelope.kind()) {
        return Gate::Closed(AttemptOutcome::Paused);
    }
    if !kind_slot.try_enter() {
        // Holding the message while its kind is saturated would starve other kinds.
        return Gate::Closed(AttemptOutcome::KindBusy);
    }
    let (Some(ledger), None) = (ledger, &*job_claim) else {
        return Gate::Open;
    };
    let metrics = &shared.metrics;
    match claim::claim(shared, ledger, envelope, attempt).await {
        Entry::Granted(granted) => {
            msg.progress.adopt(granted.progress());
            *job_claim = Some(granted);
            Gate::Open
        }
        Entry::HeldElsewhere(left) => {
            metrics.ledger_claims_refused.inc();
            tracing::info!(
                held_for_ms = left.as_millis() as u64,
                "another run holds this job; set aside"
            );
            Gate::Closed(AttemptOutcome::NotClaimed(Some(left)))
        }
        Entry::Unavailable(e) => {
            metrics.ledger_unavailable.inc();
            tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot claim the job: the ledger does not answer; nothing is created");
            Gate::Closed(AttemptOutcome::NotClaimed(None))
        }
        Entry::Finished(record) => Gate::Over(record),
        Entry::Reused(record) => Gate::Reused(record),
    }
}

/// Runs `handler` while keeping `claim`'s ledger lease up and writing what the handler
/// records to the ledger the moment it does (the ids a create call answered with, the note
/// before a create), so a worker killed right after a create leaves the next holder proof
/// of it. Writes go one at a time, in the order recorded (a create's note after the ids of
/// the create before it), and the lease is kept up while one is in flight: a write the
/// ledger makes slow must not let the lease lapse under a run that is still going. A
/// keeper that returns has lost the lease (the handler's lease then reads none left); the
/// handler still runs to its end.
async fn run_keeping<T>(
    shared: &Shared,
    msg: &Delivery,
    claim: &JobClaim,
    handler: impl std::future::Future<Output = T>,
) -> T {
    use futures::future::{Fuse, FusedFuture};
    type Write<'a> = BoxFuture<'a, (u64, Result<bool, claim::Unrecorded>)>;
    let keeper = claim.keep(shared.config.visibility_timeout);
    tokio::pin!(keeper, handler);
    let mut keeping = true;
    let mut recording = true;
    let mut write: Fuse<Write<'_>> = Fuse::terminated();
    loop {
        tokio::select! {
            r = &mut handler => return r,
            _ = &mut keeper, if keeping => keeping = false,
            (version, written) = &mut write, if !write.is_terminated() => match written {
                Ok(taken) => msg.progress.written(version, taken),
                Err(_) => {
                    msg.progress.written(u64::MAX, false);
                    recording = false;
                }
            },
            _ = msg.progress.changes(), if recording && write.is_terminated() => {
                let (notes, version) = msg.progress.versioned();
                let writing: Write<'_> = Box::pin(async move {
                    (version, claim.record_progress(shared, notes).await)
                });
                write = writing.fuse();
            }
        }
    }
}

/// An EC2 refusal that may be "not yet" rather than "no": a follow-up names what its parent
/// created moments before, which EC2 may not show yet (`…NotFound`), and any job may find a
/// resource still changing state (`IncorrectInstanceState`: an instance still `pending`).
/// Within the consistency window after the job was first on the queue (the earliest time any
/// of its copies knew, [`Delivery::waiting_since`], which no copy sets back), the job looks
/// again after the returned delay as a wait does (a fresh copy, spending no attempt: the
/// retry backoff over a queue's few receives may be shorter than the window); after it, the
/// error stands.
fn not_yet(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    error: JobError,
) -> Result<Duration, JobError> {
    let not_listed_yet = envelope.parent_job_id.is_some() && is_not_found(&error);
    if error.class != ErrorClass::Permanent || !(not_listed_yet || is_changing_state(&error)) {
        return Err(error);
    }
    let now = Utc::now();
    // `waiting_since` holds the carried first start already; a first run's own start comes
    // after the message's sent time, so it can only be later.
    let since = msg.waiting_since(now);
    let waited = (now - since).to_std().unwrap_or_default();
    if waited >= shared.config.consistency_window {
        return Err(error);
    }
    tracing::info!(code = ?error.code, waited_ms = waited.as_millis() as u64, "the job's resource is not listed or not settled yet; looking again");
    Ok((waited / 4).clamp(Duration::from_secs(1), Duration::from_secs(15)))
}

/// A delivery refused before any run: dead-lettered with its reason, nothing written to
/// the ledger. With a ledger, the job id (the envelope's, or a malformed body's where it has
/// one) is looked up first: a finished record of this very job is announced as recorded,
/// since the refusal is this worker's, not the job's (a redelivered job reaching a worker
/// whose limits changed); this job's `queued` record (its producer's, never run) is as no
/// record: the event names the job, and the record is left as it is; a record of another
/// job, or of this one under way, or a ledger that cannot say, keeps the refusal's event from
/// naming the id, so no follower of that job reads it as the job's outcome. The DLQ copy
/// carries the reason either way.
async fn refuse(
    shared: &Shared,
    msg: &Delivery,
    attempt: Attempt<'_>,
    error: JobError,
    reason: DeadLetterReason,
) -> Disposition {
    let mut attempt = attempt;
    if let Some(ledger) = shared.config.ledger.as_ref() {
        let job_id = match attempt.envelope {
            Some(envelope) => Some(envelope.job_id.to_string()),
            None => EventSource::loose_identity(&msg.body).0,
        };
        if let Some(job_id) = job_id {
            match ledger.get(&job_id).await {
                Ok(None) => {}
                Ok(Some(record)) => {
                    if let Some(envelope) = attempt.envelope {
                        let own = record.is_of(envelope.kind().as_str(), &envelope.digest());
                        if own && record.status.is_finished() {
                            return carry_out::announce_recorded(shared, msg, envelope, record)
                                .await;
                        }
                        // Its producer's record of it, never run: the refusal is its outcome.
                        if own && record.status == Status::Queued {
                            let fate: RunFate = Fate::DeadLetter(reason, error);
                            return carry_out::apply(shared, msg, &attempt, fate, None).await;
                        }
                    }
                    tracing::info!(
                        status = record.status.as_str(),
                        "the refused message's job id is on record; its event names no job"
                    );
                    attempt = attempt.unnamed();
                }
                Err(e) => {
                    tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot look the refused message's job id up; its event names no job");
                    attempt = attempt.unnamed();
                }
            }
        }
    }
    let fate: RunFate = Fate::DeadLetter(reason, error);
    carry_out::apply(shared, msg, &attempt, fate, None).await
}

/// Runs a handler's future, with its metrics, turning a panic into a failure.
async fn run_handler(
    shared: &Shared,
    k: &str,
    run: BoxFuture<'_, Result<Outcome, JobError>>,
) -> Result<Outcome, JobError> {
    let metrics = &shared.metrics;
    let in_flight = metrics.jobs_in_flight.with_label_values(&[k]);
    in_flight.inc();
    let _in_flight = InFlight(in_flight);
    let clock = std::time::Instant::now();
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
