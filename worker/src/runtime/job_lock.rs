//! One lock per job id in flight: two deliveries of one job never run side by side in a
//! worker, so the second finds what the first created instead of racing it (EC2's
//! `CreateSnapshot` has no idempotency token to catch the race). The map holds an entry
//! only while some delivery of that job holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_common::JobId;

#[derive(Default)]
pub(super) struct JobLocks {
    locks: Mutex<HashMap<JobId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a job id runs; the map entry goes when its last holder does.
pub(super) struct JobLock<'a> {
    locks: &'a JobLocks,
    id: JobId,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl JobLocks {
    pub(super) async fn lock(&self, id: &JobId) -> JobLock<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        JobLock {
            locks: self,
            id: id.clone(),
            lock,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for JobLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. Any more and another delivery still waits.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_and_the_entry_goes_with_the_last() {
        let locks = Arc::new(JobLocks::default());
        let id = JobId::parse("job-1").expect("id");
        let first = locks.lock(&id).await;
        let (l, i) = (locks.clone(), id.clone());
        let second = tokio::spawn(async move {
            let _held = l.lock(&i).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second delivery waits");
        drop(first);
        second.await.expect("second delivery ran");
        assert_eq!(locks.len(), 0);
    }
}
