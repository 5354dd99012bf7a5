//! Carrying out what [`settle`](super::settle) decided: announce then delete, retry on the
//! same message, re-send a fresh copy that carries the job's state, release.
//!
//! An outcome is never lost or mislabelled. The announcement is retried for as long as one
//! delivery holds it (`announce_hold`, the heartbeat keeping the message meanwhile); if SNS
//! is down for longer, the outcome goes forward on a fresh copy of the message, whose next
//! delivery only announces it, so the handler's work is never redone and the job never
//! reaches the dead-letter queue because of an announcement. The message is deleted only
//! after its event is out.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use shoal_common::error::{classify_sdk_error, ErrorClass, ShoalCode};
use shoal_common::event::{CloudEvent, JobEvent, JobStatus};
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::queue::{dead_letter_attribute, CARRIED_STATE};
use shoal_common::telemetry;
use shoal_common::JobEnvelope;
use tokio::time::Instant;

use super::carried::Carried;
use super::follow_ups;
use super::poll::Delivery;
use super::run::Attempt;
use super::settle::{settle, AttemptOutcome, CopyFor, DeadLetterReason, Settle, Situation};
use super::Shared;
use crate::batch::{EntryError, Publication, VisibilityChange};
use crate::handler::JobError;
use crate::retry::MAX_VISIBILITY;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Deleted,
    DeadLettered,
    /// Back on the queue (itself or a fresh copy) for a later attempt or check.
    Returned,
    /// Left to reappear when its visibility times out (a call to move it failed).
    Left,
}

impl Disposition {
    /// The attempt's `outcome` on its trace span.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Disposition::Deleted => "done",
            Disposition::DeadLettered => "dead_lettered",
            Disposition::Returned => "returned",
            Disposition::Left => "left",
        }
    }
}

/// SQS allows ten message attributes.
const MAX_ATTRIBUTES: usize = 10;

/// What the handler gave, when it ran.
pub(super) enum Ran {
    /// Finished with this result.
    Done(serde_json::Value),
    /// Did not run, or ran and is waiting for EC2.
    NoResult,
    Failed(JobError),
}

/// Carries out `decision` for `msg` after `attempt`, whose handler gave `ran`.
pub(super) async fn apply(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    decision: Settle,
    ran: Ran,
) -> Disposition {
    let k = attempt
        .envelope
        .map(|e| e.kind().as_str())
        .unwrap_or(UNKNOWN_KIND);
    let metrics = &shared.metrics;
    match decision {
        Settle::AnnounceAndDelete => {
            metrics.jobs_succeeded.with_label_values(&[k]).inc();
            let value = match ran {
                Ran::Done(value) => Some(value),
                _ => None,
            };
            let mut event = JobEvent::new(
                attempt.event_source(shared, msg),
                JobStatus::Succeeded,
                value,
                None,
            );
            if let (Some(envelope), Some(result)) = (attempt.envelope, &event.result) {
                event.follow_ups = follow_ups::ids(envelope, result);
            }
            let pending = !event.follow_ups.is_empty();
            announce_then_delete(shared, msg, attempt.envelope, event, pending).await
        }
        Settle::RetryAfter(delay) => {
            metrics.jobs_retried.with_label_values(&[k]).inc();
            change_visibility(shared, msg, delay).await
        }
        Settle::Copy { delay, for_ } => {
            let failures = match for_ {
                CopyFor::Retry => {
                    metrics.jobs_retried.with_label_values(&[k]).inc();
                    attempt.number
                }
                CopyFor::Wait => {
                    metrics.jobs_waiting.with_label_values(&[k]).inc();
                    attempt.number - 1
                }
                CopyFor::Defer => {
                    metrics.jobs_deferred.with_label_values(&[k]).inc();
                    attempt.number - 1
                }
                CopyFor::Announce => msg.carried.failures,
            };
            // This delivery ran the handler unless its kind was busy.
            let ran_here = u32::from(for_ != CopyFor::Defer);
            let carried = Carried {
                failures,
                runs: msg.earlier_runs() + ran_here,
                copies: msg.carried.copies + 1,
                progress: msg.progress.to_map(),
                outcome: None,
                follow_ups_pending: false,
            };
            copy(shared, msg, delay, carried).await
        }
        // Both are carried out by the run loop itself; should one arrive here, the message
        // simply comes back after the delay.
        Settle::HoldAndRunAgain(delay) => change_visibility(shared, msg, delay).await,
        Settle::HoldForSlot => change_visibility(shared, msg, Duration::ZERO).await,
        Settle::DeadLetter(reason) => {
            let Ran::Failed(error) = ran else {
                // settle() dead-letters only failed runs; anything else comes back at once.
                return change_visibility(shared, msg, Duration::ZERO).await;
            };
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
            super::dead_letter::dead_letter(shared, msg, attempt, error, reason).await
        }
    }
}

