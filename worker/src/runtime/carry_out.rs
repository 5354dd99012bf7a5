//! Carrying out what [`settle`](super::settle) decided for a delivery: announce then delete,
//! retry on the same message, re-send a fresh copy that carries the job's state, dead-letter,
//! release; and, when a finished job cannot get its outcome out or its failure into the
//! dead-letter queue while this delivery holds the message, carrying it forward on a copy
//! that does only that.
//!
//! An outcome is never lost or mislabelled. A finished job's next delivery only announces
//! (or only dead-letters): its handler's work is never redone, no receive is spent on it, and
//! the job never reaches the dead-letter queue because of an announcement, nor without its
//! reason because of a DLQ outage. The message is deleted only after its event is out.

use std::time::Duration;

use shoal_common::error::{ErrorClass, ShoalCode};
use shoal_common::event::{EventError, JobEvent, JobStatus};
use shoal_common::job::chain;
use shoal_common::ledger::{Ledger, Record, RECORD_EXISTS};
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::JobEnvelope;

use super::announce_then_delete::{announce_then_delete, FollowUps, Unannounced};
use super::calls;
use super::carried::{Carried, PendingDeadLetter};
use super::claim::{JobClaim, Unrecorded};
use super::dead_letter::{dead_letter, failure_event, DeadLettered};
use super::delivery::{Attempt, Delivery, Disposition};
use super::settle::{after_stop, carry_forward_delay, AfterStop, DeadLetterReason, Fate, Purpose};
use super::Shared;
use crate::handler::JobError;

/// What a run's fate is made of here: the handler's result, and Shoal's error.
pub(super) type RunFate = Fate<serde_json::Value, JobError>;

/// Carries out `fate` for `msg` after `attempt`, whose run held `claim` on its job in the
/// ledger, if the job takes one: an outcome is on record before it is announced, and a run
/// that ends unfinished gives its claim back.
pub(super) async fn apply(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    fate: RunFate,
    claim: Option<JobClaim>,
) -> Disposition {
    let k = attempt
        .envelope
        .map(|e| e.kind().as_str())
        .unwrap_or(UNKNOWN_KIND);
    let metrics = &shared.metrics;
    match fate {
        Fate::AnnounceAndDelete(result) => {
            // A chain's follow-ups are built once, here: their ids go in the event, the jobs
            // on the queue before it.
            let follow_ups = attempt.envelope.map(|parent| FollowUps {
                parent,
                jobs: chain::expand(parent, &result),
            });
            let mut event = JobEvent::new(
                attempt.event_source(&shared.worker_id, msg),
                JobStatus::Succeeded,
                Some(result),
                None,
            );
            if let Some(f) = &follow_ups {
                event.follow_ups = f.jobs.iter().map(|e| e.job_id.clone()).collect();
            }
            if let Some(c) = &claim {
                event.run = c.run();
            }
            match record_outcome(shared, msg, attempt, claim.as_ref(), &event).await {
                Err(instead) => return instead,
                Ok(Recorded::AsRun(run)) => event.run = run,
                Ok(Recorded::AsIs) => {}
            }
            // Counted once the success is final: one the ledger would not take runs again.
            metrics.jobs_succeeded.with_label_values(&[k]).inc();
            // One line a finished job (its id and kind are the span's), as an operator
            // reading the log of a run expects.
            tracing::info!(
                run_ms = event.timings.run_ms,
                job_ms = event.timings.job_ms,
                follow_ups = event.follow_ups.len(),
                "job succeeded"
            );
            finish(shared, msg, attempt, follow_ups, event).await
        }
        Fate::RetryAfter(delay) => {
            metrics.jobs_retried.with_label_values(&[k]).inc();
            if let Some(c) = claim {
                c.release().await;
            }
            calls::change_visibility(shared, msg, delay).await
        }
        Fate::Copy { delay, purpose } => {
            if let Some(c) = claim {
                c.release().await;
            }
            let failures = match purpose {
                Purpose::Retry => {
                    metrics.jobs_retried.with_label_values(&[k]).inc();
                    attempt.number
                }
                Purpose::Wait => {
                    metrics.jobs_waiting.with_label_values(&[k]).inc();
                    attempt.number.saturating_sub(1)
                }
                Purpose::Defer => {
                    metrics.jobs_deferred.with_label_values(&[k]).inc();
                    attempt.number.saturating_sub(1)
                }
            };
            // This delivery ran the handler unless its kind was busy.
            let ran_here = u32::from(purpose != Purpose::Defer);
            let carried = Carried {
                failures,
                runs: msg.earlier_runs().saturating_add(ran_here),
                progress: msg.progress.to_map(),
                first_started_at: attempt.first_started_at,
                waiting_since: Some(msg.waiting_since(attempt.started_at)),
                ..next_copy(msg)
            };
            copy_or_return(shared, msg, delay, &carried).await
        }
        Fate::DeadLetter(reason, error) => {
            let error = match reason {
                DeadLetterReason::AttemptsExhausted => JobError::shoal(
                    ShoalCode::AttemptsExhausted,
                    format!(
                        "failed on all {} attempts; last error ({}): {error}",
                        shared.config.max_attempts,
                        error.code.as_deref().unwrap_or("no code"),
                    ),
                ),
                _ => error,
            };
            let failure = PendingDeadLetter::new(&error, reason, attempt.number);
            let mut event = failure_event(shared, msg, attempt, &failure);
            if let Some(c) = &claim {
                event.run = c.run();
            }
            // A refused message is not the job its id names: nothing of it is recorded.
            if !reason.is_refusal() {
                match record_outcome(shared, msg, attempt, claim.as_ref(), &event).await {
                    Err(instead) => return instead,
                    Ok(Recorded::AsRun(run)) => event.run = run,
                    Ok(Recorded::AsIs) => {}
                }
            }
            dead_letter_or_carry(shared, msg, attempt, failure, event).await
        }
    }
}

