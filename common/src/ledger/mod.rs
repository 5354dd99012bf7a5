//! The job ledger: one DynamoDB item per job id, shared by the whole fleet, so that
//! exactly-once holds across workers and a finished job can be looked up.
//!
//! A record moves through these states:
//!
//! - **queued** (or **scheduled**, due later): a producer with the ledger enqueued the job and
//!   put this record, where none was (`outcomes.rs`); a delivery claims it as it would claim
//!   no record.
//! - **running**: a worker holds the job under a *lease*: its id (`holder`), an expiry
//!   (`lease_until`, which the heartbeat extends with the message's visibility) and a
//!   *fence*, a number that grows with every claim. A claim is one conditional write that
//!   succeeds only where there is no record, or the record is unfinished and its lease has
//!   expired ([`Ledger::claim`]): two deliveries of one job id, on two workers at the same
//!   instant, cannot both hold it. Every later write of that run is conditioned on its fence,
//!   so a holder that lost its lease (paused, partitioned, its lease taken over) records
//!   nothing more ([`LedgerError::LeaseLost`]).
//! - **open**: the run ended unfinished (a transient failure, a wait for EC2, a deferral, a
//!   shutdown) and gave its lease back ([`Ledger::release`]); what it recorded (`progress`,
//!   the ids it created) stays for the next holder.
//! - **succeeded** / **failed**: the outcome is written, conditioned on the fence, before it is
//!   announced ([`Ledger::finish`]). A finished record is never claimed again: a delivery of
//!   its job id runs nothing and announces the recorded outcome. Only an operator's rerun
//!   ([`Ledger::rerun`], `rerun.rs`) turns a failed record back to open, its run number one
//!   higher and its progress kept.
//! - **cancelled**: an operator cancelled the job ([`Ledger::cancel`], `cancel.rs`): set at
//!   once on a job not running, its outcome the cancellation; a running job is asked
//!   (`cancel_requested`) and its holder, told at its next lease extension, records it.
//!
//! Beside the records, one control item says which kinds operators paused (`pause.rs`).
//!
//! A record lives `ttl` after its last write (`expires_at`, the table's TTL attribute). DynamoDB
//! deletes expired items lazily, days later, and reads return them until then, so a record
//! past its own `expires_at` is treated as absent here: by the claim's condition and by
//! [`Ledger::get`]. Reads are strongly consistent: a lease read from a lagging replica would
//! be a lease that may no longer be.
//!
//! A run's fenced writes (extend, progress, release, finish) are in `lease.rs`. Kinds that
//! take no lease write only their outcome, in batches (`outcomes.rs`). The table
//! itself is made in `table.rs`; a record is read from its item in `record.rs`; the indexes
//! are queried in `queries.rs`.
//!
//! Times are the writer's clock, in milliseconds since the epoch. A lease is judged by the
//! claimer's clock against the holder's expiry, so clocks that disagree by more than a lease's
//! margin could let a claim through early; fleet hosts keep NTP time, and the fence makes
//! such a claim harmless to what the old holder writes after.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{classify_sdk_error, Error};
use crate::event::{JobEvent, JobStatus};
use crate::{JobId, JobKind};

mod cancel;
mod lease;
mod outcomes;
mod pause;
mod queries;
mod record;
mod rerun;
mod table;

pub use cancel::Cancel;
pub use outcomes::{OutcomeItem, OutcomeWrites, MAX_BATCH_WRITE, RECORD_EXISTS};
pub use pause::{Paused, PAUSE_KEY};
pub use queries::MAX_LISTED;
pub use rerun::Rerun;

use record::read_record;

/// The attribute names of a record: the table's contract with every reader.
pub mod attr {
    pub const JOB_ID: &str = "job_id";
    pub const STATUS: &str = "status";
    pub const KIND: &str = "kind";
    pub const CHAIN_ID: &str = "chain_id";
    pub const PARENT_JOB_ID: &str = "parent_job_id";
    pub const HOLDER: &str = "holder";
    /// Milliseconds since the epoch; 0 once given back.
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const FENCE: &str = "fence";
    /// The attempt the latest claim was made for.
    pub const ATTEMPT: &str = "attempt";
    /// JSON: what the handler recorded (the ids it created).
    pub const PROGRESS: &str = "progress";
    /// JSON: the job's event, as announced.
    pub const OUTCOME: &str = "outcome";
    /// The job's [`digest`](crate::JobEnvelope::digest): which job the id names. Set by the
    /// first write; every later claim and outcome write is conditioned on it.
    pub const DIGEST: &str = "digest";
    /// JSON: the job's envelope as first recorded; a finished job's follow-ups come from it.
    pub const ENVELOPE: &str = "envelope";
    pub const FIRST_STARTED_AT: &str = "first_started_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const FINISHED_AT: &str = "finished_at";
    /// Seconds since the epoch: the table's TTL attribute.
    pub const EXPIRES_AT: &str = "expires_at";
    /// The job's run: 1, and one more for each rerun an operator asked for.
    pub const RUN: &str = "run";
    /// JSON: the failed runs before a rerun, each with its number, end and error.
    pub const EARLIER_FAILURES: &str = "earlier_failures";
    /// Who asked a running job to stop, and why: its holder learns at its next lease
    /// extension.
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
}

