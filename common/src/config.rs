//! Settings the producer and the worker share: which queue they talk to.

use clap::Args;

use crate::error::{classify_sdk_error, Error};

/// The job queue, by URL or by name (looked up with `GetQueueUrl`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Queue")]
pub struct QueueArgs {
    /// URL of the job queue.
    #[arg(
        long,
        env = "SHOAL_QUEUE_URL",
        global = true,
        conflicts_with = "queue_name"
    )]
    pub queue_url: Option<String>,
    /// Name of the job queue, when its URL is not given.
    #[arg(long, env = "SHOAL_QUEUE_NAME", global = true)]
    pub queue_name: Option<String>,
}

/// A queue resolved to its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTarget {
    pub url: String,
}

impl QueueTarget {
    pub fn new(url: impl Into<String>) -> Self {
        QueueTarget { url: url.into() }
    }

    /// FIFO queues' names end in `.fifo`, and so do their URLs.
    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueConfigError {
    #[error(
        "no queue given: set --queue-url (SHOAL_QUEUE_URL) or --queue-name (SHOAL_QUEUE_NAME)"
    )]
    Missing,
    #[error("queue_name: cannot find queue `{name}`: {source}")]
    Lookup {
        name: String,
        #[source]
        source: Error,
    },
}

impl QueueArgs {
    pub async fn resolve(
        &self,
        sqs: &aws_sdk_sqs::Client,
    ) -> Result<QueueTarget, QueueConfigError> {
        if let Some(url) = &self.queue_url {
            return Ok(QueueTarget::new(url));
        }
        let name = self.queue_name.as_ref().ok_or(QueueConfigError::Missing)?;
        let out = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| QueueConfigError::Lookup {
                name: name.clone(),
                source: classify_sdk_error("GetQueueUrl", &e),
            })?;
        Ok(QueueTarget::new(out.queue_url().unwrap_or_default()))
    }
}
