//! What a job kind is. A kind is a parameters type implementing [`Kind`]: its wire name, its
//! JSON Schema (derived), its field rules ([`Validate`]) and the policies the runtime asks of
//! it (does it take a ledger lease, which tags does it put on what it makes, is it a dry run,
//! which region does it reach). This module also keeps the process's table of known kinds,
//! which a [`JobKind`] names one of and by which a message's `params` are decoded into a
//! [`Job`]: the built-in kinds are in it from the start, and a library user's kind joins it
//! when a worker's registry or a producer first meets it ([`register`]). There is one path:
//! a built-in kind is a `Kind` like any other.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{decode_params, ContractError};
use crate::tag::Tag;
use crate::validate::{Validate, Violations};

/// A job kind's parameters, and what the runtime must know of the kind. Implement it for a
/// `serde` + `schemars` type (with `#[serde(deny_unknown_fields)]`: a misspelt field must fail
/// loudly, not be ignored) and register a handler for it in a worker's `Registry`.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
/// use shoal_common::job::Kind;
/// use shoal_common::validate::{Validate, Violations};
///
/// /// Grow a volume.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct GrowVolume {
///     volume_id: String,
///     size_gib: u32,
/// }
///
/// impl Validate for GrowVolume {
///     fn validate(&self, v: &mut Violations) {
///         if self.size_gib == 0 {
///             v.add("size_gib", "must be at least 1");
///         }
///     }
/// }
///
/// impl Kind for GrowVolume {
///     const NAME: &'static str = "grow-volume";
///     const DESCRIPTION: &'static str = "Grow a volume.";
///     fn example() -> Self {
///         GrowVolume { volume_id: "vol-12345678".into(), size_gib: 16 }
///     }
/// }
///
/// let kind = shoal_common::job::register::<GrowVolume>().expect("a new name");
/// assert_eq!(kind.as_str(), "grow-volume");
/// assert!(kind.takes_lease(), "a create is not idempotent unless the kind says so");
/// ```
pub trait Kind:
    Serialize
    + DeserializeOwned
    + JsonSchema
    + Validate
    + Clone
    + fmt::Debug
    + PartialEq
    + Send
    + Sync
    + 'static
{
    /// The wire name (`kind` in a message), also the metrics label and the name operators
    /// type: a lowercase letter, then lowercase letters, digits and `-`, at most 64 in all.
    const NAME: &'static str;
    /// One line saying what a job of this kind does (the schema's and `--help`'s).
    const DESCRIPTION: &'static str;
    /// Whether a job of this kind claims its job id in the job ledger before its handler
    /// runs, and so runs once per id across a fleet, with its progress and outcome on record.
    /// Every kind whose effect is not idempotent by itself (a second `CreateSnapshot` makes a
    /// second snapshot) or that destroys must; only a kind that creates nothing, or whose
    /// effect done twice is done once, may say `false`.
    const TAKES_LEASE: bool = true;

    /// The user's tags the job asks to put on what it creates, checked against the tag rules
    /// by the producer and again by the worker.
    fn tags(&self) -> &[Tag] {
        &[]
    }

    /// `Some(true)` for a dry run, `Some(false)` for a job that would change something (a
    /// worker in dry-run-only mode refuses it), `None` for a kind that touches no AWS service.
    fn dry_run(&self) -> Option<bool> {
        Some(false)
    }

    /// A region the job reaches other than the worker's own, with the field that names it,
    /// for the worker's `--allow-regions`.
    fn reaches(&self) -> Option<(&'static str, &str)> {
        None
    }

    /// A valid job of this kind, for tests (every kind is fuzzed and round-tripped from its
    /// example) and for documentation.
    fn example() -> Self;
}

/// The name of a job kind this process knows (a built-in, or one registered): its wire
/// name and its metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKind(&'static str);

impl JobKind {
    /// The kind of `K`'s jobs. It need not be registered yet: decoding its jobs does, and a
    /// registry or producer that meets `K` registers it.
    pub const fn of<K: Kind>() -> JobKind {
        JobKind(K::NAME)
    }

    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The known kind named `name`, if any.
    pub fn parse(name: &str) -> Option<JobKind> {
        find(name).map(|k| JobKind(k.name))
    }

    /// Every kind this process knows, built-ins first, each in the order it joined.
    pub fn all() -> Vec<JobKind> {
        known().iter().map(|k| JobKind(k.name)).collect()
    }

    /// The built-in kinds, in their published order.
    pub fn builtin() -> Vec<JobKind> {
        super::BUILTIN.iter().map(|k| JobKind(k.name)).collect()
    }

