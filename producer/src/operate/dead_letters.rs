//! The dead-letter queue, listed and redriven.
//!
//! Redrive sends each job to the job queue before it deletes it from the dead-letter queue,
//! so an interrupted redrive loses nothing: at worst a job is on both queues, and because the
//! job id is the idempotency key, running it again has no second effect. Messages a filter
//! passes over are held invisible while the redrive pages through the queue (so each is
//! looked at once) and released when it ends, interrupted or not; if it is killed they
//! return by themselves after the visibility timeout.
//!
//! With the job ledger, a dead-lettered job's record says it failed, and a worker answers a
//! finished record from the record: redriven as it is, the job would be dead-lettered again at
//! once, and a redrive that read its own new dead letters would go round for ever. So the
//! redrive opens each failed record for a rerun before it sends the job (see
//! `shoal_common::ledger::Ledger::rerun`), and moves only dead letters that were there when it
//! began.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client as SqsClient;
use serde::Serialize;
use shoal_common::batch::send_with_resends;
use shoal_common::error::{classify_sdk_error, Error, ErrorClass};
use shoal_common::ledger::{Ledger, Rerun};

use crate::batch::SendBatch;
use shoal_common::queue::{dead_letter_attribute as attr, senders_attributes};

/// A dead-lettered job and why it is there.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// From the body, when it is a JSON object with one.
    pub job_id: Option<String>,
    pub kind: Option<String>,
    /// `transient` or `permanent`; `None` when SQS's redrive policy moved it (a worker died
    /// or never finished it) rather than a worker.
    pub error_class: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<u32>,
    pub failed_at: Option<String>,
    /// When it was put on the dead-letter queue (RFC 3339).
    pub sent_at: Option<String>,
    pub body: String,
}

impl DeadLetter {
    pub(super) fn from_message(msg: &Message) -> Self {
        let attribute = |name: &str| {
            msg.message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .map(str::to_owned)
        };
        let body = msg.body().unwrap_or_default().to_owned();
        let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let sent_at = msg
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        DeadLetter {
            message_id: msg.message_id().unwrap_or_default().to_owned(),
            job_id: field("job_id"),
            kind: field("kind").or_else(|| attribute("kind")),
            error_class: attribute(attr::CLASS),
            error_code: attribute(attr::CODE),
            error: attribute(attr::MESSAGE),
            attempts: attribute(attr::ATTEMPTS).and_then(|a| a.parse().ok()),
            failed_at: attribute(attr::FAILED_AT),
            sent_at,
            body,
        }
    }
}

/// Which dead-lettered jobs a redrive moves: all when both lists are empty, otherwise
/// those whose job id or kind is listed.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    pub job_ids: Vec<String>,
    pub kinds: Vec<String>,
}

impl RedriveFilter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        (self.job_ids.is_empty() && self.kinds.is_empty())
            || letter
                .job_id
                .as_ref()
                .is_some_and(|id| self.job_ids.contains(id))
            || letter.kind.as_ref().is_some_and(|k| self.kinds.contains(k))
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    /// Moved to the job queue and deleted from the dead-letter queue.
    pub moved: Vec<DeadLetter>,
    /// Of those moved, the failed jobs opened for their next run in the ledger: (job id,
    /// run number).
    pub rerun: Vec<(String, u32)>,
    /// Left where they were, by the filter.
    pub skipped: usize,
    /// Dead-lettered after the redrive began (a job it moved that failed again, say): left
    /// for the next redrive, so no job goes round twice in one.
    pub arrived_since: usize,
    /// Could not be sent; still on the dead-letter queue. (message id, reason)
    pub failed: Vec<(String, String)>,
    /// Stopped early (interrupted): what is above was done, the rest left where it was.
    pub interrupted: bool,
}

/// Where a redrive moves dead letters from and to, and the ledger whose failed records it
/// opens for a rerun.
#[derive(Debug, Clone, Copy)]
pub struct Redrive<'a> {
    pub sqs: &'a SqsClient,
    pub dlq_url: &'a str,
    pub queue_url: &'a str,
    pub ledger: Option<&'a Ledger>,
}

/// How long the pages of a listing or redrive stay hidden from other readers by default:
/// long enough to page through the queue, short enough that an interrupted run's messages
/// come back soon.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(60);

/// Reads a queue page by page, each message once, hiding each page for `hold` so the next
/// receive gets other messages.
pub(super) struct Pager<'a> {
    sqs: &'a SqsClient,
    url: &'a str,
    hold: Duration,
    limit: Option<usize>,
    seen: HashSet<String>,
    taken: usize,
    empty_in_a_row: u32,
}

impl<'a> Pager<'a> {
    pub(super) fn new(
        sqs: &'a SqsClient,
        url: &'a str,
        hold: Duration,
        limit: Option<usize>,
    ) -> Self {
        Pager {
            sqs,
            url,
            hold,
            limit,
            seen: HashSet::new(),
            taken: 0,
            empty_in_a_row: 0,
        }
    }

