//! Bulk sending through `SendMessageBatch`.
//!
//! Messages are packed in order into batches of at most 10 entries and at most SQS's byte
//! limit for a whole batch. A batch call can succeed while failing some entries; those that
//! failed through no fault of the sender (throttling, internal errors) are resent
//! ([`shoal_common::batch::send_with_resends`], the worker's batchers use the same), and only
//! then reported, by index, with the code SQS gave. Entries that were the sender's fault are
//! reported at once.
//!
//! With a job ledger, each job's `queued` record is put once its message is sent (not
//! before: a send that fails leaves no record of a job that is not on the queue), in
//! conditional puts [`MAX_BATCH_WRITE`] to a `TransactWriteItems`, where no record is yet. A
//! worker that claims a job before its record is written keeps its own; a record not written
//! is reported, and the job runs all the same.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client as SqsClient;
use futures::stream::{FuturesUnordered, StreamExt};
use shoal_common::batch::{entry_results, failed_entry, send_with_resends, BatchCall};
use shoal_common::error::{classify_sdk_error, Error, ShoalCode};
use shoal_common::job::MAX_MESSAGE_BYTES;
use shoal_common::ledger::{Ledger, OutcomeItem, OutcomeWrites, MAX_BATCH_WRITE, RECORD_EXISTS};
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
    /// With a ledger: jobs sent whose `queued` record could not be written (they run all the
    /// same; their record appears when a worker claims them).
    pub unrecorded: Vec<String>,
    /// With a ledger: `TransactWriteItems` calls made for the `queued` records.
    pub record_calls: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedEntry {
    pub index: usize,
    pub job_id: JobId,
    pub code: String,
    pub message: String,
}

/// Packs messages into batches as they come, keeping their order: a batch closes at 10
/// entries or when the next message would take it over the byte limit.
#[derive(Debug)]
pub struct Packer<T> {
    current: Vec<T>,
    bytes: usize,
}

impl<T> Default for Packer<T> {
    fn default() -> Self {
        Packer {
            current: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Packer<T> {
    /// Adds a message of `size` bytes; returns the batch it closed, if it closed one.
    pub fn push(&mut self, item: T, size: usize) -> Option<Vec<T>> {
        let full = !self.current.is_empty()
            && (self.current.len() == MAX_BATCH_ENTRIES || self.bytes + size > MAX_MESSAGE_BYTES);
        let closed = full.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.current)
        });
        self.current.push(item);
        self.bytes += size;
        closed
    }

    /// The last, partly filled batch.
    pub fn finish(self) -> Option<Vec<T>> {
        (!self.current.is_empty()).then_some(self.current)
    }
}

/// Groups `messages` into batches (by index), keeping their order.
pub fn pack(messages: &[OutgoingMessage]) -> Vec<Vec<usize>> {
    let mut packer = Packer::default();
    let mut batches: Vec<Vec<usize>> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, msg)| packer.push(i, msg.size()))
        .collect();
    batches.extend(packer.finish());
    batches
}

impl BatchReport {
    fn absorb(&mut self, other: BatchReport) {
        self.enqueued.extend(other.enqueued);
        self.failed.extend(other.failed);
        self.retried_entries += other.retried_entries;
        self.calls += other.calls;
        self.unrecorded.extend(other.unrecorded);
        self.record_calls += other.record_calls;
    }
}

/// Where a sender sends: the queue, and the job ledger that records what was sent.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub sqs: &'a SqsClient,
    pub queue_url: &'a str,
    pub ledger: Option<&'a Ledger>,
}

pub(crate) async fn send_all(
    to: Target<'_>,
    messages: Vec<OutgoingMessage>,
    concurrency: usize,
    on_sent: &(dyn Fn(usize) + Sync),
) -> BatchReport {
    let mut total = BatchReport::default();
    send_streaming(
        to,
        messages.into_iter().enumerate(),
        concurrency,
        on_sent,
        |report| total.absorb(report),
    )
    .await;
    total.enqueued.sort_by_key(|(i, _)| *i);
    total.failed.sort_by_key(|f| f.index);
    total
}

/// Sends `messages` (each with the caller's index for it) as they come, packed into batches,
/// at most `concurrency` calls in flight: memory holds what is in flight, whatever the number
/// of messages. Each batch's report goes to `on_report` as its call completes. With a ledger,
/// each sent job's `queued` record is put once its message is sent, [`MAX_BATCH_WRITE`] to a
/// call.
pub(crate) async fn send_streaming(
    to: Target<'_>,
    messages: impl Iterator<Item = (usize, OutgoingMessage)>,
    concurrency: usize,
    on_sent: &(dyn Fn(usize) + Sync),
    mut on_report: impl FnMut(BatchReport),
) {
    let mut in_flight = FuturesUnordered::new();
    let mut packer = Packer::default();
    let mut batches = messages
        .filter_map(|(i, msg)| {
            let size = msg.size();
            packer.push((i, msg), size)
        })
        .fuse();
    let mut records = Records::new(to.ledger);
    loop {
        while in_flight.len() < concurrency.max(1) {
            match batches.next() {
                Some(batch) => in_flight.push(send_batch(to, batch, on_sent)),
                None => break,
            }
        }
        match in_flight.next().await {
            Some((report, sent)) => {
                on_report(report);
                if let Some(unrecorded) = records.add(sent).await {
                    on_report(unrecorded);
                }
            }
            None => break,
        }
    }
    drop(batches);
    if let Some(last) = packer.finish() {
        let (report, sent) = send_batch(to, last, on_sent).await;
        on_report(report);
        if let Some(unrecorded) = records.add(sent).await {
            on_report(unrecorded);
        }
    }
    if let Some(unrecorded) = records.flush().await {
        on_report(unrecorded);
    }
}

