//! Cancelling jobs ([`Producer::cancel`]): a queued, scheduled, waiting or retrying job never
//! runs again (the worker that receives it deletes it and announces it `cancelled`), and a
//! running one stops at its next lease extension, creating nothing more. With `chain`, every
//! unfinished step of each job's chain on record is cancelled too; a cancelled job's
//! follow-ups never start, since only a success sends them.

use serde::Serialize;
use shoal_common::error::Error;
use shoal_common::ledger::{Cancel, Record};
use shoal_common::JobId;

use crate::Producer;

/// What a cancel did, job by job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CancelReport {
    /// Will not run: cancelled on record.
    pub cancelled: Vec<String>,
    /// Running: (job id, the worker holding it), told at its next lease extension.
    pub requested: Vec<(String, Option<String>)>,
    /// Over already: (job id, how it ended).
    pub finished: Vec<(String, String)>,
}

impl Producer {
    /// Cancels `job_ids` (and with `chain`, every unfinished step of their chains on record),
    /// on behalf of `by`, who is recorded and named in each cancellation's event.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) -> Result<(), shoal_common::error::Error> {
    /// let id = shoal_common::JobId::parse("terminate-fleet-2026-12-06").expect("an id");
    /// let report = producer.cancel(&[id], false, "alice").await?;
    /// println!("{} cancelled, {} told to stop", report.cancelled.len(), report.requested.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cancel(
        &self,
        job_ids: &[JobId],
        chain: bool,
        by: &str,
    ) -> Result<CancelReport, Error> {
        let Some(ledger) = self.ledger() else {
            return Err(Error::permanent(
                "ledger_table",
                "cancel writes to the job ledger: give --ledger-table (SHOAL_LEDGER_TABLE)",
            ));
        };
        let mut ids: Vec<String> = Vec::new();
        for id in job_ids {
            if !ids.iter().any(|seen| seen == id.as_str()) {
                ids.push(id.to_string());
            }
            if !chain {
                continue;
            }
            let chain_id = ledger
                .get(id.as_str())
                .await?
                .and_then(|r| r.chain_id)
                .unwrap_or_else(|| id.to_string());
            let steps: Vec<Record> = ledger.chain(&chain_id).await?;
            for step in steps.into_iter().filter(|s| !s.status.is_finished()) {
                if !ids.contains(&step.job_id) {
                    ids.push(step.job_id);
                }
            }
        }
        let mut report = CancelReport::default();
        for id in ids {
            match ledger.cancel(&id, by).await? {
                Cancel::Cancelled => report.cancelled.push(id),
                Cancel::Requested { holder } => report.requested.push((id, holder)),
                Cancel::Finished(record) => {
                    report
                        .finished
                        .push((id, record.status.as_str().to_owned()));
                }
            }
        }
        Ok(report)
    }
}
