//! The runtime: poll, run, settle. Its files are layers, each using only those below it,
//! so a reader following one message walks down and never back:
//!
//! - plain types, deciding nothing and calling nothing: [`delivery`] (the received message,
//!   its attempt, what the handler gave, what became of the message), [`carried`] (what a
//!   fresh copy carries to the next delivery), [`slots`] (worker and kind slots, given back
//!   while a job waits), [`job_lock`] (one delivery of a job id at a time in a worker), and
//!   [`settle`], the pure functions that make every decision: delete, retry after a delay,
//!   copy, hold, dead-letter, carry forward, and the pauses of held calls;
//! - [`calls`]: the SQS and SNS calls a delivery makes, each retried while the message is
//!   held, deciding nothing: publish, delete, change visibility, release, copy, send to the
//!   dead-letter queue, send a follow-up; and [`claim`], its calls to the job ledger: claim,
//!   keep, record progress, record the outcome, give back;
//! - the steps built from them: [`follow_ups`] (a chain's next jobs), [`announce_then_delete`]
//!   (follow-ups, event, delete, in that order) and [`dead_letter`] (DLQ copy with its
//!   reason, failure event, delete);
//! - [`carry_out`]: does what [`settle`] decided, and carries a finished job forward on a copy
//!   when its outcome or its dead-letter cannot get out;
//! - [`run`]: one delivery: decode, finish what a copy carried, or run the handler (a panic is
//!   a failure like any other), ask [`settle`], carry it out;
//! - [`poll`]: long-polls for as many messages as there are free worker slots and starts each;
//!   on a FIFO queue, one task per message group, its messages held from the start;
//! - this file: the [`Worker`]. It sets up and shuts down: stop receiving, give jobs in flight
//!   the grace period, release the ones still running so another worker takes them at once,
//!   flush the batchers.

mod announce_then_delete;
mod calls;
mod carried;
mod carry_out;
mod claim;
mod dead_letter;
mod delivery;
mod follow_ups;
mod job_lock;
mod poll;
mod run;
pub mod settle;
mod slots;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shoal_common::aws::AwsClients;
use shoal_common::ledger::OutcomeWrites;
use shoal_common::metrics::Metrics;
use shoal_common::JobKind;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batcher, DeleteOp, PublishOp, VisibilityOp};
use crate::config::WorkerConfig;
use crate::handler::Registry;
use crate::heartbeat::VisibilityHeartbeat;
use crate::http::{self, Health};
use crate::pause::PausedKinds;
use crate::queue_stats;

/// A worker: the configuration, clients and handlers it runs with. The crate's front page
/// builds and runs one.
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
    /// Outcomes of kinds that take no lease, on their way to the ledger, when there is one.
    outcomes: Option<Batcher<OutcomeWrites>>,
    heartbeat: Arc<VisibilityHeartbeat>,
    kind_slots: HashMap<JobKind, Arc<Semaphore>>,
    job_locks: job_lock::JobLocks,
    worker_id: Arc<str>,
    /// The kinds operators paused, as last read from the ledger.
    paused: Arc<PausedKinds>,
}

impl Shared {
    /// The delays [`settle::settle`] decides with, from this worker's settings.
    fn policy(&self) -> settle::Policy {
        settle::Policy {
            retry_base: self.config.retry_base,
            retry_max: self.config.retry_max,
        }
    }
}

impl Worker {
    /// A worker running `registry`'s handlers with `config` (from
    /// [`WorkerArgs::resolve`](crate::WorkerArgs::resolve)), counting into `metrics`.
    pub fn new(
        config: WorkerConfig,
        clients: AwsClients,
        registry: Registry,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.show_kinds(registry.kinds());
        Worker {
            config: Arc::new(config),
            clients,
            registry: Arc::new(registry),
            metrics,
        }
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
        let sqs = &self.clients.sqs;
        let (deletes, delete_task) = Batcher::spawn(
            DeleteOp {
                sqs: sqs.clone(),
                queue_url: cfg.queue_url.clone(),
            },
            cfg.batch_flush,
            metrics.clone(),
        );
        let (visibility, visibility_task) = Batcher::spawn(
            VisibilityOp {
                sqs: sqs.clone(),
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
        let (outcomes, outcomes_task) = match &cfg.ledger {
            Some(ledger) => {
                metrics.count_from_zero("dynamodb", shoal_common::ledger::WORKER_OPERATIONS);
                let (batcher, task) = Batcher::spawn(
                    OutcomeWrites(ledger.clone()),
                    cfg.batch_flush,
                    metrics.clone(),
                );
                (Some(batcher), Some(task))
            }
            None => (None, None),
        };
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

        // Read once before anything is received: a worker started during an incident's
        // pause runs none of what it holds.
        let paused = Arc::new(PausedKinds::default());
        let pause_task = match &cfg.ledger {
            Some(ledger) => {
                paused.refresh(ledger, &metrics).await;
                Some(tokio::spawn(paused.clone().run(
                    ledger.clone(),
                    metrics.clone(),
                    cfg.pause_check_interval,
                    background.clone(),
                )))
            }
            None => None,
        };

        let shared = Arc::new(Shared {
            paused,
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
            outcomes,
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
                tokio::spawn(poll::poll(
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
        for task in [outcomes_task, http_task, sampler_task, pause_task]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        tracing::info!("worker stopped");
    }
}