/// Announces an outcome an earlier delivery recorded but could not announce.
pub(super) async fn announce_carried(
    shared: &Shared,
    msg: &Delivery,
    event: JobEvent,
) -> Disposition {
    tracing::info!(job_id = ?event.job_id, copies = msg.carried.copies, "announcing a carried outcome; the job does not run again");
    let envelope = JobEnvelope::from_json(&msg.body).ok();
    let pending = msg.carried.follow_ups_pending;
    announce_then_delete(shared, msg, envelope.as_ref(), event, pending).await
}

/// Enqueues the follow-ups of a success (when `follow_ups_pending`), publishes `event`, then
/// deletes the message; if either cannot be done while this delivery holds the message, the
/// outcome goes forward on a fresh copy.
pub(super) async fn announce_then_delete(
    shared: &Shared,
    msg: &Delivery,
    envelope: Option<&JobEnvelope>,
    event: JobEvent,
    follow_ups_pending: bool,
) -> Disposition {
    let mut announced = Ok(());
    if follow_ups_pending {
        if let (Some(envelope), Some(result)) = (envelope, &event.result) {
            announced = follow_ups::dispatch(shared, msg, envelope, result).await;
        }
    }
    // Follow-ups that may not all be out stay pending on the copy; once out, they are not
    // sent again for a failed announcement.
    let still_pending = follow_ups_pending && announced.is_err();
    if announced.is_ok() {
        announced = announce(shared, &event).await;
    }
    match announced {
        Ok(()) => delete(shared, msg).await,
        Err(e) => {
            let situation = Situation {
                outcome: AttemptOutcome::AnnounceFailed,
                attempt: msg.attempt(),
                max_attempts: shared.config.max_attempts,
                fifo: shared.config.fifo,
                new_progress: false,
                copies: msg.carried.copies,
            };
            let policy = shared.policy();
            let delay = match settle(situation, policy) {
                Settle::Copy { delay, .. } => delay,
                _ => Duration::ZERO,
            };
            let kind = event.kind_label();
            shared
                .metrics
                .announcements_carried
                .with_label_values(&[kind])
                .inc();
            tracing::warn!(code = e.code_or_none(), error = %e.message, carry_in_s = delay.as_secs(), "cannot announce the outcome; carrying it forward on a copy");
            let carried = Carried {
                failures: msg.carried.failures,
                runs: msg.earlier_runs() + 1,
                copies: msg.carried.copies + 1,
                progress: Default::default(),
                outcome: Some(event),
                follow_ups_pending: still_pending,
            };
            copy(shared, msg, delay, carried).await
        }
    }
}

/// Pauses between tries of a call the delivery keeps retrying while it holds the message.
fn hold_pause(tries: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(tries.min(6))).min(Duration::from_secs(10))
}

/// Runs `call` until it succeeds, fails permanently, or the delivery has retried it for
/// `announce_hold` (the heartbeat keeps the message meanwhile); the last error otherwise.
pub(super) async fn while_held<T, F, Fut>(
    shared: &Shared,
    what: &'static str,
    mut call: F,
) -> Result<T, EntryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EntryError>>,
{
    let give_up_at = Instant::now() + shared.config.announce_hold;
    let mut tries = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if e.class == ErrorClass::Permanent || Instant::now() >= give_up_at => {
                return Err(e)
            }
            Err(e) => {
                tracing::info!(
                    code = e.code_or_none(),
                    "cannot {what} yet; retrying while the message is held"
                );
                tokio::time::sleep(hold_pause(tries).min(give_up_at - Instant::now())).await;
                tries += 1;
            }
        }
    }
}

/// Publishes `event`, retrying while the message is held, for up to `announce_hold`.
pub(super) async fn announce(shared: &Shared, event: &JobEvent) -> Result<(), EntryError> {
    let kind = event.kind_label();
    // The event continues the attempt's trace, for subscribers that trace too.
    let trace = telemetry::context_of(&tracing::Span::current());
    let mut cloud_event = CloudEvent::wrap(event.clone(), &shared.config.event_source);
    for (name, value) in &trace {
        match *name {
            telemetry::TRACEPARENT => cloud_event.traceparent = Some(value.clone()),
            _ => cloud_event.tracestate = Some(value.clone()),
        }
    }
    let status = event.status.as_str();
    let mut attributes = event.attributes();
    attributes.extend(trace);
    let publication = Publication {
        message: cloud_event.to_json(),
        attributes,
    };
    while_held(shared, "publish the event", || {
        shared.events.submit(publication.clone())
    })
    .await?;
    shared
        .metrics
        .events_published
        .with_label_values(&[kind, status])
        .inc();
    Ok(())
}

