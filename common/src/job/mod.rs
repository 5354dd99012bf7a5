//! The job contract: what a service in any language puts on the queue.
//!
//! A message body is one JSON object, the [`JobEnvelope`]:
//!
//! ```json
//! {"schema_version": 1, "job_id": "3f0c…", "kind": "canary",
//!  "submitted_at": "2026-11-24T10:00:00Z", "params": {"sleep_ms": 0}}
//! ```
//!
//! Every kind is declared once, in the [`job_kinds!`] invocation below: its variant, its
//! parameters type (one file per kind in this module) and its wire name. The macro derives
//! the [`JobKind`] labels, the [`Job`] enum (which is also the producer CLI's subcommands),
//! decoding with field paths, validation and the JSON Schema from that one list, so adding a
//! kind touches this list, its parameters file, and its handler in the worker.
//!
//! Unknown fields are refused everywhere: a misspelt `disable_api_termination` must fail
//! loudly rather than launch unprotected instances.

mod canary;
pub mod chain;
mod copy;
mod create_image;
mod prune;
mod register;
mod restore;
mod run_instances;
mod snapshot;
mod tag;
mod terminate;
mod termination;

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{FieldError, Violations};

pub use canary::Canary;
pub use chain::FollowUp;
pub use copy::{is_region, CopySnapshot};
pub use create_image::CreateImage;
pub use prune::{keep_for_duration, PruneSnapshots};
pub use register::RegisterImage;
pub use restore::RestoreVolume;
pub use run_instances::RunInstances;
pub use snapshot::Snapshot;
pub use tag::Tag;
pub use terminate::TerminateInstances;
pub use termination::SetTerminationProtection;

/// The envelope version this build writes and reads. A worker refuses other versions rather
/// than guess at their meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// SQS's limit on one message, body and attributes together. SNS has the same limit, so a
/// job that fits here also fits in its completion event's echo of the job id and kind.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Parameters of one job kind: checked by [`Validate`] and tied to its [`Job`] variant.
pub trait JobParams: Validate + Sized + Send + 'static {
    const KIND: JobKind;
    fn into_job(self) -> Job;
    /// The parameters if `job` is of this kind.
    fn from_job(job: Job) -> Option<Self>;
}

/// Something done with a job's parameters, whatever their kind, typed by that kind:
/// [`Job::visit`] hands the visitor exactly the variant's parameters, so code that needs
/// the concrete type (the worker's handler registry) never matches on `Job` itself.
pub trait JobVisitor {
    type Output;
    fn visit<P: JobParams>(self, params: P) -> Self::Output;
}

/// Field rules of a parameters type, beyond what its Rust type already enforces.
pub trait Validate {
    fn validate(&self, v: &mut Violations);
}

