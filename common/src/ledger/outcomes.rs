//! The outcomes of kinds that take no lease ([`JobKind::takes_lease`](crate::JobKind)),
//! written in batches: a canary's record costs a twenty-fifth of a `TransactWriteItems`, not
//! a call of its own.
//!
//! Such a kind's effect is idempotent by itself, so nothing is claimed and nothing is
//! fenced: its record is put whole, finished, before its event is announced (the order the
//! leasing kinds keep too). Each put is conditioned, in the one call, on the id being free or
//! this job's own unfinished record: a job id names one job, so a canary sent under the id of
//! a launch (finished or still running) changes nothing of the launch's record, and a canary
//! run again finds its own finished record and announces that. `BatchWriteItem` takes no
//! condition; a transaction does, and names the items whose condition failed, so the others
//! are sent again in the next call (a transaction is all or nothing).
//!
//! The producer's records of jobs it has just enqueued (`queued`, [`Ledger::queued_item`])
//! go the same way, on a stricter condition: only where the id is free (or expired). A job
//! resubmitted, or sent again by a producer's retry, leaves the record it has alone; a worker
//! that claimed the job first has its record kept.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::{attr, n, s, Ledger, Status};
use crate::batch::BatchCall;
use crate::error::{classify_sdk_error, Error, ErrorClass, ShoalCode};
use crate::event::JobEvent;
use crate::JobEnvelope;

/// The most items one outcome batch carries (`TransactWriteItems` takes 100; 25 keeps a
/// batch as it was under `BatchWriteItem`, and a cancelled one cheap to send again).
pub const MAX_BATCH_WRITE: usize = 25;

/// The code of an outcome whose put was refused: the id is on record already.
pub const RECORD_EXISTS: &str = "ConditionalCheckFailed";

const OPERATION: &str = "TransactWriteItems";

/// One record, as it will be put: a finished one, or a job just enqueued.
#[derive(Debug, Clone)]
pub struct OutcomeItem {
    job_id: String,
    kind: String,
    digest: String,
    item: HashMap<String, AttributeValue>,
    /// Put only where no record is (a queued job's); else also over this job's own
    /// unfinished record (an outcome's).
    only_new: bool,
}

impl OutcomeItem {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

fn ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis().max(0) as u64)
}

fn refused(message: String) -> Error {
    Error {
        class: ErrorClass::Permanent,
        code: None,
        operation: Some(OPERATION),
        message,
    }
}

impl Ledger {
    /// The finished record of `envelope`'s job, whose outcome is `event`, to be put by
    /// [`Ledger::put_outcomes`]. `Err` for an event that does not serialize.
    pub fn outcome_item(
        &self,
        event: &JobEvent,
        envelope: &JobEnvelope,
    ) -> Result<OutcomeItem, Error> {
        let job_id = envelope.job_id.to_string();
        let outcome = serde_json::to_string(event)
            .map_err(|e| refused(format!("the outcome does not serialize: {e}")))?;
        let status = Status::of(event.status);
        let kind = envelope.kind().as_str().to_owned();
        let digest = envelope.digest();
        let now = Utc::now();
        let mut item = HashMap::from([
            (attr::JOB_ID.to_owned(), s(job_id.as_str())),
            (attr::STATUS.to_owned(), s(status.as_str())),
            (attr::KIND.to_owned(), s(kind.as_str())),
            (attr::DIGEST.to_owned(), s(digest.as_str())),
            (attr::ENVELOPE.to_owned(), s(envelope.to_json())),
            (attr::OUTCOME.to_owned(), s(outcome)),
            (attr::ATTEMPT.to_owned(), n(u64::from(event.attempts))),
            (attr::FENCE.to_owned(), n(0)),
            (attr::LEASE_UNTIL.to_owned(), n(0)),
            (attr::HOLDER.to_owned(), s(event.worker_id.as_str())),
            (attr::FINISHED_AT.to_owned(), ms(event.timings.finished_at)),
            (attr::UPDATED_AT.to_owned(), ms(now)),
            (attr::EXPIRES_AT.to_owned(), self.expires_at(now)),
            (attr::CHAIN_ID.to_owned(), s(envelope.chain_id().as_str())),
        ]);
        if let Some(parent) = &envelope.parent_job_id {
            item.insert(attr::PARENT_JOB_ID.to_owned(), s(parent.as_str()));
        }
        let first = event
            .timings
            .first_started_at
            .unwrap_or(event.timings.started_at);
        item.insert(attr::FIRST_STARTED_AT.to_owned(), ms(first));
        Ok(OutcomeItem {
            job_id,
            kind,
            digest,
            item,
            only_new: false,
        })
    }

