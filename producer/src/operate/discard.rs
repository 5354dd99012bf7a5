//! Dead letters removed for good: [`delete_dead_letters`] the ones named (by message id, for a
//! message that carries no job id, or by job id), and [`purge_dead_letters`] all of them. What
//! cannot be redriven (a body no worker will ever decode, a test's leftovers) would otherwise
//! sit on the dead-letter queue until its retention ends, hiding the letters that matter.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use aws_sdk_sqs::Client as SqsClient;
use serde::Serialize;
use shoal_common::error::{classify_sdk_error, Error, ErrorClass};
use shoal_common::queue::QueueAttributes;

use super::dead_letters::{receipt, release, Pager};
use super::DeadLetter;

/// What a delete did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deleted {
    /// Deleted from the dead-letter queue.
    pub deleted: Vec<DeadLetter>,
    /// Named, but on the dead-letter queue under neither a message id nor a job id.
    pub not_found: Vec<String>,
    /// Found, but SQS did not delete them: (message id, why). Still on the queue.
    pub failed: Vec<(String, String)>,
}

/// Deletes the dead letters whose message id or job id is in `ids`, paging through the
/// dead-letter queue once (each page hidden for `hold` while it is read; the others are
/// released at the end, whatever happened).
pub async fn delete_dead_letters(
    sqs: &SqsClient,
    dlq_url: &str,
    ids: &[String],
    hold: Duration,
) -> Result<Deleted, Error> {
    let mut report = Deleted::default();
    let mut held = Vec::new();
    let mut found: Vec<&str> = Vec::new();
    let mut pager = Pager::new(sqs, dlq_url, hold, None);
    let deleted = async {
        while let Some(page) = pager.next_page().await? {
            let mut chosen: Vec<(Message, DeadLetter)> = Vec::new();
            for msg in page {
                let letter = DeadLetter::from_message(&msg);
                let named = ids.iter().find(|id| {
                    **id == letter.message_id || letter.job_id.as_deref() == Some(id.as_str())
                });
                match named {
                    Some(id) => {
                        found.push(id.as_str());
                        chosen.push((msg, letter));
                    }
                    None => held.push(receipt(&msg)),
                }
            }
            if !chosen.is_empty() {
                delete_batch(sqs, dlq_url, chosen, &mut report).await?;
            }
            if ids.iter().all(|id| found.contains(&id.as_str())) {
                break;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    release(sqs, dlq_url, &held).await?;
    deleted?;
    report.not_found = ids
        .iter()
        .filter(|id| !found.contains(&id.as_str()))
        .cloned()
        .collect();
    Ok(report)
}

async fn delete_batch(
    sqs: &SqsClient,
    dlq_url: &str,
    chosen: Vec<(Message, DeadLetter)>,
    report: &mut Deleted,
) -> Result<(), Error> {
    let entries = chosen
        .iter()
        .enumerate()
        .map(|(i, (msg, _))| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt(msg))
                .build()
                .map_err(|e| Error {
                    operation: Some("DeleteMessageBatch"),
                    class: ErrorClass::Permanent,
                    code: None,
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = sqs
        .delete_message_batch()
        .queue_url(dlq_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| classify_sdk_error("DeleteMessageBatch", &e))?;
    let failed: Vec<(&str, String)> = out
        .failed()
        .iter()
        .map(|f| {
            (
                f.id(),
                format!("{}: {}", f.code(), f.message().unwrap_or("not deleted")),
            )
        })
        .collect();
    for (i, (_, letter)) in chosen.into_iter().enumerate() {
        match failed.iter().find(|(id, _)| *id == i.to_string()) {
            Some((_, why)) => report.failed.push((letter.message_id, why.clone())),
            None => report.deleted.push(letter),
        }
    }
    Ok(())
}

/// Deletes every message on the dead-letter queue (SQS's `PurgeQueue`: within a minute, and
/// once a minute at most); returns about how many there were.
pub async fn purge_dead_letters(sqs: &SqsClient, dlq_url: &str) -> Result<u64, Error> {
    let before = QueueAttributes::fetch(sqs, dlq_url).await?;
    sqs.purge_queue()
        .queue_url(dlq_url)
        .send()
        .await
        .map_err(|e| classify_sdk_error("PurgeQueue", &e))?;
    Ok(before.visible + before.in_flight + before.delayed)
}
