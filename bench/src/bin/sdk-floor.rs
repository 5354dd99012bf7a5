//! The AWS SDK's own floor, for `scripts/bench`: a bare loop that makes exactly the worker's
//! calls per ten jobs, with the same SDK clients the worker builds (instrumented, bounded
//! attempts, one runtime thread, the same allocator), and nothing else: one `ReceiveMessage` of ten, one
//! `PublishBatch` of ten completion events of Shoal's own size, one `DeleteMessageBatch`.
//! With `SHOAL_LEDGER_TABLE`, also the worker's ledger calls for canaries: one
//! conditional `TransactWriteItems` of 25 finished records of Shoal's shape per 25 jobs.
//! No validation, no handler, no heartbeat, no metrics endpoint, no retries of its own.
//! The worker's CPU per job over this loop's is what Shoal itself costs on top of the SDK.
//! Not shipped: built by `scripts/bench`, beside the worker.
//!
//! ```sh
//! SHOAL_QUEUE_URL=… SHOAL_TOPIC_ARN=… [SHOAL_LEDGER_TABLE=…] SHOAL_FLOOR_JOBS=10000 \
//!   cargo run --release -p shoal-bench --bin sdk-floor
//! ```

use std::collections::HashMap;

use aws_sdk_sns::types::{MessageAttributeValue as SnsAttribute, PublishBatchRequestEntry};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use chrono::Utc;
use shoal_common::aws::{load_sdk_config, AwsClients};
use shoal_common::event::{CloudEvent, EventSource, JobEvent, JobStatus};
use shoal_common::job::Canary;
use shoal_common::ledger::{Ledger, OutcomeItem, MAX_BATCH_WRITE};
use shoal_common::metrics::Metrics;
use shoal_common::{Job, JobEnvelope, JobId};

/// The worker's allocator: the floor is to differ from the worker only in Shoal's own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_url = std::env::var("SHOAL_QUEUE_URL")?;
    let topic_arn = std::env::var("SHOAL_TOPIC_ARN")?;
    let jobs: usize = std::env::var("SHOAL_FLOOR_JOBS")?.parse()?;
    let ledger_table = std::env::var("SHOAL_LEDGER_TABLE").ok();
    // The worker's default runtime: one thread.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drain(queue_url, topic_arn, ledger_table, jobs))
}

async fn drain(
    queue_url: String,
    topic_arn: String,
    ledger_table: Option<String>,
    jobs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Metrics::new();
    let clients = AwsClients::instrumented(&load_sdk_config().await, &metrics);
    let ledger = ledger_table.map(|table| {
        Ledger::new(
            clients.dynamodb.clone(),
            table,
            std::time::Duration::from_secs(14 * 24 * 3600),
        )
    });
    let mut outcomes: Vec<OutcomeItem> = Vec::with_capacity(MAX_BATCH_WRITE);
    let mut done = 0;
    while done < jobs {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let mut events = Vec::with_capacity(messages.len());
        let mut deletes = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let event = canary_event(m.message_id().unwrap_or_default());
            if let Some(ledger) = &ledger {
                // The record keeps the job's envelope and digest, as the worker's does.
                let mut envelope = JobEnvelope::new(Job::new(Canary { sleep_ms: 0 }));
                envelope.job_id = JobId::parse(&uuid_like(m.message_id().unwrap_or_default()))?;
                outcomes.push(ledger.outcome_item(&event, &envelope)?);
            }
            let attributes: HashMap<String, SnsAttribute> = event
                .attributes()
                .into_iter()
                .map(|(k, v)| {
                    let value = SnsAttribute::builder()
                        .data_type("String")
                        .string_value(v)
                        .build()?;
                    Ok((k.to_owned(), value))
                })
                .collect::<Result<_, aws_sdk_sns::error::BuildError>>()?;
            events.push(
                PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(CloudEvent::wrap(event, &queue_url).to_json())
                    .set_message_attributes(Some(attributes))
                    .build()?,
            );
            deletes.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()?,
            );
        }
        if let Some(ledger) = &ledger {
            if outcomes.len() >= MAX_BATCH_WRITE || done + messages.len() >= jobs {
                let batch: Vec<&OutcomeItem> = outcomes.iter().take(MAX_BATCH_WRITE).collect();
                for result in ledger.put_outcomes(&batch).await {
                    result?;
                }
                let written = batch.len();
                outcomes.drain(..written);
            }
        }
        clients
            .sns
            .publish_batch()
            .topic_arn(&topic_arn)
            .set_publish_batch_request_entries(Some(events))
            .send()
            .await?;
        clients
            .sqs
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(deletes))
            .send()
            .await?;
        done += messages.len();
    }
    Ok(())
}

/// A canary's success event as the worker publishes it, for a message: the same fields and
/// the same size.
fn canary_event(message_id: &str) -> JobEvent {
    let started_at = Utc::now();
    JobEvent::new(
        EventSource {
            job_id: Some(uuid_like(message_id)),
            kind: Some("canary".into()),
            chain_id: Some(uuid_like(message_id)),
            parent_job_id: None,
            attempts: 1,
            message_id: message_id.to_owned(),
            worker_id: "sdk-floor-0000000".into(),
            submitted_at: Some(started_at),
            enqueued_at: Some(started_at),
            first_started_at: Some(started_at),
            started_at,
        },
        JobStatus::Succeeded,
        Some(serde_json::json!({
            "worker_id": "sdk-floor-0000000", "attempt": 1, "slept_ms": 0, "queue_ms": 8,
        })),
        None,
    )
}

/// A job id of a generated id's length, from the message id.
fn uuid_like(message_id: &str) -> String {
    format!("bench-{message_id}")
}
