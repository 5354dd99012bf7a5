//! The writes of a run that holds a job's lease, each conditioned on the run's fence
//! ([`Ledger::claim`] takes the lease): extending it (which is also where a run learns that an
//! operator asked it to stop), recording progress, giving the lease back, and recording the
//! outcome. A run whose fence is no longer the record's writes nothing
//! ([`LedgerError::LeaseLost`]). Beside them, the one outcome written without a lease that
//! must keep what the record holds: a rerun's ([`Ledger::finish_rerun`]).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use serde_json::{Map, Value};

use super::{
    attr, is_condition_failure, ms, n, s, Extended, Lease, Ledger, LedgerError, Record, Status,
};
use crate::error::{classify_sdk_error, Error, ErrorClass};
use crate::event::JobEvent;

impl Ledger {
    /// A write of `lease`'s run, conditioned on its fence.
    async fn fenced(
        &self,
        lease: &Lease,
        set: &str,
        values: Vec<(&str, AttributeValue)>,
        names: Vec<(&str, &str)>,
    ) -> Result<(), LedgerError> {
        self.fenced_when(lease, "#fence = :fence", set, values, names)
            .await
    }

    /// A write of `lease`'s run on `condition` (which holds `#fence = :fence`).
    async fn fenced_when(
        &self,
        lease: &Lease,
        condition: &str,
        set: &str,
        values: Vec<(&str, AttributeValue)>,
        names: Vec<(&str, &str)>,
    ) -> Result<(), LedgerError> {
        let now = Utc::now();
        let mut request = self
            .update(lease.job_id.as_str())
            .condition_expression(condition)
            .update_expression(format!("SET {set}, #updated = :now, #expires = :expires"))
            .expression_attribute_names("#fence", attr::FENCE)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":fence", n(lease.fence))
            .expression_attribute_values(":now", ms(now))
            .expression_attribute_values(":expires", self.expires_at(now));
        for (name, value) in names {
            request = request.expression_attribute_names(name, value);
        }
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                Err(LedgerError::LeaseLost(lease.job_id.to_string()))
            }
            Err(e) => Err(LedgerError::Call(classify_sdk_error("UpdateItem", &e))),
        }
    }

    /// Extends `lease` to `lease_for` from now: the new expiry, and whether an operator has
    /// asked the job to stop (the run learns it here, at its next extension). The extension
    /// is conditioned on no such request, so the usual case costs one call; a refused one
    /// is made again on the fence alone, which tells a request from a lost lease.
    pub async fn extend(
        &self,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<Extended, LedgerError> {
        let until =
            Utc::now() + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX);
        let unasked = self
            .fenced_when(
                lease,
                "#fence = :fence AND attribute_not_exists(#cancel)",
                "#lease = :until",
                vec![(":until", ms(until))],
                vec![
                    ("#lease", attr::LEASE_UNTIL),
                    ("#cancel", attr::CANCEL_REQUESTED),
                ],
            )
            .await;
        match unasked {
            Ok(()) => Ok(Extended {
                until,
                cancel_requested: false,
            }),
            Err(LedgerError::LeaseLost(_)) => {
                self.fenced(
                    lease,
                    "#lease = :until",
                    vec![(":until", ms(until))],
                    vec![("#lease", attr::LEASE_UNTIL)],
                )
                .await?;
                Ok(Extended {
                    until,
                    cancel_requested: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Records what the run created, for the next run on any worker.
    pub async fn record_progress(
        &self,
        lease: &Lease,
        progress: &Map<String, Value>,
    ) -> Result<(), LedgerError> {
        let json = Value::Object(progress.clone()).to_string();
        self.fenced(
            lease,
            "#progress = :progress",
            vec![(":progress", s(json))],
            vec![("#progress", attr::PROGRESS)],
        )
        .await
    }

    /// Gives the lease back: the run ended unfinished, and the next delivery (on any worker)
    /// may claim the job at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), LedgerError> {
        self.fenced(
            lease,
            "#status = :open, #lease = :zero",
            vec![(":open", s(Status::Open.as_str())), (":zero", n(0))],
            vec![("#status", attr::STATUS), ("#lease", attr::LEASE_UNTIL)],
        )
        .await
    }

    /// Records the job's outcome, before it is announced: the record is finished.
    pub async fn finish(&self, lease: &Lease, event: &JobEvent) -> Result<(), LedgerError> {
        let status = Status::of(event.status);
        let outcome = serde_json::to_string(event).map_err(|e| {
            LedgerError::Call(Error {
                class: ErrorClass::Permanent,
                code: None,
                operation: Some("UpdateItem"),
                message: format!("the outcome does not serialize: {e}"),
            })
        })?;
        self.fenced(
            lease,
            "#status = :status, #outcome = :outcome, #lease = :zero, #finished = :finished",
            vec![
                (":status", s(status.as_str())),
                (":outcome", s(outcome)),
                (":zero", n(0)),
                (":finished", ms(event.timings.finished_at)),
            ],
            vec![
                ("#status", attr::STATUS),
                ("#outcome", attr::OUTCOME),
                ("#lease", attr::LEASE_UNTIL),
                ("#finished", attr::FINISHED_AT),
            ],
        )
        .await
    }

    /// Records the outcome of a rerun (its `record` read as unfinished, with a run number) of
    /// a kind that takes no lease, keeping its run and earlier failures; `event` is announced
    /// as that run. `false` when the record changed since it was read (another delivery
    /// finished it, an operator cancelled it): nothing is written.
    pub async fn finish_rerun(&self, record: &Record, event: &JobEvent) -> Result<bool, Error> {
        let outcome = serde_json::to_string(event).map_err(|e| Error {
            class: ErrorClass::Permanent,
            code: None,
            operation: Some("UpdateItem"),
            message: format!("the outcome does not serialize: {e}"),
        })?;
        let now = Utc::now();
        let first = event
            .timings
            .first_started_at
            .unwrap_or(event.timings.started_at);
        let sent = self
            .update(&record.job_id)
            .condition_expression(
                "#updated = :seen AND NOT #status IN (:succeeded, :failed, :cancelled)",
            )
            .update_expression(
                "SET #status = :status, #outcome = :outcome, #attempt = :attempt, \
                 #lease = :zero, #holder = :holder, #finished = :finished, \
                 #first = if_not_exists(#first, :first), #updated = :now, #expires = :expires",
            )
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#outcome", attr::OUTCOME)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_names("#holder", attr::HOLDER)
            .expression_attribute_names("#finished", attr::FINISHED_AT)
            .expression_attribute_names("#first", attr::FIRST_STARTED_AT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":seen", record.updated_at.map_or(n(0), ms))
            .expression_attribute_values(":succeeded", s(Status::Succeeded.as_str()))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":status", s(Status::of(event.status).as_str()))
            .expression_attribute_values(":outcome", s(outcome))
            .expression_attribute_values(":attempt", n(u64::from(event.attempts)))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":holder", s(event.worker_id.as_str()))
            .expression_attribute_values(":finished", ms(event.timings.finished_at))
            .expression_attribute_values(":first", ms(first))
            .expression_attribute_values(":now", ms(now))
            .expression_attribute_values(":expires", self.expires_at(now))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(classify_sdk_error("UpdateItem", &e)),
        }
    }
}