/// Deletes the message, retrying while it is held; a stale receipt means another delivery
/// of it is under way, and that one will find the job done.
pub(super) async fn delete(shared: &Shared, msg: &Delivery) -> Disposition {
    let deleted = while_held(shared, "delete", || {
        shared.deletes.submit(msg.receipt.clone())
    })
    .await;
    match deleted {
        Ok(()) => Disposition::Deleted,
        Err(e) if e.is(ShoalCode::StaleReceipt) => {
            shared.metrics.stale_receipts.inc();
            tracing::info!(
                code = e.code_or_none(),
                "receipt handle stale at delete: the message will be delivered again"
            );
            Disposition::Left
        }
        Err(e) => {
            tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot delete a finished job; it will be delivered again");
            Disposition::Left
        }
    }
}

pub(super) async fn change_visibility(
    shared: &Shared,
    msg: &Delivery,
    delay: Duration,
) -> Disposition {
    let change = VisibilityChange {
        receipt: msg.receipt.clone(),
        timeout: delay.min(MAX_VISIBILITY),
    };
    match shared.visibility.submit(change).await {
        Ok(()) => Disposition::Returned,
        Err(e) => {
            if e.is(ShoalCode::StaleReceipt) {
                shared.metrics.stale_receipts.inc();
            }
            tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot set visibility; the message returns after its timeout");
            Disposition::Left
        }
    }
}

/// Sends a fresh copy of the message carrying `carried`, visible after `delay`, then deletes
/// the original. If the copy cannot be sent, the original comes back after `delay` instead.
async fn copy(shared: &Shared, msg: &Delivery, delay: Duration, carried: Carried) -> Disposition {
    let cfg = &shared.config;
    let mut send = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.queue_url)
        .message_body(&msg.body);
    for (name, value) in sender_attributes(msg, 1) {
        send = send.message_attributes(name, value.clone());
    }
    if let Some(state) = carried.to_attribute() {
        send = send.message_attributes(CARRIED_STATE, state);
    }
    if cfg.fifo {
        // A redelivered original makes the same copy again, which SQS then drops.
        send = send
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "shoal".into()))
            .message_deduplication_id(format!("{}-copy", msg.message_id));
    } else {
        send = send.delay_seconds(delay.as_secs() as i32);
    }
    let sent = while_held(shared, "send a copy of the job", || async {
        send.clone()
            .send()
            .await
            .map_err(|e| classify_sdk_error("SendMessage", &e))
    })
    .await;
    match sent {
        Ok(_) => match delete(shared, msg).await {
            Disposition::Deleted => Disposition::Returned,
            other => other,
        },
        Err(err) => {
            tracing::warn!(error = %err, "cannot send a copy of the job; it comes back on its own message");
            change_visibility(shared, msg, delay).await
        }
    }
}

/// The sender's message attributes (not Shoal's own), leaving room for `ours` more.
pub(super) fn sender_attributes(
    msg: &Delivery,
    ours: usize,
) -> impl Iterator<Item = (&String, &MessageAttributeValue)> {
    // When there are more than fit, the contract's own (`kind`, `schema`) and the trace
    // context go first, so a copy keeps its routing and its trace.
    let first = [
        "kind",
        "schema",
        telemetry::TRACEPARENT,
        telemetry::TRACESTATE,
    ];
    let mut attributes: Vec<_> = msg
        .attributes
        .iter()
        .filter(|(n, _)| !n.starts_with(dead_letter_attribute::PREFIX))
        .collect();
    attributes.sort_by_key(|(n, _)| !first.contains(&n.as_str()));
    attributes.into_iter().take(MAX_ATTRIBUTES - ours)
}

/// Makes messages visible again at once.
pub(super) async fn release<'a>(shared: &Shared, messages: impl Iterator<Item = &'a Delivery>) {
    let changes = messages.map(|m| {
        shared.visibility.submit(VisibilityChange {
            receipt: m.receipt.clone(),
            timeout: Duration::ZERO,
        })
    });
    for result in futures::future::join_all(changes).await {
        if let Err(e) = result {
            tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot release a message; it returns after its visibility timeout");
        }
    }
}

/// Hands back a job whose handler was stopped mid-run at shutdown: with the progress it
/// recorded on a fresh copy, so the next delivery knows what was created; otherwise
/// (nothing new, or FIFO, where a copy would lose its place) the message itself, at once.
pub(super) async fn release_aborted(shared: &Shared, msg: &Delivery) {
    if msg.progress.changed() && !shared.config.fifo {
        // Being stopped is not the job's failure: the next delivery runs the same attempt.
        let carried = Carried {
            failures: msg.attempt() - 1,
            runs: msg.earlier_runs() + 1,
            copies: msg.carried.copies + 1,
            progress: msg.progress.to_map(),
            outcome: None,
            follow_ups_pending: false,
        };
        copy(shared, msg, Duration::ZERO, carried).await;
    } else {
        release(shared, std::iter::once(msg)).await;
    }
}

/// Turns a failed job error into the text Shoal stores and announces: the operation that
/// failed, if one did, and the message.
pub(super) fn failure_text(error: &JobError) -> String {
    shoal_common::event::truncate(&error.to_string(), MAX_REASON_CHARS)
}

/// Longest error text copied into a DLQ attribute or event.
const MAX_REASON_CHARS: usize = 2000;
