//! A unit of work's worker slots: the permits of the worker's `concurrency` semaphore that a
//! received message (or, on a FIFO queue, a group of messages run in order) holds.
//!
//! One rule keeps the worker from stalling: nothing waits while holding a worker slot but a
//! running handler. A job that waits for EC2 in this process, for its kind's slot, or for
//! another delivery of its job id to finish gives back every slot its group holds and takes
//! them again afterwards ([`WorkerSlots::released_while`]). Otherwise a FIFO message waiting
//! for its kind's slot could hold the last worker slot the kind slot's holder needs back
//! after its own wait, and with every slot so held nothing would ever run again.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The worker slots one unit of work holds: one per message it still has to run.
pub(super) struct WorkerSlots {
    semaphore: Arc<Semaphore>,
    /// `None` while given back, or once every message is done.
    held: Option<OwnedSemaphorePermit>,
    /// Slots to take back after a wait: one per message not yet done.
    owed: usize,
}

impl WorkerSlots {
    /// Slots for `permits.len()` messages, all from `semaphore`.
    pub fn new(semaphore: Arc<Semaphore>, permits: Vec<OwnedSemaphorePermit>) -> Self {
        let owed = permits.len();
        let held = permits.into_iter().reduce(|mut all, one| {
            all.merge(one);
            all
        });
        WorkerSlots {
            semaphore,
            held,
            owed,
        }
    }

    /// One message is done: its slot goes back for good.
    pub fn finish_one(&mut self) {
        self.owed = self.owed.saturating_sub(1);
        if let Some(held) = self.held.as_mut() {
            if held.num_permits() > 1 {
                drop(held.split(1));
            } else {
                self.held = None;
            }
        }
    }

    /// Runs `wait` holding none of these slots, then takes back one for each message not
    /// done yet. If the worker's semaphore is closed meanwhile, the slots stay given back.
    pub async fn released_while<T>(&mut self, wait: impl Future<Output = T>) -> T {
        self.held = None;
        let out = wait.await;
        if self.owed > 0 {
            let owed = u32::try_from(self.owed).unwrap_or(u32::MAX);
            self.held = self.semaphore.clone().acquire_many_owned(owed).await.ok();
        }
        out
    }

    /// Slots held right now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }
}

/// A job's slot under its kind's limit (`--kind-concurrency`), held while its handler runs.
/// A kind without a limit is an open gate.
pub(super) struct KindGate {
    limit: Option<Arc<Semaphore>>,
    held: Option<OwnedSemaphorePermit>,
}

impl KindGate {
    pub fn new(limit: Option<Arc<Semaphore>>) -> Self {
        KindGate { limit, held: None }
    }

    /// Whether the job may run now: the kind has no limit, its slot is held already, or a
    /// free one was just taken.
    pub fn try_enter(&mut self) -> bool {
        match &self.limit {
            None => true,
            Some(_) if self.held.is_some() => true,
            Some(limit) => {
                self.held = limit.clone().try_acquire_owned().ok();
                self.held.is_some()
            }
        }
    }

    /// Waits for a slot of the kind (at once for an open gate).
    pub async fn enter(&mut self) {
        if let (Some(limit), None) = (&self.limit, &self.held) {
            self.held = limit.clone().acquire_owned().await.ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slots(semaphore: &Arc<Semaphore>, n: usize) -> WorkerSlots {
        let permits = (0..n)
            .map(|_| semaphore.clone().try_acquire_owned().expect("free slot"))
            .collect();
        WorkerSlots::new(semaphore.clone(), permits)
    }

    #[tokio::test]
    async fn a_wait_gives_every_slot_back_and_takes_back_those_still_owed() {
        let semaphore = Arc::new(Semaphore::new(3));
        let mut group = slots(&semaphore, 3);
        assert_eq!(semaphore.available_permits(), 0);
        group.finish_one();
        assert_eq!((group.held(), semaphore.available_permits()), (2, 1));
        let seen_free = group
            .released_while(async { semaphore.available_permits() })
            .await;
        assert_eq!(seen_free, 3, "nothing is held while waiting");
        assert_eq!(
            group.held(),
            2,
            "the two messages left take their slots back"
        );
        group.finish_one();
        group.finish_one();
        assert_eq!((group.held(), semaphore.available_permits()), (0, 3));
    }

    /// The stall the rule prevents: a holder that gave its slot back for a wait gets one
    /// again though every other slot belongs to jobs that wait too, because those waits
    /// hold no slot either.
    #[tokio::test]
    async fn waiters_never_keep_a_slot_from_the_job_they_wait_for() {
        let semaphore = Arc::new(Semaphore::new(2));
        let kind = Arc::new(Semaphore::new(1));
        let kind_slot = kind.clone().try_acquire_owned().expect("kind slot");
        let mut holder = slots(&semaphore, 1);
        let mut waiters = Vec::new();
        holder
            .released_while(async {
                for _ in 0..2 {
                    let mut waiter = slots(&semaphore, 1);
                    let kind = kind.clone();
                    waiters.push(tokio::spawn(async move {
                        let slot = waiter
                            .released_while(kind.acquire_owned())
                            .await
                            .expect("kind slot");
                        drop(slot);
                        waiter.finish_one();
                    }));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            })
            .await;
        assert_eq!(holder.held(), 1, "the holder has its slot back");
        drop(kind_slot);
        holder.finish_one();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("every waiter ran")
                .expect("no panic");
        }
        assert_eq!(semaphore.available_permits(), 2);
    }
}
