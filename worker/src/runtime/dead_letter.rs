//! Dead-lettering: copy the job to the dead-letter queue with its reason, announce the
//! failure, delete the original.
//!
//! The copy keeps the body and the sender's attributes and gains the `shoal-error-*`
//! attributes, so no job reaches the DLQ without its reason. If the DLQ will not take it
//! while this delivery holds the message, or the failure event cannot be published after, the
//! caller carries the job forward on a fresh copy that does only what is left, so the handler
//! never runs again and no receive is spent: SQS's own redrive, which would move the job
//! without its reason, is never reached however long the outage.

use chrono::Utc;
use shoal_common::error::Error;
use shoal_common::event::{EventError, JobEvent, JobStatus};
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::queue::dead_letter_attribute as attr;

use super::announce_then_delete::{announce_then_delete, Unannounced};
use super::calls::send_to_dead_letter_queue;
use super::carried::PendingDeadLetter;
use super::delivery::{Attempt, Delivery, Disposition};
use super::Shared;

/// How far dead-lettering got.
pub(super) enum DeadLettered {
    /// In the DLQ, announced, and the original settled as this says.
    Done(Disposition),
    /// The DLQ did not take the copy.
    NotSent(Error),
    /// In the DLQ, but its failure event could not be published.
    Unannounced(Box<Unannounced>),
}

/// Moves `msg` to the dead-letter queue with `failure`'s reason, announces `event` (the
/// failure, as [`failure_event`] makes it, unless the job's own outcome is to be told), then
/// deletes the original.
pub(super) async fn dead_letter(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    failure: &PendingDeadLetter,
    event: JobEvent,
) -> DeadLettered {
    let kind_label = attempt
        .envelope
        .map(|e| e.kind().as_str())
        .unwrap_or(UNKNOWN_KIND);
    tracing::warn!(error = %failure.message, code = ?failure.code, reason = failure.reason.label(), "dead-lettering");
    let ours: Vec<(&'static str, String)> = vec![
        (attr::CLASS, failure.class.as_str().to_owned()),
        (
            attr::CODE,
            failure.code.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            attr::MESSAGE,
            if failure.message.is_empty() {
                "(no message)".into()
            } else {
                failure.message.clone()
            },
        ),
        (attr::ATTEMPTS, failure.attempt.to_string()),
        (attr::FAILED_AT, Utc::now().to_rfc3339()),
        (attr::SOURCE_MESSAGE_ID, msg.message_id.clone()),
    ];
    if let Err(error) = send_to_dead_letter_queue(shared, msg, &ours).await {
        return DeadLettered::NotSent(error);
    }
    shared
        .metrics
        .jobs_dead_lettered
        .with_label_values(&[kind_label, failure.reason.label()])
        .inc();
    match announce_then_delete(shared, msg, None, event).await {
        Ok(Disposition::Deleted) => DeadLettered::Done(Disposition::DeadLettered),
        Ok(other) => DeadLettered::Done(other),
        Err(unannounced) => DeadLettered::Unannounced(Box::new(unannounced)),
    }
}

/// The failed event of a job dead-lettered for `failure`.
pub(super) fn failure_event(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    failure: &PendingDeadLetter,
) -> JobEvent {
    JobEvent::new(
        attempt.event_source(&shared.worker_id, msg),
        JobStatus::Failed,
        None,
        Some(EventError {
            class: failure.class,
            code: failure.code.clone(),
            message: failure.message.clone(),
            dead_lettered: true,
        }),
    )
}
