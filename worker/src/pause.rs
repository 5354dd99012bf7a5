//! What operators paused (`shoal-producer pause`), as this worker last read it from the job
//! ledger's control item: read at start, then every `--pause-check-interval`, so the reads
//! are a fixed number a minute whatever the traffic. A read that fails keeps what was last
//! read (logged): an outage of the ledger neither pauses nor resumes anything.
//!
//! A delivery of a paused kind waits without running and without spending an attempt
//! (`runtime::settle`); with every kind paused, the pollers stop receiving at all.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_common::ledger::{Ledger, Paused};
use shoal_common::metrics::Metrics;
use shoal_common::JobKind;
use tokio_util::sync::CancellationToken;

/// The paused kinds, shared by the pollers and the deliveries.
#[derive(Debug, Default)]
pub struct PausedKinds(RwLock<Paused>);

impl PausedKinds {
    pub fn covers(&self, kind: JobKind) -> bool {
        self.read().covers(kind)
    }

    /// Every kind is paused: nothing is received.
    pub fn all(&self) -> bool {
        self.read().all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Paused> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the ledger once; keeps what it had when the read fails.
    pub async fn refresh(&self, ledger: &Ledger, metrics: &Metrics) {
        match ledger.paused().await {
            Ok(paused) => {
                for kind in JobKind::all() {
                    metrics
                        .kind_paused
                        .with_label_values(&[kind.as_str()])
                        .set(i64::from(paused.covers(kind)));
                }
                let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
                if *current != paused {
                    tracing::info!(all = paused.all, kinds = ?paused.kinds, by = ?paused.by, "paused kinds changed");
                    *current = paused;
                }
            }
            Err(e) => {
                tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot read the paused kinds; keeping what was last read");
            }
        }
    }

    /// Reads the ledger every `interval` until `stop`.
    pub async fn run(
        self: Arc<Self>,
        ledger: Ledger,
        metrics: Arc<Metrics>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            self.refresh(&ledger, &metrics).await;
        }
    }
}
