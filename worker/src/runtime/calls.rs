//! The runtime's calls to SQS and SNS for one delivery, each retried while the delivery
//! holds its message and none deciding anything: publish an event, delete, change
//! visibility, release, send a fresh copy, send to the dead-letter queue, send a follow-up.
//!
//! A call that keeps failing transiently is retried for `announce_hold` (the heartbeat keeps
//! the message meanwhile), pausing as [`hold_pause`] says; then its error goes back to the
//! step that made it, and [`settle`](super::settle) decides what follows.

use std::time::Duration;

use aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder;
use aws_sdk_sqs::types::MessageAttributeValue;
use shoal_common::error::{classify_sdk_error, Error, ErrorClass, ShoalCode};
use shoal_common::event::{CloudEvent, JobEvent};
use shoal_common::ledger::LedgerError;
use shoal_common::queue::{attribute_value, job_attributes, senders_attributes, CARRIED_STATE};
use shoal_common::telemetry;
use shoal_common::JobEnvelope;
use tokio::time::Instant;

use super::carried::Carried;
use super::delivery::{Delivery, Disposition};
use super::settle::hold_pause;
use super::Shared;
use crate::batch::{Publication, VisibilityChange};
use crate::retry::MAX_VISIBILITY;

/// SQS allows ten message attributes.
const MAX_ATTRIBUTES: usize = 10;

/// A failure a call held by a delivery may be tried again after.
pub(super) trait Retryable {
    /// Whether trying again may help.
    fn is_transient(&self) -> bool;
    /// The code, for the log.
    fn code_or_none(&self) -> &str;
}

impl Retryable for Error {
    fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    fn code_or_none(&self) -> &str {
        Error::code_or_none(self)
    }
}

/// A lost lease is the ledger's final word; a call that did not go through may be retried.
impl Retryable for LedgerError {
    fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Call(e) if e.class == ErrorClass::Transient)
    }

    fn code_or_none(&self) -> &str {
        match self {
            LedgerError::LeaseLost(_) => "LeaseLost",
            LedgerError::Call(e) => e.code_or_none(),
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or the delivery has retried it for
/// `announce_hold` (the heartbeat keeps the message meanwhile); the last error otherwise.
pub(super) async fn while_held<T, E, F, Fut>(
    shared: &Shared,
    what: &'static str,
    call: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    while_held_for(what, shared.config.announce_hold, call).await
}

/// [`while_held`], retrying for `hold` at most.
pub(super) async fn while_held_for<T, E, F, Fut>(
    what: &'static str,
    hold: Duration,
    mut call: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let give_up_at = Instant::now() + hold;
    let mut tries = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_transient() || Instant::now() >= give_up_at => return Err(e),
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

/// Publishes `event` to the completion topic, continuing the attempt's trace.
pub(super) async fn announce(shared: &Shared, event: &JobEvent) -> Result<(), Error> {
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

/// Deletes the message; a stale receipt means another delivery of it is under way, and that
/// one will find the job done.
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

/// Makes the message visible again after `delay`.
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

/// Sends a fresh copy of the message carrying `carried`, visible after `delay`, then deletes
/// the original. `Err` when the copy could not be sent: the original is untouched.
pub(super) async fn copy(
    shared: &Shared,
    msg: &Delivery,
    delay: Duration,
    carried: &Carried,
) -> Result<Disposition, Error> {
    let cfg = &shared.config;
    let mut send = message_again(shared, msg, &cfg.queue_url, 1);
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
    send_while_held(shared, "send a copy of the job", send).await?;
    Ok(match delete(shared, msg).await {
        Disposition::Deleted => Disposition::Returned,
        other => other,
    })
}

/// Sends the message to the dead-letter queue with `ours` (the `shoal-error-*` attributes)
/// after as many of the sender's attributes as leave room for them.
pub(super) async fn send_to_dead_letter_queue(
    shared: &Shared,
    msg: &Delivery,
    ours: &[(&'static str, String)],
) -> Result<(), Error> {
    let cfg = &shared.config;
    let mut send = message_again(shared, msg, &cfg.dlq_url, ours.len());
    for (name, value) in ours {
        send = send.message_attributes(*name, attribute_value("String", value));
    }
    if cfg.fifo {
        send = send
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "dead-letter".into()))
            .message_deduplication_id(&msg.message_id);
    }
    send_while_held(shared, "move the job to the dead-letter queue", send).await
}

/// Sends one follow-up of `msg`'s job, with the attributes a producer gives every job.
pub(super) async fn send_follow_up(
    shared: &Shared,
    msg: &Delivery,
    job: &JobEnvelope,
) -> Result<(), Error> {
    let cfg = &shared.config;
    // The follow-up's attempt continues this one's trace: a chain is one trace.
    let trace = telemetry::context_of(&tracing::Span::current());
    let mut request = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.queue_url)
        .message_body(job.to_json());
    for (name, data_type, value) in job_attributes(job.kind(), &trace) {
        request = request.message_attributes(name, attribute_value(data_type, value));
    }
    if cfg.fifo {
        // The chain keeps its parent's group, so its steps run in order behind it.
        request = request
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "shoal".into()))
            .message_deduplication_id(job.job_id.to_string());
    }
    send_while_held(shared, "enqueue a follow-up", request).await
}

/// `msg` again, for `queue_url`: its body and the sender's attributes, leaving room for
/// `ours` attributes more.
fn message_again(
    shared: &Shared,
    msg: &Delivery,
    queue_url: &str,
    ours: usize,
) -> SendMessageFluentBuilder {
    let mut send = shared
        .clients
        .sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(&msg.body);
    for (name, value) in sender_attributes(msg, ours) {
        send = send.message_attributes(name, value.clone());
    }
    send
}

/// Sends `request`, retrying while the message is held.
async fn send_while_held(
    shared: &Shared,
    what: &'static str,
    request: SendMessageFluentBuilder,
) -> Result<(), Error> {
    while_held(shared, what, || async {
        request
            .clone()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("SendMessage", &e))
    })
    .await
}

/// The sender's message attributes (not Shoal's own), leaving room for `ours` more.
fn sender_attributes(
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
    let mut attributes: Vec<_> = senders_attributes(&msg.attributes).collect();
    attributes.sort_by_key(|(n, _)| !first.contains(&n.as_str()));
    attributes
        .into_iter()
        .take(MAX_ATTRIBUTES.saturating_sub(ours))
}