/// The progress key under which a run notes each create before it is sent (operation and
/// time; the worker's `JobContext::before_create`): bookkeeping, not something the job made.
pub const CREATES_NOTED: &str = "creates";

/// What a job's recorded progress says it made, without the notes of creates.
pub fn made(progress: &Map<String, Value>) -> Map<String, Value> {
    let mut made = progress.clone();
    made.remove(CREATES_NOTED);
    made
}

/// Every DynamoDB operation a worker makes on the ledger, for its metrics.
pub const WORKER_OPERATIONS: &[&str] = &["UpdateItem", "GetItem", "TransactWriteItems"];

/// How long at least a record an operator's verb wrote lives, when the writer knows no TTL.
const REOPENED_LIFE: chrono::Duration = chrono::Duration::days(14);

/// The index of records by status, newest update last: `jobs --status failed --since 1h`.
pub const BY_STATUS_INDEX: &str = "by-status";
/// The index of records by chain: a chain's every step in one query.
pub const BY_CHAIN_INDEX: &str = "by-chain";

/// Where a job is in its life, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Enqueued by a producer with this ledger, not yet claimed.
    Queued,
    /// Enqueued to run later (`not_before`), waiting on the queue for its time.
    Scheduled,
    Running,
    Open,
    Succeeded,
    Failed,
    /// An operator cancelled it: it does not run again (a rerun may open it).
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Open => "open",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Scheduled,
        Status::Running,
        Status::Open,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The record's status for an outcome.
    pub fn of(outcome: JobStatus) -> Status {
        match outcome {
            JobStatus::Succeeded => Status::Succeeded,
            JobStatus::Failed => Status::Failed,
            JobStatus::Cancelled => Status::Cancelled,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// The job a claim is for: what its record names besides its id.
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    pub job_id: &'a JobId,
    pub kind: JobKind,
    pub chain_id: &'a JobId,
    pub parent_job_id: Option<&'a JobId>,
    /// The attempt the claim is made for.
    pub attempt: u32,
    /// The envelope's [`digest`](crate::JobEnvelope::digest): the claim is refused if the
    /// record under this id is another job's.
    pub digest: &'a str,
    /// The envelope as JSON, recorded with the first claim.
    pub envelope: &'a str,
}

impl<'a> JobRef<'a> {
    /// The claim's view of `envelope`, whose digest and JSON the caller keeps.
    pub fn of(
        envelope: &'a crate::JobEnvelope,
        digest: &'a str,
        json: &'a str,
        attempt: u32,
    ) -> Self {
        JobRef {
            job_id: &envelope.job_id,
            kind: envelope.kind(),
            chain_id: envelope.chain_id(),
            parent_job_id: envelope.parent_job_id.as_ref(),
            attempt,
            digest,
            envelope: json,
        }
    }
}

/// One job's record: what `shoal-producer job` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Record {
    pub job_id: String,
    pub status: Status,
    pub kind: Option<String>,
    pub chain_id: Option<String>,
    pub parent_job_id: Option<String>,
    pub holder: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub fence: u64,
    pub attempt: u32,
    pub progress: Map<String, Value>,
    pub outcome: Option<JobEvent>,
    /// Which job the id names ([`attr::DIGEST`]); absent on records older than it.
    pub digest: Option<String>,
    /// The job as first recorded, where the record holds it.
    pub envelope: Option<Value>,
    pub first_started_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The job's run: 1, one more for each rerun.
    pub run: u32,
    /// The failed runs before a rerun: `{run, finished_at, error}` each.
    pub earlier_failures: Vec<Value>,
    /// An operator asked the job to stop, and why.
    pub cancel_requested: Option<String>,
}

impl Record {
    /// Whether this record is of the job `kind` with `digest`: another kind, or another
    /// envelope under the same id, is another job. A record written before digests were
    /// kept is judged by its kind alone.
    pub fn is_of(&self, kind: &str, digest: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.digest.as_deref().is_none_or(|d| d == digest)
    }

