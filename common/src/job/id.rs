//! The job id: the idempotency key every side effect of a job is keyed on.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
