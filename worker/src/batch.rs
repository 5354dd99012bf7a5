//! Batching of the calls every job makes: `DeleteMessageBatch`, `ChangeMessageVisibilityBatch`,
//! SNS `PublishBatch`, and the ledger's conditional `TransactWriteItems` of outcomes of kinds
//! that take no lease.
//!
//! A job hands its entry to a [`Batcher`] and awaits the entry's own result. The batcher
//! closes a batch at ten entries, at the call's byte limit, or a few milliseconds after its
//! first entry, and keeps several calls in flight. Batch calls report failures per entry;
//! entries that failed through no fault of ours are resent
//! ([`shoal_common::batch::send_with_resends`]). The job then learns whether its entry went
//! through, so "announce, then delete" holds entry by entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::types::{MessageAttributeValue as SnsAttribute, PublishBatchRequestEntry};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use shoal_common::batch::{entry_results, failed_entry, send_with_resends, BatchCall};
use shoal_common::error::{classify_sdk_error, ShoalCode};
use shoal_common::metrics::Metrics;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// SQS and SNS take at most ten entries per batch call.
const MAX_ENTRIES: usize = 10;
/// SNS's limit on a whole `PublishBatch` request.
const MAX_PUBLISH_BATCH_BYTES: usize = 256 * 1024;
/// Batch calls in flight at once, per batcher.
const MAX_CALLS_IN_FLIGHT: usize = 16;

/// Why one entry did not go through: Shoal's one error type, classified here.
pub type EntryError = shoal_common::error::Error;

/// SQS's codes for a receipt handle that no longer names a delivery: the message was
/// delivered again (or deleted). In a batch of receipt handles whose other parameters Shoal
/// sets itself, `InvalidParameterValue` can only be about the handle, and SQS uses it for a
/// message no longer in flight.
const STALE_RECEIPT_CODES: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
    "InvalidParameterValue",
];

/// One batch API of the worker's, with what the batcher needs to know of it.
pub trait BatchOp: BatchCall<Ok = ()> + 'static
where
    Self::Entry: 'static,
{
    const OPERATION: &'static str;

    /// Bytes the entry counts against the call's limit; zero where the call has none.
    fn entry_bytes(_entry: &Self::Entry) -> usize {
        0
    }

    /// Byte limit of one call, if any.
    const MAX_BYTES: Option<usize> = None;

    /// Whether the entries are receipt handles, whose failure may mean the handle is stale.
    const RECEIPTS: bool = false;

    /// Most entries one call takes.
    const MAX_ENTRIES: usize = MAX_ENTRIES;

    /// Whether a batch waits up to the flush time for more entries when no call of its
    /// batcher is in flight. `false` is Nagle's rule: on an idle worker what is queued goes
    /// at once, and only while calls are in flight do entries wait to fill a batch.
    const LINGER_WHEN_IDLE: bool = true;

    /// The longest wait for more entries while calls are in flight, where it is longer than
    /// the worker's `--batch-flush`.
    const LINGER_WHEN_BUSY: Duration = Duration::ZERO;
}

type Pending<E> = (E, oneshot::Sender<Result<(), EntryError>>);

/// A handle for submitting entries; clone it freely. The batch loop ends, flushing what it
/// holds, once every handle is dropped.
pub struct Batcher<O: BatchOp> {
    tx: mpsc::Sender<Pending<O::Entry>>,
}

impl<O: BatchOp> Clone for Batcher<O> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<O: BatchOp> Batcher<O> {
    /// Starts the batch loop; the returned task ends after the last handle is dropped and
    /// every entry submitted has its answer.
    pub fn spawn(
        op: O,
        flush_after: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(batch_loop(Arc::new(op), rx, flush_after, metrics));
        (Batcher { tx }, task)
    }