    /// Why a message of `kind` cannot be this record's job, for its dead-letter reason.
    pub fn reused_by(&self, kind: &str) -> String {
        let recorded = self.kind.as_deref().unwrap_or("unknown");
        if recorded == kind {
            format!(
                "job id {} is on record ({}) for a different `{kind}` job: its parameters, \
                 follow-ups or chain differ; a new job needs an id of its own",
                self.job_id,
                self.status.as_str()
            )
        } else {
            format!(
                "job id {} is on record for a `{recorded}` job ({}); a `{kind}` job needs an \
                 id of its own",
                self.job_id,
                self.status.as_str()
            )
        }
    }
}

/// A run's hold on its job.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub job_id: JobId,
    /// This claim's number: every write of the run is conditioned on it.
    pub fence: u64,
    pub holder: String,
    pub until: DateTime<Utc>,
    /// What earlier runs recorded.
    pub progress: Map<String, Value>,
    pub first_started_at: Option<DateTime<Utc>>,
    /// The job's run (1, one more for each rerun), for its events.
    pub run: u32,
    /// An operator asked the job to stop, and why: the run creates and waits for nothing.
    pub cancel_requested: Option<String>,
}

/// A lease extended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extended {
    pub until: DateTime<Utc>,
    /// An operator asked the job to stop.
    pub cancel_requested: bool,
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The job is this run's.
    Granted(Lease),
    /// Another run holds a live lease: set the delivery aside, create nothing.
    HeldElsewhere {
        holder: String,
        until: DateTime<Utc>,
    },
    /// The job is over: announce this record's outcome, run nothing.
    Finished(Box<Record>),
    /// The id is another job's (another kind, or another envelope): refuse the message,
    /// leave the record as it is.
    Reused(Box<Record>),
}

/// Why a write of a run did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// The run's fence is no longer the record's: another run claimed the job (or the
    /// record is finished, or gone). This run must record nothing more.
    #[error("the lease on job {0} is lost: another run holds it, or it is over")]
    LeaseLost(String),
    /// The call failed, classified.
    #[error(transparent)]
    Call(#[from] Error),
}

/// The job ledger on one DynamoDB table.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    /// How long a record lives after its last write.
    ttl: Duration,
}

pub(super) fn ms(t: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(t.timestamp_millis().to_string())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn is_condition_failure<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    matches!(e, aws_sdk_dynamodb::error::SdkError::ServiceError(service)
        if service.err().code() == Some("ConditionalCheckFailedException"))
}

