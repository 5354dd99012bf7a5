//! # shoal-producer
//!
//! Puts jobs on the queue. [`Producer::enqueue`] sends one job, [`Producer::enqueue_many`]
//! sends many through `SendMessageBatch`, [`Producer::enqueue_and_wait`] sends one and waits
//! for its outcome (and its chain's), and [`cli`] is the `shoal-producer` command line built
//! on them.
//!
//! Every job is validated before anything is sent, with the same rules the worker applies
//! ([`shoal_common::JobEnvelope::validate`]), so a bad job is refused at the caller's desk
//! rather than dead-lettered later. Every message carries the `kind` and `schema` message
//! attributes, for routing and filtering without parsing bodies.
//!
//! Enqueue a job and await its outcome; the clients come from the SDK's standard chain
//! (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a local emulator):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use shoal_common::aws::AwsClients;
//! use shoal_common::config::QueueTarget;
//! use shoal_common::job::Canary;
//! use shoal_common::{Job, JobEnvelope};
//! use shoal_producer::{Producer, SendOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let clients = AwsClients::from_env().await;
//! let producer = Producer::new(clients.sqs.clone(), QueueTarget::new(std::env::var("SHOAL_QUEUE_URL")?));
//! let job = JobEnvelope::new(Job::new(Canary { sleep_ms: 10 }));
//! let topic_arn = std::env::var("SHOAL_TOPIC_ARN")?;
//! let outcome = producer
//!     .enqueue_and_wait(&clients, &topic_arn, &job, &SendOptions::default(), Duration::from_secs(300))
//!     .await?;
//! for event in &outcome.events {
//!     println!("{:?} {}", event.job_id, event.status.as_str());
//! }
//! assert!(outcome.succeeded);
//! # Ok(())
//! # }
//! ```
//!
//! The parts:
//! - [`message`] turns an envelope into an SQS message (attributes, FIFO ids, size).
//! - [`batch`] packs messages into batches and resends the entries SQS reports as failed.
//! - [`operate`] is for operators: queue status, the dead-letter queue listed and redriven.
//! - [`inspect`] looks at queues without working them: peek, and reading completion events.
//! - [`lookup`] reads jobs from the ledger: one with its chain, or recent ones by status.
//! - [`console`] is the web console (`shoal-producer console`): pages and verbs.
//! - [`follow`] waits for jobs' completion events (and their chains') on a queue of its own:
//!   [`Producer::enqueue_and_wait`] is the `AsyncResult.get()` of Shoal.

// Unit tests index what they built themselves; the workspace denies both elsewhere.
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::string_slice))]

pub mod batch;
pub mod cli;
pub mod console;
pub mod follow;
pub mod inspect;
pub mod lookup;
pub mod message;
pub mod operate;

use aws_sdk_sqs::Client as SqsClient;
use std::time::Duration;

use tracing::Instrument;

use shoal_common::aws::AwsClients;
use shoal_common::config::QueueTarget;
use shoal_common::error::{classify_sdk_error, Error};
use shoal_common::event::JobEvent;
use shoal_common::job::ContractError;
use shoal_common::ledger::Ledger;
use shoal_common::{JobEnvelope, JobId, JobKind};

pub use batch::{BatchReport, FailedEntry};
pub use follow::{FollowError, FollowOutcome, Follower};
pub use lookup::JobReport;
pub use message::{OutgoingMessage, SendOptions};

/// Sends jobs to one queue.
#[derive(Debug, Clone)]
pub struct Producer {
    sqs: SqsClient,
    queue: QueueTarget,
    /// The job ledger, to look finished jobs up and to answer follows from.
    ledger: Option<Ledger>,
    /// Batches in flight at once on a standard queue; FIFO queues send one at a time so that
    /// a message group keeps its order.
    batch_concurrency: usize,
}

