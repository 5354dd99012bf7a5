//! Polling: receive only as many messages as there are free worker slots, and start each,
//! holding its slot until it is done (or gives it back while it waits: see `slots.rs`).
//!
//! A standard queue's messages each run in a task of their own. On a FIFO queue the messages
//! of one group that arrive in one receive run in order in a single task, and all of them are
//! held by the heartbeat from the start: a message waiting behind a long job of its group
//! must not lapse back to the queue, where another worker would run it out of order. If one
//! does not finish, the rest are released so SQS keeps their order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use shoal_common::error::classify_sdk_error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::calls;
use super::carry_out;
use super::delivery::{Attempt, Delivery, Disposition};
use super::run::process;
use super::slots::WorkerSlots;
use super::Shared;
use crate::http::Health;

/// SQS returns at most ten messages per receive.
const MAX_RECEIVE: usize = 10;

/// One poller: receive as many messages as there are free slots, start each, repeat.
pub(super) async fn poll(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    jobs: TaskTracker,
    abort_jobs: CancellationToken,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let cfg = &shared.config;
    let mut error_backoff = Duration::from_millis(500);
    loop {
        // Every kind paused: nothing is received (a receive would only send jobs round).
        if shared.paused.all() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_RECEIVE {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = shared
            .clients
            .sqs
            .receive_message()
            .queue_url(&cfg.queue_url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(cfg.wait_time_seconds as i32)
            .visibility_timeout(cfg.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send();
        // Cancelling an outstanding receive loses nothing: whatever it would have returned
        // becomes visible again after the visibility timeout.
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = receive => r,
        };
        let received_at = Instant::now();
        let messages = match result {
            Ok(out) => {
                health.queue_reachable.store(true, Ordering::Relaxed);
                if !health.shutting_down.load(Ordering::Relaxed) {
                    shared.metrics.ready.set(1);
                }
                error_backoff = Duration::from_millis(500);
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                let err = classify_sdk_error("ReceiveMessage", &e);
                health.queue_reachable.store(false, Ordering::Relaxed);
                shared.metrics.ready.set(0);
                tracing::warn!(error = %err, retry_in_ms = error_backoff.as_millis() as u64, "cannot receive from the job queue");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if messages.is_empty() {
            shared.metrics.empty_receives.inc();
            continue;
        }
        let received: Vec<Delivery> = messages
            .into_iter()
            .map(|m| Delivery::read(m, received_at))
            .collect();
        // Unused permits go back as `permits` drops at the end of this iteration.
        for group in fifo_groups(received, cfg.fifo) {
            let held: Vec<OwnedSemaphorePermit> =
                permits.drain(..group.len().min(permits.len())).collect();
            let group_slots = WorkerSlots::new(slots.clone(), held);
            jobs.spawn(run_group(
                shared.clone(),
                group,
                group_slots,
                abort_jobs.clone(),
            ));
        }
    }
}

/// Splits a receive into units run one after another: each message alone on a standard
/// queue; on a FIFO queue, one unit per message group, in the order SQS gave.
fn fifo_groups(received: Vec<Delivery>, fifo: bool) -> Vec<Vec<Delivery>> {
    if !fifo {
        return received.into_iter().map(|r| vec![r]).collect();
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Delivery>> = HashMap::new();
    for r in received {
        let group = r.group_id.clone().unwrap_or_default();
        if !groups.contains_key(&group) {
            order.push(group.clone());
        }
        groups.entry(group).or_default().push(r);
    }
    order
        .into_iter()
        .filter_map(|g| groups.remove(&g))
        .collect()
}

/// Runs a group of messages in order, each in turn, all of them kept invisible by the
/// heartbeat until their turn is over; the group holds a worker slot for each message not yet
/// done.
async fn run_group(
    shared: Arc<Shared>,
    group: Vec<Delivery>,
    mut slots: WorkerSlots,
    abort: CancellationToken,
) {
    let mut holds: Vec<_> = group
        .iter()
        .map(|m| shared.heartbeat.hold(&m.receipt, m.received_at))
        .collect();
    holds.reverse();
    let mut rest = group.into_iter();
    while let Some(msg) = rest.next() {
        let hold = holds.pop();
        let lease = hold.as_ref().map(|h| h.lease()).unwrap_or_default();
        // Boxed, as the releases below are: a job's future holds every path it may take, the
        // SDK calls of the rare ones included (13.5 KB); inline, that whole state was copied
        // each time the group's task was created, wrapped and started. One allocation per job
        // costs less.
        let disposition = tokio::select! {
            d = Box::pin(process(&shared, &msg, lease, &mut slots)) => d,
            _ = abort.cancelled() => {
                // The handler was dropped mid-run: hand the job to another worker now.
                shared.metrics.released_on_shutdown.inc();
                drop(hold);
                drop(holds);
                let attempt = Attempt::of(&msg, None);
                Box::pin(carry_out::release_stopped(&shared, &msg, &attempt)).await;
                Box::pin(calls::release(&shared, rest.as_slice().iter())).await;
                return;
            }
        };
        drop(hold);
        slots.finish_one();
        if !matches!(
            disposition,
            Disposition::Deleted | Disposition::DeadLettered
        ) {
            // Later messages of a FIFO group must not overtake this one.
            drop(holds);
            let later: Vec<&Delivery> = rest.as_slice().iter().collect();
            if !later.is_empty() {
                Box::pin(calls::release(&shared, later.into_iter())).await;
            }
            return;
        }
    }
}
