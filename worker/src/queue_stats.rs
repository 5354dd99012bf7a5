//! The queue sampler: every so often, how many messages the job queue and its dead-letter
//! queue hold in each state, as gauges on `/metrics`.
//!
//! A worker knows what it holds; only SQS knows what waits. These gauges let the alerts
//! that matter to an operator live in Prometheus beside the job counters: the dead-letter
//! queue is not empty, messages wait but nothing succeeds, the backlog grows.
//! Every worker samples the same queues, so dashboards aggregate with `max`. A failed sample
//! is logged and counted and changes nothing else: the gauges keep their last values.

use std::sync::Arc;
use std::time::Duration;

use shoal_common::aws::AwsClients;
use shoal_common::metrics::Metrics;
use shoal_common::queue::QueueAttributes;
use tokio_util::sync::CancellationToken;

/// The `queue` label of the job queue and of its dead-letter queue.
pub const JOBS: &str = "jobs";
pub const DEAD_LETTER: &str = "dead-letter";

/// Samples `queues` (label, URL) every `interval` until `stop`.
pub async fn run(
    clients: AwsClients,
    metrics: Arc<Metrics>,
    queues: Vec<(&'static str, String)>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for (label, url) in &queues {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sample(&clients, &metrics, label, url) => {}
            }
        }
    }
}

async fn sample(clients: &AwsClients, metrics: &Metrics, label: &str, url: &str) {
    match QueueAttributes::fetch(&clients.sqs, url).await {
        Ok(attrs) => {
            for (state, n) in [
                ("visible", attrs.visible),
                ("in_flight", attrs.in_flight),
                ("delayed", attrs.delayed),
            ] {
                metrics
                    .queue_messages
                    .with_label_values(&[label, state])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        Err(e) => {
            metrics.queue_sample_failures.inc();
            tracing::warn!(queue = label, error = %e, "cannot sample the queue's depth");
        }
    }
}