    /// Submits one entry and waits for its result.
    pub async fn submit(&self, entry: O::Entry) -> Result<(), EntryError> {
        let (done, result) = oneshot::channel();
        if self.tx.send((entry, done)).await.is_err() {
            return Err(closed());
        }
        result.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> EntryError {
    EntryError::shoal(ShoalCode::BatcherClosed, "the worker is shutting down")
}

async fn batch_loop<O: BatchOp>(
    op: Arc<O>,
    mut rx: mpsc::Receiver<Pending<O::Entry>>,
    flush_after: Duration,
    metrics: Arc<Metrics>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let mut calls = JoinSet::new();
    let mut carried: Option<Pending<O::Entry>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let mut bytes = O::entry_bytes(&first.0);
        let mut batch = vec![first];
        let idle = in_flight.available_permits() == MAX_CALLS_IN_FLIGHT;
        let linger = if idle && !O::LINGER_WHEN_IDLE {
            // The jobs that finished with this one (a receive's ten end together) queue
            // their entries in the same turn of the runtime: let them.
            tokio::task::yield_now().await;
            Duration::ZERO
        } else {
            flush_after.max(O::LINGER_WHEN_BUSY)
        };
        let deadline = Instant::now() + linger;
        while batch.len() < O::MAX_ENTRIES {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(_) if linger.is_zero() => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_default(),
            };
            let Some(next) = next else { break };
            let size = O::entry_bytes(&next.0);
            if O::MAX_BYTES.is_some_and(|max| bytes + size > max) {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let op = op.clone();
        let metrics = metrics.clone();
        calls.spawn(async move {
            send_batch(&*op, batch, &metrics).await;
            drop(permit);
        });
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

async fn send_batch<O: BatchOp>(op: &O, batch: Vec<Pending<O::Entry>>, metrics: &Metrics) {
    let sent = send_with_resends(op, batch, |(entry, _)| entry).await;
    if sent.resent > 0 {
        metrics
            .batch_entry_retries
            .with_label_values(&[O::OPERATION])
            .inc_by(sent.resent as u64);
    }
    if sent.results.len() > 1 && refused_whole(&sent.results) {
        // A whole call refused for good (SNS refuses a `PublishBatch` for one bad entry):
        // each entry alone, so only the one at fault fails and its neighbours go out.
        let alone = sent.results.into_iter().map(|(pending, _)| async move {
            let sent = send_with_resends(op, vec![pending], |(entry, _)| entry).await;
            for ((_, done), result) in sent.results {
                let _ = done.send(result);
            }
        });
        futures::future::join_all(alone).await;
        return;
    }
    for ((_, done), result) in sent.results {
        let _ = done.send(result);
    }
}

/// Whether every entry failed for good with one and the same error: the call was refused as a
/// whole, not each entry on its own account.
fn refused_whole<I>(results: &[(I, Result<(), EntryError>)]) -> bool {
    let mut errors = results.iter().map(|(_, r)| r.as_ref().err());
    let Some(Some(first)) = errors.next() else {
        return false;
    };
    first.class == shoal_common::error::ErrorClass::Permanent
        && errors.all(|e| e.is_some_and(|e| e == first))
}

/// A batch call's output: the ids of the entries it reports done, and of those it reports
/// failed, with whether the sender was at fault, the code and the message.
trait EntryAnswers {
    fn successful_ids(&self) -> Vec<&str>;
    fn failed_entries(&self) -> Vec<(&str, bool, &str, Option<&str>)>;
}

/// SQS's answers name every successful entry's id; SNS's may leave one out, which then
/// counts as not done.
trait EntryId {
    fn entry_id(&self) -> Option<&str>;
}

impl EntryId for aws_sdk_sqs::types::DeleteMessageBatchResultEntry {
    fn entry_id(&self) -> Option<&str> {
        Some(self.id())
    }
}

impl EntryId for aws_sdk_sqs::types::ChangeMessageVisibilityBatchResultEntry {
    fn entry_id(&self) -> Option<&str> {
        Some(self.id())
    }
}

impl EntryId for aws_sdk_sns::types::PublishBatchResultEntry {
    fn entry_id(&self) -> Option<&str> {
        self.id()
    }
}

macro_rules! entry_answers {
    ($output:ty, $successful:ident, $failed:ident) => {
        impl EntryAnswers for $output {
            fn successful_ids(&self) -> Vec<&str> {
                self.$successful()
                    .iter()
                    .filter_map(EntryId::entry_id)
                    .collect()
            }

            fn failed_entries(&self) -> Vec<(&str, bool, &str, Option<&str>)> {
                self.$failed()
                    .iter()
                    .map(|f| (f.id(), f.sender_fault(), f.code(), f.message()))
                    .collect()
            }
        }
    };
}

entry_answers!(
    aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput,
    successful,
    failed
);
entry_answers!(
    aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput,
    successful,
    failed
);
entry_answers!(
    aws_sdk_sns::operation::publish_batch::PublishBatchOutput,
    successful,
    failed
);

/// Each entry's result from a batch call's result, entry `i` having had id `i`: a failed
/// call fails every entry with the call's classified error; otherwise an entry is done only
/// when the answer lists it done ([`entry_results`]).
fn per_entry<O: EntryAnswers, E>(
    operation: &'static str,
    receipts: bool,
    n: usize,
    result: Result<O, aws_sdk_sqs::error::SdkError<E>>,
) -> Vec<Result<(), EntryError>>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            let e = classify_sdk_error(operation, &e);
            return (0..n).map(|_| Err(e.clone())).collect();
        }
    };
    answer_per_entry(operation, receipts, n, &out)
}

fn answer_per_entry<O: EntryAnswers>(
    operation: &'static str,
    receipts: bool,
    n: usize,
    out: &O,
) -> Vec<Result<(), EntryError>> {
    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let done = out.successful_ids().into_iter().map(|id| (id, Ok(())));
    let failed = out
        .failed_entries()
        .into_iter()
        .map(|(id, sender_fault, code, message)| {
            let error = if receipts && STALE_RECEIPT_CODES.contains(&code) {
                EntryError::shoal(
                    ShoalCode::StaleReceipt,
                    format!("{code}: {}", message.unwrap_or_default()),
                )
            } else {
                failed_entry(sender_fault, code, message)
            };
            (id, Err(error))
        });
    entry_results(&ids, done.chain(failed))
        .into_iter()
        .map(|r| r.map_err(|e| e.in_operation(operation)))
        .collect()
}

/// `DeleteMessageBatch` on the job queue; an entry is a receipt handle.
pub struct DeleteOp {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl BatchOp for DeleteOp {
    const OPERATION: &'static str = "DeleteMessageBatch";
    const RECEIPTS: bool = true;
}

impl BatchCall for DeleteOp {
    type Entry = String;
    type Ok = ();