    /// The next page of messages not seen before; `None` at the end.
    pub(super) async fn next_page(&mut self) -> Result<Option<Vec<Message>>, Error> {
        // SQS answers a receive from a sample of its servers: an empty answer is only
        // believed twice in a row.
        while self.empty_in_a_row < 2 && self.limit.is_none_or(|l| self.taken < l) {
            let want = self.limit.map_or(10, |l| (l - self.taken).min(10));
            let out = self
                .sqs
                .receive_message()
                .queue_url(self.url)
                .max_number_of_messages(want as i32)
                .visibility_timeout(self.hold.as_secs().max(1) as i32)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| classify_sdk_error("ReceiveMessage", &e))?;
            let seen = &mut self.seen;
            let fresh: Vec<Message> = out
                .messages
                .unwrap_or_default()
                .into_iter()
                .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_owned()))
                .collect();
            if fresh.is_empty() {
                self.empty_in_a_row += 1;
                continue;
            }
            self.empty_in_a_row = 0;
            self.taken += fresh.len();
            return Ok(Some(fresh));
        }
        Ok(None)
    }
}

pub(super) fn receipt(msg: &Message) -> String {
    msg.receipt_handle().unwrap_or_default().to_owned()
}

/// Makes `receipts` visible again at once.
pub(super) async fn release(sqs: &SqsClient, url: &str, receipts: &[String]) -> Result<(), Error> {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        sqs.change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify_sdk_error("ChangeMessageVisibilityBatch", &e))?;
    }
    Ok(())
}

/// Every dead-lettered job (up to `limit`), oldest first. Nothing is consumed: the messages
/// are hidden while the listing pages through them and released at the end.
pub async fn list_dead_letters(
    sqs: &SqsClient,
    dlq_url: &str,
    hold: Duration,
    limit: Option<usize>,
) -> Result<Vec<DeadLetter>, Error> {
    let mut letters = Vec::new();
    let mut held = Vec::new();
    let mut pager = Pager::new(sqs, dlq_url, hold, limit);
    let listed = async {
        while let Some(page) = pager.next_page().await? {
            held.extend(page.iter().map(receipt));
            letters.extend(page.iter().map(DeadLetter::from_message));
        }
        Ok::<_, Error>(())
    }
    .await;
    release(sqs, dlq_url, &held).await?;
    listed?;
    letters.sort_by(|a, b| a.sent_at.cmp(&b.sent_at));
    Ok(letters)
}

