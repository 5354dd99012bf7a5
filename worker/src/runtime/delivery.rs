//! The plain types of one delivery, at the bottom of the runtime: the received message and
//! what the runtime reads from it ([`Delivery`]), the attempt the event describes
//! ([`Attempt`]), what the handler gave ([`Ran`]) and what became of the message
//! ([`Disposition`]). Nothing here calls AWS or decides anything.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use shoal_common::event::EventSource;
use shoal_common::JobEnvelope;
use tokio::time::Instant;

use super::carried::Carried;
use crate::handler::Progress;

/// A received message with what the runtime reads from it.
pub(super) struct Delivery {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// `ApproximateReceiveCount`: deliveries of this copy of the job, from 1.
    pub receive_count: u32,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    /// The sender's attributes (and Shoal's own, on a copy).
    pub attributes: HashMap<String, MessageAttributeValue>,
    pub received_at: Instant,
    /// What an earlier copy carried: failures so far, progress, an outcome to announce.
    pub carried: Carried,
    /// The handler's progress: carried in, and recorded by this delivery's runs.
    pub progress: Progress,
}

impl Delivery {
    /// Reads what the runtime needs from a received message. A carried state that cannot be
    /// read is ignored with a warning: the job runs as if it had none.
    pub fn read(m: Message, received_at: Instant) -> Delivery {
        let system = m.attributes.unwrap_or_default();
        let attributes = m.message_attributes.unwrap_or_default();
        let message_id = m.message_id.unwrap_or_default();
        let carried = match Carried::read(&attributes) {
            Ok(carried) => carried.unwrap_or_default(),
            Err(reason) => {
                tracing::warn!(%message_id, %reason, "ignoring an unreadable carried state");
                Carried::default()
            }
        };
        Delivery {
            progress: Progress::from_map(carried.progress.clone()),
            carried,
            message_id,
            receipt: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            receive_count: system
                .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            enqueued_at: system
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis),
            group_id: system
                .get(&MessageSystemAttributeName::MessageGroupId)
                .cloned(),
            attributes,
            received_at,
        }
    }

    /// This delivery's attempt number if it runs the handler: failed runs on earlier copies,
    /// plus this copy's receives (each earlier one a failed run, or a worker that died).
    pub fn attempt(&self) -> u32 {
        self.carried.failures.saturating_add(self.receive_count)
    }

    /// Runs of the handler before this delivery: on earlier copies, and on this copy's
    /// earlier receives (each one a run, or a worker that died in one: whatever does not
    /// run the handler goes back on a copy).
    pub fn earlier_runs(&self) -> u32 {
        self.carried
            .runs
            .saturating_add(self.receive_count.saturating_sub(1))
    }

    /// The earliest time this job is known to have been on the queue, never later than now:
    /// what earlier copies carried, when its first run started, this copy's sent time.
    pub fn waiting_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        [
            self.carried.waiting_since,
            self.carried.first_started_at,
            self.enqueued_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(now, |t| t.min(now))
    }

    /// When the job's first run started, if this delivery knows: carried on a copy, or this
    /// run's own start when no run came before it.
    pub fn first_started_at(&self, this_start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.carried
            .first_started_at
            .or((self.earlier_runs() == 0).then_some(this_start))
    }
}

/// What the runtime knows of the attempt when it carries out a decision.
pub(super) struct Attempt<'a> {
    pub envelope: Option<&'a JobEnvelope>,
    /// This run's number; for a delivery that never ran the handler, the one it would have.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    /// When the job's first run started, where known.
    pub first_started_at: Option<DateTime<Utc>>,
    /// Whether its event may name the job id: not for a message refused under an id the
    /// ledger records for another job (or cannot say), whose failure is not that job's.
    pub named: bool,
}

impl<'a> Attempt<'a> {
    /// The attempt `msg` would make now, of `envelope` if it decoded.
    pub fn of(msg: &Delivery, envelope: Option<&'a JobEnvelope>) -> Attempt<'a> {
        let started_at = Utc::now();
        Attempt {
            envelope,
            number: msg.attempt(),
            started_at,
            first_started_at: msg.carried.first_started_at,
            named: true,
        }
    }

    /// The same attempt, its event naming no job: the message is not the job its id names.
    pub fn unnamed(self) -> Attempt<'a> {
        Attempt {
            named: false,
            ..self
        }
    }

    /// The event's identity and timings for this attempt of `msg`, by `worker_id`.
    pub fn event_source(&self, worker_id: &str, msg: &Delivery) -> EventSource {
        let (job_id, kind) = match self.envelope {
            Some(e) => (
                Some(e.job_id.to_string()),
                Some(e.kind().as_str().to_owned()),
            ),
            None => EventSource::loose_identity(&msg.body),
        };
        let named = |id: Option<String>| id.filter(|_| self.named);
        EventSource {
            job_id: named(job_id),
            kind,
            chain_id: named(self.envelope.map(|e| e.chain_id().to_string())),
            parent_job_id: named(
                self.envelope
                    .and_then(|e| e.parent_job_id.as_ref())
                    .map(ToString::to_string),
            ),
            attempts: self.number,
            message_id: msg.message_id.clone(),
            worker_id: worker_id.to_owned(),
            submitted_at: self.envelope.map(|e| e.submitted_at),
            enqueued_at: msg.enqueued_at,
            first_started_at: self.first_started_at,
            started_at: self.started_at,
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Deleted,
    DeadLettered,
    /// Back on the queue (itself or a fresh copy) for a later attempt or check.
    Returned,
    /// Left to reappear when its visibility times out (a call to move it failed).
    Left,
}

impl Disposition {
    /// The attempt's `outcome` on its trace span.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Deleted => "done",
            Disposition::DeadLettered => "dead_lettered",
            Disposition::Returned => "returned",
            Disposition::Left => "left",
        }
    }
}
