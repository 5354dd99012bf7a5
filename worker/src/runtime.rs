//! The runtime: poll, run, announce, delete.
//!
//! Pollers long-poll the job queue, but only for as many messages as there are free slots
//! (a `Semaphore` of `concurrency` permits, each living exactly as long as its job), so the
//! worker never holds a message it cannot start. Each message becomes a task that decodes
//! it, runs its kind's handler under the visibility heartbeat, and then:
//!
//! - success: publish the completion event, then delete the message;
//! - transient failure: set the message's visibility to a backoff delay computed from its
//!   receive count, so SQS delivers it again; on the last attempt, dead-letter it instead;
//! - permanent failure, or a message that is not a valid job: copy it to the dead-letter
//!   queue with the reason, publish the failure event, delete the original.
//!
//! On a FIFO queue the messages of one group that arrive in one receive run in order in a
//! single task; if one does not finish, the rest are released so SQS keeps their order.
//!
//! Shutdown: stop receiving, give jobs in flight the grace period, release the ones still
//! running (visibility 0) so another worker takes them at once, flush the batchers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use shoal_common::aws::AwsClients;
use shoal_common::error::{classify_sdk_error, ErrorClass};
use shoal_common::event::{EventError, JobEvent, JobStatus, Timings, EVENT_VERSION};
use shoal_common::metrics::{Metrics, UNKNOWN_KIND};
use shoal_common::queue::dead_letter_attribute as attr;
use shoal_common::{JobEnvelope, JobId, JobKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::batch::{Batcher, DeleteOp, Publication, PublishOp, VisibilityChange, VisibilityOp};
use crate::config::WorkerConfig;
use crate::handler::{JobContext, JobError, Outcome, Registry};
use crate::heartbeat::VisibilityHeartbeat;
use crate::http::{self, Health};
use crate::queue_stats;
use crate::retry::{retry_delay, MAX_VISIBILITY};

/// SQS returns at most ten messages per receive.
const MAX_RECEIVE: usize = 10;
/// Longest error text copied into a DLQ attribute or event.
const MAX_REASON_CHARS: usize = 2000;

/// A worker: the configuration, clients and handlers it runs with.
pub struct Worker {
    config: Arc<WorkerConfig>,
    clients: AwsClients,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// The parts every job task shares.
struct Shared {
    config: Arc<WorkerConfig>,
    clients: AwsClients,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    deletes: Batcher<DeleteOp>,
    visibility: Batcher<VisibilityOp>,
    events: Batcher<PublishOp>,
    heartbeat: Arc<VisibilityHeartbeat>,
    kind_slots: HashMap<JobKind, Arc<Semaphore>>,
    /// One lock per job id in flight: two deliveries of one job never run side by side in a
    /// worker, so the second finds what the first created instead of racing it (EC2's
    /// `CreateSnapshot` has no idempotency token to catch the race).
    job_locks: std::sync::Mutex<HashMap<JobId, Arc<tokio::sync::Mutex<()>>>>,
    worker_id: Arc<str>,
}

/// Held while a job id runs; the map entry goes when its last holder does.
struct JobLock<'a> {
    shared: &'a Shared,
    id: JobId,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Shared {
    async fn lock_job(&self, id: &JobId) -> JobLock<'_> {
        let lock = self
            .job_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        JobLock {
            shared: self,
            id: id.clone(),
            lock,
            guard: Some(guard),
        }
    }
}

impl Drop for JobLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self
            .shared
            .job_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. Any more and another delivery still waits.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.id);
        }
    }
}

