//! Bulk sending through `SendMessageBatch`.
//!
//! Messages are packed in order into batches of at most 10 entries and at most SQS's byte
//! limit for a whole batch. A batch call can succeed while failing some entries; those that
//! failed through no fault of the sender (throttling, internal errors) are resent with a
//! jittered exponential backoff, a few times, and only then reported, by index, with the
//! code SQS gave. Entries that were the sender's fault are reported at once.

use std::time::Duration;

use aws_sdk_sqs::Client as SqsClient;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;
use futures::stream::{self, StreamExt};
use shoal_common::error::{classify_sdk_error, ErrorClass};
use shoal_common::job::MAX_MESSAGE_BYTES;
use shoal_common::JobId;

use crate::message::OutgoingMessage;
use crate::Enqueued;

/// SQS's limit on entries per batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Calls made for one batch before its remaining failures are reported.
const MAX_ATTEMPTS: u32 = 5;

/// What a bulk send did, by index into the caller's list.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BatchReport {
    pub enqueued: Vec<(usize, Enqueued)>,
    pub failed: Vec<FailedEntry>,
    /// Entries sent more than once because an earlier call failed them.
    pub retried_entries: usize,
    /// `SendMessageBatch` calls made.
    pub calls: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedEntry {
    pub index: usize,
    pub job_id: JobId,
    pub code: String,
    pub message: String,
}

/// Groups `messages` into batches, keeping their order: a batch closes at 10 entries or
/// when the next message would take it over the byte limit.
pub fn pack(messages: &[OutgoingMessage]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, msg) in messages.iter().enumerate() {
        let size = msg.size();
        if !current.is_empty()
            && (current.len() == MAX_BATCH_ENTRIES || bytes + size > MAX_MESSAGE_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

pub(crate) async fn send_all(
    sqs: &SqsClient,
    queue_url: &str,
    messages: Vec<OutgoingMessage>,
    concurrency: usize,
    on_sent: &(dyn Fn(usize) + Sync),
) -> BatchReport {
    let batches = pack(&messages);
    let messages = &messages;
    let reports: Vec<BatchReport> = stream::iter(batches)
        .map(|batch| send_batch(sqs, queue_url, messages, batch, on_sent))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut total = BatchReport::default();
    for r in reports {
        total.enqueued.extend(r.enqueued);
        total.failed.extend(r.failed);
        total.retried_entries += r.retried_entries;
        total.calls += r.calls;
    }
    total.enqueued.sort_by_key(|(i, _)| *i);
    total.failed.sort_by_key(|f| f.index);
    total
}

async fn send_batch(
    sqs: &SqsClient,
    queue_url: &str,
    messages: &[OutgoingMessage],
    mut pending: Vec<usize>,
    on_sent: &(dyn Fn(usize) + Sync),
) -> BatchReport {
    let mut report = BatchReport::default();
    let mut backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_max_interval(Duration::from_secs(5))
        .with_max_elapsed_time(None)
        .build();
    // The last failure of each still-pending entry, reported if attempts run out.
    let mut last_error: Vec<(usize, String, String)> = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        if attempt > 1 {
            report.retried_entries += pending.len();
            if let Some(delay) = backoff.next_backoff() {
                tokio::time::sleep(delay).await;
            }
        }
        report.calls += 1;
        let entries = pending
            .iter()
            .map(|&i| messages[i].batch_entry(i.to_string()))
            .collect();
        let result = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let err = classify_sdk_error("SendMessageBatch", &e);
                let code = err.code.clone().unwrap_or_else(|| "CallFailed".into());
                last_error = pending
                    .iter()
                    .map(|&i| (i, code.clone(), err.message.clone()))
                    .collect();
                if err.class == ErrorClass::Permanent {
                    break;
                }
                continue;
            }
        };
        let sent = out.successful().len();
        for ok in out.successful() {
            if let Ok(i) = ok.id().parse::<usize>() {
                report.enqueued.push((
                    i,
                    Enqueued {
                        job_id: messages[i].job_id.clone(),
                        kind: messages[i].kind,
                        message_id: ok.message_id().to_owned(),
                    },
                ));
            }
        }
        if sent > 0 {
            on_sent(sent);
        }
        let mut retry = Vec::new();
        last_error.clear();
        for failed in out.failed() {
            let Ok(i) = failed.id().parse::<usize>() else {
                continue;
            };
            let entry = (
                i,
                failed.code().to_owned(),
                failed.message().unwrap_or_default().to_owned(),
            );
            if failed.sender_fault() {
                report.failed.push(failure(messages, entry));
            } else {
                retry.push(i);
                last_error.push(entry);
            }
        }
        pending = retry;
        if pending.is_empty() {
            break;
        }
    }
    report
        .failed
        .extend(last_error.into_iter().map(|entry| failure(messages, entry)));
    report
}

fn failure(
    messages: &[OutgoingMessage],
    (index, code, message): (usize, String, String),
) -> FailedEntry {
    FailedEntry {
        index,
        job_id: messages[index].job_id.clone(),
        code,
        message,
    }
}
