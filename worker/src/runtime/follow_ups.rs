//! A chain's next steps: when a job that carries `then` succeeds, its follow-ups go on the
//! job queue before its event is published and its message deleted, so an outcome is never
//! announced for a chain that then loses its continuation.
//!
//! The follow-ups are built from the job and its result alone ([`chain::expand`]), so a
//! second delivery of the parent builds the very same jobs, with the same ids; sent twice,
//! each finds its work done by its job id (on a FIFO queue SQS drops the second copy
//! outright, the job id being the deduplication id). A follow-up whose references do not
//! resolve is never enqueued: it gets a failed event of its own, naming the pointer.

use aws_sdk_sqs::types::MessageAttributeValue;
use shoal_common::error::{classify_sdk_error, Error, ErrorClass, ShoalCode};
use shoal_common::event::{EventError, EventSource, JobEvent, JobStatus};
use shoal_common::job::chain::{self, Expanded};
use shoal_common::job::SCHEMA_VERSION;
use shoal_common::telemetry;
use shoal_common::JobEnvelope;

use super::carry_out::{announce, while_held};
use super::poll::Delivery;
use super::Shared;

/// The ids of the follow-ups a success of `envelope` with `result` makes, in order.
pub(super) fn ids(envelope: &JobEnvelope, result: &serde_json::Value) -> Vec<String> {
    chain::expand(envelope, result)
        .into_iter()
        .map(|e| e.job_id)
        .collect()
}

/// Enqueues the follow-ups of `envelope`, which succeeded with `result`, and announces the
/// failure of each that could not be built. Calls are retried while the delivery holds the
/// message (`announce_hold`); an error means some follow-up may not be out yet, and the
/// caller keeps the outcome to try again.
pub(super) async fn dispatch(
    shared: &Shared,
    msg: &Delivery,
    envelope: &JobEnvelope,
    result: &serde_json::Value,
) -> Result<(), Error> {
    for follow_up in chain::expand(envelope, result) {
        match &follow_up.job {
            Ok(job) => {
                send(shared, msg, job).await?;
                tracing::info!(job_id = %job.job_id, kind = %job.kind(), "follow-up enqueued");
            }
            Err(reason) => {
                tracing::warn!(job_id = %follow_up.job_id, reason = %reason, "a follow-up's references do not resolve; it fails without running");
                let event = unresolved(shared, msg, envelope, &follow_up, reason);
                announce(shared, &event).await?;
                shared
                    .metrics
                    .jobs_failed
                    .with_label_values(&[follow_up.kind.as_str(), ErrorClass::Permanent.as_str()])
                    .inc();
            }
        }
    }
    Ok(())
}

/// The failed event of a follow-up that was never enqueued.
fn unresolved(
    shared: &Shared,
    msg: &Delivery,
    parent: &JobEnvelope,
    follow_up: &Expanded,
    reason: &str,
) -> JobEvent {
    let source = EventSource {
        chain_id: Some(parent.chain_id().to_string()),
        parent_job_id: Some(parent.job_id.to_string()),
        ..EventSource::not_run(
            Some(follow_up.job_id.clone()),
            Some(follow_up.kind.as_str().to_owned()),
            0,
            msg.message_id.clone(),
            shared.worker_id.to_string(),
        )
    };
    JobEvent::new(
        source,
        JobStatus::Failed,
        None,
        Some(EventError {
            class: ErrorClass::Permanent,
            code: Some(ShoalCode::UnresolvedReference.as_str().to_owned()),
            message: reason.to_owned(),
            dead_lettered: false,
        }),
    )
}

fn attribute(data_type: &str, value: String) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .unwrap_or_else(|e| unreachable!("data type is always set: {e}"))
}

/// Sends one follow-up, with the attributes a producer gives every job.
async fn send(shared: &Shared, msg: &Delivery, job: &JobEnvelope) -> Result<(), Error> {
    let cfg = &shared.config;
    let mut request = shared
        .clients
        .sqs
        .send_message()
        .queue_url(&cfg.queue_url)
        .message_body(job.to_json())
        .message_attributes("kind", attribute("String", job.kind().as_str().to_owned()))
        .message_attributes("schema", attribute("Number", SCHEMA_VERSION.to_string()));
    // The follow-up's attempt continues this one's trace: a chain is one trace.
    for (name, value) in telemetry::context_of(&tracing::Span::current()) {
        request = request.message_attributes(name, attribute("String", value));
    }
    if cfg.fifo {
        // The chain keeps its parent's group, so its steps run in order behind it.
        request = request
            .message_group_id(msg.group_id.clone().unwrap_or_else(|| "shoal".into()))
            .message_deduplication_id(job.job_id.to_string());
    }
    while_held(shared, "enqueue a follow-up", || async {
        request
            .clone()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("SendMessage", &e))
    })
    .await
}