/// Writes the job's outcome to the ledger before it is announced: through the run's claim,
/// fenced, for a kind that takes one; in a batch for a kind that takes none (its effect is
/// idempotent by itself), conditioned on the id being free or this job's. Nothing without a
/// ledger.
///
/// A lease-less outcome the ledger refuses because the id is on record already: this job's
/// own finished record (a run again after its announcement) is announced as recorded; another
/// job's refuses this message as reusing its id, the record untouched.
///
/// A lease-less rerun's outcome (the record has a run number, and earlier failures a
/// whole-item put would drop) is written over the record it read instead, keeping them, and
/// announced as that run ([`Recorded::AsRun`]).
///
/// When it cannot be written, what became of the message instead: left alone when another
/// run holds the job now (it reports it); otherwise (the ledger did not take it while the
/// message was held) the outcome is not announced, since it is not on record, and the job
/// comes back on a copy, spending no attempt: its next run, on any worker, finds what this
/// one created, recorded as it went, and reports it.
async fn record_outcome(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    claim: Option<&JobClaim>,
    event: &JobEvent,
) -> Result<Recorded, Disposition> {
    let written = match (claim, &shared.outcomes, &shared.config.ledger) {
        (Some(claim), _, _) => claim.finish(shared, event).await,
        (None, Some(outcomes), Some(ledger)) => {
            let Some(envelope) = attempt.envelope.filter(|e| !e.kind().takes_lease()) else {
                return Ok(Recorded::AsIs);
            };
            let item = match ledger.outcome_item(event, envelope) {
                Ok(item) => item,
                Err(e) => {
                    tracing::error!(error = %e, "the outcome cannot be made a ledger record; announced without one");
                    return Ok(Recorded::AsIs);
                }
            };
            let put = calls::while_held(shared, "write the outcome to the ledger", || {
                outcomes.submit(item.clone())
            })
            .await;
            match put {
                Err(e) if e.code.as_deref() == Some(RECORD_EXISTS) => {
                    return on_record_already(shared, msg, envelope, ledger, event).await
                }
                other => other.map_err(Unrecorded::NotTaken),
            }
        }
        _ => return Ok(Recorded::AsIs),
    };
    match written {
        Ok(()) => Ok(Recorded::AsIs),
        Err(Unrecorded::Lost) => {
            shared.metrics.ledger_leases_lost.inc();
            tracing::warn!("the job's claim was lost to another run before its outcome was recorded; that run reports it");
            Err(Disposition::Left)
        }
        Err(Unrecorded::NotTaken(e)) => {
            shared.metrics.ledger_unavailable.inc();
            let delay =
                carry_forward_delay(msg.carried.copies, shared.config.fifo, shared.policy());
            tracing::warn!(code = e.code_or_none(), error = %e.message, retry_in_s = delay.as_secs(), "cannot record the outcome in the ledger; the job comes back to be reported then");
            Err(copy_or_return(shared, msg, delay, &same_attempt_again(msg, attempt)).await)
        }
    }
}

/// How an outcome went on record.
pub(super) enum Recorded {
    /// As the event says.
    AsIs,
    /// As this run of the job (a rerun's): the event is announced with it.
    AsRun(u32),
}