/// A received message with what the runtime reads from it.
struct Received {
    message_id: String,
    receipt: String,
    body: String,
    /// `ApproximateReceiveCount`: this delivery's number, from 1.
    attempt: u32,
    enqueued_at: Option<DateTime<Utc>>,
    group_id: Option<String>,
    attributes: HashMap<String, MessageAttributeValue>,
    received_at: Instant,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Deleted,
    DeadLettered,
    /// Back on the queue for a later attempt or check.
    Returned,
    /// Left to reappear when its visibility times out (a call to move it failed).
    Left,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        clients: AwsClients,
        registry: Registry,
        metrics: Arc<Metrics>,
    ) -> Self {
        Worker {
            config: Arc::new(config),
            clients,
            registry: Arc::new(registry),
            metrics,
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully. `metrics_listener`,
    /// when given, serves `/metrics`, `/healthz` and `/readyz`.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        metrics_listener: Option<tokio::net::TcpListener>,
    ) {
        let cfg = self.config.clone();
        let metrics = self.metrics.clone();
        let (deletes, delete_task) = Batcher::spawn(
            DeleteOp {
                sqs: self.clients.sqs.clone(),
                queue_url: cfg.queue_url.clone(),
            },
            cfg.batch_flush,
            metrics.clone(),
        );
        let (visibility, visibility_task) = Batcher::spawn(
            VisibilityOp {
                sqs: self.clients.sqs.clone(),
                queue_url: cfg.queue_url.clone(),
            },
            cfg.batch_flush,
            metrics.clone(),
        );
        let (events, events_task) = Batcher::spawn(
            PublishOp {
                sns: self.clients.sns.clone(),
                topic_arn: cfg.topic_arn.clone(),
            },
            cfg.batch_flush,
            metrics.clone(),
        );
        let heartbeat = VisibilityHeartbeat::new(cfg.visibility_timeout);
        let background = CancellationToken::new();
        let heartbeat_task = tokio::spawn(heartbeat.clone().run(
            visibility.clone(),
            metrics.clone(),
            background.clone(),
        ));

        let health = Arc::new(Health::default());
        health.queue_reachable.store(true, Ordering::Relaxed);
        metrics.ready.set(1);
        let http_task = metrics_listener.map(|listener| {
            tokio::spawn(http::serve(
                listener,
                metrics.clone(),
                health.clone(),
                background.clone(),
            ))
        });

        let sampler_task = cfg.queue_stats_interval.map(|interval| {
            tokio::spawn(queue_stats::run(
                self.clients.clone(),
                metrics.clone(),
                vec![
                    (queue_stats::JOBS, cfg.queue_url.clone()),
                    (queue_stats::DEAD_LETTER, cfg.dlq_url.clone()),
                ],
                interval,
                background.clone(),
            ))
        });

        let shared = Arc::new(Shared {
            kind_slots: cfg
                .kind_limits
                .iter()
                .map(|(kind, n)| (*kind, Arc::new(Semaphore::new(*n))))
                .collect(),
            job_locks: Default::default(),
            worker_id: Arc::from(cfg.worker_id.as_str()),
            config: cfg.clone(),
            clients: self.clients.clone(),
            registry: self.registry.clone(),
            metrics: metrics.clone(),
            deletes,
            visibility,
            events,
            heartbeat,
        });

        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let jobs = TaskTracker::new();
        let abort_jobs = CancellationToken::new();
        tracing::info!(
            queue = %cfg.queue_url, concurrency = cfg.concurrency, pollers = cfg.pollers,
            visibility_timeout_s = cfg.visibility_timeout.as_secs(), max_attempts = cfg.max_attempts,
            worker_id = %cfg.worker_id, "worker started"
        );
        let pollers: Vec<_> = (0..cfg.pollers)
            .map(|_| {
                tokio::spawn(poll(
                    shared.clone(),
                    slots.clone(),
                    jobs.clone(),
                    abort_jobs.clone(),
                    health.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();

        shutdown.cancelled().await;
        health.shutting_down.store(true, Ordering::Relaxed);
        metrics.ready.set(0);
        tracing::info!(
            in_flight = shared.heartbeat.held_count(),
            grace_s = cfg.shutdown_grace.as_secs_f64(),
            "shutting down: no more receives"
        );
        for poller in pollers {
            let _ = poller.await;
        }
        jobs.close();
        if tokio::time::timeout(cfg.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: releasing unfinished jobs to other workers");
            abort_jobs.cancel();
            jobs.wait().await;
        }
        background.cancel();
        let _ = heartbeat_task.await;
        drop(shared);
        for task in [delete_task, visibility_task, events_task] {
            let _ = task.await;
        }
        for task in [http_task, sampler_task].into_iter().flatten() {
            let _ = task.await;
        }
        tracing::info!("worker stopped");
    }
}

/// One poller: receive as many messages as there are free slots, start each, repeat.
async fn poll(
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
        let received: Vec<Received> = messages
            .into_iter()
            .map(|m| read_message(m, received_at))
            .collect();
        // Unused permits go back as `permits` drops at the end of this iteration.
        for chain in chains(received, cfg.fifo) {
            let held: Vec<OwnedSemaphorePermit> =
                permits.drain(..chain.len().min(permits.len())).collect();
            jobs.spawn(run_chain(shared.clone(), chain, held, abort_jobs.clone()));
        }
    }
}

/// Splits a receive into units run one after another: each message alone on a standard
/// queue; on a FIFO queue, one unit per message group, in the order SQS gave.
fn chains(received: Vec<Received>, fifo: bool) -> Vec<Vec<Received>> {
    if !fifo {
        return received.into_iter().map(|r| vec![r]).collect();
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Received>> = HashMap::new();
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

fn read_message(m: Message, received_at: Instant) -> Received {
    let system = m.attributes.unwrap_or_default();
    Received {
        message_id: m.message_id.unwrap_or_default(),
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
        attempt: system
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
        attributes: m.message_attributes.unwrap_or_default(),
        received_at,
    }
}

/// Runs a chain of messages in order, each holding one of `permits` until it is done.
async fn run_chain(
    shared: Arc<Shared>,
    chain: Vec<Received>,
    mut permits: Vec<OwnedSemaphorePermit>,
    abort: CancellationToken,
) {
    let mut rest = chain.into_iter();
    while let Some(msg) = rest.next() {
        let _permit = permits.pop();
        let disposition = tokio::select! {
            d = process(&shared, &msg) => d,
            _ = abort.cancelled() => {
                // The handler was dropped mid-run: hand the message to another worker now.
                shared.metrics.released_on_shutdown.inc();
                release(&shared, std::iter::once(&msg).chain(rest.as_slice())).await;
                return;
            }
        };
        if !matches!(
            disposition,
            Disposition::Deleted | Disposition::DeadLettered
        ) {
            // Later messages of a FIFO group must not overtake this one.
            let later: Vec<&Received> = rest.as_slice().iter().collect();
            if !later.is_empty() {
                release(&shared, later.into_iter()).await;
            }
            return;
        }
    }
}

/// Makes messages visible again at once.
async fn release<'a>(shared: &Shared, messages: impl Iterator<Item = &'a Received>) {
    let changes = messages.map(|m| {
        shared.visibility.submit(VisibilityChange {
            receipt: m.receipt.clone(),
            timeout: Duration::ZERO,
        })
    });
    for result in futures::future::join_all(changes).await {
        if let Err(e) = result {
            tracing::warn!(code = %e.code, error = %e.message, "cannot release a message; it returns after its visibility timeout");
        }
    }
}

async fn process(shared: &Shared, msg: &Received) -> Disposition {
    let _held = shared.heartbeat.hold(&msg.receipt, msg.received_at);
    let started_at = Utc::now();
    let envelope = match JobEnvelope::from_json(&msg.body) {
        Ok(envelope) => envelope,
        Err(e) => {
            shared
                .metrics
                .jobs_received
                .with_label_values(&[UNKNOWN_KIND])
                .inc();
            let error = JobError::permanent("InvalidMessage", e.to_string());
            tracing::warn!(message_id = %msg.message_id, error = %error, "not a valid job: dead-lettering");
            return dead_letter(shared, msg, None, started_at, error, "malformed").await;
        }
    };
    let kind = envelope.kind();
    let span =
        tracing::info_span!("job", job_id = %envelope.job_id, kind = %kind, attempt = msg.attempt);
    run_job(shared, msg, envelope, started_at)
        .instrument(span)
        .await
}

async fn run_job(
    shared: &Shared,
    msg: &Received,
    envelope: JobEnvelope,
    started_at: DateTime<Utc>,
) -> Disposition {
    let kind = envelope.kind();
    let k = kind.as_str();
    let metrics = &shared.metrics;
    let cfg = &shared.config;
    metrics.jobs_received.with_label_values(&[k]).inc();
    if !shared.registry.contains(kind) {
        let error = JobError::permanent(
            "NoHandler",
            format!("this worker has no handler for `{kind}` jobs"),
        );
        return dead_letter(
            shared,
            msg,
            Some(&envelope),
            started_at,
            error,
            "no_handler",
        )
        .await;
    }

    let _same_job = shared.lock_job(&envelope.job_id).await;
    let _kind_slot = match shared.kind_slots.get(&kind) {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // Holding the message while its kind is saturated would starve other kinds, so
            // it goes back unstarted; but never on its last delivery (SQS would dead-letter
            // it next time without it having run) nor on FIFO queues (order).
            Err(_) if msg.attempt < cfg.max_attempts && !cfg.fifo => {
                metrics.jobs_deferred.with_label_values(&[k]).inc();
                let delay = retry_delay(1, cfg.retry_base, cfg.retry_max);
                return change_visibility(shared, msg, delay).await;
            }
            Err(_) => slots.clone().acquire_owned().await.ok(),
        },
    };

    if let Some(enqueued_at) = msg.enqueued_at {
        let wait = (started_at - enqueued_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics.job_queue_wait.with_label_values(&[k]).observe(wait);
    }
    let in_flight = metrics.jobs_in_flight.with_label_values(&[k]);
    in_flight.inc();
    let ctx = JobContext {
        job_id: envelope.job_id.clone(),
        kind,
        attempt: msg.attempt,
        max_attempts: cfg.max_attempts,
        worker_id: shared.worker_id.clone(),
        clients: shared.clients.clone(),
        enqueued_at: msg.enqueued_at,
        started_at,
    };
    let clock = std::time::Instant::now();
    let result = match shared.registry.run(ctx, envelope.job.clone()) {
        Some(run) => run.await,
        None => Err(JobError::permanent(
            "NoHandler",
            format!("no handler for `{kind}`"),
        )),
    };
    let seconds = clock.elapsed().as_secs_f64();
    in_flight.dec();

    match result {
        Ok(Outcome::Done(value)) => {
            metrics
                .job_duration
                .with_label_values(&[k, "succeeded"])
                .observe(seconds);
            tracing::debug!(duration_ms = (seconds * 1000.0) as u64, "job succeeded");
            let event = event(
                shared,
                msg,
                Some(&envelope),
                started_at,
                JobStatus::Succeeded,
                Some(value),
                None,
            );
            if let Err(e) = publish(shared, &event).await {
                tracing::warn!(code = %e.code, error = %e.message, "cannot publish the completion event; the job will run again");
                let delay = retry_delay(msg.attempt, cfg.retry_base, cfg.retry_max);
                return change_visibility(shared, msg, delay).await;
            }
            metrics.jobs_succeeded.with_label_values(&[k]).inc();
            delete(shared, msg).await
        }
        Ok(Outcome::CheckAgainAfter(delay)) => {
            metrics
                .job_duration
                .with_label_values(&[k, "waiting"])
                .observe(seconds);
            metrics.jobs_waiting.with_label_values(&[k]).inc();
            tracing::debug!(
                check_in_s = delay.as_secs(),
                "waiting for EC2; back on the queue"
            );
            // Each check is a receive, and SQS dead-letters a message past maxReceiveCount
            // receives: keep one delivery in hand for a retry, then continue the wait on a
            // fresh copy. (FIFO queues take no per-message delay, so there the wait stays on
            // the message; give such queues a generous maxReceiveCount.)
            if msg.attempt + 1 < cfg.max_attempts || cfg.fifo {
                change_visibility(shared, msg, delay).await
            } else {
                requeue(shared, msg, delay).await
            }
        }
        Err(error) => {
            metrics
                .job_duration
                .with_label_values(&[k, "failed"])
                .observe(seconds);
            metrics
                .jobs_failed
                .with_label_values(&[k, error.class.as_str()])
                .inc();
            match error.class {
                ErrorClass::Transient if msg.attempt < cfg.max_attempts => {
                    let delay = retry_delay(msg.attempt, cfg.retry_base, cfg.retry_max);
                    tracing::info!(error = %error, code = ?error.code, retry_in_s = delay.as_secs(), "transient failure: retrying");
                    metrics.jobs_retried.with_label_values(&[k]).inc();
                    change_visibility(shared, msg, delay).await
                }
                ErrorClass::Transient => {
                    tracing::warn!(error = %error, "transient failure on the last attempt: dead-lettering");
                    let error = JobError {
                        class: ErrorClass::Transient,
                        code: Some("AttemptsExhausted".into()),
                        message: format!(
                            "failed on all {} attempts; last error ({}): {}",
                            cfg.max_attempts,
                            error.code.as_deref().unwrap_or("no code"),
                            error.message
                        ),
                    };
                    dead_letter(
                        shared,
                        msg,
                        Some(&envelope),
                        started_at,
                        error,
                        "attempts_exhausted",
                    )
                    .await
                }
                ErrorClass::Permanent => {
                    tracing::warn!(error = %error, code = ?error.code, "permanent failure: dead-lettering");
                    dead_letter(shared, msg, Some(&envelope), started_at, error, "permanent").await
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn event(
    shared: &Shared,
    msg: &Received,
    envelope: Option<&JobEnvelope>,
    started_at: DateTime<Utc>,
    status: JobStatus,
    result: Option<serde_json::Value>,
    error: Option<EventError>,
) -> JobEvent {
    // A malformed message may still name its job; subscribers correlate on it.
    let loose: Option<serde_json::Value> = match envelope {
        Some(_) => None,
        None => serde_json::from_str(&msg.body).ok(),
    };
    let loose_str = |field: &str| {
        loose
            .as_ref()
            .and_then(|v| v.get(field))
            .and_then(|v| v.as_str())
            .map(|s| truncate(s, 128))
    };
    let finished_at = Utc::now();
    JobEvent {
        event_version: EVENT_VERSION,
        job_id: envelope
            .map(|e| e.job_id.to_string())
            .or_else(|| loose_str("job_id")),
        kind: envelope
            .map(|e| e.kind().as_str().to_owned())
            .or_else(|| loose_str("kind")),
        status,
        attempts: msg.attempt,
        message_id: msg.message_id.clone(),
        worker_id: shared.worker_id.to_string(),
        timings: Timings {
            submitted_at: envelope.map(|e| e.submitted_at),
            enqueued_at: msg.enqueued_at,
            started_at,
            finished_at,
            queue_ms: msg
                .enqueued_at
                .map(|at| (started_at - at).num_milliseconds().max(0) as u64),
            run_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        },
        result,
        error,
    }
}

async fn publish(shared: &Shared, event: &JobEvent) -> Result<(), crate::batch::EntryError> {
    let kind = match event.kind.as_deref() {
        Some(k) if JobKind::parse(k).is_some() => k.to_owned(),
        _ => UNKNOWN_KIND.to_owned(),
    };
    let message =
        serde_json::to_string(event).unwrap_or_else(|e| unreachable!("events serialize: {e}"));
    let status = event.status.as_str();
    shared
        .events
        .submit(Publication {
            message,
            attributes: vec![("kind", kind.clone()), ("status", status.to_owned())],
        })
        .await?;
    shared
        .metrics
        .events_published
        .with_label_values(&[&kind, status])
        .inc();
    Ok(())
}

async fn delete(shared: &Shared, msg: &Received) -> Disposition {
    match shared.deletes.submit(msg.receipt.clone()).await {
        Ok(()) => Disposition::Deleted,
        Err(e) if e.is_stale_receipt() => {
            // Another delivery of this message is (or will be) under way; the job's
            // effects are keyed on its id, so that delivery finds them done.
            shared.metrics.stale_receipts.inc();
            tracing::info!(code = %e.code, "receipt handle stale at delete: the message will be delivered again");
            Disposition::Left
        }
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message, "cannot delete a finished job; it will be delivered again");
            Disposition::Left
        }
    }
}

async fn change_visibility(shared: &Shared, msg: &Received, delay: Duration) -> Disposition {
    let change = VisibilityChange {
        receipt: msg.receipt.clone(),
        timeout: delay.min(MAX_VISIBILITY),
    };
    match shared.visibility.submit(change).await {
        Ok(()) => Disposition::Returned,
        Err(e) => {
            if e.is_stale_receipt() {
                shared.metrics.stale_receipts.inc();
            }
            tracing::warn!(code = %e.code, error = %e.message, "cannot set visibility; the message returns after its timeout");
            Disposition::Left
        }
    }
}

/// SQS's longest per-message delay.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// Continues a wait on a fresh copy of the message (whose receive count starts again),
/// delayed up to SQS's 15-minute limit, then deletes the original.
async fn requeue(shared: &Shared, msg: &Received, delay: Duration) -> Disposition {
    let cfg = &shared.config;
    let sent = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.queue_url)
        .message_body(&msg.body)
        .set_message_attributes(Some(msg.attributes.clone()))
        .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
        .send()
        .await;
    match sent {
        Ok(_) => match delete(shared, msg).await {
            Disposition::Deleted => Disposition::Returned,
            other => other,
        },
        Err(e) => {
            tracing::warn!(error = %classify_sdk_error("SendMessage", &e), "cannot requeue a waiting job; it waits on its message");
            change_visibility(shared, msg, delay).await
        }
    }
}

/// Copies the message to the dead-letter queue with its reason, announces the failure,
/// and deletes the original. If the copy fails the original stays, to be tried again.
async fn dead_letter(
    shared: &Shared,
    msg: &Received,
    envelope: Option<&JobEnvelope>,
    started_at: DateTime<Utc>,
    error: JobError,
    reason: &'static str,
) -> Disposition {
    let cfg = &shared.config;
    let kind_label = envelope.map(|e| e.kind().as_str()).unwrap_or(UNKNOWN_KIND);
    let reason_text = truncate(&error.message, MAX_REASON_CHARS);
    let ours: Vec<(&str, String)> = vec![
        (attr::CLASS, error.class.as_str().to_owned()),
        (
            attr::CODE,
            error.code.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            attr::MESSAGE,
            if reason_text.is_empty() {
                "(no message)".into()
            } else {
                reason_text.clone()
            },
        ),
        (attr::ATTEMPTS, msg.attempt.to_string()),
        (attr::FAILED_AT, Utc::now().to_rfc3339()),
        (attr::SOURCE_MESSAGE_ID, msg.message_id.clone()),
    ];
    // SQS allows ten attributes a message: keep the sender's first, then ours.
    let mut send = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.dlq_url)
        .message_body(&msg.body);
    for (name, value) in msg
        .attributes
        .iter()
        .filter(|(n, _)| !n.starts_with(attr::PREFIX))
        .take(10 - ours.len())
    {
        send = send.message_attributes(name, value.clone());
    }
    for (name, value) in &ours {
        if let Ok(attr) = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
        {
            send = send.message_attributes(*name, attr);
        }
    }
    if cfg.fifo {
        send = send
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "dead-letter".into()))
            .message_deduplication_id(&msg.message_id);
    }
    if let Err(e) = send.send().await {
        let err = classify_sdk_error("SendMessage", &e);
        tracing::error!(error = %err, "cannot move a failed job to the dead-letter queue; it will be tried again");
        let delay = retry_delay(msg.attempt, cfg.retry_base, cfg.retry_max);
        return change_visibility(shared, msg, delay).await;
    }
    shared
        .metrics
        .jobs_dead_lettered
        .with_label_values(&[kind_label, reason])
        .inc();
    let failure = EventError {
        class: error.class,
        code: error.code,
        message: reason_text,
        dead_lettered: true,
    };
    let event = event(
        shared,
        msg,
        envelope,
        started_at,
        JobStatus::Failed,
        None,
        Some(failure),
    );
    if let Err(e) = publish(shared, &event).await {
        // The copy is in the DLQ; the original stays so the failure is announced next time.
        tracing::warn!(code = %e.code, error = %e.message, "cannot publish the failure event");
        return Disposition::Left;
    }
    match delete(shared, msg).await {
        Disposition::Deleted => Disposition::DeadLettered,
        other => other,
    }
}