    async fn call(&self, entries: &[&String]) -> Vec<Result<(), EntryError>> {
        let batch = entries
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt.as_str())
                    .build()
                    .ok()
            })
            .collect();
        let result = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(batch))
            .send()
            .await;
        per_entry(
            <Self as BatchOp>::OPERATION,
            <Self as BatchOp>::RECEIPTS,
            entries.len(),
            result,
        )
    }
}

/// A visibility change: receipt handle and new timeout from now.
pub struct VisibilityChange {
    pub receipt: String,
    pub timeout: Duration,
}

/// `ChangeMessageVisibilityBatch` on the job queue: heartbeats, retry backoffs, releases.
pub struct VisibilityOp {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl BatchOp for VisibilityOp {
    const OPERATION: &'static str = "ChangeMessageVisibilityBatch";
    const RECEIPTS: bool = true;
}

impl BatchCall for VisibilityOp {
    type Entry = VisibilityChange;
    type Ok = ();

    async fn call(&self, entries: &[&VisibilityChange]) -> Vec<Result<(), EntryError>> {
        let batch = entries
            .iter()
            .enumerate()
            .filter_map(|(i, change)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(change.receipt.as_str())
                    .visibility_timeout(change.timeout.as_secs().min(i32::MAX as u64) as i32)
                    .build()
                    .ok()
            })
            .collect();
        let result = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(batch))
            .send()
            .await;
        per_entry(
            <Self as BatchOp>::OPERATION,
            <Self as BatchOp>::RECEIPTS,
            entries.len(),
            result,
        )
    }
}

