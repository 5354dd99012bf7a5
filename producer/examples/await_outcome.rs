//! Enqueue a job and await its outcome: the `AsyncResult.get()` of Shoal.
//!
//! ```sh
//! export SHOAL_QUEUE_URL=… SHOAL_TOPIC_ARN=… SHOAL_LEDGER_TABLE=…  # e.g. from `stack create`
//! cargo run -p shoal-producer --example await_outcome                # a canary
//! cargo run -p shoal-producer --example await_outcome -- chain.json  # any job or chain
//! ```
//!
//! The follower subscribes before the job is sent, and with the ledger (`SHOAL_LEDGER_TABLE`)
//! a job that finished before the subscription took effect is answered from its record, so
//! no outcome can be missed; for a chain the outcome holds every step's event. Then the
//! job's record is read back (`Producer::outcome`). Exits 0 when everything succeeded, 1
//! otherwise.

use std::time::Duration;

use shoal_common::aws::{check_setup, load_sdk_config, AwsClients};
use shoal_common::config::QueueTarget;
use shoal_common::job::Canary;
use shoal_common::ledger::Ledger;
use shoal_common::{Job, JobEnvelope};
use shoal_producer::{Producer, SendOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_url = std::env::var("SHOAL_QUEUE_URL").map_err(|_| "set SHOAL_QUEUE_URL")?;
    let topic_arn = std::env::var("SHOAL_TOPIC_ARN").map_err(|_| "set SHOAL_TOPIC_ARN")?;
    let job = match std::env::args().nth(1) {
        Some(path) => {
            JobEnvelope::from_request(serde_json::from_str(&std::fs::read_to_string(path)?)?)?
        }
        None => JobEnvelope::new(Job::new(Canary { sleep_ms: 10 })),
    };

    let sdk = load_sdk_config().await;
    check_setup(&sdk).await?;
    let clients = AwsClients::new(&sdk);
    let mut producer = Producer::new(clients.sqs.clone(), QueueTarget::new(queue_url));
    if let Ok(table) = std::env::var("SHOAL_LEDGER_TABLE") {
        producer =
            producer.with_ledger(Ledger::new(clients.dynamodb.clone(), table, Duration::ZERO));
    }
    let outcome = producer
        .enqueue_and_wait(
            &clients,
            &topic_arn,
            &job,
            &SendOptions::default(),
            Duration::from_secs(300),
        )
        .await?;

    for event in &outcome.events {
        println!(
            "{} {} {}",
            event.job_id.as_deref().unwrap_or("-"),
            event.kind.as_deref().unwrap_or("?"),
            event.status.as_str()
        );
    }
    if producer.ledger().is_some() {
        match producer.outcome(&job.job_id).await? {
            Some(event) => println!("on record: {} {}", job.job_id, event.status.as_str()),
            None => println!("on record: {} not finished", job.job_id),
        }
    }
    if !outcome.succeeded {
        std::process::exit(1);
    }
    Ok(())
}
