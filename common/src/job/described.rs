//! Kinds this process has no Rust type for, learnt from the envelope schema a worker publishes
//! (`shoal-worker schema`): a producer in another team's binary sends a library user's kind
//! by name with JSON parameters, checked against the worker's own schema for it, so a
//! mistake is named before anything is sent, as for a built-in. A kind this process knows by
//! its type is never replaced by its description.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use super::error::ContractError;
use super::kind::{is_kind_name, register_info, KindInfo, Params};
use super::{Job, JobKind};
use crate::tag::Tag;
use crate::validate::{FieldError, Violations};

/// What a schema says of one kind: its checker and its parameters' schema.
struct Description {
    validator: jsonschema::Validator,
    params_schema: Value,
}

/// The descriptions by kind name, for the decoder the table calls.
static DESCRIBED: LazyLock<RwLock<HashMap<&'static str, Description>>> =
    LazyLock::new(Default::default);

/// Learns the kinds `schema` (an envelope schema, as `shoal-worker schema` prints it)
/// describes that this process does not know yet, and returns every kind it names.
pub fn learn_kinds(schema: &Value) -> Result<Vec<JobKind>, String> {
    let alternatives = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .ok_or("not a Shoal envelope schema: it has no `oneOf` of kinds")?;
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut kinds = Vec::new();
    for alternative in alternatives {
        let name = alternative
            .pointer("/properties/kind/const")
            .and_then(Value::as_str)
            .ok_or("a kind in the schema has no `properties.kind.const` name")?;
        if !is_kind_name(name) {
            return Err(format!("`{name}` in the schema is not a kind name"));
        }
        if let Some(known) = JobKind::parse(name) {
            kinds.push(known);
            continue;
        }
        let params = alternative
            .pointer("/properties/params")
            .cloned()
            .ok_or_else(|| format!("`{name}` in the schema has no `params`"))?;
        // The parameters' schema, with the definitions its references point into.
        let mut standalone = params.clone();
        if let Value::Object(map) = &mut standalone {
            map.insert("$defs".into(), defs.clone());
        }
        let validator = jsonschema::validator_for(&standalone)
            .map_err(|e| format!("`{name}`'s parameters schema does not compile: {e}"))?;
        let description = alternative
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Leaked once per kind a schema describes (a process reads one schema).
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let description: &'static str = Box::leak(description.to_owned().into_boxed_str());
        DESCRIBED.write().unwrap_or_else(|p| p.into_inner()).insert(
            name,
            Description {
                validator,
                params_schema: params,
            },
        );
        kinds.push(register_info(KindInfo {
            name,
            description,
            // A kind known only by its description is sent, never run, here; a worker
            // decides for itself. The safe answer for anything that asks.
            takes_lease: true,
            type_id: std::any::TypeId::of::<DescribedParams>,
            decode,
            schema: params_schema,
            example: None,
            described: true,
        }));
    }
    Ok(kinds)
}

/// Reads an envelope schema file ([`learn_kinds`]).
pub fn learn_kinds_from_file(path: &std::path::Path) -> Result<Vec<JobKind>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the kinds schema {}: {e}", path.display()))?;
    let schema: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the kinds schema {} is not JSON: {e}", path.display()))?;
    learn_kinds(&schema).map_err(|e| format!("{}: {e}", path.display()))
}

fn decode(name: &'static str, params: Value) -> Result<Job, ContractError> {
    let described = DESCRIBED.read().unwrap_or_else(|p| p.into_inner());
    let Some(description) = described.get(name) else {
        return Err(ContractError::UnknownKind {
            kind: name.to_owned(),
            known: super::kind::known_names(),
        });
    };
    let errors: Vec<FieldError> = description
        .validator
        .iter_errors(&params)
        .map(|e| {
            let path = e.instance_path().as_str().replace('/', ".");
            FieldError {
                field: format!("params{path}"),
                message: e.to_string(),
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ContractError::Invalid(errors));
    }
    let tags = params
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| {
            tags.iter()
                .map(|(k, v)| Tag::new(k, v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let dry_run = params.get("dry_run").and_then(Value::as_bool);
    let kind = JobKind::parse(name).ok_or_else(|| ContractError::UnknownKind {
        kind: name.to_owned(),
        known: super::kind::known_names(),
    })?;
    Ok(Job::described(
        kind,
        DescribedParams {
            params,
            tags,
            dry_run,
        },
    ))
}

fn params_schema(name: &'static str, _: &mut SchemaGenerator) -> Schema {
    let described = DESCRIBED.read().unwrap_or_else(|p| p.into_inner());
    let value = described
        .get(name)
        .map(|d| d.params_schema.clone())
        .unwrap_or(Value::Bool(true));
    Schema::try_from(value).unwrap_or_else(|_| Schema::default())
}

/// A described kind's parameters: the JSON its schema accepted, with what the runtime asks
/// of every job read off it (tags, dry run) where the fields have the built-ins' names.
#[derive(Debug)]
struct DescribedParams {
    params: Value,
    tags: Vec<Tag>,
    dry_run: Option<bool>,
}

impl Params for DescribedParams {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn to_value(&self) -> Value {
        self.params.clone()
    }

    /// Its schema checked it whole when it was decoded.
    fn validate(&self, _: &mut Violations) {}

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run.unwrap_or(false))
    }

    fn reaches(&self) -> Option<(&'static str, &str)> {
        None
    }
}
