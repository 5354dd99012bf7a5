//! A delivery's claim on its job in the job ledger ([`shoal_common::ledger`]), for the kinds
//! that take one ([`shoal_common::JobKind::takes_lease`]): taking it before the handler runs,
//! keeping it up while the handler runs (with the message's visibility, as the heartbeat
//! keeps that), recording what the run created the moment the handler records it, writing
//! the outcome before it is announced, and giving the claim back when the run ends
//! unfinished.
//!
//! These are the ledger's calls and decide nothing: a claim that is refused, a ledger that
//! does not answer, a claim that was lost, each goes back to the caller as what it is, and
//! [`settle`](super::settle) decides what follows. Calls that fail transiently are retried
//! while the delivery holds the message, as every held call is (`calls::while_held`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::calls::{while_held, while_held_for};
use super::Shared;
use serde_json::{Map, Value};
use shoal_common::error::Error;
use shoal_common::event::JobEvent;
use shoal_common::ledger::{self, Claim, JobRef, LedgerError, Record};
use shoal_common::JobEnvelope;

use crate::handler::Cancellation;

/// What asking for the claim came to.
pub(super) enum Entry {
    /// The job is this delivery's.
    Granted(JobClaim),
    /// Another run holds it, for this long yet.
    HeldElsewhere(Duration),
    /// The ledger did not answer: no claim, so nothing may be created.
    Unavailable(Error),
    /// The job is over: its record says how.
    Finished(Box<Record>),
    /// The job id is on record for another job: this message is refused, the record kept.
    Reused(Box<Record>),
}

/// Why an outcome was not recorded.
pub(super) enum Unrecorded {
    /// Another run holds the job now: this one records and announces nothing.
    Lost,
    /// The ledger did not take it while the delivery held the message.
    NotTaken(Error),
}

/// This delivery's claim on its job.
pub(super) struct JobClaim {
    ledger: ledger::Ledger,
    lease: ledger::Lease,
    /// The lease's expiry in milliseconds since the epoch, shared with the handler's
    /// [`Lease`](crate::handler::Lease): 0 once lost.
    until_ms: Arc<AtomicI64>,
    /// The progress as last written, so an unchanged one is not written again.
    recorded: std::sync::Mutex<Map<String, Value>>,
    /// Raised when an operator asks the job to stop: at the claim, or at an extension.
    cancel: Cancellation,
}

/// Claims `envelope`'s job for this worker, for as long as the message stays invisible.
pub(super) async fn claim(
    shared: &Shared,
    ledger: &ledger::Ledger,
    envelope: &JobEnvelope,
    attempt: u32,
) -> Entry {
    let digest = envelope.digest();
    let json = envelope.to_json();
    let job = JobRef::of(envelope, &digest, &json, attempt);
    // Retried no longer than half a visibility timeout: the message must not lapse to
    // another worker while this one waits for its claim.
    let hold = shared
        .config
        .announce_hold
        .min(shared.config.visibility_timeout / 2);
    let claimed = while_held_for("claim the job in the ledger", hold, || {
        ledger.claim(job, &shared.worker_id, shared.config.visibility_timeout)
    })
    .await;
    match claimed {
        Ok(Claim::Granted(lease)) => {
            let cancel = Cancellation::default();
            if lease.cancel_requested.is_some() {
                cancel.request();
            }
            Entry::Granted(JobClaim {
                ledger: ledger.clone(),
                until_ms: Arc::new(AtomicI64::new(lease.until.timestamp_millis())),
                recorded: std::sync::Mutex::new(lease.progress.clone()),
                lease,
                cancel,
            })
        }
        Ok(Claim::HeldElsewhere { until, .. }) => {
            Entry::HeldElsewhere((until - chrono::Utc::now()).to_std().unwrap_or_default())
        }
        Ok(Claim::Finished(record)) => Entry::Finished(record),
        Ok(Claim::Reused(record)) => Entry::Reused(record),
        Err(e) => Entry::Unavailable(e),
    }
}

impl JobClaim {
    /// What earlier runs recorded, on any worker.
    pub fn progress(&self) -> Map<String, Value> {
        self.lease.progress.clone()
    }

    /// Whether an operator has asked the job to stop (as the claim or an extension read).
    pub fn cancel_requested(&self) -> bool {
        self.cancel.is_requested()
    }

    /// The operator's request to stop, shared with the handler's context.
    pub fn cancel(&self) -> Cancellation {
        self.cancel.clone()
    }

