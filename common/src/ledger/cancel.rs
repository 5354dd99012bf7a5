//! Cancelling a job: an operator's verb on its record. A job not running (queued, waiting
//! between runs, retrying, or not on record at all) is marked `cancelled` with its outcome,
//! so the worker that next receives it runs nothing, announces the cancellation and deletes
//! it; a running job is asked to stop (`cancel_requested`), and its holder learns at its next
//! lease extension. Each write is conditioned on the record being what was read: a cancel
//! and a worker's claim at the same instant end in exactly one of the two.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::json;

use super::{attr, is_condition_failure, ms, n, s, Ledger, Record, Status};
use crate::error::{classify_sdk_error, Error, ErrorClass, ShoalCode};
use crate::event::{EventError, EventSource, JobEvent, JobStatus};

/// What asking to cancel a job came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// It will not run: whoever receives it next announces the cancellation.
    Cancelled,
    /// It is running on `holder`, which stops at its next lease extension: nothing more is
    /// created or waited for, and its outcome is the cancellation.
    Requested { holder: Option<String> },
    /// It is over already.
    Finished(Box<Record>),
}

/// The cancellation of the job `record` describes (or of `job_id`, not on record), by `by`.
fn cancelled_event(job_id: &str, record: Option<&Record>, by: &str) -> JobEvent {
    let source = EventSource::not_run(
        Some(job_id.to_owned()),
        record.and_then(|r| r.kind.clone()),
        record.map_or(0, |r| r.attempt),
        String::new(),
        by.to_owned(),
    );
    let made = record
        .map(|r| super::made(&r.progress))
        .filter(|p| !p.is_empty());
    let mut event = JobEvent::new(
        source,
        JobStatus::Cancelled,
        made.map(|progress| json!({ "progress": progress })),
        Some(EventError {
            class: ErrorClass::Permanent,
            code: Some(ShoalCode::Cancelled.as_str().to_owned()),
            message: format!("cancelled by {by}"),
            dead_lettered: false,
        }),
    );
    if let Some(r) = record {
        event.chain_id = r.chain_id.clone();
        event.parent_job_id = r.parent_job_id.clone();
        event.run = r.run;
    }
    event
}

impl Ledger {
    /// Cancels `job_id` on behalf of `by` (an operator's name, recorded and announced).
    pub async fn cancel(&self, job_id: &str, by: &str) -> Result<Cancel, Error> {
        for _ in 0..3 {
            let now = Utc::now();
            let record = self.get(job_id).await?;
            let event = cancelled_event(job_id, record.as_ref(), by);
            let outcome = serde_json::to_string(&event).map_err(|e| {
                Error::permanent(
                    "Unserializable",
                    format!("the outcome does not serialize: {e}"),
                )
            })?;
            let request = match &record {
                Some(r) if r.status.is_finished() => {
                    return Ok(Cancel::Finished(Box::new(r.clone())))
                }
                // A live lease: its holder is asked, and stops at its next extension.
                Some(r) if r.status == Status::Running && r.lease_until.is_some_and(|t| t > now) => {
                    let sent = self
                        .update(job_id)
                        .condition_expression("#fence = :fence AND #status = :running")
                        .update_expression("SET #cancel = :by, #updated = :now")
                        .expression_attribute_names("#fence", attr::FENCE)
                        .expression_attribute_names("#status", attr::STATUS)
                        .expression_attribute_names("#cancel", attr::CANCEL_REQUESTED)
                        .expression_attribute_names("#updated", attr::UPDATED_AT)
                        .expression_attribute_values(":fence", n(r.fence))
                        .expression_attribute_values(":running", s(Status::Running.as_str()))
                        .expression_attribute_values(":by", s(by))
                        .expression_attribute_values(":now", ms(now))
                        .send()
                        .await;
                    match sent {
                        Ok(_) => {
                            return Ok(Cancel::Requested {
                                holder: r.holder.clone(),
                            })
                        }
                        Err(e) if is_condition_failure(&e) => continue,
                        Err(e) => return Err(classify_sdk_error("UpdateItem", &e)),
                    }
                }
                // Queued, between runs, or held by a lease that lapsed: over, as it is now.
                Some(r) => self
                    .update(job_id)
                    .condition_expression(
                        "#fence = :fence AND #status = :seen AND (attribute_not_exists(#lease) OR #lease < :now)",
                    )
                    .update_expression(
                        "SET #status = :cancelled, #outcome = :outcome, #finished = :now, \
                         #lease = :zero, #cancel = :by, #updated = :now, #expires = :expires",
                    )
                    .expression_attribute_names("#fence", attr::FENCE)
                    .expression_attribute_values(":fence", n(r.fence))
                    .expression_attribute_values(":seen", s(r.status.as_str()))
                    .expression_attribute_values(":expires", self.verb_expires_at(Some(r), now)),
                // Not on record (sent by a producer without the ledger, or not yet): a
                // record that says so, where none is, so it never runs if it comes.
                None => {
                    let item = HashMap::from([
                        (attr::JOB_ID.to_owned(), s(job_id)),
                        (attr::STATUS.to_owned(), s(Status::Cancelled.as_str())),
                        (attr::OUTCOME.to_owned(), s(outcome.as_str())),
                        (attr::FENCE.to_owned(), n(0)),
                        (attr::LEASE_UNTIL.to_owned(), n(0)),
                        (attr::CANCEL_REQUESTED.to_owned(), s(by)),
                        (attr::FINISHED_AT.to_owned(), ms(now)),
                        (attr::UPDATED_AT.to_owned(), ms(now)),
                        (
                            attr::EXPIRES_AT.to_owned(),
                            self.verb_expires_at(None, now),
                        ),
                    ]);
                    let sent = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(#id) OR #expires < :now_s")
                        .expression_attribute_names("#id", attr::JOB_ID)
                        .expression_attribute_names("#expires", attr::EXPIRES_AT)
                        .expression_attribute_values(":now_s", n(now.timestamp().max(0) as u64))
                        .send()
                        .await;
                    match sent {
                        Ok(_) => return Ok(Cancel::Cancelled),
                        Err(e) if is_condition_failure(&e) => continue,
                        Err(e) => return Err(classify_sdk_error("PutItem", &e)),
                    }
                }
            };
            let sent = request
                .expression_attribute_names("#status", attr::STATUS)
                .expression_attribute_names("#lease", attr::LEASE_UNTIL)
                .expression_attribute_names("#outcome", attr::OUTCOME)
                .expression_attribute_names("#finished", attr::FINISHED_AT)
                .expression_attribute_names("#cancel", attr::CANCEL_REQUESTED)
                .expression_attribute_names("#updated", attr::UPDATED_AT)
                .expression_attribute_names("#expires", attr::EXPIRES_AT)
                .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
                .expression_attribute_values(":outcome", s(outcome))
                .expression_attribute_values(":now", ms(now))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":by", s(by))
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(Cancel::Cancelled),
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(classify_sdk_error("UpdateItem", &e)),
            }
        }
        Err(Error::transient(
            "RecordChanging",
            format!("the record of job {job_id} changed on each of three tries; cancel it again"),
        ))
    }
}
