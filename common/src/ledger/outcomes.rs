//! The outcomes of kinds that take no lease ([`JobKind::takes_lease`](crate::JobKind)),
//! written in batches: a canary's record costs a twenty-fifth of a `BatchWriteItem`, not a
//! call of its own.
//!
//! Such a kind's effect is idempotent by itself, so nothing is claimed and nothing is
//! fenced: its record is put whole, finished, before its event is announced (the order the
//! leasing kinds keep too). `BatchWriteItem` takes no condition, so a put replaces what was
//! there; a delivery of a leasing kind that finds a finished record of another kind under its
//! job id refuses it (`JobIdReused`) rather than announce that outcome as its own.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use chrono::{DateTime, Utc};

use super::{attr, n, s, Ledger, Status};
use crate::batch::BatchCall;
use crate::error::{classify_sdk_error, Error, ErrorClass, ShoalCode};
use crate::event::{JobEvent, JobStatus};

/// The most items `BatchWriteItem` takes in one call.
pub const MAX_BATCH_WRITE: usize = 25;

/// One finished record, as it will be put.
#[derive(Debug, Clone)]
pub struct OutcomeItem {
    job_id: String,
    item: HashMap<String, AttributeValue>,
}

impl OutcomeItem {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

fn ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis().max(0) as u64)
}

impl Ledger {
    /// The finished record of `event`'s job, to be put by [`Ledger::put_outcomes`]. `Err`
    /// for an event without a job id (a malformed message has no record) or one that does
    /// not serialize.
    pub fn outcome_item(&self, event: &JobEvent) -> Result<OutcomeItem, Error> {
        let refused = |message: String| Error {
            class: ErrorClass::Permanent,
            code: None,
            operation: Some("BatchWriteItem"),
            message,
        };
        let job_id = event
            .job_id
            .clone()
            .ok_or_else(|| refused("an outcome without a job id has no record".into()))?;
        let outcome = serde_json::to_string(event)
            .map_err(|e| refused(format!("the outcome does not serialize: {e}")))?;
        let status = match event.status {
            JobStatus::Succeeded => Status::Succeeded,
            JobStatus::Failed => Status::Failed,
        };
        let now = Utc::now();
        let mut item = HashMap::from([
            (attr::JOB_ID.to_owned(), s(job_id.as_str())),
            (attr::STATUS.to_owned(), s(status.as_str())),
            (attr::OUTCOME.to_owned(), s(outcome)),
            (attr::ATTEMPT.to_owned(), n(u64::from(event.attempts))),
            (attr::FENCE.to_owned(), n(0)),
            (attr::LEASE_UNTIL.to_owned(), n(0)),
            (attr::HOLDER.to_owned(), s(event.worker_id.as_str())),
            (attr::FINISHED_AT.to_owned(), ms(event.timings.finished_at)),
            (attr::UPDATED_AT.to_owned(), ms(now)),
            (attr::EXPIRES_AT.to_owned(), self.expires_at(now)),
            (
                attr::CHAIN_ID.to_owned(),
                s(event.chain_id.as_deref().unwrap_or(job_id.as_str())),
            ),
        ]);
        if let Some(kind) = &event.kind {
            item.insert(attr::KIND.to_owned(), s(kind.as_str()));
        }
        if let Some(parent) = &event.parent_job_id {
            item.insert(attr::PARENT_JOB_ID.to_owned(), s(parent.as_str()));
        }
        let first = event
            .timings
            .first_started_at
            .unwrap_or(event.timings.started_at);
        item.insert(attr::FIRST_STARTED_AT.to_owned(), ms(first));
        Ok(OutcomeItem { job_id, item })
    }

    /// Puts `items` in one `BatchWriteItem` (at most [`MAX_BATCH_WRITE`]); each item's own
    /// result, by position. What DynamoDB hands back unprocessed (its throttling of a batch)
    /// failed transiently, to be sent again; so did an item whose job id is already in the
    /// batch, since DynamoDB refuses a whole batch that names one key twice.
    pub async fn put_outcomes(&self, items: &[&OutcomeItem]) -> Vec<Result<(), Error>> {
        let mut results: Vec<Option<Result<(), Error>>> = vec![None; items.len()];
        let mut sent: Vec<usize> = Vec::with_capacity(items.len());
        let mut requests = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if sent.iter().any(|&j| items[j].job_id == item.job_id) {
                results[i] = Some(Err(Error::transient(
                    "DuplicateKeyInBatch",
                    "the job id is in this batch already; sent in the next",
                )
                .in_operation("BatchWriteItem")));
                continue;
            }
            match PutRequest::builder()
                .set_item(Some(item.item.clone()))
                .build()
            {
                Ok(put) => {
                    sent.push(i);
                    requests.push(WriteRequest::builder().put_request(put).build());
                }
                Err(e) => {
                    results[i] = Some(Err(Error::shoal(ShoalCode::CallFailed, e.to_string())
                        .in_operation("BatchWriteItem")))
                }
            }
        }
        if !requests.is_empty() {
            let answer = self
                .client
                .batch_write_item()
                .request_items(self.table.clone(), requests)
                .send()
                .await;
            match answer {
                Err(e) => {
                    let e = classify_sdk_error("BatchWriteItem", &e);
                    for &i in &sent {
                        results[i] = Some(Err(e.clone()));
                    }
                }
                Ok(out) => {
                    let unprocessed: Vec<String> = out
                        .unprocessed_items
                        .unwrap_or_default()
                        .remove(&self.table)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|w| w.put_request)
                        .filter_map(|p| {
                            p.item
                                .get(attr::JOB_ID)
                                .and_then(|v| v.as_s().ok())
                                .cloned()
                        })
                        .collect();
                    for &i in &sent {
                        results[i] = Some(if unprocessed.contains(&items[i].job_id) {
                            Err(Error::transient(
                                "UnprocessedItems",
                                "DynamoDB left the item unprocessed",
                            )
                            .in_operation("BatchWriteItem"))
                        } else {
                            Ok(())
                        });
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::shoal(
                        ShoalCode::MissingEntry,
                        "the item was not sent",
                    ))
                })
            })
            .collect()
    }
}

/// [`Ledger::put_outcomes`] as a batch call, for the batchers that resend what failed.
pub struct OutcomeWrites(pub Ledger);

impl BatchCall for OutcomeWrites {
    type Entry = OutcomeItem;
    type Ok = ();

    async fn call(&self, entries: &[&OutcomeItem]) -> Vec<Result<(), Error>> {
        self.0.put_outcomes(entries).await
    }
}