    /// What the table knows of this kind: `None` for a kind not registered in this process.
    fn info(self) -> Option<&'static KindInfo> {
        find(self.0)
    }

    /// Whether its jobs claim their job id in the ledger ([`Kind::TAKES_LEASE`]); a kind this
    /// process does not know takes one, the safe side.
    pub fn takes_lease(self) -> bool {
        self.info().is_none_or(|k| k.takes_lease)
    }

    /// Its one-line description, when the kind is known here.
    pub fn description(self) -> Option<&'static str> {
        self.info().map(|k| k.description)
    }

    /// A valid example job of this kind, when the kind is known here.
    pub fn example(self) -> Option<Job> {
        self.info().and_then(|k| k.example).map(|example| example())
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for JobKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(d)?;
        JobKind::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown job kind `{name}` (known: {})",
                known_names()
            ))
        })
    }
}

impl JsonSchema for JobKind {
    fn schema_name() -> Cow<'static, str> {
        "JobKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = known().iter().map(|k| k.name).collect();
        schemars::json_schema!({
            "description": "The kind of a job: its wire name and its metrics label.",
            "type": "string",
            "enum": names,
        })
    }
}

/// A kind as the table holds it: its policies, and its parameters' decoder and schema (each
/// given the kind's name, for the kinds known from a schema rather than a type).
pub(super) struct KindInfo {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) takes_lease: bool,
    pub(super) type_id: fn() -> TypeId,
    pub(super) decode: fn(&'static str, Value) -> Result<Job, ContractError>,
    pub(super) schema: fn(&'static str, &mut SchemaGenerator) -> Schema,
    pub(super) example: Option<fn() -> Job>,
    /// Known from a schema only (`described.rs`): a type of the same name replaces it.
    pub(super) described: bool,
}

impl KindInfo {
    pub(super) const fn of<K: Kind>() -> KindInfo {
        KindInfo {
            name: K::NAME,
            description: K::DESCRIPTION,
            takes_lease: K::TAKES_LEASE,
            type_id: TypeId::of::<K>,
            decode: decode_as::<K>,
            schema: params_schema::<K>,
            example: Some(example_of::<K>),
            described: false,
        }
    }
}

fn decode_as<K: Kind>(_: &'static str, params: Value) -> Result<Job, ContractError> {
    decode_params::<K>(params).map(Job::known)
}

fn params_schema<K: Kind>(_: &'static str, generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<K>()
}

fn example_of<K: Kind>() -> Job {
    Job::new(K::example())
}

/// The process's known kinds. Entries are never removed, and each is one per kind in the
/// program's code, never per message: a name on the wire is only ever looked up.
static KNOWN: LazyLock<RwLock<Vec<&'static KindInfo>>> =
    LazyLock::new(|| RwLock::new(super::BUILTIN.iter().collect()));

/// The known kind named `name`: looked up under the read lock, nothing copied (every
/// message's decoding asks).
fn find(name: &str) -> Option<&'static KindInfo> {
    KNOWN
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .find(|k| k.name == name)
}

fn known() -> Vec<&'static KindInfo> {
    KNOWN.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Why a kind cannot join the table.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KindError {
    #[error("`{0}` is not a kind name: a lowercase letter, then lowercase letters, digits and `-`, at most 64 characters")]
    BadName(&'static str),
    #[error("the kind name `{0}` is taken by another type")]
    Taken(&'static str),
}

/// Whether `name` has a kind name's shape: a lowercase letter, then lowercase letters,
/// digits and `-`, at most 64 in all.
pub fn is_kind_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Makes `K` a known kind of this process, so its jobs decode: a worker's registry calls it
/// for each kind it has a handler for, and a producer for each kind it sends. Registering
/// the same type again is a no-op; another type under a known name is refused.
pub fn register<K: Kind>() -> Result<JobKind, KindError> {
    let name = K::NAME;
    if !is_kind_name(name) {
        return Err(KindError::BadName(name));
    }
    let mut table = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    let at = table.iter().position(|k| k.name == name);
    match at.and_then(|at| table.get_mut(at)) {
        Some(known) if (known.type_id)() == TypeId::of::<K>() => {}
        Some(known) if !known.described => return Err(KindError::Taken(name)),
        // A schema's description gives way to the type itself.
        Some(known) => *known = Box::leak(Box::new(KindInfo::of::<K>())),
        // One leak per kind in the program, bounded by its code.
        None => table.push(Box::leak(Box::new(KindInfo::of::<K>()))),
    }
    Ok(JobKind(name))
}

/// Adds `info` to the known kinds unless its name is known already (a kind with a type is
/// never replaced by one described by a schema): the kinds `described.rs` learns.
pub(super) fn register_info(info: KindInfo) -> JobKind {
    let mut table = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = table.iter().find(|k| k.name == info.name) {
        return JobKind(known.name);
    }
    let name = info.name;
    // One leak per kind a schema describes, read once per process.
    table.push(Box::leak(Box::new(info)));
    JobKind(name)
}

/// A job: its kind together with that kind's parameters, decoded and checked, whatever the
/// kind. A handler gets its own type back ([`Job::params`]).
#[derive(Clone)]
pub struct Job {
    kind: JobKind,
    params: Arc<dyn Params>,
}

/// What a job's parameters can do without their type being named: everything [`Kind`] says,
/// behind one pointer.
pub(super) trait Params: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn to_value(&self) -> Value;
    fn validate(&self, v: &mut Violations);
    fn tags(&self) -> &[Tag];
    fn dry_run(&self) -> Option<bool>;
    fn reaches(&self) -> Option<(&'static str, &str)>;
}

impl<K: Kind> Params for K {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| unreachable!("parameters serialize: {e}"))
    }

    fn validate(&self, v: &mut Violations) {
        Validate::validate(self, v)
    }

    fn tags(&self) -> &[Tag] {
        Kind::tags(self)
    }

    fn dry_run(&self) -> Option<bool> {
        Kind::dry_run(self)
    }

    fn reaches(&self) -> Option<(&'static str, &str)> {
        Kind::reaches(self)
    }
}

