//! Pausing and resuming kinds ([`Producer::pause`], [`Producer::resume`]): the job ledger's
//! control item, which every worker reads every few seconds. A paused kind's jobs stay on
//! the queue, unstarted, spending no attempts, until it is resumed.

use shoal_common::error::Error;
use shoal_common::ledger::{Ledger, Paused};
use shoal_common::JobKind;

use crate::Producer;

impl Producer {
    /// Pauses `kinds` (with `all`, every kind) on behalf of `by`; what is paused after.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) -> Result<(), shoal_common::error::Error> {
    /// use shoal_common::JobKind;
    ///
    /// // An incident in EC2's launch path: hold launches, let everything else run.
    /// let paused = producer.pause(&[JobKind::RunInstances], false, "alice").await?;
    /// assert!(paused.covers(JobKind::RunInstances));
    /// producer.resume(&[JobKind::RunInstances], false, "alice").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn pause(&self, kinds: &[JobKind], all: bool, by: &str) -> Result<Paused, Error> {
        self.control()?.pause(kinds, all, by).await
    }

    /// Resumes `kinds` (with `all`, everything); what is still paused after.
    pub async fn resume(&self, kinds: &[JobKind], all: bool, by: &str) -> Result<Paused, Error> {
        self.control()?.resume(kinds, all, by).await
    }

    /// What is paused now.
    pub async fn paused(&self) -> Result<Paused, Error> {
        self.control()?.paused().await
    }

    fn control(&self) -> Result<&Ledger, Error> {
        self.ledger().ok_or_else(|| {
            Error::permanent(
                "ledger_table",
                "pausing is kept in the job ledger: give --ledger-table (SHOAL_LEDGER_TABLE)",
            )
        })
    }
}
