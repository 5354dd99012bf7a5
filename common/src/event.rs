//! The completion event: what the worker publishes to SNS when a job ends, succeeded or
//! failed, as a CloudEvents 1.0 JSON document in structured mode ([`CloudEvent`]) whose
//! `data` is the [`JobEvent`]. Versioned like the job envelope (`data.event_version`);
//! delivered at least once, so subscribers de-duplicate on `id` (the same outcome announced
//! again keeps its id) or on the job id (`subject`).
//!
//! SNS message attributes `kind`, `status`, `job_id` and `chain_id` repeat what the body says,
//! so subscribers can use filter policies (e.g. only `status = failed`; a follower's own queue
//! takes only its jobs' events).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorClass;

/// The version of [`JobEvent`], the CloudEvent's `data`. 2: events became CloudEvents.
pub const EVENT_VERSION: u32 = 2;
/// The CloudEvents specification version the events follow.
pub const SPEC_VERSION: &str = "1.0";
/// CloudEvents `type` of a success and of a failure: reverse-DNS of the project first, as the
/// specification asks, so they cannot be mistaken for another producer's.
pub const TYPE_SUCCEEDED: &str = "dev.shoal.job.succeeded";
pub const TYPE_FAILED: &str = "dev.shoal.job.failed";
pub const TYPE_CANCELLED: &str = "dev.shoal.job.cancelled";

/// One completion event as published: CloudEvents 1.0, structured mode (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Shoal completion event (CloudEvents 1.0, structured mode)")]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per outcome; the same outcome announced again (SNS retried, or carried to a
    /// later delivery) keeps its id.
    pub id: String,
    /// The worker fleet: `--event-source`, by default the job queue's URL.
    pub source: String,
    /// `dev.shoal.job.succeeded` or `dev.shoal.job.failed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The job id (for a message too malformed to name one, its SQS message id).
    pub subject: String,
    /// When the attempt ended (RFC 3339).
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The W3C trace context of the job's attempt (CloudEvents' distributed tracing
    /// extension), when the worker traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    pub data: JobEvent,
}

impl CloudEvent {
    /// `event` as a CloudEvent from `source`. Its id is derived from the outcome (message,
    /// attempt, status, end time), so announcing the same outcome again keeps it.
    pub fn wrap(event: JobEvent, source: &str) -> CloudEvent {
        let identity = format!(
            "{}/{}/{}/{}",
            event.message_id,
            event.attempts,
            event.status.as_str(),
            event.timings.finished_at.to_rfc3339()
        );
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, identity.as_bytes()).to_string(),
            source: source.to_owned(),
            event_type: match event.status {
                JobStatus::Succeeded => TYPE_SUCCEEDED,
                JobStatus::Failed => TYPE_FAILED,
                JobStatus::Cancelled => TYPE_CANCELLED,
            }
            .to_owned(),
            subject: event
                .job_id
                .clone()
                .unwrap_or_else(|| event.message_id.clone()),
            time: event.timings.finished_at,
            datacontenttype: "application/json".to_owned(),
            traceparent: None,
            tracestate: None,
            data: event,
        }
    }

    /// The published JSON. Serializing these types cannot fail: every map key is a string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("events serialize: {e}"))
    }
}

/// The JSON Schema of a published event, generated from these types. The committed copy in
/// `common/schema/` is what subscribers read; a test keeps the two equal.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(CloudEvent).to_value();
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        props.insert(
            "specversion".into(),
            serde_json::json!({"const": SPEC_VERSION, "description": "Always `1.0`."}),
        );
        props.insert(
            "type".into(),
            serde_json::json!({"enum": [TYPE_SUCCEEDED, TYPE_FAILED, TYPE_CANCELLED], "description": "What happened: the job succeeded, failed, or was cancelled by an operator."}),
        );
        props.insert(
            "datacontenttype".into(),
            serde_json::json!({"const": "application/json"}),
        );
    }
    schema
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Succeeded,
    Failed,
    /// An operator cancelled the job (`shoal-producer cancel`): it does not run again, and
    /// its follow-ups never start.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// What happened to a job: the CloudEvent's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobEvent {
    pub event_version: u32,
    /// The job's id; absent only when the message was too malformed to carry one.
    pub job_id: Option<String>,
    /// The kind as written in the message, when it had one.
    pub kind: Option<String>,
    /// The id of the first job of this job's chain (its own id if it is not a follow-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The job whose success enqueued this one, for a follow-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    /// Where a follow-up is in its chain (`then[1].then[0]`, `then[0][3]` for a fan-out's
    /// fourth), so a failure says which step stopped the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub status: JobStatus,
    /// Deliveries of the message so far (SQS's `ApproximateReceiveCount`).
    pub attempts: u32,
    /// The job's run: 1, one more for each rerun an operator asked for (`retry`, `dlq
    /// redrive`) after it failed. Absent means 1.
    #[serde(default = "first_run", skip_serializing_if = "is_first_run")]
    #[schemars(range(min = 1))]
    pub run: u32,
    /// The SQS message id of the job, for tracing a malformed message to the DLQ.
    pub message_id: String,
    pub worker_id: String,
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// The ids of the follow-ups this success enqueued (or failed to, each with its own
    /// event): a follower waits for these too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<String>,
}

