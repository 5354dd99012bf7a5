//! What a fresh copy of a message carries to its next delivery, in one message attribute
//! (`shoal-state`, JSON): the job's failed runs so far, the handler's recorded progress, when
//! the job first started, and an outcome still to be announced or a failure still to be
//! dead-lettered.
//!
//! A copy is how the worker returns a job to the queue without spending its receives (see
//! [`super::settle`]); this record is how the copy remembers what the receive count no longer
//! can. It is Shoal's own: `shoal-` attributes are dropped when a job is dead-lettered or
//! redriven, and a record that cannot be read is ignored with a warning, never a failure.

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_common::error::{Error, ErrorClass};
use shoal_common::event::JobEvent;
use shoal_common::queue::{attribute_value, CARRIED_STATE};

use super::settle::DeadLetterReason;

/// The record on a copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// Failed runs of the job on earlier copies.
    #[serde(default)]
    pub failures: u32,
    /// Runs of the handler on earlier copies, whatever their end (a worker that died
    /// mid-run included): whether EC2 may hold something a run created that it does not
    /// list yet.
    #[serde(default)]
    pub runs: u32,
    /// Copies made of this job so far.
    #[serde(default)]
    pub copies: u32,
    /// What the handler recorded (e.g. the snapshots it created), for its next run.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub progress: serde_json::Map<String, serde_json::Value>,
    /// An outcome whose announcement failed: the next delivery only announces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobEvent>,
    /// Whether the outcome's follow-ups may not all be enqueued yet: the next delivery
    /// enqueues them before it announces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_ups_pending: bool,
    /// A failure the dead-letter queue could not take yet: the next delivery only
    /// dead-letters it, with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<PendingDeadLetter>,
    /// When the job's first run started, for the event's whole-job timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<DateTime<Utc>>,
    /// The earliest time this job is known to have been on the queue: a follow-up's "not
    /// yet" counts its window from it. Each copy carries the earliest of it and its own sent
    /// time on, so no copy (and no sender's message) sets the window back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<DateTime<Utc>>,
}

/// A job that failed for good and is still to reach the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDeadLetter {
    pub class: ErrorClass,
    pub code: Option<String>,
    /// The failure as the DLQ attribute and the event will tell it.
    pub message: String,
    pub reason: DeadLetterReason,
    /// The attempt that failed.
    pub attempt: u32,
}

/// Longest error text copied into a DLQ attribute or event.
const MAX_REASON_CHARS: usize = 2000;

impl PendingDeadLetter {
    /// `error`, which failed `attempt` for good for `reason`, as the DLQ attribute and the
    /// event tell it: the operation that failed, if one did, and the message, cut to a
    /// length both take.
    pub fn new(error: &Error, reason: DeadLetterReason, attempt: u32) -> Self {
        PendingDeadLetter {
            class: error.class,
            code: error.code.clone(),
            message: shoal_common::event::truncate(&error.to_string(), MAX_REASON_CHARS),
            reason,
            attempt,
        }
    }
}

impl Carried {
    /// The record in a message's attributes; `Err` with the reason when one is there but
    /// unreadable.
    pub fn read(
        attributes: &std::collections::HashMap<String, MessageAttributeValue>,
    ) -> Result<Option<Carried>, String> {
        let Some(value) = attributes.get(CARRIED_STATE) else {
            return Ok(None);
        };
        let text = value.string_value().unwrap_or_default();
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| format!("{CARRIED_STATE}: {e}"))
    }

    /// The record as a message attribute.
    pub fn to_attribute(&self) -> Option<MessageAttributeValue> {
        let text = serde_json::to_string(self).ok()?;
        Some(attribute_value("String", text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_attribute_round_trip() {
        let mut carried = Carried {
            failures: 2,
            copies: 3,
            ..Carried::default()
        };
        carried
            .progress
            .insert("snapshots".into(), serde_json::json!({"vol-1": "snap-1"}));
        carried.dead_letter = Some(PendingDeadLetter {
            class: ErrorClass::Permanent,
            code: Some("InvalidParameterValue".into()),
            message: "RunInstances: no".into(),
            reason: DeadLetterReason::Permanent,
            attempt: 1,
        });
        carried.first_started_at = Some(Utc::now());
        let mut attributes = std::collections::HashMap::new();
        attributes.insert(
            CARRIED_STATE.to_owned(),
            carried.to_attribute().expect("attribute"),
        );
        assert_eq!(Carried::read(&attributes), Ok(Some(carried)));
    }

    #[test]
    fn no_record_and_a_bad_record_are_told_apart() {
        let mut attributes = std::collections::HashMap::new();
        assert_eq!(Carried::read(&attributes), Ok(None));
        attributes.insert(
            CARRIED_STATE.to_owned(),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("{not json")
                .build()
                .expect("attribute"),
        );
        assert!(Carried::read(&attributes).is_err());
    }
}
