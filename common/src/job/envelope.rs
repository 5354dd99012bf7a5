//! The envelope: one job as it travels on the queue, its decoding (the one way a worker
//! reads a job), its checks, and its digest (what makes it the job its id names).

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain::{self, FollowUp};
use super::error::{explain_escape, field_error, not_an_object, ContractError};
use super::{Job, JobId, JobKind, MAX_MESSAGE_BYTES, SCHEMA_VERSION};
use crate::validate::{FieldError, Violations};

/// One job as it travels on the queue.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Shoal job envelope")]
pub struct JobEnvelope {
    /// Version of this envelope format; a worker refuses versions it does not know.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// Idempotency key: a redelivery or a resubmission with the same id has no second effect.
    pub job_id: JobId,
    /// When the job was submitted (RFC 3339).
    pub submitted_at: DateTime<Utc>,
    #[serde(flatten)]
    pub job: Job,
    /// Follow-up jobs, enqueued by the worker when this one succeeds; their params may read
    /// this job's result through references (`{"$from": "/json/pointer"}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<FollowUp>,
    /// The id of the chain's first job; set by the worker on follow-ups (a job without it is
    /// its own chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<JobId>,
    /// The job whose success enqueued this one; set by the worker on follow-ups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<JobId>,
    /// Run no earlier than this (RFC 3339), at most a year after `submitted_at`: until then
    /// the job waits on the queue in hops of at most 15 minutes, spending no attempt and no
    /// worker slot (`shoal-producer --at`, or `--delay` beyond SQS's 900 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

/// How far ahead a job may be scheduled.
pub const MAX_SCHEDULE_AHEAD: chrono::Duration = chrono::Duration::days(366);

impl JobEnvelope {
    /// A new envelope for `job` (a [`Job`], or any kind's parameters) with a generated id,
    /// stamped now.
    pub fn new(job: impl Into<Job>) -> Self {
        JobEnvelope {
            schema_version: SCHEMA_VERSION,
            job_id: JobId::generate(),
            submitted_at: Utc::now(),
            job: job.into(),
            then: Vec::new(),
            chain_id: None,
            parent_job_id: None,
            not_before: None,
        }
    }

    /// The chain this job belongs to: the id of its first job.
    pub fn chain_id(&self) -> &JobId {
        self.chain_id.as_ref().unwrap_or(&self.job_id)
    }

    pub fn with_job_id(mut self, job_id: JobId) -> Self {
        self.job_id = job_id;
        self
    }

    pub fn kind(&self) -> JobKind {
        self.job.kind()
    }

