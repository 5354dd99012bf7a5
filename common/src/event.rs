//! The completion event: what the worker publishes to SNS when a job ends, succeeded or
//! failed. Versioned like the job envelope; delivered at least once, so subscribers
//! de-duplicate on `job_id`.
//!
//! SNS message attributes `kind` and `status` repeat what the body says, so subscribers can
//! use filter policies (e.g. only `status = failed`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ErrorClass;

pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub event_version: u32,
    /// The job's id; absent only when the message was too malformed to carry one.
    pub job_id: Option<String>,
    /// The kind as written in the message, when it had one.
    pub kind: Option<String>,
    pub status: JobStatus,
    /// Deliveries of the message so far (SQS's `ApproximateReceiveCount`).
    pub attempts: u32,
    /// The SQS message id of the job, for tracing a malformed message to the DLQ.
    pub message_id: String,
    pub worker_id: String,
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// `submitted_at` from the job envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When SQS accepted the message (`SentTimestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// From enqueue to the start of this attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// This attempt's run time, in milliseconds.
    pub run_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventError {
    pub class: ErrorClass,
    /// The AWS error code or Shoal's own (`InvalidMessage`, `NoHandler`, `AttemptsExhausted`).
    pub code: Option<String>,
    pub message: String,
    /// Whether the job's message was moved to the dead-letter queue.
    pub dead_lettered: bool,
}