impl Job {
    /// A job of `K`'s kind with `params`. `K` joins the known kinds if it is not one yet
    /// ([`register`]); a kind that cannot (a bad or taken name) makes a job that does not
    /// validate, naming why.
    pub fn new<K: Kind>(params: K) -> Job {
        if JobKind::parse(K::NAME).is_none() {
            // The refusal is reported by `validate_params`, where a caller reads errors.
            let _ = register::<K>();
        }
        Job::known(params)
    }

    /// A job of a kind known from a schema, whose parameters `described.rs` checked.
    pub(super) fn described(kind: JobKind, params: impl Params) -> Job {
        Job {
            kind,
            params: Arc::new(params),
        }
    }

    fn known<K: Kind>(params: K) -> Job {
        Job {
            kind: JobKind::of::<K>(),
            params: Arc::new(params),
        }
    }

    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The parameters, if this job is of `K`'s kind.
    pub fn params<K: Kind>(&self) -> Option<&K> {
        self.params.as_any().downcast_ref::<K>()
    }

    /// A copy of this job with its parameters changed by `edit`, if it is of `K`'s kind (a
    /// job of another kind is copied as it is).
    pub fn edited<K: Kind>(&self, edit: impl FnOnce(&mut K)) -> Job {
        match self.params::<K>() {
            Some(params) => {
                let mut params = params.clone();
                edit(&mut params);
                Job::known(params)
            }
            None => self.clone(),
        }
    }

    /// The parameters as JSON, as the message carries them.
    pub fn params_json(&self) -> Value {
        self.params.to_value()
    }

    /// See [`Kind::tags`].
    pub fn tags(&self) -> &[Tag] {
        self.params.tags()
    }

    /// See [`Kind::dry_run`].
    pub fn dry_run(&self) -> Option<bool> {
        self.params.dry_run()
    }

    /// See [`Kind::reaches`].
    pub fn reaches(&self) -> Option<(&'static str, &str)> {
        self.params.reaches()
    }

    pub(super) fn validate_params(&self, v: &mut Violations) {
        self.params.validate(v)
    }

    /// Why this job's kind is not the one the table knows by its name, if it is not: a kind
    /// whose name is bad, or taken by another type, is no kind.
    pub(super) fn not_known(&self) -> Option<KindError> {
        let ours = self.params.as_any().type_id();
        match self.kind.info() {
            Some(info) if (info.type_id)() == ours => None,
            Some(_) => Some(KindError::Taken(self.kind.0)),
            None => Some(KindError::BadName(self.kind.0)),
        }
    }

    /// Decodes `params` as `kind`'s, naming the field at fault.
    pub fn decode(kind: JobKind, params: Value) -> Result<Job, ContractError> {
        let info = kind.info().ok_or_else(|| ContractError::UnknownKind {
            kind: kind.as_str().to_owned(),
            known: known_names(),
        })?;
        (info.decode)(info.name, params)
    }
}

impl<K: Kind> From<K> for Job {
    fn from(params: K) -> Job {
        Job::new(params)
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(self.kind.as_str())
            .field(&self.params)
            .finish()
    }
}

impl PartialEq for Job {
    fn eq(&self, other: &Job) -> bool {
        self.kind == other.kind && self.params.to_value() == other.params.to_value()
    }
}

impl Serialize for Job {
    /// `"kind"` and `"params"`, the envelope's two fields of the job (it flattens them in).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("kind", self.kind.as_str())?;
        map.serialize_entry("params", &self.params.to_value())?;
        map.end()
    }
}

impl JsonSchema for Job {
    fn schema_name() -> Cow<'static, str> {
        "Job".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// One alternative per known kind: its name as a constant and its parameters' schema.
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one_of: Vec<Value> = known()
            .iter()
            .map(|k| {
                let params = (k.schema)(k.name, generator);
                serde_json::json!({
                    "description": k.description,
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "const": k.name},
                        "params": params,
                    },
                    "required": ["kind", "params"],
                })
            })
            .collect();
        schemars::json_schema!({ "oneOf": one_of })
    }
}

/// The known kinds' names, for error messages.
pub(super) fn known_names() -> String {
    known()
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}
