//! Reruns under the same job id: an operator's verb on a failed (or cancelled) record. The record becomes
//! one a delivery may claim again (`open`, no lease), its run number one higher, the failed
//! run's outcome kept among its earlier failures, and its progress (what earlier runs
//! created) kept, so the rerun takes up what was made and creates nothing twice.
//!
//! The write is conditioned on the record being failed and unchanged since it was read: a
//! rerun and anything else writing the record at the same moment (another operator's rerun,
//! a worker) end in exactly one of the two.

use chrono::Utc;
use serde_json::Value;

use super::{attr, is_condition_failure, ms, n, s, Ledger, Record, Status};
use crate::error::{classify_sdk_error, Error};

/// What asking for a rerun came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Rerun {
    /// The record is open again for its next run, numbered `run`; the record as it was.
    Reopened { run: u32, was: Box<Record> },
    /// The record is not failed or cancelled (queued, running, open, succeeded): nothing
    /// changed.
    NotFailed(Box<Record>),
    /// No record of this job id (or an expired one).
    NoRecord,
}

impl Ledger {
    /// Opens `job_id`'s failed record for a rerun ([`Rerun`]). Reads the record, then writes
    /// on the condition that it is still what was read; a record changed in between is read
    /// again and judged as it is.
    pub async fn rerun(&self, job_id: &str) -> Result<Rerun, Error> {
        for _ in 0..3 {
            let Some(record) = self.get(job_id).await? else {
                return Ok(Rerun::NoRecord);
            };
            if !matches!(record.status, Status::Failed | Status::Cancelled) {
                return Ok(Rerun::NotFailed(Box::new(record)));
            }
            let run = record.run.saturating_add(1);
            let mut failures = record.earlier_failures.clone();
            failures.push(serde_json::json!({
                "run": record.run,
                "finished_at": record.finished_at,
                "error": record.outcome.as_ref().and_then(|o| o.error.clone()),
            }));
            let now = Utc::now();
            let sent = self
                .update(job_id)
                .condition_expression("#status IN (:failed, :cancelled) AND #updated = :seen")
                .update_expression(
                    "SET #status = :open, #lease = :zero, #run = :run, #failures = :failures, \
                     #updated = :now, #expires = :expires \
                     REMOVE #outcome, #finished, #holder, #cancel",
                )
                .expression_attribute_names("#status", attr::STATUS)
                .expression_attribute_names("#updated", attr::UPDATED_AT)
                .expression_attribute_names("#lease", attr::LEASE_UNTIL)
                .expression_attribute_names("#run", attr::RUN)
                .expression_attribute_names("#failures", attr::EARLIER_FAILURES)
                .expression_attribute_names("#expires", attr::EXPIRES_AT)
                .expression_attribute_names("#outcome", attr::OUTCOME)
                .expression_attribute_names("#finished", attr::FINISHED_AT)
                .expression_attribute_names("#holder", attr::HOLDER)
                .expression_attribute_names("#cancel", attr::CANCEL_REQUESTED)
                .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
                .expression_attribute_values(":failed", s(Status::Failed.as_str()))
                .expression_attribute_values(":open", s(Status::Open.as_str()))
                .expression_attribute_values(":seen", record.updated_at.map_or(n(0), ms))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":run", n(u64::from(run)))
                .expression_attribute_values(":failures", s(Value::from(failures).to_string()))
                .expression_attribute_values(":now", ms(now))
                .expression_attribute_values(":expires", self.verb_expires_at(Some(&record), now))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    return Ok(Rerun::Reopened {
                        run,
                        was: Box::new(record),
                    })
                }
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(classify_sdk_error("UpdateItem", &e)),
            }
        }
        // Changed under us three times running: judged as it is now.
        Ok(match self.get(job_id).await? {
            None => Rerun::NoRecord,
            Some(record) => Rerun::NotFailed(Box::new(record)),
        })
    }
}