/// A job that SQS accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Enqueued {
    pub job_id: JobId,
    pub kind: JobKind,
    pub message_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Invalid(#[from] ContractError),
    #[error("{field}: {message}")]
    Option {
        field: &'static str,
        message: String,
    },
    /// Tags that break the stricter rules the caller asked for (`--tag-rules`).
    #[error("{0}")]
    TagRules(String),
    #[error(transparent)]
    Aws(#[from] Error),
}

/// Why a job could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The producer was given no ledger ([`Producer::with_ledger`]).
    #[error("ledger_table: looking jobs up needs the job ledger: set --ledger-table (SHOAL_LEDGER_TABLE)")]
    NoLedger,
    #[error(transparent)]
    Aws(#[from] Error),
}

/// The span of one enqueue: the root of the job's trace, or a child of the caller's span.
pub(crate) fn enqueue_span(job: &JobEnvelope) -> tracing::Span {
    tracing::info_span!(
        "enqueue",
        otel.name = "shoal.enqueue",
        otel.kind = "producer",
        messaging.system = "aws_sqs",
        job_id = %job.job_id,
        kind = %job.kind(),
    )
}

impl Producer {
    /// A producer for the queue `queue` names (by URL; [`QueueTarget::resolve`] finds one
    /// by name), sending with `sqs`.
    ///
    /// ```no_run
    /// # async fn example() {
    /// use shoal_common::aws::AwsClients;
    /// use shoal_common::config::QueueTarget;
    /// use shoal_producer::Producer;
    ///
    /// let clients = AwsClients::from_env().await;
    /// let producer = Producer::new(
    ///     clients.sqs.clone(),
    ///     QueueTarget::new("https://sqs.us-east-1.amazonaws.com/123456789012/shoal-jobs"),
    /// );
    /// assert!(!producer.queue().is_fifo());
    /// # }
    /// ```
    pub fn new(sqs: SqsClient, queue: QueueTarget) -> Self {
        Producer {
            sqs,
            queue,
            ledger: None,
            batch_concurrency: 8,
        }
    }

    /// The same producer, looking jobs up in `ledger`: [`Producer::outcome`] and
    /// [`Producer::job`] read it, and the followers of [`Producer::enqueue_and_follow`] and
    /// [`Producer::enqueue_and_wait`] answer a job that finished before they subscribed from
    /// its record.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn queue(&self) -> &QueueTarget {
        &self.queue
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// The recorded outcome of `job_id`: its completion event, once it finished; `None`
    /// while it is queued or running, or when the ledger has no record of it (never run, or
    /// expired). The read is consistent: an outcome is on record before it is announced.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) -> Result<(), shoal_producer::LookupError> {
    /// use shoal_common::JobId;
    ///
    /// let job_id = JobId::parse("nightly-web-2026-12-01").expect("a valid id");
    /// match producer.outcome(&job_id).await? {
    ///     Some(event) => println!("{job_id}: {}", event.status.as_str()),
    ///     None => println!("{job_id}: not finished (or not on record)"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn outcome(&self, job_id: &JobId) -> Result<Option<JobEvent>, LookupError> {
        let record = self.ledger_or_err()?.get(job_id.as_str()).await?;
        Ok(record
            .filter(|r| r.status.is_finished())
            .and_then(|r| r.outcome))
    }

    /// What the ledger holds of `job_id`: its record, and every step of its chain on record
    /// (read through the chain index, so a step written a second ago may be missing).
    pub async fn job(&self, job_id: &JobId) -> Result<JobReport, LookupError> {
        JobReport::read(self.ledger_or_err()?, job_id).await
    }

    fn ledger_or_err(&self) -> Result<&Ledger, LookupError> {
        self.ledger.as_ref().ok_or(LookupError::NoLedger)
    }

    /// Validates and sends one job. Nothing is sent if the job or the options are invalid.
    /// With a ledger ([`Producer::with_ledger`]), the job's `queued` record is put once it is
    /// sent, where the ledger holds no record of its id yet.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) -> Result<(), shoal_producer::EnqueueError> {
    /// use shoal_common::job::SetTerminationProtection;
    /// use shoal_common::{Job, JobEnvelope, JobId};
    /// use shoal_producer::SendOptions;
    ///
    /// let job = JobEnvelope::new(Job::new(SetTerminationProtection {
    ///     instance_ids: vec!["i-0123456789abcdef0".into()],
    ///     disable_api_termination: false,
    /// }))
    /// // The job id is the idempotency key: sending it again has no second effect.
    /// .with_job_id(JobId::parse("unprotect-web-1").expect("a valid id"));
    /// let enqueued = producer.enqueue(&job, &SendOptions::default()).await?;
    /// println!("{} is message {}", enqueued.job_id, enqueued.message_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue(
        &self,
        job: &JobEnvelope,
        options: &SendOptions,
    ) -> Result<Enqueued, EnqueueError> {
        let span = enqueue_span(job);
        let msg = span.in_scope(|| OutgoingMessage::build(job, options, self.queue.is_fifo()))?;
        // The SDK's own retry policy already resends throttled and 5xx calls.
        let out = msg
            .send_request(&self.sqs, &self.queue.url)
            .send()
            .instrument(span)
            .await
            .map_err(|e| classify_sdk_error("SendMessage", &e))?;
        // Its queued record, as a bulk send writes them (a record not written is logged
        // there; the job runs all the same).
        let mut records = batch::Records::new(self.ledger.as_ref());
        records.add(vec![msg]).await;
        records.flush().await;
        Ok(Enqueued {
            job_id: job.job_id.clone(),
            kind: job.kind(),
            message_id: out.message_id.unwrap_or_default(),
        })
    }

    /// Subscribes a [`Follower`] for `job` (and its chain) on the completion topic, then
    /// sends the job: subscribing first, no event can be missed. Read the events with
    /// [`Follower::next_event`], or wait for them all with [`Follower::outcome`].
    ///
    /// ```no_run
    /// # async fn example(
    /// #     producer: shoal_producer::Producer,
    /// #     clients: shoal_common::aws::AwsClients,
    /// #     job: shoal_common::JobEnvelope,
    /// # ) -> Result<(), shoal_producer::FollowError> {
    /// use std::time::Duration;
    ///
    /// use shoal_producer::SendOptions;
    ///
    /// let timeout = Duration::from_secs(600);
    /// let (enqueued, mut follower) = producer
    ///     .enqueue_and_follow(&clients, "arn:aws:sns:us-east-1:123456789012:shoal-events", &job, &SendOptions::default(), timeout)
    ///     .await?;
    /// let deadline = tokio::time::Instant::now() + timeout;
    /// // Each event of the job and of its chain's follow-ups, as it arrives; `None` at the end.
    /// while let Some(event) = follower.next_event(deadline).await? {
    ///     println!("{}: {:?} {}", enqueued.job_id, event.step, event.status.as_str());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_and_follow(
        &self,
        clients: &AwsClients,
        topic_arn: &str,
        job: &JobEnvelope,
        options: &SendOptions,
        timeout: Duration,
    ) -> Result<(Enqueued, Follower), FollowError> {
        // Refuse a bad job before making a queue for it.
        OutgoingMessage::build(job, options, self.queue.is_fifo())?;
        let mut follower = Follower::start(
            clients,
            topic_arn,
            std::slice::from_ref(&job.job_id),
            timeout,
        )
        .await?;
        if let Some(ledger) = &self.ledger {
            follower = follower.answering_from(ledger.clone());
        }
        let enqueued = self.enqueue(job, options).await?;
        Ok((enqueued, follower))
    }

    /// Sends `job` and waits up to `timeout` for its outcome: its event, and for a chain the
    /// event of every job of it. The crate's front page has the whole example.
    ///
    /// ```no_run
    /// # async fn example(
    /// #     producer: shoal_producer::Producer,
    /// #     clients: shoal_common::aws::AwsClients,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    ///
    /// use shoal_common::JobEnvelope;
    /// use shoal_producer::SendOptions;
    ///
    /// // A chain: launch, then snapshot what was launched.
    /// let chain = JobEnvelope::from_request(serde_json::json!({
    ///     "kind": "run-instances",
    ///     "params": {"image_id": "ami-0abcdef1234567890", "instance_type": "t3.micro"},
    ///     "then": [{"kind": "snapshot",
    ///               "params": {"instance_id": {"$from": "/instances/0/instance_id"}}}],
    /// }))?;
    /// let outcome = producer
    ///     .enqueue_and_wait(&clients, "arn:aws:sns:us-east-1:123456789012:shoal-events", &chain, &SendOptions::default(), Duration::from_secs(1800))
    ///     .await?;
    /// assert_eq!(outcome.events.len(), 2, "the launch and the snapshot");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_and_wait(
        &self,
        clients: &AwsClients,
        topic_arn: &str,
        job: &JobEnvelope,
        options: &SendOptions,
        timeout: Duration,
    ) -> Result<FollowOutcome, FollowError> {
        let (_, follower) = self
            .enqueue_and_follow(clients, topic_arn, job, options, timeout)
            .await?;
        follower.outcome(timeout).await
    }

    /// Validates every job, then sends them all through `SendMessageBatch`. If any job is
    /// invalid nothing is sent and the errors come back by index. Entries SQS fails for
    /// reasons of its own are resent with a backoff; those still failing, or failing through
    /// the sender's fault, are in the report by index. `on_sent` is told how many messages
    /// each successful call carried, for progress display.
    ///
    /// ```no_run
    /// # async fn example(producer: shoal_producer::Producer) {
    /// use shoal_common::job::Canary;
    /// use shoal_common::{Job, JobEnvelope};
    /// use shoal_producer::SendOptions;
    ///
    /// let jobs: Vec<JobEnvelope> = (0..100)
    ///     .map(|_| JobEnvelope::new(Job::new(Canary { sleep_ms: 0 })))
    ///     .collect();
    /// match producer.enqueue_many(&jobs, &SendOptions::default(), &|_| {}).await {
    ///     Ok(report) => println!("{} sent in {} calls, {} failed", report.enqueued.len(), report.calls, report.failed.len()),
    ///     Err(invalid) => eprintln!("nothing sent: {} jobs are invalid", invalid.len()),
    /// }
    /// # }
    /// ```
    pub async fn enqueue_many(
        &self,
        jobs: &[JobEnvelope],
        options: &SendOptions,
        on_sent: &(dyn Fn(usize) + Sync),
    ) -> Result<BatchReport, Vec<(usize, EnqueueError)>> {
        let fifo = self.queue.is_fifo();
        let mut messages = Vec::with_capacity(jobs.len());
        let mut invalid = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            // A span per job, so each carries a trace context of its own.
            match enqueue_span(job).in_scope(|| OutgoingMessage::build(job, options, fifo)) {
                Ok(msg) => messages.push(msg),
                Err(e) => invalid.push((i, e)),
            }
        }
        if !invalid.is_empty() {
            return Err(invalid);
        }
        Ok(batch::send_all(self.target(), messages, self.concurrency(), on_sent).await)
    }

    /// Sends messages already built (and so validated) as they come, for input too large to
    /// hold: at most the batches in flight are in memory. Each batch's report goes to
    /// `on_report` as its call completes, indexed as `messages` numbered them.
    pub async fn enqueue_stream(
        &self,
        messages: impl Iterator<Item = (usize, OutgoingMessage)>,
        on_sent: &(dyn Fn(usize) + Sync),
        on_report: impl FnMut(BatchReport),
    ) {
        batch::send_streaming(
            self.target(),
            messages,
            self.concurrency(),
            on_sent,
            on_report,
        )
        .await
    }

    fn target(&self) -> batch::Target<'_> {
        batch::Target {
            sqs: &self.sqs,
            queue_url: &self.queue.url,
            ledger: self.ledger.as_ref(),
        }
    }

    /// Batches in flight at once: one on a FIFO queue, to keep its order.
    fn concurrency(&self) -> usize {
        if self.queue.is_fifo() {
            1
        } else {
            self.batch_concurrency
        }
    }
}