/// A lease-less job whose outcome the ledger would not take because its id is on record:
/// its own unfinished rerun's record is finished keeping its run and earlier failures; its own
/// finished record is announced as recorded (the job ran again after announcing, say, a
/// worker killed before its delete); another job's refuses this message. A ledger that cannot
/// be read or written now (or a record that changed meanwhile) sends the job round again on a
/// copy, as an outcome not taken.
async fn on_record_already(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    ledger: &Ledger,
    event: &JobEvent,
) -> Result<Recorded, Disposition> {
    let record = calls::while_held(shared, "read the job's record", || {
        ledger.get(envelope.job_id.as_str())
    })
    .await;
    let rerun = |r: &Record| {
        r.is_of(envelope.kind().as_str(), &envelope.digest())
            && !r.status.is_finished()
            && r.run > 1
    };
    let why = match record {
        Ok(Some(record)) if rerun(&record) => {
            let mut event = event.clone();
            event.run = record.run;
            let finished = calls::while_held(shared, "record the rerun's outcome", || {
                ledger.finish_rerun(&record, &event)
            })
            .await;
            match finished {
                Ok(true) => return Ok(Recorded::AsRun(record.run)),
                Ok(false) => "the rerun's record changed while its outcome was written".to_owned(),
                Err(e) => e.message,
            }
        }
        // Boxed: announcing a record can refuse the message, which is carrying out again.
        Ok(Some(record)) => {
            return Err(Box::pin(announce_recorded(shared, msg, envelope, record)).await)
        }
        Err(e) => e.message,
        Ok(None) => "the record refused the write, then was gone".to_owned(),
    };
    let attempt = Attempt::of(msg, Some(envelope));
    let delay = carry_forward_delay(msg.carried.copies, shared.config.fifo, shared.policy());
    tracing::warn!(error = %why, "the outcome is not on record; the job comes back to be reported then");
    Err(copy_or_return(shared, msg, delay, &same_attempt_again(msg, &attempt)).await)
}

/// A run an operator cancelled (`claim`'s request, read at its claim or a lease extension):
/// the cancellation is its outcome, with what it recorded (what it created) as the result;
/// it is recorded, announced, and the message deleted. No follow-ups.
pub(super) async fn cancelled(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    claim: Option<JobClaim>,
) -> Disposition {
    let progress = shoal_common::ledger::made(&msg.progress.to_map());
    let mut event = JobEvent::new(
        attempt.event_source(&shared.worker_id, msg),
        JobStatus::Cancelled,
        (!progress.is_empty()).then(|| serde_json::json!({ "progress": progress })),
        Some(EventError {
            class: ErrorClass::Permanent,
            code: Some(ShoalCode::Cancelled.as_str().to_owned()),
            message: "cancelled by an operator while it ran".to_owned(),
            dead_lettered: false,
        }),
    );
    if let Some(c) = &claim {
        event.run = c.run();
    }
    match record_outcome(shared, msg, attempt, claim.as_ref(), &event).await {
        Err(instead) => return instead,
        Ok(Recorded::AsRun(run)) => event.run = run,
        Ok(Recorded::AsIs) => {}
    }
    let k = attempt
        .envelope
        .map(|e| e.kind().as_str())
        .unwrap_or(UNKNOWN_KIND);
    shared.metrics.jobs_cancelled.with_label_values(&[k]).inc();
    finish(shared, msg, attempt, None, event).await
}

/// A delivery of a job whose ledger record says it is over: nothing runs. A success is
/// announced again (the same event, so the same CloudEvents id) with its follow-ups sent
/// first, as they may not all have been; a failure goes to the dead-letter queue with its
/// recorded reason (its first delivery may have died before the copy) and is announced again.
pub(super) async fn announce_recorded(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    record: Record,
) -> Disposition {
    let attempt = Attempt::of(msg, Some(envelope));
    if !record.is_of(envelope.kind().as_str(), &envelope.digest()) {
        // A job id names one job: this message reuses the id of another job, whose outcome
        // is not this one's to announce.
        return refuse_reused(shared, msg, envelope, &record).await;
    }
    let Some(event) = record.outcome else {
        let error = JobError::shoal(
            ShoalCode::UnreadableRecord,
            format!(
                "the ledger records job {} as {}, but its outcome cannot be read",
                record.job_id,
                record.status.as_str()
            ),
        );
        return refuse_recorded(shared, msg, &attempt, error).await;
    };
    shared.metrics.ledger_outcomes_reannounced.inc();
    tracing::info!(
        status = event.status.as_str(),
        "the job is over by its ledger record; announcing its outcome again, running nothing"
    );
    match (&event.status, &event.error) {
        (JobStatus::Failed, Some(failed)) => {
            let error = JobError {
                class: failed.class,
                code: failed.code.clone(),
                operation: None,
                message: failed.message.clone(),
            };
            let reason = if error.is(ShoalCode::AttemptsExhausted) {
                DeadLetterReason::AttemptsExhausted
            } else {
                DeadLetterReason::Permanent
            };
            let failure = PendingDeadLetter::new(&error, reason, event.attempts);
            dead_letter_or_carry(shared, msg, &attempt, failure, event).await
        }
        _ => {
            // The message's follow-ups are the recorded job's (their digests agree); a record
            // that keeps no digest cannot vouch for them, so none are sent from it.
            let follow_ups = match &event.result {
                Some(result) if !envelope.then.is_empty() && record.digest.is_some() => {
                    Some(FollowUps {
                        parent: envelope,
                        jobs: chain::expand(envelope, result),
                    })
                }
                _ => None,
            };
            finish(shared, msg, &attempt, follow_ups, event).await
        }
    }
}

