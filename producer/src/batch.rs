//! Bulk sending through `SendMessageBatch`.
//!
//! Messages are packed in order into batches of at most 10 entries and at most SQS's byte
//! limit for a whole batch. A batch call can succeed while failing some entries; those that
//! failed through no fault of the sender (throttling, internal errors) are resent
//! ([`shoal_common::batch::send_with_resends`], the worker's batchers use the same), and only
//! then reported, by index, with the code SQS gave. Entries that were the sender's fault are
//! reported at once.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client as SqsClient;
use futures::stream::{self, StreamExt};
use shoal_common::batch::{send_with_resends, BatchCall};
use shoal_common::error::{classify_sdk_error, Error, ShoalCode};
use shoal_common::job::MAX_MESSAGE_BYTES;
use shoal_common::JobId;

use crate::message::OutgoingMessage;
use crate::Enqueued;

/// SQS's limit on entries per batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;

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

/// `SendMessageBatch` on the job queue; each entry's id is its index in the caller's list.
struct SendBatch<'a> {
    sqs: &'a SqsClient,
    queue_url: &'a str,
}

impl BatchCall for SendBatch<'_> {
    type Entry = SendMessageBatchRequestEntry;
    /// The message id SQS gave.
    type Ok = String;

    async fn call(&self, entries: &[&SendMessageBatchRequestEntry]) -> Vec<Result<String, Error>> {
        let result = self
            .sqs
            .send_message_batch()
            .queue_url(self.queue_url)
            .set_entries(Some(entries.iter().map(|e| (*e).clone()).collect()))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => return vec![Err(classify_sdk_error("SendMessageBatch", &e)); entries.len()],
        };
        let position = |id: &str| entries.iter().position(|e| e.id() == id);
        let mut results: Vec<Result<String, Error>> = vec![
            Err(Error::shoal(
                ShoalCode::MissingEntry,
                "the batch answer left this entry out"
            ));
            entries.len()
        ];
        for ok in out.successful() {
            if let Some(i) = position(ok.id()) {
                results[i] = Ok(ok.message_id().to_owned());
            }
        }
        for failed in out.failed() {
            if let Some(i) = position(failed.id()) {
                let message = failed.message().unwrap_or_default();
                results[i] = Err(if failed.sender_fault() {
                    Error::permanent(failed.code(), message)
                } else {
                    Error::transient(failed.code(), message)
                });
            }
        }
        results
    }
}

async fn send_batch(
    sqs: &SqsClient,
    queue_url: &str,
    messages: &[OutgoingMessage],
    batch: Vec<usize>,
    on_sent: &(dyn Fn(usize) + Sync),
) -> BatchReport {
    let entries: Vec<(usize, SendMessageBatchRequestEntry)> = batch
        .into_iter()
        .map(|i| (i, messages[i].batch_entry(i.to_string())))
        .collect();
    let sent = send_with_resends(&SendBatch { sqs, queue_url }, entries, |(_, e)| e).await;
    let mut report = BatchReport {
        calls: sent.calls,
        retried_entries: sent.resent,
        ..BatchReport::default()
    };
    for ((i, _), result) in sent.results {
        match result {
            Ok(message_id) => report.enqueued.push((
                i,
                Enqueued {
                    job_id: messages[i].job_id.clone(),
                    kind: messages[i].kind,
                    message_id,
                },
            )),
            Err(e) => report.failed.push(FailedEntry {
                index: i,
                job_id: messages[i].job_id.clone(),
                code: e
                    .code
                    .unwrap_or_else(|| ShoalCode::CallFailed.as_str().to_owned()),
                message: e.message,
            }),
        }
    }
    if !report.enqueued.is_empty() {
        on_sent(report.enqueued.len());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendOptions;
    use shoal_common::job::Canary;
    use shoal_common::{Job, JobEnvelope};

    fn message(sleep_ms: u64) -> OutgoingMessage {
        OutgoingMessage::build(
            &JobEnvelope::new(Job::Canary(Canary { sleep_ms })),
            &SendOptions::default(),
            false,
        )
        .expect("valid")
    }

    #[test]
    fn batches_close_at_ten_entries_and_keep_the_order() {
        let messages: Vec<OutgoingMessage> = (0..23).map(message).collect();
        let batches = pack(&messages);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 3]
        );
        let flat: Vec<usize> = batches.concat();
        assert_eq!(flat, (0..23).collect::<Vec<_>>());
    }

    #[test]
    fn batches_close_before_the_byte_limit() {
        let mut big = message(0);
        big.body = "x".repeat(100 * 1024);
        let messages = vec![big.clone(), big.clone(), big.clone(), message(1)];
        let batches = pack(&messages);
        for batch in &batches {
            let bytes: usize = batch.iter().map(|&i| messages[i].size()).sum();
            assert!(bytes <= MAX_MESSAGE_BYTES, "{bytes}");
        }
        assert_eq!(batches, vec![vec![0, 1], vec![2, 3]]);
        assert!(pack(&[]).is_empty());
    }
}