impl Ledger {
    /// The ledger on `table`, its records living `ttl` after their last write.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, ttl: Duration) -> Self {
        Ledger {
            client,
            table: table.into(),
            ttl,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(super) fn expires_at(&self, now: DateTime<Utc>) -> AttributeValue {
        let at = now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        n(at.timestamp().max(0) as u64)
    }

    /// When a record an operator's verb writes expires: this ledger's TTL from now, or, for
    /// a ledger opened without one (an operator's tools), no sooner than the record's own
    /// expiry and at least `REOPENED_LIFE` from now, so the run it opens can still find it.
    pub(super) fn verb_expires_at(
        &self,
        record: Option<&Record>,
        now: DateTime<Utc>,
    ) -> AttributeValue {
        if !self.ttl.is_zero() {
            return self.expires_at(now);
        }
        let floor = now + REOPENED_LIFE;
        let at = record
            .and_then(|r| r.expires_at)
            .map_or(floor, |at| at.max(floor));
        n(at.timestamp().max(0) as u64)
    }

    fn key(job_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(attr::JOB_ID.to_owned(), s(job_id))])
    }

    fn update(&self, job_id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job_id)))
    }

    /// Claims `job` for `holder` for `lease_for`: granted where there is no record, or the
    /// record is unfinished and its lease has expired (or the record itself has).
    pub async fn claim(
        &self,
        job: JobRef<'_>,
        holder: &str,
        lease_for: Duration,
    ) -> Result<Claim, Error> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX);
        let mut set = vec![
            "#status = :running",
            "#kind = :kind",
            "#chain = :chain",
            "#holder = :holder",
            "#lease = :until",
            "#fence = if_not_exists(#fence, :zero) + :one",
            "#attempt = :attempt",
            "#first = if_not_exists(#first, :now)",
            "#updated = :now",
            "#expires = :expires",
            // The condition lets a claim through only where the record is this job's (or
            // there is none): these are set to what they were, or to the first.
            "#digest = :digest",
            "#envelope = :envelope",
        ];
        let mut request = self
            .update(job.job_id.as_str())
            .condition_expression(
                "attribute_not_exists(#id) OR #expires < :now_s \
                 OR (NOT #status IN (:succeeded, :failed, :cancelled) AND #lease < :now \
                     AND #kind = :kind \
                     AND (attribute_not_exists(#digest) OR #digest = :digest))",
            )
            .expression_attribute_names("#digest", attr::DIGEST)
            .expression_attribute_names("#envelope", attr::ENVELOPE)
            .expression_attribute_values(":digest", s(job.digest))
            .expression_attribute_values(":envelope", s(job.envelope))
            .expression_attribute_names("#id", attr::JOB_ID)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#kind", attr::KIND)
            .expression_attribute_names("#chain", attr::CHAIN_ID)
            .expression_attribute_names("#holder", attr::HOLDER)
            .expression_attribute_names("#lease", attr::LEASE_UNTIL)
            .expression_attribute_names("#fence", attr::FENCE)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#first", attr::FIRST_STARTED_AT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":running", s(Status::Running.as_str()))
            .expression_attribute_values(":succeeded", s(Status::Succeeded.as_str()))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":kind", s(job.kind.as_str()))
            .expression_attribute_values(":chain", s(job.chain_id.as_str()))
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", ms(until))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":attempt", n(u64::from(job.attempt)))
            .expression_attribute_values(":now", ms(now))
            .expression_attribute_values(":now_s", n(now.timestamp().max(0) as u64))
            .expression_attribute_values(":expires", self.expires_at(now))
            .return_values(ReturnValue::AllNew);
        if let Some(parent) = job.parent_job_id {
            set.push("#parent = :parent");
            request = request
                .expression_attribute_names("#parent", attr::PARENT_JOB_ID)
                .expression_attribute_values(":parent", s(parent.as_str()));
        }
        let sent = request
            .update_expression(format!("SET {}", set.join(", ")))
            .send()
            .await;
        match sent {
            Ok(out) => {
                let record = read_record(&out.attributes.unwrap_or_default())?;
                let mut lease = Lease {
                    job_id: job.job_id.clone(),
                    fence: record.fence,
                    holder: holder.to_owned(),
                    until,
                    progress: record.progress,
                    first_started_at: record.first_started_at,
                    run: record.run,
                    cancel_requested: record.cancel_requested,
                };
                if record.outcome.is_some() {
                    // Only a finished record past its expiry could be claimed: it counts as
                    // absent, so what it held is not this job's to go on from.
                    self.forget_expired(&lease).await?;
                    lease.progress = Map::new();
                    lease.first_started_at = Some(now);
                }
                Ok(Claim::Granted(lease))
            }
            Err(e) if is_condition_failure(&e) => {
                // The record that refused the claim, read consistently: another job's,
                // finished, or held.
                match self.get(job.job_id.as_str()).await? {
                    Some(record) if !record.is_of(job.kind.as_str(), job.digest) => {
                        Ok(Claim::Reused(Box::new(record)))
                    }
                    Some(record) if record.status.is_finished() => {
                        Ok(Claim::Finished(Box::new(record)))
                    }
                    Some(record) => Ok(Claim::HeldElsewhere {
                        holder: record.holder.unwrap_or_default(),
                        until: record.lease_until.unwrap_or(now),
                    }),
                    // Gone (or expired) since: the next delivery claims it.
                    None => Ok(Claim::HeldElsewhere {
                        holder: String::new(),
                        until: now,
                    }),
                }
            }
            Err(e) => Err(classify_sdk_error("UpdateItem", &e)),
        }
    }

    /// Clears what an expired record held, for the run that claimed its job id anew.
    async fn forget_expired(&self, lease: &Lease) -> Result<(), Error> {
        let now = Utc::now();
        self.update(lease.job_id.as_str())
            .condition_expression("#fence = :fence")
            .update_expression("REMOVE #outcome, #progress, #finished SET #first = :now")
            .expression_attribute_names("#fence", attr::FENCE)
            .expression_attribute_names("#outcome", attr::OUTCOME)
            .expression_attribute_names("#progress", attr::PROGRESS)
            .expression_attribute_names("#finished", attr::FINISHED_AT)
            .expression_attribute_names("#first", attr::FIRST_STARTED_AT)
            .expression_attribute_values(":fence", n(lease.fence))
            .expression_attribute_values(":now", ms(now))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("UpdateItem", &e))
    }

    /// The record of `job_id`, read consistently; `None` when there is none or it has
    /// expired.
    pub async fn get(&self, job_id: &str) -> Result<Option<Record>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetItem", &e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let record = read_record(&item)?;
        Ok(record
            .expires_at
            .is_none_or(|at| at > Utc::now())
            .then_some(record))
    }
}