/// Dead-letters a delivery whose ledger record it cannot announce, with `error` saying why;
/// the record is left as it is.
async fn refuse_recorded(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    error: JobError,
) -> Disposition {
    let fate = Fate::DeadLetter(DeadLetterReason::Permanent, error);
    apply(shared, msg, attempt, fate, None).await
}

/// Refuses a message sent under the id of another job (`record`'s): dead-lettered with that
/// reason, its event naming no job (a follower of the recorded job must not read it as that
/// job's outcome), the record untouched.
pub(super) async fn refuse_reused(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    record: &Record,
) -> Disposition {
    let error = JobError::shoal(
        ShoalCode::JobIdReused,
        record.reused_by(envelope.kind().as_str()),
    );
    let attempt = Attempt::of(msg, Some(envelope)).unnamed();
    let fate = Fate::DeadLetter(DeadLetterReason::JobIdReused, error);
    apply(shared, msg, &attempt, fate, None).await
}

/// Announces an outcome an earlier delivery recorded but could not announce, enqueueing its
/// follow-ups first if they may not all be out.
///
/// Without a ledger, nothing but the copy remembers the outcome; with one, the outcome is
/// announced from the record instead ([`announce_recorded`]).
pub(super) async fn announce_carried(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    event: JobEvent,
) -> Disposition {
    tracing::info!(job_id = ?event.job_id, copies = msg.carried.copies, "announcing a carried outcome; the job does not run again");
    let follow_ups = match &event.result {
        Some(result) if msg.carried.follow_ups_pending => Some(FollowUps {
            parent: envelope,
            jobs: chain::expand(envelope, result),
        }),
        _ => None,
    };
    let attempt = Attempt::of(msg, Some(envelope));
    finish(shared, msg, &attempt, follow_ups, event).await
}

/// Dead-letters a failure an earlier delivery could not get into the DLQ; the handler does
/// not run again.
pub(super) async fn dead_letter_carried(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    failure: PendingDeadLetter,
) -> Disposition {
    tracing::info!(
        copies = msg.carried.copies,
        reason = failure.reason.label(),
        "dead-lettering a carried failure; the job does not run again"
    );
    let attempt = Attempt {
        number: failure.attempt,
        ..Attempt::of(msg, Some(envelope))
    };
    let event = failure_event(shared, msg, &attempt, &failure);
    dead_letter_or_carry(shared, msg, &attempt, failure, event).await
}

/// Hands back a job whose handler was stopped mid-run at shutdown, as [`after_stop`] says.
pub(super) async fn release_stopped(shared: &Shared, msg: &Delivery, attempt: &Attempt<'_>) {
    match after_stop(msg.progress.changed(), shared.config.fifo) {
        AfterStop::Resume => {
            // Being stopped is not the job's failure: the next delivery runs the same attempt.
            copy_or_return(
                shared,
                msg,
                Duration::ZERO,
                &same_attempt_again(msg, attempt),
            )
            .await;
        }
        AfterStop::Release => calls::release(shared, std::iter::once(msg)).await,
    }
}

/// Announces then deletes; an outcome that cannot get out goes forward on a copy.
async fn finish(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    follow_ups: Option<FollowUps<'_>>,
    event: JobEvent,
) -> Disposition {
    match announce_then_delete(shared, msg, follow_ups, event).await {
        Ok(disposition) => disposition,
        Err(unannounced) => carry_unannounced(shared, msg, attempt, unannounced, false).await,
    }
}

