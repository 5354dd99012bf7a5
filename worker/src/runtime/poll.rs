//! Polling: receive only as many messages as there are free slots, and start each.
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

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use shoal_common::error::classify_sdk_error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::carried::Carried;
use super::carry_out::{self, Disposition};
use super::run::process;
use super::Shared;
use crate::handler::Progress;
use crate::http::Health;

/// SQS returns at most ten messages per receive.
const MAX_RECEIVE: usize = 10;

/// A received message with what the runtime reads from it.
pub(super) struct Delivery {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// `ApproximateReceiveCount`: deliveries of this copy of the job, from 1.
    pub receive_count: u32,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    /// The sender's attributes (and Shoal's own, on a copy).
    pub attributes: HashMap<String, MessageAttributeValue>,
    pub received_at: Instant,
    /// What an earlier copy carried: failures so far, progress, an outcome to announce.
    pub carried: Carried,
    /// The handler's progress: carried in, and recorded by this delivery's runs.
    pub progress: Progress,
}

impl Delivery {
    /// This delivery's attempt number if it runs the handler: failed runs on earlier copies,
    /// plus this copy's receives (each earlier one a failed run, or a worker that died).
    pub fn attempt(&self) -> u32 {
        self.carried.failures + self.receive_count
    }

    /// Runs of the handler before this delivery: on earlier copies, and on this copy's
    /// earlier receives (each one a run, or a worker that died in one: whatever does not
    /// run the handler goes back on a copy).
    pub fn earlier_runs(&self) -> u32 {
        self.carried.runs + self.receive_count.saturating_sub(1)
    }
}

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
            .map(|m| read_message(m, received_at))
            .collect();
        // Unused permits go back as `permits` drops at the end of this iteration.
        for group in fifo_groups(received, cfg.fifo) {
            let held: Vec<OwnedSemaphorePermit> =
                permits.drain(..group.len().min(permits.len())).collect();
            jobs.spawn(run_group(shared.clone(), group, held, abort_jobs.clone()));
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

fn read_message(m: Message, received_at: Instant) -> Delivery {
    let system = m.attributes.unwrap_or_default();
    let attributes = m.message_attributes.unwrap_or_default();
    let message_id = m.message_id.unwrap_or_default();
    let carried = match Carried::read(&attributes) {
        Ok(carried) => carried.unwrap_or_default(),
        Err(reason) => {
            tracing::warn!(%message_id, %reason, "ignoring an unreadable carried state");
            Carried::default()
        }
    };
    Delivery {
        progress: Progress::from_map(carried.progress.clone()),
        carried,
        message_id,
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
        receive_count: system
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        enqueued_at: system
            .get(&MessageSystemAttributeName::SentTimestamp)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis),
        group_id: system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned(),
        attributes,
        received_at,
    }
}

/// Runs a group of messages in order, each holding one of `permits` until it is done, all
/// of them kept invisible by the heartbeat until their turn is over.
async fn run_group(
    shared: Arc<Shared>,
    group: Vec<Delivery>,
    mut permits: Vec<OwnedSemaphorePermit>,
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
        let mut permit = permits.pop();
        // Boxed, as the releases below are: a job's future holds every path it may take, the
        // SDK calls of the rare ones included (13.5 KB); inline, that whole state was copied
        // each time the group's task was created, wrapped and started. One allocation per job
        // costs less.
        let disposition = tokio::select! {
            d = Box::pin(process(&shared, &msg, lease, &mut permit)) => d,
            _ = abort.cancelled() => {
                // The handler was dropped mid-run: hand the job to another worker now.
                shared.metrics.released_on_shutdown.inc();
                drop(hold);
                drop(holds);
                Box::pin(carry_out::release_aborted(&shared, &msg)).await;
                Box::pin(carry_out::release(&shared, rest.as_slice().iter())).await;
                return;
            }
        };
        drop(hold);
        if !matches!(
            disposition,
            Disposition::Deleted | Disposition::DeadLettered
        ) {
            // Later messages of a FIFO group must not overtake this one.
            drop(holds);
            let later: Vec<&Delivery> = rest.as_slice().iter().collect();
            if !later.is_empty() {
                Box::pin(carry_out::release(&shared, later.into_iter())).await;
            }
            return;
        }
    }
}