/// Moves the dead-lettered jobs `filter` selects (up to `limit`) back to the job queue,
/// with their body and the sender's attributes, without the failure attributes.
///
/// With a ledger, each moved job's failed record is first opened for its next run
/// ([`Ledger::rerun`]): without that, the worker would find the failure on record and
/// dead-letter the job again at once. Each dead letter moves at most once: one that SQS
/// received after the redrive began is left for the next one. `stop` ends the redrive
/// between pages (a receive under way, and the page it brings, are finished first): the
/// report says what was done, and every message it hid is made visible again.
pub async fn redrive(
    at: Redrive<'_>,
    filter: &RedriveFilter,
    hold: Duration,
    limit: Option<usize>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<RedriveReport, Error> {
    let began = chrono::Utc::now();
    let fifo = at.queue_url.ends_with(".fifo");
    let mut report = RedriveReport::default();
    let mut held = Vec::new();
    let mut pager = Pager::new(at.sqs, at.dlq_url, hold, None);
    tokio::pin!(stop);
    let moved = async {
        loop {
            // Looked at between pages only: a receive cut off mid-call could hide a page
            // whose receipts never arrive, which nothing could release.
            if futures::FutureExt::now_or_never(&mut stop).is_some() {
                report.interrupted = true;
                break;
            }
            let Some(page) = pager.next_page().await? else {
                break;
            };
            let mut chosen = Vec::new();
            for msg in page {
                let letter = DeadLetter::from_message(&msg);
                let room = limit.is_none_or(|l| report.moved.len() + chosen.len() < l);
                if arrived_after(&msg, began) {
                    report.arrived_since += 1;
                    held.push(receipt(&msg));
                } else if room && filter.matches(&letter) {
                    chosen.push((msg, letter));
                } else {
                    report.skipped += 1;
                    held.push(receipt(&msg));
                }
            }
            if !chosen.is_empty() {
                held.extend(move_batch(at, fifo, chosen, &mut report).await?);
            }
            if limit.is_some_and(|l| report.moved.len() >= l) {
                break;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    // Released whatever happened above, so skipped jobs do not sit hidden for a minute.
    release(at.sqs, at.dlq_url, &held).await?;
    moved?;
    Ok(report)
}

/// Whether SQS received `msg` on the dead-letter queue after `began`. A worker sends a
/// failure there itself (received then); one SQS's redrive policy moved keeps its first
/// sent time, earlier still.
fn arrived_after(msg: &Message, began: chrono::DateTime<chrono::Utc>) -> bool {
    msg.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|ms| ms > began.timestamp_millis())
}

/// Opens each chosen job's failed record for its next run, before it is sent. A job not
/// failed (succeeded, running, open) is moved as it is: its worker answers from the
/// record. A ledger that does not answer leaves the job on the dead-letter queue.
async fn open_for_rerun(
    ledger: &Ledger,
    chosen: Vec<(Message, DeadLetter)>,
    report: &mut RedriveReport,
) -> (Vec<(Message, DeadLetter)>, Vec<String>) {
    let mut ready = Vec::new();
    let mut left = Vec::new();
    for (msg, letter) in chosen {
        let Some(job_id) = letter.job_id.clone() else {
            ready.push((msg, letter));
            continue;
        };
        match ledger.rerun(&job_id).await {
            Ok(Rerun::Reopened { run, .. }) => {
                report.rerun.push((job_id, run));
                ready.push((msg, letter));
            }
            Ok(Rerun::NotFailed(_) | Rerun::NoRecord) => ready.push((msg, letter)),
            Err(e) => {
                report.failed.push((
                    letter.message_id.clone(),
                    format!("the ledger did not open it for a rerun: {e}"),
                ));
                left.push(receipt(&msg));
            }
        }
    }
    (ready, left)
}

/// Sends one page of chosen messages to the job queue and deletes from the dead-letter
/// queue those that arrived. Returns the receipts of those that did not, to release.
async fn move_batch(
    at: Redrive<'_>,
    fifo: bool,
    chosen: Vec<(Message, DeadLetter)>,
    report: &mut RedriveReport,
) -> Result<Vec<String>, Error> {
    let Redrive {
        sqs,
        dlq_url,
        queue_url,
        ..
    } = at;
    let (chosen, mut not_moved) = match at.ledger {
        Some(ledger) => open_for_rerun(ledger, chosen, report).await,
        None => (chosen, Vec::new()),
    };
    let items = chosen
        .into_iter()
        .enumerate()
        .map(|(i, (msg, letter))| redrive_entry(i, &msg, fifo).map(|entry| (i, msg, letter, entry)))
        .collect::<Result<Vec<_>, _>>()?;
    // On the one batch path every sender shares: an entry is sent only when SQS's answer says
    // so, so one the answer leaves out is not deleted from the dead-letter queue.
    let sent = send_with_resends(&SendBatch { sqs, queue_url }, items, |(_, _, _, entry)| {
        entry
    })
    .await;
    let mut deletes = Vec::new();
    for ((i, msg, letter, _), result) in sent.results {
        match result {
            Err(e) => {
                report.failed.push((
                    letter.message_id.clone(),
                    format!("{}: {}", e.code_or_none(), e.message),
                ));
                not_moved.push(receipt(&msg));
            }
            Ok(_) => {
                deletes.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt(&msg))
                        .build()
                        .map_err(|e| permanent("DeleteMessageBatch", e.to_string()))?,
                );
                report.moved.push(letter);
            }
        }
    }
    if !deletes.is_empty() {
        // A delete that fails leaves the job on both queues; the job id makes the second
        // run a no-op, and the next redrive finds it again, so report rather than abort.
        let out = sqs
            .delete_message_batch()
            .queue_url(dlq_url)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| classify_sdk_error("DeleteMessageBatch", &e))?;
        for f in out.failed() {
            tracing::warn!(
                entry = f.id(),
                code = f.code(),
                "moved, but not deleted from the dead-letter queue"
            );
        }
    }
    Ok(not_moved)
}

fn redrive_entry(
    index: usize,
    msg: &Message,
    fifo: bool,
) -> Result<SendMessageBatchRequestEntry, Error> {
    let attributes: HashMap<String, MessageAttributeValue> = msg
        .message_attributes
        .as_ref()
        .map(|attributes| {
            senders_attributes(attributes)
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(msg.body().unwrap_or_default())
        .set_message_attributes(Some(attributes));
    if fifo {
        let group = msg
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned()
            .unwrap_or_else(|| "redrive".into());
        // Not the job id: SQS would drop the redriven copy as a duplicate of the original
        // if it was sent within the last five minutes.
        let dedup = format!("redrive-{}", msg.message_id().unwrap_or_default());
        entry = entry
            .message_group_id(group)
            .message_deduplication_id(dedup);
    }
    entry
        .build()
        .map_err(|e| permanent("SendMessageBatch", e.to_string()))
}

fn permanent(operation: &'static str, message: String) -> Error {
    Error {
        operation: Some(operation),
        class: ErrorClass::Permanent,
        code: None,
        message,
    }
}