/// Dead-letters `failure`, announcing `event`; what the DLQ or SNS would not take goes
/// forward on a copy that does only what is left.
async fn dead_letter_or_carry(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    failure: PendingDeadLetter,
    event: JobEvent,
) -> Disposition {
    match dead_letter(shared, msg, attempt, &failure, event).await {
        DeadLettered::Done(disposition) => disposition,
        DeadLettered::Unannounced(unannounced) => {
            carry_unannounced(shared, msg, attempt, *unannounced, true).await
        }
        DeadLettered::NotSent(error) => {
            let delay =
                carry_forward_delay(msg.carried.copies, shared.config.fifo, shared.policy());
            shared.metrics.dead_letters_carried.inc();
            tracing::warn!(code = error.code_or_none(), error = %error.message, carry_in_s = delay.as_secs(), "cannot reach the dead-letter queue; carrying the failure forward on a copy");
            let carried = Carried {
                failures: msg.carried.failures,
                runs: msg.earlier_runs(),
                dead_letter: Some(failure),
                // A success whose chain could not go on keeps its outcome, so the next
                // delivery tells that, not a failure.
                outcome: msg.carried.outcome.clone(),
                follow_ups_pending: msg.carried.follow_ups_pending,
                first_started_at: attempt.first_started_at,
                ..next_copy(msg)
            };
            copy_or_return(shared, msg, delay, &carried).await
        }
    }
}

/// Carries an outcome this delivery could not get out forward on a copy that only
/// announces it; unless SNS (or SQS, for a follow-up) refused it for good, when carrying it
/// would go round for ever: the job then ends in the dead-letter queue with that reason
/// (where it is already, `dead_lettered`, its message is deleted). Its outcome stays in the
/// ledger's record.
async fn carry_unannounced(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    u: Unannounced,
    dead_lettered: bool,
) -> Disposition {
    if u.error.class == ErrorClass::Permanent {
        shared.metrics.events_refused.inc();
        tracing::error!(code = u.error.code_or_none(), error = %u.error.message, status = u.event.status.as_str(), "the outcome is refused for good and cannot be announced");
        if dead_lettered {
            return calls::delete(shared, msg).await;
        }
        let what = if u.follow_ups_pending {
            "its follow-ups"
        } else {
            "its event"
        };
        let error = JobError::shoal(
            ShoalCode::EventRefused,
            format!(
                "the job {}, but {what} cannot be sent ({}): {}",
                u.event.status.as_str(),
                u.error.code_or_none(),
                u.error.message
            ),
        );
        let failure = PendingDeadLetter::new(&error, DeadLetterReason::Permanent, attempt.number);
        // Boxed: dead-lettering ends here again if its announcement is refused.
        return Box::pin(dead_letter_or_carry(shared, msg, attempt, failure, u.event)).await;
    }
    let delay = carry_forward_delay(msg.carried.copies, shared.config.fifo, shared.policy());
    shared
        .metrics
        .announcements_carried
        .with_label_values(&[u.event.kind_label()])
        .inc();
    tracing::warn!(code = u.error.code_or_none(), error = %u.error.message, carry_in_s = delay.as_secs(), "cannot announce the outcome; carrying it forward on a copy");
    let carried = Carried {
        failures: msg.carried.failures,
        runs: msg.earlier_runs().saturating_add(1),
        outcome: Some(u.event),
        follow_ups_pending: u.follow_ups_pending,
        first_started_at: attempt.first_started_at,
        ..next_copy(msg)
    };
    copy_or_return(shared, msg, delay, &carried).await
}

/// The record of a copy whose next delivery runs `attempt` again, knowing what this run
/// recorded: the run ended through no failure of the job's (a stop, an outcome the ledger
/// would not take).
fn same_attempt_again(msg: &Delivery, attempt: &Attempt<'_>) -> Carried {
    Carried {
        failures: attempt.number.saturating_sub(1),
        runs: msg.earlier_runs().saturating_add(1),
        progress: msg.progress.to_map(),
        first_started_at: attempt.first_started_at,
        ..next_copy(msg)
    }
}

/// The next copy's record, before what the caller sets: one more copy, nothing else.
fn next_copy(msg: &Delivery) -> Carried {
    Carried {
        copies: msg.carried.copies.saturating_add(1),
        ..Carried::default()
    }
}

/// Sends the copy; if it cannot be sent, the original itself comes back after `delay`.
async fn copy_or_return(
    shared: &Shared,
    msg: &Delivery,
    delay: Duration,
    carried: &Carried,
) -> Disposition {
    match calls::copy(shared, msg, delay, carried).await {
        Ok(disposition) => disposition,
        Err(err) => {
            tracing::warn!(error = %err, "cannot send a copy of the job; it comes back on its own message");
            calls::change_visibility(shared, msg, delay).await
        }
    }
}
