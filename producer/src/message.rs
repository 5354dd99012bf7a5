//! One job as an SQS message: body, the `kind` and `schema` attributes, FIFO group and
//! deduplication ids, delay, and its size as SQS counts it.

use aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client as SqsClient;
use shoal_common::job::{ContractError, MAX_MESSAGE_BYTES};
use shoal_common::queue::{attribute_value, job_attributes};
use shoal_common::validate::{TagRules, Violations};
use shoal_common::{JobEnvelope, JobId, JobKind};

use crate::EnqueueError;

/// How to send, beyond the job itself.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Seconds before the message becomes visible (SQS `DelaySeconds`, 0 to 900). Standard
    /// queues only: FIFO queues take a delay only as a queue setting.
    pub delay_seconds: Option<u32>,
    /// FIFO message group; defaults to the job's kind, so each kind runs in order.
    pub message_group_id: Option<String>,
    /// Tag rules beyond EC2's own, for tags that must also work elsewhere (opt-in).
    pub tag_rules: TagRules,
    /// Run the job no earlier than this (the envelope's `not_before`, unless the job names
    /// its own): beyond SQS's 15 minutes, the job waits on the queue in hops. Standard
    /// queues only.
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// SQS's longest per-message delay.
const MAX_DELAY_SECONDS: u32 = 900;

/// A validated message, ready for `SendMessage` or a `SendMessageBatch` entry.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub job_id: JobId,
    pub kind: JobKind,
    pub body: String,
    pub delay_seconds: Option<u32>,
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
    /// The W3C trace context (`traceparent`, `tracestate`) of the enqueue, when traced.
    pub trace: Vec<(&'static str, String)>,
    /// What the job ledger's record of the job names besides its body, for the `queued`
    /// record a producer with a ledger puts once the message is sent.
    pub identity: Identity,
}

/// A job's identity as its ledger record holds it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub digest: String,
    pub chain_id: JobId,
    pub parent_job_id: Option<JobId>,
    /// Due later than now: its record is `scheduled`, not `queued`.
    pub scheduled: bool,
}

impl OutgoingMessage {
    /// The `queued` record of this job, for `ledger`.
    pub fn queued_record(
        &self,
        ledger: &shoal_common::ledger::Ledger,
    ) -> shoal_common::ledger::OutcomeItem {
        ledger.queued_item(
            &shoal_common::ledger::JobRef {
                job_id: &self.job_id,
                kind: self.kind,
                chain_id: &self.identity.chain_id,
                parent_job_id: self.identity.parent_job_id.as_ref(),
                attempt: 0,
                digest: &self.identity.digest,
                envelope: &self.body,
            },
            self.identity.scheduled,
        )
    }
}

impl OutgoingMessage {
    pub fn build(
        job: &JobEnvelope,
        options: &SendOptions,
        fifo: bool,
    ) -> Result<Self, EnqueueError> {
        let scheduled;
        let job = match options.not_before {
            Some(at) if job.not_before.is_none() => {
                scheduled = JobEnvelope {
                    not_before: Some(at),
                    ..job.clone()
                };
                check_job(&scheduled, options)?;
                &scheduled
            }
            _ => {
                check_job(job, options)?;
                job
            }
        };
        let due_in = job
            .not_before
            .map(|at| (at - chrono::Utc::now()).num_seconds())
            .filter(|s| *s > 0);
        if due_in.is_some() && fifo {
            return Err(EnqueueError::Option {
                field: "at",
                message: "FIFO queues take no per-message delay, so a job cannot wait for its time there; schedule it on a standard queue".into(),
            });
        }
        if let Some(delay) = options.delay_seconds {
            if fifo {
                return Err(EnqueueError::Option {
                    field: "delay",
                    message: "FIFO queues take no per-message delay; set DelaySeconds on the queue"
                        .into(),
                });
            }
            if delay > MAX_DELAY_SECONDS {
                return Err(EnqueueError::Option {
                    field: "delay",
                    message: format!(
                        "{delay} seconds is over SQS's maximum of {MAX_DELAY_SECONDS}"
                    ),
                });
            }
        }
        if let Some(group) = &options.message_group_id {
            check_group_id(group)?;
        }
        let group_id = match (&options.message_group_id, fifo) {
            (Some(group), _) => Some(group.clone()),
            (None, true) => Some(job.kind().as_str().to_owned()),
            (None, false) => None,
        };
        let msg = OutgoingMessage {
            job_id: job.job_id.clone(),
            kind: job.kind(),
            body: job.to_json(),
            // The first hop is SQS's own delay: a job due within 15 minutes is never received
            // early.
            delay_seconds: options.delay_seconds.or_else(|| {
                due_in.map(|s| {
                    u32::try_from(s)
                        .unwrap_or(MAX_DELAY_SECONDS)
                        .min(MAX_DELAY_SECONDS)
                })
            }),
            group_id,
            // The job id is the idempotency key, so SQS's five-minute deduplication window
            // drops a resubmission of the same job outright.
            deduplication_id: fifo.then(|| job.job_id.to_string()),
            // The caller's current span: the enqueue's own, or (for a library caller who
            // traces) theirs.
            trace: shoal_common::telemetry::context_of(&tracing::Span::current()),
            identity: Identity {
                digest: job.digest(),
                chain_id: job.chain_id().clone(),
                parent_job_id: job.parent_job_id.clone(),
                scheduled: due_in.is_some(),
            },
        };
        let size = msg.size();
        if size > MAX_MESSAGE_BYTES {
            return Err(ContractError::TooLarge { bytes: size }.into());
        }
        Ok(msg)
    }