    /// What makes this job the job its id names, as a digest: its kind, parameters,
    /// follow-ups and place in a chain, not when it was sent. The ledger keeps it with the
    /// job's record, and a message under the same id whose digest differs is another job
    /// reusing the id: a producer's retry, an SQS duplicate or a parent's re-sent follow-up
    /// carries the same one, a sender's substitute does not.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        #[derive(Serialize)]
        struct Identity<'a> {
            #[serde(flatten)]
            job: &'a Job,
            then: &'a [FollowUp],
            chain_id: Option<&'a JobId>,
            parent_job_id: Option<&'a JobId>,
        }
        let identity = Identity {
            job: &self.job,
            then: &self.then,
            chain_id: self.chain_id.as_ref(),
            parent_job_id: self.parent_job_id.as_ref(),
        };
        // serde_json's maps keep their keys sorted, so one job serializes one way.
        let json = serde_json::to_vec(&identity)
            .unwrap_or_else(|e| unreachable!("a job envelope always serializes: {e}"));
        sha2::Sha256::digest(&json)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Decodes and validates a message body: the one way a worker reads a job.
    pub fn from_json(body: &str) -> Result<Self, ContractError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(ContractError::TooLarge { bytes: body.len() });
        }
        // serde would read a JSON array positionally into the envelope's fields.
        if !body.trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        let de = &mut serde_json::Deserializer::from_str(body);
        let raw: RawEnvelope = serde_path_to_error::deserialize(de).map_err(field_error(""))?;
        Self::from_raw(raw)
    }

    /// Decodes and validates an envelope already parsed as JSON.
    pub fn from_value(value: Value) -> Result<Self, ContractError> {
        if !value.is_object() {
            return Err(not_an_object());
        }
        let raw: RawEnvelope = serde_path_to_error::deserialize(value).map_err(field_error(""))?;
        Self::from_raw(raw)
    }

    /// Like [`JobEnvelope::from_value`], but fills in what a submitter may leave out: the
    /// schema version, a generated job id and the submission time. Bulk submission and
    /// other languages' thin clients write just `{"kind": …, "params": …}`.
    pub fn from_request(mut value: Value) -> Result<Self, ContractError> {
        if let Value::Object(map) = &mut value {
            map.entry("schema_version").or_insert(SCHEMA_VERSION.into());
            map.entry("job_id")
                .or_insert_with(|| JobId::generate().as_str().into());
            map.entry("submitted_at").or_insert_with(|| {
                Utc::now()
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
                    .into()
            });
        }
        Self::from_value(value)
    }

    fn from_raw(raw: RawEnvelope) -> Result<Self, ContractError> {
        if raw.schema_version != SCHEMA_VERSION {
            return Err(ContractError::UnsupportedSchema {
                found: raw.schema_version,
            });
        }
        let id = |field: &str, id: &str| {
            JobId::parse(id).map_err(|message| {
                ContractError::Invalid(vec![FieldError {
                    field: field.into(),
                    message,
                }])
            })
        };
        let job_id = id("job_id", &raw.job_id)?;
        let chain_id = raw.chain_id.map(|c| id("chain_id", &c)).transpose()?;
        let parent_job_id = raw
            .parent_job_id
            .map(|p| id("parent_job_id", &p))
            .transpose()?;
        let kind = JobKind::parse(&raw.kind).ok_or_else(|| ContractError::UnknownKind {
            kind: raw.kind.clone(),
            known: super::kind::known_names(),
        })?;
        let job = Job::decode(
            kind,
            raw.params.unwrap_or(Value::Object(Default::default())),
        )?;
        let envelope = JobEnvelope {
            schema_version: raw.schema_version,
            job_id,
            submitted_at: raw.submitted_at,
            job,
            then: raw.then,
            chain_id,
            parent_job_id,
            not_before: raw.not_before,
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// Checks every field rule and the size limit; errors name every violated field.
    pub fn validate(&self) -> Result<(), ContractError> {
        let mut v = Violations::under("params");
        self.job.validate_params(&mut v);
        let mut errors = v.into_errors();
        if let Some(not_known) = self.job.not_known() {
            errors.push(FieldError {
                field: "kind".into(),
                message: not_known.to_string(),
            });
        }
        errors.extend(chain::check(&self.job_id, &self.then));
        if let Some(at) = self.not_before {
            if at > self.submitted_at + MAX_SCHEDULE_AHEAD {
                errors.push(FieldError {
                    field: "not_before".into(),
                    message: format!(
                        "{at} is more than a year after submitted_at ({})",
                        self.submitted_at
                    ),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ContractError::Invalid(errors));
        }
        let bytes = self.to_json().len();
        if bytes > MAX_MESSAGE_BYTES {
            return Err(ContractError::TooLarge { bytes });
        }
        Ok(())
    }

    /// The message body. Serializing these types cannot fail: every map key is a string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| unreachable!("a job envelope always serializes: {e}"))
    }
}

/// The envelope as it arrives, before the kind picks the parameters type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    schema_version: u32,
    job_id: String,
    submitted_at: DateTime<Utc>,
    kind: String,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    then: Vec<FollowUp>,
    #[serde(default)]
    chain_id: Option<String>,
    #[serde(default)]
    parent_job_id: Option<String>,
    #[serde(default)]
    not_before: Option<DateTime<Utc>>,
}

/// One line of a bulk submission (`{"kind": …, "params": …}`, optionally more of the
/// envelope), decoded and validated; the error names the field, even for what JSON can write
/// but no job can hold (an unpaired surrogate).
pub fn parse_request_line(line: &str) -> Result<JobEnvelope, String> {
    parse_request_line_as(line, JobId::generate)
}

/// [`parse_request_line`], giving a job that names no `job_id` the one `default_id` makes (a
/// bulk submission's stable ids, so that sending the same file again sends the same jobs).
pub fn parse_request_line_as(
    line: &str,
    default_id: impl FnOnce() -> JobId,
) -> Result<JobEnvelope, String> {
    let de = &mut serde_json::Deserializer::from_str(line);
    let value: Value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = explain_escape(e.inner().to_string());
        if path.is_empty() || path == "." || path == "?" {
            format!("body: {message}")
        } else {
            format!("{path}: {message}")
        }
    })?;
    let value = with_default_id(value, default_id);
    JobEnvelope::from_request(value).map_err(|e| e.to_string())
}

/// `value` with `job_id` set to `default_id()` where it is an object that names none.
pub fn with_default_id(mut value: Value, default_id: impl FnOnce() -> JobId) -> Value {
    if let Value::Object(map) = &mut value {
        map.entry("job_id")
            .or_insert_with(|| default_id().as_str().into());
    }
    value
}

/// The JSON Schema of the envelope, generated from these types. The committed copy in
/// `common/schema/` is what other languages' teams read; a test keeps the two equal.
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(JobEnvelope).to_value();
    if let Some(Value::Object(defs)) = schema.get_mut("$defs") {
        for (name, def) in chain::schema_defs() {
            defs.insert(name.to_owned(), def);
        }
    }
    schema
}