/// The `queued` records of sent jobs, put [`MAX_BATCH_WRITE`] to a call.
pub(crate) struct Records<'a> {
    ledger: Option<&'a Ledger>,
    pending: Vec<OutcomeItem>,
}

impl<'a> Records<'a> {
    pub(crate) fn new(ledger: Option<&'a Ledger>) -> Self {
        Records {
            ledger,
            pending: Vec::new(),
        }
    }

    /// Takes the records of `sent` jobs; puts the full batches. A report of the puts, if
    /// any were made.
    pub(crate) async fn add(&mut self, sent: Vec<OutgoingMessage>) -> Option<BatchReport> {
        let ledger = self.ledger?;
        self.pending
            .extend(sent.iter().map(|msg| msg.queued_record(ledger)));
        self.put(MAX_BATCH_WRITE).await
    }

    /// Puts what is pending, the last batch however small.
    pub(crate) async fn flush(&mut self) -> Option<BatchReport> {
        self.put(1).await
    }

    /// Puts batches while at least `least` records are pending.
    async fn put(&mut self, least: usize) -> Option<BatchReport> {
        let ledger = self.ledger?;
        let mut report = BatchReport::default();
        while self.pending.len() >= least.max(1) {
            let chunk: Vec<OutcomeItem> = self
                .pending
                .drain(..self.pending.len().min(MAX_BATCH_WRITE))
                .collect();
            let put = send_with_resends(&OutcomeWrites(ledger.clone()), chunk, |item| item).await;
            report.record_calls += put.calls;
            for (item, result) in put.results {
                match result {
                    // On record already: a worker claimed it first, or it was sent before.
                    Err(e) if e.code.as_deref() == Some(RECORD_EXISTS) => {}
                    Err(e) => {
                        tracing::warn!(job_id = item.job_id(), error = %e, "the job was sent, but its queued record was not written");
                        report.unrecorded.push(item.job_id().to_owned());
                    }
                    Ok(()) => {}
                }
            }
        }
        (report.record_calls > 0).then_some(report)
    }
}

/// `SendMessageBatch` on a queue; each entry's id is its index in the caller's list. An
/// entry is sent only when the answer says so (one it leaves out is resent, then failed).
pub(crate) struct SendBatch<'a> {
    pub sqs: &'a SqsClient,
    pub queue_url: &'a str,
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
        let ids: Vec<String> = entries.iter().map(|e| e.id().to_owned()).collect();
        let done = out
            .successful()
            .iter()
            .map(|ok| (ok.id(), Ok(ok.message_id().to_owned())));
        let failed = out.failed().iter().map(|f| {
            (
                f.id(),
                Err(failed_entry(f.sender_fault(), f.code(), f.message())),
            )
        });
        entry_results(&ids, done.chain(failed))
    }
}

/// Sends one batch; its report, and the messages sent.
async fn send_batch(
    to: Target<'_>,
    batch: Vec<(usize, OutgoingMessage)>,
    on_sent: &(dyn Fn(usize) + Sync),
) -> (BatchReport, Vec<OutgoingMessage>) {
    let Target { sqs, queue_url, .. } = to;
    let entries: Vec<(usize, OutgoingMessage, SendMessageBatchRequestEntry)> = batch
        .into_iter()
        .map(|(i, msg)| {
            let entry = msg.batch_entry(i.to_string());
            (i, msg, entry)
        })
        .collect();
    let sent = send_with_resends(&SendBatch { sqs, queue_url }, entries, |(_, _, e)| e).await;
    let mut report = BatchReport {
        calls: sent.calls,
        retried_entries: sent.resent,
        ..BatchReport::default()
    };
    let mut sent_messages = Vec::new();
    for ((i, msg, _), result) in sent.results {
        match result {
            Ok(message_id) => {
                report.enqueued.push((
                    i,
                    Enqueued {
                        job_id: msg.job_id.clone(),
                        kind: msg.kind,
                        message_id,
                    },
                ));
                if to.ledger.is_some() {
                    sent_messages.push(msg);
                }
            }
            Err(e) => report.failed.push(FailedEntry {
                index: i,
                job_id: msg.job_id,
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
    (report, sent_messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendOptions;
    use shoal_common::job::Canary;
    use shoal_common::{Job, JobEnvelope};

    fn message(sleep_ms: u64) -> OutgoingMessage {
        OutgoingMessage::build(
            &JobEnvelope::new(Job::new(Canary { sleep_ms })),
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