    /// Bytes as SQS counts them against its limits: the body plus each attribute's name,
    /// data type and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes()
                .iter()
                .map(|(name, data_type, value)| name.len() + data_type.len() + value.len())
                .sum::<usize>()
    }

    /// Every message's attributes ([`shoal_common::queue::job_attributes`]).
    fn attributes(&self) -> Vec<(&'static str, &'static str, String)> {
        job_attributes(self.kind, &self.trace)
    }

    fn attribute_values(&self) -> impl Iterator<Item = (&'static str, MessageAttributeValue)> {
        self.attributes()
            .into_iter()
            .map(|(name, data_type, value)| (name, attribute_value(data_type, value)))
    }

    pub fn send_request(&self, sqs: &SqsClient, queue_url: &str) -> SendMessageFluentBuilder {
        let mut req = sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(&self.body)
            .set_delay_seconds(self.delay_seconds.map(|d| d as i32))
            .set_message_group_id(self.group_id.clone())
            .set_message_deduplication_id(self.deduplication_id.clone());
        for (name, value) in self.attribute_values() {
            req = req.message_attributes(name, value);
        }
        req
    }

    pub fn batch_entry(&self, id: String) -> SendMessageBatchRequestEntry {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(&self.body)
            .set_delay_seconds(self.delay_seconds.map(|d| d as i32))
            .set_message_group_id(self.group_id.clone())
            .set_message_deduplication_id(self.deduplication_id.clone());
        for (name, value) in self.attribute_values() {
            entry = entry.message_attributes(name, value);
        }
        entry
            .build()
            .unwrap_or_else(|e| unreachable!("id and body are always set: {e}"))
    }
}

/// Whether `job` may be sent at all, by the contract and the opt-in tag rules: what can be
/// told without AWS, so a bad job is refused, naming its field, before any AWS setup is
/// looked at.
pub fn check_job(job: &JobEnvelope, options: &SendOptions) -> Result<(), EnqueueError> {
    job.validate()?;
    let mut violations = Violations::under("params");
    violations.tag_rules(options.tag_rules, "tags", job.job.tags());
    let stricter: Vec<String> = violations
        .into_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    if !stricter.is_empty() {
        return Err(EnqueueError::TagRules(stricter.join("; ")));
    }
    Ok(())
}

/// SQS's rule for group ids: 1 to 128 characters of letters, digits and punctuation.
fn check_group_id(group: &str) -> Result<(), EnqueueError> {
    let ok = !group.is_empty() && group.len() <= 128 && group.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(EnqueueError::Option {
            field: "group_id",
            message: format!("`{group}` must be 1 to 128 letters, digits or punctuation"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::job::Canary;
    use shoal_common::Job;

    fn canary() -> JobEnvelope {
        JobEnvelope::new(Job::new(Canary { sleep_ms: 5 }))
            .with_job_id(JobId::parse("job-1").expect("id"))
    }

    #[test]
    fn a_fifo_message_is_grouped_by_kind_and_deduplicated_by_job_id() {
        let msg = OutgoingMessage::build(&canary(), &SendOptions::default(), true).expect("valid");
        assert_eq!(msg.group_id.as_deref(), Some("canary"));
        assert_eq!(msg.deduplication_id.as_deref(), Some("job-1"));
        let standard =
            OutgoingMessage::build(&canary(), &SendOptions::default(), false).expect("valid");
        assert_eq!((standard.group_id, standard.deduplication_id), (None, None));
    }

    #[test]
    fn delays_are_refused_on_fifo_and_past_sqs_limit() {
        let delayed = |seconds| SendOptions {
            delay_seconds: Some(seconds),
            ..SendOptions::default()
        };
        let field = |r: Result<OutgoingMessage, EnqueueError>| match r {
            Err(EnqueueError::Option { field, .. }) => field,
            other => panic!("expected an option error, got {:?}", other.map(|m| m.body)),
        };
        assert_eq!(
            field(OutgoingMessage::build(&canary(), &delayed(10), true)),
            "delay"
        );
        assert_eq!(
            field(OutgoingMessage::build(&canary(), &delayed(901), false)),
            "delay"
        );
        assert!(OutgoingMessage::build(&canary(), &delayed(900), false).is_ok());
    }

    #[test]
    fn group_ids_are_checked_and_size_counts_the_attributes() {
        let grouped = |group: &str| SendOptions {
            message_group_id: Some(group.into()),
            ..SendOptions::default()
        };
        assert!(OutgoingMessage::build(&canary(), &grouped("tenant 1"), true).is_err());
        assert!(OutgoingMessage::build(&canary(), &grouped(&"g".repeat(129)), true).is_err());
        let msg = OutgoingMessage::build(&canary(), &grouped("tenant-1"), true).expect("valid");
        assert_eq!(msg.group_id.as_deref(), Some("tenant-1"));
        let attributes = "kind".len()
            + "String".len()
            + "canary".len()
            + "schema".len()
            + "Number".len()
            + "1".len();
        assert_eq!(msg.size(), msg.body.len() + attributes);
    }
}