    /// The job's run (1, one more for each rerun), for its event.
    pub fn run(&self) -> u32 {
        self.lease.run
    }

    /// The lease's expiry, for the handler's lease.
    pub fn until_ms(&self) -> Arc<AtomicI64> {
        self.until_ms.clone()
    }

    /// Keeps the lease up for as long as the future runs (the caller races it against the
    /// handler): extended a few times per visibility timeout. It returns only when the lease
    /// is lost; then the handler's lease reads none left, and it creates nothing more.
    pub async fn keep(&self, lease_for: Duration) {
        let tick = (lease_for / 3).max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(tick).await;
            match self.ledger.extend(&self.lease, lease_for).await {
                Ok(extended) => {
                    self.until_ms
                        .store(extended.until.timestamp_millis(), Ordering::Relaxed);
                    if extended.cancel_requested && !self.cancel.is_requested() {
                        tracing::info!("an operator cancelled the job; it creates nothing more");
                        self.cancel.request();
                    }
                }
                Err(LedgerError::LeaseLost(_)) => {
                    tracing::warn!("the job's ledger lease was lost to another run");
                    self.until_ms.store(0, Ordering::Relaxed);
                    return;
                }
                // The lease runs down meanwhile; the next tick tries again.
                Err(LedgerError::Call(e)) => {
                    tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot extend the job's ledger lease");
                }
            }
        }
    }

    /// Records `progress` if it changed since last written: `Ok(true)` once on record.
    /// `Err` when the claim is lost: another run holds the job, and this one must record
    /// (and create) nothing more. A ledger that does not answer (`Ok(false)`) leaves the
    /// progress on the message's copy alone.
    pub async fn record_progress(
        &self,
        shared: &Shared,
        progress: Map<String, Value>,
    ) -> Result<bool, Unrecorded> {
        if progress == *self.lock_recorded() {
            return Ok(true);
        }
        match self
            .retried(shared, || {
                self.ledger.record_progress(&self.lease, &progress)
            })
            .await
        {
            Ok(()) => {
                *self.lock_recorded() = progress;
                Ok(true)
            }
            Err(Unrecorded::NotTaken(e)) => {
                tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot record the job's progress in the ledger");
                Ok(false)
            }
            Err(lost) => {
                self.until_ms.store(0, Ordering::Relaxed);
                self.say_who_holds_it().await;
                Err(lost)
            }
        }
    }

    /// Logs whose the job's record is now, for an operator (or a test) to tell a rival run
    /// from a write that should not have happened: one read, on a path that is rare.
    async fn say_who_holds_it(&self) {
        match self.ledger.get(self.lease.job_id.as_str()).await {
            Ok(Some(r)) => tracing::warn!(
                our_fence = self.lease.fence,
                fence = r.fence,
                status = r.status.as_str(),
                holder = r.holder.as_deref().unwrap_or("none"),
                run = r.run,
                "the job's record is another run's now"
            ),
            Ok(None) => tracing::warn!("the job's record is gone"),
            Err(e) => tracing::debug!(error = %e.message, "cannot read the job's record"),
        }
    }

    fn lock_recorded(&self) -> std::sync::MutexGuard<'_, Map<String, Value>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the job's outcome, before it is announced.
    pub async fn finish(&self, shared: &Shared, event: &JobEvent) -> Result<(), Unrecorded> {
        let finished = self
            .retried(shared, || self.ledger.finish(&self.lease, event))
            .await;
        if matches!(finished, Err(Unrecorded::Lost)) {
            self.say_who_holds_it().await;
        }
        finished
    }

    /// Gives the claim back: the run ended unfinished. One try: a claim not given back
    /// lapses by itself when its lease ends.
    pub async fn release(self) {
        if let Err(e) = self.ledger.release(&self.lease).await {
            tracing::info!(error = %e, "cannot give the claim back; it lapses when its lease ends");
        }
    }

    /// Runs a fenced write until it is done, the claim is lost, or the delivery has retried
    /// it for `announce_hold`.
    async fn retried<F, Fut>(&self, shared: &Shared, write: F) -> Result<(), Unrecorded>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), LedgerError>>,
    {
        match while_held(shared, "write to the ledger", write).await {
            Ok(()) => Ok(()),
            Err(LedgerError::LeaseLost(_)) => Err(Unrecorded::Lost),
            Err(LedgerError::Call(e)) => Err(Unrecorded::NotTaken(e)),
        }
    }
}