fn first_run() -> u32 {
    1
}

fn is_first_run(run: &u32) -> bool {
    *run <= 1
}

impl JobEvent {
    /// The kind as a metrics and attribute label: a known kind, or `unknown`.
    pub fn kind_label(&self) -> &str {
        match self.kind.as_deref() {
            Some(k) if crate::JobKind::parse(k).is_some() => k,
            _ => crate::metrics::UNKNOWN_KIND,
        }
    }

    /// The SNS message attributes that repeat the body, for filter policies.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attributes = vec![
            ("kind", self.kind_label().to_owned()),
            ("status", self.status.as_str().to_owned()),
        ];
        if let Some(id) = &self.job_id {
            attributes.push(("job_id", id.clone()));
        }
        if let Some(chain) = self.chain_id.as_ref().or(self.job_id.as_ref()) {
            attributes.push(("chain_id", chain.clone()));
        }
        attributes
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// `submitted_at` from the job envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When SQS accepted the message (`SentTimestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When the job's first run started: earlier than `started_at` when the job waited for
    /// EC2, was retried or was carried on a copy. Absent when an earlier delivery's start is
    /// not known (a retry on the same message after a plain transient failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<DateTime<Utc>>,
    /// When this delivery's run started.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// From enqueue to the start of this attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// This delivery's run time, in milliseconds.
    pub run_ms: u64,
    /// The whole job's time, from its first start to this end, in milliseconds: what a
    /// job that waited minutes for EC2 took, where `run_ms` is its last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventError {
    pub class: ErrorClass,
    /// The AWS error code or Shoal's own (`InvalidMessage`, `NoHandler`, `AttemptsExhausted`).
    pub code: Option<String>,
    pub message: String,
    /// Whether the job's message was moved to the dead-letter queue.
    pub dead_lettered: bool,
}

/// What the worker knows of a message and its attempt when it builds the event.
#[derive(Debug, Clone)]
pub struct EventSource {
    pub job_id: Option<String>,
    pub kind: Option<String>,
    pub chain_id: Option<String>,
    pub parent_job_id: Option<String>,
    pub attempts: u32,
    pub message_id: String,
    pub worker_id: String,
    pub submitted_at: Option<DateTime<Utc>>,
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When the job's first run started, where known.
    pub first_started_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
}

impl EventSource {
    /// For a job that never ran here (a follow-up that could not be built, a job found in
    /// the dead-letter queue): its identity, no attempt, no timings but now.
    pub fn not_run(
        job_id: Option<String>,
        kind: Option<String>,
        attempts: u32,
        message_id: String,
        worker_id: String,
    ) -> EventSource {
        EventSource {
            job_id,
            kind,
            chain_id: None,
            parent_job_id: None,
            attempts,
            message_id,
            worker_id,
            submitted_at: None,
            enqueued_at: None,
            first_started_at: None,
            started_at: Utc::now(),
        }
    }

    /// For a message that is not a valid job: whatever `job_id` and `kind` its body names,
    /// so subscribers can still correlate it.
    pub fn loose_identity(body: &str) -> (Option<String>, Option<String>) {
        // Only these two fields are read; whatever else the body holds is skipped unread,
        // so a flaw elsewhere in it (a bad value, half a surrogate pair) hides neither.
        #[derive(Deserialize)]
        struct Loose {
            job_id: Option<serde_json::Value>,
            kind: Option<serde_json::Value>,
        }
        let loose: Option<Loose> = serde_json::from_str(body).ok();
        // Each becomes an SNS message attribute, which SNS refuses empty or with control
        // characters: only a value of a job id's shape is taken (a kind's name is one), and
        // anything else is left out rather than cut or cleaned into a name it never was.
        let field = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .and_then(|s| crate::JobId::parse(s).ok())
                .map(|id| id.to_string())
        };
        match loose {
            Some(l) => (field(l.job_id.as_ref()), field(l.kind.as_ref())),
            None => (None, None),
        }
    }
}

/// `s` cut to at most `max` characters, marked with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// The largest result an event carries whole, as JSON. SNS takes 256 KiB a message, and the
/// ledger 400 KiB an item, which holds the event beside the job's envelope (up to SQS's 256
/// KiB, though most are far smaller) and its progress; a larger result is summarized
/// ([`summarized`]).
pub const MAX_RESULT_BYTES: usize = 96 * 1024;

