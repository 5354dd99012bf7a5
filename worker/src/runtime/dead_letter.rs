//! Dead-lettering: copy the job to the dead-letter queue with its reason, announce the
//! failure, delete the original.
//!
//! The copy keeps the body and the sender's attributes and gains the `shoal-error-*`
//! attributes, so no job reaches the DLQ without its reason. Once the copy is there, the
//! failure event takes the same road as a success's: retried while the message is held, then
//! carried forward on a fresh copy that only announces, so the job is never copied twice.

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::Utc;
use shoal_common::error::classify_sdk_error;
use shoal_common::event::{EventError, JobEvent, JobStatus};
use shoal_common::metrics::UNKNOWN_KIND;
use shoal_common::queue::dead_letter_attribute as attr;
use tokio::time::Instant;

use super::carry_out::{self, failure_text, Disposition};
use super::poll::Delivery;
use super::run::Attempt;
use super::settle::DeadLetterReason;
use super::Shared;
use crate::handler::JobError;
use crate::retry::retry_delay;

pub(super) async fn dead_letter(
    shared: &Shared,
    msg: &Delivery,
    attempt: &Attempt<'_>,
    error: JobError,
    reason: DeadLetterReason,
) -> Disposition {
    let cfg = &shared.config;
    let kind_label = attempt
        .envelope
        .map(|e| e.kind().as_str())
        .unwrap_or(UNKNOWN_KIND);
    tracing::warn!(error = %error, code = ?error.code, reason = reason.label(), "dead-lettering");
    let reason_text = failure_text(&error);
    let ours: Vec<(&str, String)> = vec![
        (attr::CLASS, error.class.as_str().to_owned()),
        (
            attr::CODE,
            error.code.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            attr::MESSAGE,
            if reason_text.is_empty() {
                "(no message)".into()
            } else {
                reason_text.clone()
            },
        ),
        (attr::ATTEMPTS, attempt.number.to_string()),
        (attr::FAILED_AT, Utc::now().to_rfc3339()),
        (attr::SOURCE_MESSAGE_ID, msg.message_id.clone()),
    ];
    // SQS allows ten attributes a message: keep the sender's first, then ours.
    let mut send = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.dlq_url)
        .message_body(&msg.body);
    for (name, value) in carry_out::sender_attributes(msg, ours.len()) {
        send = send.message_attributes(name, value.clone());
    }
    for (name, value) in &ours {
        if let Ok(attr) = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
        {
            send = send.message_attributes(*name, attr);
        }
    }
    if cfg.fifo {
        send = send
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "dead-letter".into()))
            .message_deduplication_id(&msg.message_id);
    }
    let give_up_at = Instant::now() + cfg.announce_hold;
    let mut tries = 1;
    while let Err(e) = send.clone().send().await {
        let err = classify_sdk_error("SendMessage", &e);
        if Instant::now() >= give_up_at {
            tracing::error!(error = %err, "cannot move a failed job to the dead-letter queue; it will be tried again");
            let delay = retry_delay(tries, cfg.retry_base, cfg.retry_max);
            return carry_out::change_visibility(shared, msg, delay).await;
        }
        tracing::info!(error = %err, "cannot reach the dead-letter queue yet; retrying while the message is held");
        tokio::time::sleep(
            retry_delay(tries, cfg.retry_base / 4, cfg.retry_max).min(give_up_at - Instant::now()),
        )
        .await;
        tries += 1;
    }
    shared
        .metrics
        .jobs_dead_lettered
        .with_label_values(&[kind_label, reason.label()])
        .inc();
    let failure = EventError {
        class: error.class,
        code: error.code,
        message: reason_text,
        dead_lettered: true,
    };
    let event = JobEvent::new(
        attempt.event_source(shared, msg),
        JobStatus::Failed,
        None,
        Some(failure),
    );
    match carry_out::announce_then_delete(shared, msg, attempt.envelope, event, false).await {
        Disposition::Deleted => Disposition::DeadLettered,
        other => other,
    }
}