macro_rules! job_kinds {
    ($( $(#[$doc:meta])* $variant:ident($params:ty) = $name:literal, )+) => {
        /// The kind of a job: its wire name and its metrics label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum JobKind {
            $( #[serde(rename = $name)] $variant, )+
        }

        impl JobKind {
            pub const ALL: &'static [JobKind] = &[$(JobKind::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $(JobKind::$variant => $name,)+ }
            }

            pub fn parse(name: &str) -> Option<JobKind> {
                match name { $($name => Some(JobKind::$variant),)+ _ => None }
            }
        }

        /// A job: its kind together with that kind's parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, JsonSchema, clap::Subcommand)]
        #[serde(tag = "kind", content = "params")]
        pub enum Job {
            $( $(#[$doc])* #[serde(rename = $name)] #[command(name = $name)] $variant($params), )+
        }

        impl Job {
            pub fn kind(&self) -> JobKind {
                match self { $(Job::$variant(_) => JobKind::$variant,)+ }
            }

            /// Hands this job's parameters, typed by its kind, to `visitor`.
            pub fn visit<V: JobVisitor>(self, visitor: V) -> V::Output {
                match self { $(Job::$variant(p) => visitor.visit(p),)+ }
            }

            fn validate_params(&self, v: &mut Violations) {
                match self { $(Job::$variant(p) => p.validate(v),)+ }
            }

            fn decode(kind: JobKind, params: Value) -> Result<Job, ContractError> {
                match kind { $(JobKind::$variant => decode_params::<$params>(params).map(Job::$variant),)+ }
            }
        }

        $(
            impl JobParams for $params {
                const KIND: JobKind = JobKind::$variant;
                fn into_job(self) -> Job { Job::$variant(self) }
                fn from_job(job: Job) -> Option<Self> {
                    match job { Job::$variant(p) => Some(p), _ => None }
                }
            }
        )+
    };
}

job_kinds! {
    /// Launch instances from an AMI.
    RunInstances(RunInstances) = "run-instances",
    /// Create an AMI from an instance.
    CreateImage(CreateImage) = "create-image",
    /// Snapshot a volume, optionally naming the instance and volume first.
    Snapshot(Snapshot) = "snapshot",
    /// Turn termination protection on or off for instances.
    SetTerminationProtection(SetTerminationProtection) = "set-termination-protection",
    /// Delete old snapshots Shoal made, keeping the newest and the young.
    PruneSnapshots(PruneSnapshots) = "prune-snapshots",
    /// Copy a snapshot into another region.
    CopySnapshot(CopySnapshot) = "copy-snapshot",
    /// Make a volume from a snapshot, optionally attached to an instance.
    RestoreVolume(RestoreVolume) = "restore-volume",
    /// Register an AMI from a snapshot.
    RegisterImage(RegisterImage) = "register-image",
    /// Terminate instances Shoal launched.
    TerminateInstances(TerminateInstances) = "terminate-instances",
    /// Do no AWS work: an end-to-end probe of the pipeline.
    Canary(Canary) = "canary",
}

impl Job {
    /// The user's tags a job asks to put on what it creates (none for kinds that create
    /// nothing). Both the producer and the worker check them against the opt-in tag rules.
    pub fn tags(&self) -> &[Tag] {
        match self {
            Job::RunInstances(p) => &p.tags,
            Job::CreateImage(p) => &p.tags,
            Job::Snapshot(p) => &p.tags,
            Job::CopySnapshot(p) => &p.tags,
            Job::RestoreVolume(p) => &p.tags,
            Job::RegisterImage(p) => &p.tags,
            Job::SetTerminationProtection(_)
            | Job::Canary(_)
            | Job::TerminateInstances(_)
            | Job::PruneSnapshots(_) => &[],
        }
    }
}

impl JobKind {
    /// Whether a job of this kind claims its job id in the job ledger before its handler
    /// runs: the kinds whose effects are not idempotent by themselves (a second
    /// `CreateSnapshot` or `CreateImage` makes a second resource), and those that destroy
    /// (a resubmission announces what was done rather than act again). Canaries create
    /// nothing and termination protection set twice is set; they skip the lease. An
    /// exhaustive `match`: a new kind does not compile until it says.
    pub const fn takes_lease(self) -> bool {
        match self {
            JobKind::RunInstances
            | JobKind::CreateImage
            | JobKind::Snapshot
            | JobKind::PruneSnapshots
            | JobKind::CopySnapshot
            | JobKind::RestoreVolume
            | JobKind::RegisterImage
            | JobKind::TerminateInstances => true,
            JobKind::SetTerminationProtection | JobKind::Canary => false,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The idempotency key of a job: 1 to 128 characters of letters, digits and `-_.:`. A
/// redelivered message carries the same id, so every side effect is keyed on it, and it is
/// also the FIFO deduplication id (whose character set this is a subset of).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct JobId(
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))] String,
);

impl JobId {
    /// A fresh random id, for callers who do not bring their own.
    pub fn generate() -> Self {
        JobId(uuid::Uuid::new_v4().to_string())
    }

    pub fn parse(id: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
        if id.is_empty() || id.len() > 128 {
            Err(format!("is {} characters long; 1 to 128 allowed", id.len()))
        } else if let Some(bad) = id.chars().find(|c| !ok_char(*c)) {
            Err(format!(
                "`{bad}` is not allowed (letters, digits and - _ . : are)"
            ))
        } else {
            Ok(JobId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
    /// A new envelope for `job` with a generated id, stamped now.
    pub fn new(job: Job) -> Self {
        JobEnvelope {
            schema_version: SCHEMA_VERSION,
            job_id: JobId::generate(),
            submitted_at: Utc::now(),
            job,
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
                .or_insert_with(|| JobId::generate().0.into());
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

/// The default of the `wait` parameters (`#[serde(default = "super::yes")]`): a job
/// finishes once its effect is done unless it says otherwise.
fn yes() -> bool {
    true
}

fn not_an_object() -> ContractError {
    ContractError::Invalid(vec![FieldError {
        field: "body".into(),
        message: "a job is a JSON object".into(),
    }])
}

fn decode_params<P: serde::de::DeserializeOwned>(params: Value) -> Result<P, ContractError> {
    serde_path_to_error::deserialize(params).map_err(field_error("params"))
}

fn field_error<E: fmt::Display>(
    prefix: &'static str,
) -> impl Fn(serde_path_to_error::Error<E>) -> ContractError {
    move |e| {
        let mut segments: Vec<String> = Vec::new();
        if !prefix.is_empty() {
            segments.push(prefix.to_owned());
        }
        let path = e.path().to_string();
        // `.` is the root; `?` means the JSON broke before any field was reached.
        if path != "." && path != "?" {
            segments.push(path);
        }
        let message = explain_escape(e.into_inner().to_string());
        // serde reports a missing field at its parent; the caller wants the field itself.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            segments.push(missing.to_owned());
        }
        let field = if segments.is_empty() {
            "body".to_owned()
        } else {
            segments.join(".")
        };
        ContractError::Invalid(vec![FieldError { field, message }])
    }
}

/// Why a message is not a job this build can run. Always permanent: redelivering the same
/// bytes cannot fix it, so a worker dead-letters it with this reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    #[error("{}", join_fields(.0))]
    Invalid(Vec<FieldError>),
    #[error("kind: unknown job kind `{kind}` (known: {})", known_kinds())]
    UnknownKind { kind: String },
    #[error(
        "schema_version: version {found} is not supported (this build reads {SCHEMA_VERSION})"
    )]
    UnsupportedSchema { found: u32 },
    #[error("message: {bytes} bytes is over the {MAX_MESSAGE_BYTES}-byte SQS limit")]
    TooLarge { bytes: usize },
}

impl ContractError {
    /// The fields at fault, for callers that report them one by one.
    pub fn fields(&self) -> Vec<String> {
        match self {
            ContractError::Invalid(errors) => errors.iter().map(|e| e.field.clone()).collect(),
            ContractError::UnknownKind { .. } => vec!["kind".into()],
            ContractError::UnsupportedSchema { .. } => vec!["schema_version".into()],
            ContractError::TooLarge { .. } => vec!["message".into()],
        }
    }
}

fn join_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn known_kinds() -> String {
    JobKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// serde_json's words for a `\\u` escape that is half a UTF-16 surrogate pair, with what they
/// mean for a job.
fn explain_escape(message: String) -> String {
    if message.contains("surrogate") || message.contains("hex escape") {
        format!("{message}: an unpaired UTF-16 surrogate (\\ud800 to \\udfff alone) is no character, and no job can hold it")
    } else {
        message
    }
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
        map.entry("job_id").or_insert_with(|| default_id().0.into());
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