/// Counts the bytes written: a value's JSON length without building it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as JSON.
pub fn json_len(value: &serde_json::Value) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// `result` as an event carries it: whole up to [`MAX_RESULT_BYTES`]; past that, a summary
/// that says so, `{"truncated": {"bytes": N, "limit": L, "summary": …}}`, where the summary
/// keeps each top-level field's scalar value (strings cut to 200 characters) and counts
/// arrays' items and objects' fields. The job's follow-ups are built from the whole result
/// before it is summarized.
pub fn summarized(result: serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    let bytes = json_len(&result);
    if bytes <= MAX_RESULT_BYTES {
        return result;
    }
    let brief = |v: &Value| match v {
        Value::Array(items) => json!({"items": items.len()}),
        Value::Object(fields) => json!({"fields": fields.len()}),
        Value::String(s) => Value::String(truncate(s, 200)),
        other => other.clone(),
    };
    let summary = match &result {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .take(100)
                .map(|(k, v)| (truncate(k, 200), brief(v)))
                .collect(),
        ),
        other => brief(other),
    };
    json!({"truncated": {"bytes": bytes, "limit": MAX_RESULT_BYTES, "summary": summary}})
}

impl JobEvent {
    /// The event of an attempt that ended now; a result too large to announce is
    /// [`summarized`].
    pub fn new(
        source: EventSource,
        status: JobStatus,
        result: Option<serde_json::Value>,
        error: Option<EventError>,
    ) -> JobEvent {
        let finished_at = Utc::now();
        let started_at = source.started_at;
        let step = match (&source.job_id, &source.chain_id) {
            (Some(job), Some(chain)) => crate::job::chain::step_of(job, chain),
            _ => None,
        };
        JobEvent {
            event_version: EVENT_VERSION,
            job_id: source.job_id,
            kind: source.kind,
            step,
            chain_id: source.chain_id,
            parent_job_id: source.parent_job_id,
            status,
            attempts: source.attempts,
            run: 1,
            message_id: source.message_id,
            worker_id: source.worker_id,
            timings: Timings {
                submitted_at: source.submitted_at,
                enqueued_at: source.enqueued_at,
                first_started_at: source.first_started_at,
                started_at,
                finished_at,
                queue_ms: source
                    .enqueued_at
                    .map(|at| (started_at - at).num_milliseconds().max(0) as u64),
                run_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
                job_ms: source
                    .first_started_at
                    .map(|at| (finished_at - at).num_milliseconds().max(0) as u64),
            },
            result: result.map(summarized),
            error,
            follow_ups: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_body_still_names_its_job_when_it_can() {
        assert_eq!(
            EventSource::loose_identity(r#"{"job_id": "j-1", "kind": "nope"}"#),
            (Some("j-1".into()), Some("nope".into()))
        );
        assert_eq!(EventSource::loose_identity("not json"), (None, None));
        // Only a value SNS takes as an attribute, and no name it never was: too long, empty,
        // a control character or a space, and the field is left out.
        for bad in [
            "x".repeat(300),
            String::new(),
            "a\u{1}b".into(),
            "a b".into(),
        ] {
            let body = serde_json::json!({"job_id": bad, "kind": bad}).to_string();
            assert_eq!(EventSource::loose_identity(&body), (None, None), "{bad:?}");
        }
    }

    #[test]
    fn a_result_is_carried_whole_up_to_the_limit_and_summarized_past_it() {
        use serde_json::json;
        // A result of `total` bytes: `{"ids":["…"],"n":1}` is 18 besides the string.
        let at = |total: usize| json!({"ids": ["x".repeat(total - 18)], "n": 1});
        let fits = at(MAX_RESULT_BYTES);
        assert_eq!(json_len(&fits), MAX_RESULT_BYTES);
        assert_eq!(summarized(fits.clone()), fits, "at the limit: whole");
        let over = at(MAX_RESULT_BYTES + 1);
        assert_eq!(json_len(&over), MAX_RESULT_BYTES + 1);
        let cut = summarized(over);
        assert_eq!(
            cut,
            json!({"truncated": {
                "bytes": MAX_RESULT_BYTES + 1,
                "limit": MAX_RESULT_BYTES,
                "summary": {"ids": {"items": 1}, "n": 1},
            }})
        );
        assert!(json_len(&cut) < 1024);
        let huge_text = summarized(json!("y".repeat(MAX_RESULT_BYTES)));
        assert!(json_len(&huge_text) < 1024, "{huge_text}");
    }

    #[test]
    fn timings_follow_from_the_source() {
        let started_at = Utc::now();
        let event = JobEvent::new(
            EventSource {
                job_id: Some("j".into()),
                kind: Some("canary".into()),
                chain_id: None,
                parent_job_id: None,
                attempts: 2,
                message_id: "m".into(),
                worker_id: "w".into(),
                submitted_at: None,
                enqueued_at: Some(started_at - chrono::Duration::milliseconds(250)),
                first_started_at: Some(started_at - chrono::Duration::seconds(90)),
                started_at,
            },
            JobStatus::Succeeded,
            Some(serde_json::json!({})),
            None,
        );
        assert_eq!(event.timings.queue_ms, Some(250));
        assert!(
            event.timings.job_ms.is_some_and(|ms| ms >= 90_000),
            "the whole job counts from its first start: {:?}",
            event.timings.job_ms
        );
        assert!(event.timings.run_ms < 90_000);
        assert!(event.timings.finished_at >= started_at);
        assert_eq!(event.attempts, 2);
    }
}
