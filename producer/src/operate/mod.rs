//! What an operator asks of a running Shoal: how full are the job queue and its dead-letter
//! queue ([`status`], in this file), what was dead-lettered and why
//! ([`list_dead_letters`]), and putting dead-lettered jobs back on the job queue
//! ([`redrive`]); the last two are in [`dead_letters`]. Dead letters that will never run are
//! deleted by id or purged ([`delete_dead_letters`], [`purge_dead_letters`], in `discard.rs`). Failed jobs are run again under their
//! own ids by [`Producer::retry`](crate::Producer::retry), in `rerun.rs`, and cancelled by
//! [`Producer::cancel`](crate::Producer::cancel), in `cancel.rs`; kinds are paused and
//! resumed by [`Producer::pause`](crate::Producer::pause), in `pause.rs`. [`collect_followers`] removes what
//! killed followers left behind (`stack gc`), in [`followers`].

mod cancel;
mod dead_letters;
mod discard;
mod followers;
mod pause;
mod rerun;

pub use cancel::CancelReport;
pub use rerun::RetryReport;

pub use followers::{collect_followers, Collected};

pub use discard::{delete_dead_letters, purge_dead_letters, Deleted};

pub use dead_letters::{
    list_dead_letters, redrive, DeadLetter, Redrive, RedriveFilter, RedriveReport, DEFAULT_HOLD,
};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_sdk_sqs::Client as SqsClient;
use serde::Serialize;
use shoal_common::aws::AwsClients;
use shoal_common::error::{classify_sdk_error, Error, ShoalCode};
use shoal_common::queue::{self, QueueAttributes};

/// One queue's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub name: String,
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// The oldest of up to ten messages sampled without hiding them: dead-letter queue only
    /// (see [`status`]); `None` when empty or not sampled.
    pub oldest_message_age_secs: Option<f64>,
}

/// The job queue and its dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub jobs: QueueStatus,
    /// `None` when the job queue has no redrive policy.
    pub dead_letter: Option<QueueStatus>,
    /// Receives before SQS dead-letters a message.
    pub max_receive_count: Option<u32>,
    /// What operators paused, when the job ledger was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<shoal_common::ledger::Paused>,
}

/// Reads both queues' attributes, and samples the age of the dead-letter queue's oldest
/// messages.
///
/// SQS reports a queue's oldest message only through CloudWatch. Looking at messages is a
/// receive, and on the job queue every receive counts towards the redrive policy, so a
/// status that peeked there (every few seconds, in watch mode) would push jobs to the
/// dead-letter queue. A dead-letter queue with no redrive policy of its own can be looked
/// at freely; the job queue's waiting time is what the workers' enqueue-to-start histogram
/// (`shoal_job_queue_wait_seconds`) measures.
pub async fn status(clients: &AwsClients, queue_url: &str) -> Result<Status, Error> {
    let (jobs, attrs) = queue_status(&clients.sqs, queue_url).await?;
    let redrive = attrs.redrive_policy;
    let dead_letter = match &redrive {
        Some(policy) => {
            let url = queue::url_from_arn(&clients.sqs, &policy.dead_letter_target_arn).await?;
            let (mut status, dlq_attrs) = queue_status(&clients.sqs, &url).await?;
            if dlq_attrs.redrive_policy.is_none() && status.visible > 0 {
                status.oldest_message_age_secs = sample_oldest_age(&clients.sqs, &url).await?;
            }
            Some(status)
        }
        None => None,
    };
    Ok(Status {
        jobs,
        dead_letter,
        max_receive_count: redrive.map(|r| r.max_receive_count),
        paused: None,
    })
}

async fn queue_status(sqs: &SqsClient, url: &str) -> Result<(QueueStatus, QueueAttributes), Error> {
    let attrs = QueueAttributes::fetch(sqs, url).await?;
    Ok((
        QueueStatus {
            name: queue::name_from_url(url).to_owned(),
            url: url.to_owned(),
            visible: attrs.visible,
            in_flight: attrs.in_flight,
            delayed: attrs.delayed,
            oldest_message_age_secs: None,
        },
        attrs,
    ))
}

/// The oldest `SentTimestamp` among up to ten messages, received with a visibility timeout
/// of 0 so that nothing is hidden from anyone.
async fn sample_oldest_age(sqs: &SqsClient, url: &str) -> Result<Option<f64>, Error> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| classify_sdk_error("ReceiveMessage", &e))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            m.attributes()?
                .get(&MessageSystemAttributeName::SentTimestamp)
        })
        .filter_map(|ms| ms.parse::<i64>().ok())
        .min()
        .map(|oldest| (now_ms - oldest).max(0) as f64 / 1000.0))
}

/// The dead-letter queue of the job queue at `queue_url`, from its redrive policy.
pub async fn dead_letter_queue_url(sqs: &SqsClient, queue_url: &str) -> Result<String, Error> {
    let attrs = QueueAttributes::fetch(sqs, queue_url).await?;
    let policy = attrs.redrive_policy.ok_or_else(|| {
        Error::shoal(
            ShoalCode::NoRedrivePolicy,
            format!("{queue_url} has no redrive policy, so no dead-letter queue"),
        )
        .in_operation("GetQueueAttributes")
    })?;
    queue::url_from_arn(sqs, &policy.dead_letter_target_arn).await
}