/// One SNS message with its string attributes.
#[derive(Clone)]
pub struct Publication {
    pub message: String,
    pub attributes: Vec<(&'static str, String)>,
}

/// `PublishBatch` to the completion topic.
pub struct PublishOp {
    pub sns: aws_sdk_sns::Client,
    pub topic_arn: String,
}

impl BatchOp for PublishOp {
    const OPERATION: &'static str = "PublishBatch";
    const MAX_BYTES: Option<usize> = Some(MAX_PUBLISH_BATCH_BYTES);

    fn entry_bytes(p: &Publication) -> usize {
        p.message.len()
            + p.attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>()
    }
}

impl BatchCall for PublishOp {
    type Entry = Publication;
    type Ok = ();

    async fn call(&self, entries: &[&Publication]) -> Vec<Result<(), EntryError>> {
        let batch = entries
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let attributes: HashMap<String, SnsAttribute> = p
                    .attributes
                    .iter()
                    .filter_map(|(k, v)| {
                        SnsAttribute::builder()
                            .data_type("String")
                            .string_value(v)
                            .build()
                            .ok()
                            .map(|a| ((*k).to_owned(), a))
                    })
                    .collect();
                PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(&p.message)
                    .set_message_attributes(Some(attributes))
                    .build()
                    .ok()
            })
            .collect();
        let result = self
            .sns
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(batch))
            .send()
            .await;
        per_entry(
            <Self as BatchOp>::OPERATION,
            <Self as BatchOp>::RECEIPTS,
            entries.len(),
            result,
        )
    }
}

/// An outcome is written before its event goes out, so a write that waits is an event that
/// waits: on an idle worker it goes at once; under load, entries gather for up to 20 ms
/// while earlier writes are in flight, which fills batches of 25 from a few thousand jobs a
/// second.
impl BatchOp for shoal_common::ledger::OutcomeWrites {
    const OPERATION: &'static str = "TransactWriteItems";
    const MAX_ENTRIES: usize = shoal_common::ledger::MAX_BATCH_WRITE;
    const LINGER_WHEN_IDLE: bool = false;
    const LINGER_WHEN_BUSY: Duration = Duration::from_millis(20);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, DeleteMessageBatchResultEntry};

    fn done(id: &str) -> DeleteMessageBatchResultEntry {
        DeleteMessageBatchResultEntry::builder()
            .id(id)
            .build()
            .expect("entry")
    }

    #[test]
    fn an_entry_the_answer_leaves_out_is_not_done() {
        let out = DeleteMessageBatchOutput::builder()
            .set_successful(Some(vec![done("0"), done("2")]))
            .set_failed(Some(vec![BatchResultErrorEntry::builder()
                .id("3")
                .sender_fault(true)
                .code("ReceiptHandleIsInvalid")
                .build()
                .expect("entry")]))
            .build()
            .expect("output");
        let results = answer_per_entry("DeleteMessageBatch", true, 4, &out);
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[2], Ok(()));
        let missing = results[1].as_ref().expect_err("left out: not deleted");
        assert!(missing.is(ShoalCode::MissingEntry), "{missing:?}");
        assert_eq!(missing.operation, Some("DeleteMessageBatch"));
        let stale = results[3].as_ref().expect_err("failed");
        assert!(stale.is(ShoalCode::StaleReceipt), "{stale:?}");
    }
}