    /// The record of a job just enqueued, `queued` (or `scheduled`, due later; claimable by
    /// the first delivery, as an absent record is), to be put by [`Ledger::put_outcomes`] where no record is yet.
    pub fn queued_item(&self, job: &super::JobRef<'_>, scheduled: bool) -> OutcomeItem {
        let status = if scheduled {
            Status::Scheduled
        } else {
            Status::Queued
        };
        let job_id = job.job_id.to_string();
        let kind = job.kind.as_str().to_owned();
        let now = Utc::now();
        let mut item = HashMap::from([
            (attr::JOB_ID.to_owned(), s(job_id.as_str())),
            (attr::STATUS.to_owned(), s(status.as_str())),
            (attr::KIND.to_owned(), s(kind.as_str())),
            (attr::DIGEST.to_owned(), s(job.digest)),
            (attr::ENVELOPE.to_owned(), s(job.envelope)),
            (attr::ATTEMPT.to_owned(), n(0)),
            (attr::FENCE.to_owned(), n(0)),
            (attr::LEASE_UNTIL.to_owned(), n(0)),
            (attr::UPDATED_AT.to_owned(), ms(now)),
            // A producer's ledger may know no TTL: the record then lives as an operator's
            // verb's does, long enough for a worker to claim it.
            (attr::EXPIRES_AT.to_owned(), self.verb_expires_at(None, now)),
            (attr::CHAIN_ID.to_owned(), s(job.chain_id.as_str())),
        ]);
        if let Some(parent) = job.parent_job_id {
            item.insert(attr::PARENT_JOB_ID.to_owned(), s(parent.as_str()));
        }
        OutcomeItem {
            job_id,
            kind,
            digest: job.digest.to_owned(),
            item,
            only_new: true,
        }
    }

    /// The conditional put of one record: where there is no record under its id (or an
    /// expired one), or, for an outcome, this job's own unfinished one.
    fn conditional_put(&self, item: &OutcomeItem, now_s: u64) -> Result<TransactWriteItem, Error> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item.item.clone()))
            .expression_attribute_names("#id", attr::JOB_ID)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":now_s", n(now_s));
        let put = if item.only_new {
            put.condition_expression("attribute_not_exists(#id) OR #expires < :now_s")
        } else {
            // A rerun's record (it has a run number) keeps its run and earlier failures, which
            // a whole-item put would drop: it is refused here, and finished by
            // `Ledger::finish_rerun` instead.
            put.condition_expression(
                "attribute_not_exists(#id) OR #expires < :now_s \
                 OR (#kind = :kind AND #digest = :digest \
                     AND NOT #status IN (:succeeded, :failed, :cancelled) \
                     AND attribute_not_exists(#run))",
            )
            .expression_attribute_names("#run", attr::RUN)
            .expression_attribute_names("#kind", attr::KIND)
            .expression_attribute_names("#digest", attr::DIGEST)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":kind", s(item.kind.as_str()))
            .expression_attribute_values(":digest", s(item.digest.as_str()))
            .expression_attribute_values(":succeeded", s(Status::Succeeded.as_str()))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
        };
        let put = put.build().map_err(|e| {
            Error::shoal(ShoalCode::CallFailed, e.to_string()).in_operation(OPERATION)
        })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Puts `items` in one `TransactWriteItems` (at most [`MAX_BATCH_WRITE`]), each on its
    /// condition; each item's own result, by position. An item whose condition failed is
    /// refused for good with [`RECORD_EXISTS`] (the caller reads the record to learn whose
    /// it is); the others of a cancelled transaction, and an item whose job id is already in
    /// the batch (a transaction names each item once), failed transiently, to be sent again.
    pub async fn put_outcomes(&self, items: &[&OutcomeItem]) -> Vec<Result<(), Error>> {
        let mut results: Vec<Option<Result<(), Error>>> = vec![None; items.len()];
        let mut sent: Vec<usize> = Vec::with_capacity(items.len());
        let mut requests = Vec::with_capacity(items.len());
        let now_s = Utc::now().timestamp().max(0) as u64;
        for (i, item) in items.iter().enumerate() {
            let result = results.get_mut(i);
            if sent.iter().any(|&j| {
                items
                    .get(j)
                    .is_some_and(|other| other.job_id == item.job_id)
            }) {
                if let Some(r) = result {
                    *r = Some(Err(Error::transient(
                        "DuplicateKeyInBatch",
                        "the job id is in this batch already; sent in the next",
                    )
                    .in_operation(OPERATION)));
                }
                continue;
            }
            match self.conditional_put(item, now_s) {
                Ok(put) => {
                    sent.push(i);
                    requests.push(put);
                }
                Err(e) => {
                    if let Some(r) = result {
                        *r = Some(Err(e));
                    }
                }
            }
        }
        if !requests.is_empty() {
            let answer = self
                .client
                .transact_write_items()
                .set_transact_items(Some(requests))
                .send()
                .await;
            let per_item: Vec<Result<(), Error>> = match answer {
                Ok(_) => sent.iter().map(|_| Ok(())).collect(),
                Err(e) => {
                    let reasons = match e.as_service_error() {
                        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                            Some(c.cancellation_reasons().to_vec())
                        }
                        _ => None,
                    };
                    match reasons {
                        // By position, one reason per item sent.
                        Some(reasons) if reasons.len() == sent.len() => reasons
                            .iter()
                            .map(|r| match r.code() {
                                Some(code) if code == RECORD_EXISTS => Err(Error::permanent(
                                    RECORD_EXISTS,
                                    "the job id is on record already",
                                )
                                .in_operation(OPERATION)),
                                Some(code) if code != "None" => Err(Error::transient(
                                    code.to_owned(),
                                    r.message().unwrap_or("the item was not written").to_owned(),
                                )
                                .in_operation(OPERATION)),
                                _ => Err(Error::transient(
                                    "TransactionCanceled",
                                    "another item of the batch was refused; sent again",
                                )
                                .in_operation(OPERATION)),
                            })
                            .collect(),
                        _ => {
                            let e = classify_sdk_error(OPERATION, &e);
                            sent.iter().map(|_| Err(e.clone())).collect()
                        }
                    }
                }
            };
            for (&i, result) in sent.iter().zip(per_item) {
                if let Some(r) = results.get_mut(i) {
                    *r = Some(result);
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
