//! Jobs as the ledger holds them: one with every step of its chain ([`JobReport`]), and
//! recent ones by status and kind ([`recent`]), for `job`, `jobs`, `retry --status` and the
//! console. Both go through the table's indexes, never a scan.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_common::error::Error;
use shoal_common::ledger::{Ledger, Record, Status};
use shoal_common::JobId;

use crate::LookupError;

/// A job as the ledger holds it: [`Producer::job`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobReport {
    /// The job's own record; `None` when there is none (never run, or expired).
    pub record: Option<Record>,
    /// Every step of the job's chain on record, the first job included, in job-id order;
    /// empty for a job that is a chain of one.
    pub chain: Vec<Record>,
}

impl JobReport {
    /// `job_id`'s record in `ledger`, and its chain's steps.
    pub async fn read(ledger: &Ledger, job_id: &JobId) -> Result<JobReport, LookupError> {
        let Some(record) = ledger.get(job_id.as_str()).await? else {
            return Ok(JobReport {
                record: None,
                chain: Vec::new(),
            });
        };
        let chain_id = record
            .chain_id
            .clone()
            .unwrap_or_else(|| record.job_id.clone());
        let mut chain = ledger.chain(&chain_id).await?;
        // A chain of one is the job itself.
        if chain.len() == 1
            && chain
                .first()
                .is_some_and(|only| only.job_id == record.job_id)
        {
            chain.clear();
        }
        Ok(JobReport {
            record: Some(record),
            chain,
        })
    }
}

/// The records of `statuses` written within `since`, of `kinds` (any when empty), newest
/// first, at most `limit`: what `jobs` lists and `retry --status` reruns. The status index
/// has no kind in its key, so the kind is a filter on what it returns; never a scan.
pub async fn recent(
    ledger: &Ledger,
    statuses: &[Status],
    kinds: &[String],
    since: Duration,
    limit: usize,
) -> Result<Vec<Record>, Error> {
    let since = Utc::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
    let mut records = Vec::new();
    for status in statuses {
        records.extend(ledger.recent(*status, since, limit).await?);
    }
    if !kinds.is_empty() {
        records.retain(|r| r.kind.as_ref().is_some_and(|k| kinds.contains(k)));
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
    records.truncate(limit);
    Ok(records)
}

/// How long `record`'s job has taken: from its first start to its end, or to `now` while it
/// is unfinished; `None` before it started.
pub fn took(record: &Record, now: DateTime<Utc>) -> Option<chrono::Duration> {
    let started = record.first_started_at?;
    let end = match record.status.is_finished() {
        true => record.finished_at.unwrap_or(now),
        false => now,
    };
    Some((end - started).max(chrono::Duration::zero()))
}
