//! Pausing kinds: one control item in the ledger table, which operators write
//! (`shoal-producer pause|resume`) and every worker reads every few seconds
//! (`--pause-check-interval`: a fixed number of reads a minute per worker, never one per job).
//! A paused kind's deliveries wait without running and without spending attempts.
//!
//! The item's key is not a job id (a job id takes no `/`), it has no status (the by-status
//! index leaves it out) and no expiry.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};

use super::{ms, s, Ledger};
use crate::error::{classify_sdk_error, Error};
use crate::JobKind;

/// The control item's key.
pub const PAUSE_KEY: &str = "control/paused";

mod attr {
    pub const ALL: &str = "all";
    pub const KINDS: &str = "kinds";
    pub const BY: &str = "by";
    pub const UPDATED_AT: &str = "updated_at";
}

/// What is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Paused {
    /// Every kind.
    pub all: bool,
    /// These kinds (beside `all`).
    pub kinds: BTreeSet<String>,
    /// Who changed it last, and when.
    pub by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Paused {
    /// Whether `kind`'s jobs wait.
    pub fn covers(&self, kind: JobKind) -> bool {
        self.all || self.kinds.contains(kind.as_str())
    }

    /// Whether nothing is paused.
    pub fn is_empty(&self) -> bool {
        !self.all && self.kinds.is_empty()
    }

    fn read(item: &HashMap<String, AttributeValue>) -> Paused {
        Paused {
            all: item
                .get(attr::ALL)
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            kinds: item
                .get(attr::KINDS)
                .and_then(|v| v.as_ss().ok())
                .map(|kinds| kinds.iter().cloned().collect())
                .unwrap_or_default(),
            by: item.get(attr::BY).and_then(|v| v.as_s().ok()).cloned(),
            updated_at: item
                .get(attr::UPDATED_AT)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis),
        }
    }
}

impl Ledger {
    /// What is paused now (a consistent read).
    pub async fn paused(&self) -> Result<Paused, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(super::attr::JOB_ID, s(PAUSE_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetItem", &e))?;
        Ok(out.item.as_ref().map(Paused::read).unwrap_or_default())
    }

    /// Pauses `kinds` (and with `all`, every kind), on behalf of `by`: what is paused after.
    pub async fn pause(&self, kinds: &[JobKind], all: bool, by: &str) -> Result<Paused, Error> {
        self.change_pause(kinds, all, by, true).await
    }

    /// Resumes `kinds` (and with `all`, everything: the kinds paused one by one too), on
    /// behalf of `by`: what is still paused after.
    pub async fn resume(&self, kinds: &[JobKind], all: bool, by: &str) -> Result<Paused, Error> {
        self.change_pause(kinds, all, by, false).await
    }

    async fn change_pause(
        &self,
        kinds: &[JobKind],
        all: bool,
        by: &str,
        pause: bool,
    ) -> Result<Paused, Error> {
        let mut set = vec!["#by = :by", "#updated = :now"];
        let mut request = self
            .update(PAUSE_KEY)
            .expression_attribute_names("#by", attr::BY)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":now", ms(Utc::now()))
            .return_values(ReturnValue::AllNew);
        if all {
            set.push("#all = :all");
            request = request
                .expression_attribute_names("#all", attr::ALL)
                .expression_attribute_values(":all", AttributeValue::Bool(pause));
        }
        let mut expression = format!("SET {}", set.join(", "));
        let named: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
        if !all || pause {
            if !named.is_empty() {
                expression.push_str(if pause {
                    " ADD #kinds :kinds"
                } else {
                    " DELETE #kinds :kinds"
                });
                request = request
                    .expression_attribute_names("#kinds", attr::KINDS)
                    .expression_attribute_values(":kinds", AttributeValue::Ss(named));
            }
        } else {
            // Resuming everything: the kinds paused one by one too.
            expression.push_str(" REMOVE #kinds");
            request = request.expression_attribute_names("#kinds", attr::KINDS);
        }
        let out = request
            .update_expression(expression)
            .send()
            .await
            .map_err(|e| classify_sdk_error("UpdateItem", &e))?;
        Ok(out
            .attributes
            .as_ref()
            .map(Paused::read)
            .unwrap_or_default())
    }
}
