//! The visibility heartbeat: keeps the messages of running jobs invisible to other workers.
//!
//! Every job registers its receipt handle while it runs. A few times per visibility timeout
//! the heartbeat extends every message whose timeout is less than half left, all in
//! `ChangeMessageVisibilityBatch` calls. A failed extension is logged and counted and stops
//! nothing else: at worst, another worker also runs the job, and handlers are idempotent.
//!
//! The same registry tells shutdown how many messages are still held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use shoal_common::metrics::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batcher, VisibilityChange, VisibilityOp};

#[derive(Debug)]
struct Held {
    receipt: String,
    /// When the message becomes visible again unless extended.
    visible_at: Instant,
}

/// Messages this worker holds, with their visibility deadlines.
#[derive(Debug)]
pub struct VisibilityHeartbeat {
    held: Mutex<HashMap<u64, Held>>,
    next_token: AtomicU64,
    timeout: Duration,
}

/// Holding a message: dropping it stops the heartbeat for that message.
pub struct HeldMessage {
    heartbeat: Arc<VisibilityHeartbeat>,
    token: u64,
}

impl HeldMessage {
    /// The lease this hold gives: how long the message stays this worker's.
    pub fn lease(&self) -> Lease {
        Lease {
            heartbeat: Some(self.heartbeat.clone()),
            token: self.token,
            ledger_until_ms: None,
        }
    }
}

/// The least lease left for a create to go out: more than one call's round trip.
pub const CREATE_MARGIN: Duration = Duration::from_secs(1);

/// A job's hold on its message, as its handler sees it. When the heartbeat cannot extend the
/// message (SQS unreachable), the lease runs out and another worker may receive the job: a
/// handler checks its lease before any call that must not happen twice.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    heartbeat: Option<Arc<VisibilityHeartbeat>>,
    token: u64,
    /// The job ledger's lease on the job, when it takes one: its expiry in milliseconds since
    /// the epoch, kept up by the run's lease keeper (0 once lost).
    ledger_until_ms: Option<Arc<AtomicI64>>,
}

impl Lease {
    /// How long the message stays invisible to other workers unless extended; a lease of
    /// a message no longer held has none left. A lease made without a heartbeat (a handler
    /// called outside the runtime) never runs out.
    pub fn remaining(&self) -> Duration {
        let message = match &self.heartbeat {
            None => Duration::MAX,
            Some(heartbeat) => heartbeat
                .lock()
                .get(&self.token)
                .map(|held| held.visible_at.saturating_duration_since(Instant::now()))
                .unwrap_or_default(),
        };
        let ledger = match &self.ledger_until_ms {
            None => Duration::MAX,
            Some(until) => {
                let left = until.load(Ordering::Relaxed) - chrono::Utc::now().timestamp_millis();
                Duration::from_millis(u64::try_from(left).unwrap_or(0))
            }
        };
        message.min(ledger)
    }

    /// `Err` (`LeaseLost`) once less than [`CREATE_MARGIN`] is left: the message may soon
    /// belong to another worker (its visibility lapsing, or the ledger's lease lost), so
    /// nothing is created that another delivery may create too.
    pub fn ensure(&self) -> Result<(), shoal_common::error::Error> {
        if self.remaining() < CREATE_MARGIN {
            return Err(shoal_common::error::Error::shoal(
                shoal_common::error::ShoalCode::LeaseLost,
                "the job's lease is (nearly) over: creating nothing another delivery may create too",
            ));
        }
        Ok(())
    }

    /// This lease, also bounded by the job ledger's lease on the job, whose expiry `until_ms`
    /// holds: a run that lost its claim creates nothing more.
    pub fn with_ledger(&self, until_ms: Arc<AtomicI64>) -> Lease {
        Lease {
            ledger_until_ms: Some(until_ms),
            ..self.clone()
        }
    }
}

impl Drop for HeldMessage {
    fn drop(&mut self) {
        self.heartbeat.lock().remove(&self.token);
    }
}

impl VisibilityHeartbeat {
    /// `timeout` is the visibility timeout each receive and extension asks for.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(VisibilityHeartbeat {
            held: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        // A panic elsewhere while holding the lock leaves the map itself consistent.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts keeping a message received at `received_at` invisible.
    pub fn hold(self: &Arc<Self>, receipt: &str, received_at: Instant) -> HeldMessage {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            token,
            Held {
                receipt: receipt.to_owned(),
                visible_at: received_at + self.timeout,
            },
        );
        HeldMessage {
            heartbeat: self.clone(),
            token,
        }
    }

    pub fn held_count(&self) -> usize {
        self.lock().len()
    }

    /// Extends, until `stop`, each held message with less than half its timeout left.
    pub async fn run(
        self: Arc<Self>,
        visibility: Batcher<VisibilityOp>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let tick = (self.timeout / 6).max(Duration::from_millis(200));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = Instant::now();
            let due: Vec<(u64, String)> = self
                .lock()
                .iter()
                .filter(|(_, held)| {
                    held.visible_at.saturating_duration_since(now) < self.timeout / 2
                })
                .map(|(token, held)| (*token, held.receipt.clone()))
                .collect();
            if due.is_empty() {
                continue;
            }
            let results = join_all(due.iter().map(|(_, receipt)| {
                visibility.submit(VisibilityChange {
                    receipt: receipt.clone(),
                    timeout: self.timeout,
                })
            }))
            .await;
            let mut held = self.lock();
            for ((token, _), result) in due.iter().zip(results) {
                match result {
                    Ok(()) => {
                        metrics.visibility_extensions.inc();
                        if let Some(h) = held.get_mut(token) {
                            h.visible_at = now + self.timeout;
                        }
                    }
                    Err(e) => {
                        metrics.heartbeat_failures.inc();
                        tracing::warn!(code = e.code_or_none(), error = %e.message, "cannot extend a job's visibility");
                    }
                }
            }
        }
    }
}
