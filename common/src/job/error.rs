//! Why a message is not a job: [`ContractError`], with the field at fault named the way the
//! message writes it (`params.min_count`), for teams writing jobs in any language.

use std::fmt;

use serde_json::Value;

use super::MAX_MESSAGE_BYTES;
use super::SCHEMA_VERSION;
use crate::validate::FieldError;

pub(super) fn not_an_object() -> ContractError {
    ContractError::Invalid(vec![FieldError {
        field: "body".into(),
        message: "a job is a JSON object".into(),
    }])
}

pub(super) fn decode_params<P: serde::de::DeserializeOwned>(
    params: Value,
) -> Result<P, ContractError> {
    serde_path_to_error::deserialize(params).map_err(field_error("params"))
}

pub(super) fn field_error<E: fmt::Display>(
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
    #[error("kind: unknown job kind `{kind}` (known: {known})")]
    UnknownKind { kind: String, known: String },
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

/// serde_json's words for a `\\u` escape that is half a UTF-16 surrogate pair, with what they
/// mean for a job.
pub(super) fn explain_escape(message: String) -> String {
    if message.contains("surrogate") || message.contains("hex escape") {
        format!("{message}: an unpaired UTF-16 surrogate (\\ud800 to \\udfff alone) is no character, and no job can hold it")
    } else {
        message
    }
}
