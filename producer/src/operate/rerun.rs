//! Reruns under the same job id ([`Producer::retry`]): a failed job whose cause is fixed is
//! run again from the envelope its ledger record holds, with the progress its earlier runs
//! recorded, so what they created is taken up and not created again. No dead letter is
//! needed; `dlq redrive` does the same for the jobs it moves.

use serde::Serialize;
use shoal_common::error::Error;
use shoal_common::ledger::{Record, Rerun, Status};
use shoal_common::{JobEnvelope, JobId};

use crate::{Producer, SendOptions};

/// What a retry did, job by job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// Opened for their next run and sent: (job id, run number).
    pub rerun: Vec<(String, u32)>,
    /// Not rerun, and why: (job id, reason).
    pub refused: Vec<(String, String)>,
}

/// Why a job cannot be rerun, by its record.
fn not_rerunnable(record: &Record) -> String {
    match record.status {
        Status::Succeeded => "it succeeded; nothing to run again".into(),
        Status::Running => format!(
            "it is running (held by {} until {})",
            record.holder.as_deref().unwrap_or("a worker"),
            record
                .lease_until
                .map_or_else(|| "its lease ends".into(), |t| t.to_rfc3339())
        ),
        Status::Queued | Status::Scheduled => "it is queued and has not run yet".into(),
        Status::Open | Status::Failed | Status::Cancelled => {
            format!("its record is {}", record.status.as_str())
        }
    }
}

impl Producer {
    /// Runs the failed jobs `job_ids` again under their own ids: each record is opened for
    /// its next run (a conditional write: a job that is not failed, or that changed
    /// meanwhile, is left alone and reported), then its recorded envelope is sent. A job
    /// already opened by an earlier retry whose send did not go through (its record `open`,
    /// no lease) is sent again; the ledger runs it once however many copies arrive.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) -> Result<(), shoal_common::error::Error> {
    /// let id = shoal_common::JobId::parse("nightly-snapshot-2026-12-06").expect("an id");
    /// let report = producer.retry(&[id]).await?;
    /// for (job, run) in &report.rerun {
    ///     println!("{job}: run {run} queued");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry(&self, job_ids: &[JobId]) -> Result<RetryReport, Error> {
        let Some(ledger) = self.ledger() else {
            return Err(Error::permanent(
                "ledger_table",
                "retry reads the job ledger: give --ledger-table (SHOAL_LEDGER_TABLE)",
            ));
        };
        let mut report = RetryReport::default();
        let mut sending: Vec<(JobEnvelope, u32)> = Vec::new();
        for id in job_ids {
            let job = id.to_string();
            let (record, run) = match ledger.rerun(id.as_str()).await? {
                Rerun::Reopened { run, was } => (*was, run),
                Rerun::NotFailed(record)
                    if record.status == Status::Open && record.lease_until.is_none() =>
                {
                    let run = record.run;
                    (*record, run)
                }
                Rerun::NotFailed(record) => {
                    report.refused.push((job, not_rerunnable(&record)));
                    continue;
                }
                Rerun::NoRecord => {
                    report.refused.push((
                        job,
                        "the ledger has no record of it (never run, or expired)".into(),
                    ));
                    continue;
                }
            };
            match recorded_envelope(&record) {
                Ok(envelope) => sending.push((envelope, run)),
                Err(why) => report.refused.push((job, why)),
            }
        }
        let envelopes: Vec<JobEnvelope> = sending.iter().map(|(e, _)| e.clone()).collect();
        match self
            .enqueue_many(&envelopes, &SendOptions::default(), &|_| {})
            .await
        {
            Ok(batch) => {
                for (i, _) in &batch.enqueued {
                    if let Some((envelope, run)) = sending.get(*i) {
                        report.rerun.push((envelope.job_id.to_string(), *run));
                    }
                }
                for failed in batch.failed {
                    report.refused.push((
                        failed.job_id.to_string(),
                        format!(
                            "opened for its next run, but not sent ({}); retry it again",
                            failed.message
                        ),
                    ));
                }
            }
            Err(invalid) => {
                for (i, e) in invalid {
                    if let Some((envelope, _)) = sending.get(i) {
                        report
                            .refused
                            .push((envelope.job_id.to_string(), format!("not sent: {e}")));
                    }
                }
            }
        }
        Ok(report)
    }
}

/// The job as first recorded: what a rerun sends.
fn recorded_envelope(record: &Record) -> Result<JobEnvelope, String> {
    let Some(envelope) = &record.envelope else {
        return Err(
            "its record holds no envelope (written before envelopes were kept); \
                    send the job again instead"
                .into(),
        );
    };
    JobEnvelope::from_json(&envelope.to_string())
        .map_err(|e| format!("its recorded envelope no longer decodes: {e}"))
}
