//! Looking records up through the table's indexes: a chain's every step
//! ([`BY_CHAIN_INDEX`]: chain id, then job id) and recent records of one status
//! ([`BY_STATUS_INDEX`]: status, then last update). Both are queries, never scans: their cost
//! is what they return, not the table's size.
//!
//! Indexes are eventually consistent (DynamoDB copies to them within a second or so), so a
//! step written a moment ago may be missing from a chain's list; the job's own record, read
//! with [`Ledger::get`], is consistent.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::record::read_record;
use super::{attr, n, s, Ledger, Record, Status, BY_CHAIN_INDEX, BY_STATUS_INDEX};
use crate::error::{classify_sdk_error, Error};

/// Most records one `job` or `jobs` answer lists: a bound on what a lookup may cost.
pub const MAX_LISTED: usize = 1000;

impl Ledger {
    /// Every step of chain `chain_id` on record (its first job included), in job-id order; at
    /// most [`MAX_LISTED`].
    pub async fn chain(&self, chain_id: &str) -> Result<Vec<Record>, Error> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_CHAIN_INDEX)
            .key_condition_expression("#chain = :chain")
            .expression_attribute_names("#chain", attr::CHAIN_ID)
            .expression_attribute_values(":chain", s(chain_id));
        self.pages(query, MAX_LISTED).await
    }

    /// Records of `status` last written at or after `since`, newest first; at most `limit`
    /// (and [`MAX_LISTED`]).
    pub async fn recent(
        &self,
        status: Status,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_STATUS_INDEX)
            .key_condition_expression("#status = :status AND #updated >= :since")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":since", n(since.timestamp_millis().max(0) as u64))
            .scan_index_forward(false);
        self.pages(query, limit.min(MAX_LISTED)).await
    }

    /// The records `query` finds, page after page, until `limit` of them or the last page;
    /// records past their expiry left out.
    async fn pages(&self, query: QueryFluentBuilder, limit: usize) -> Result<Vec<Record>, Error> {
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        while records.len() < limit {
            let out = query
                .clone()
                .limit((limit - records.len()).min(i32::MAX as usize) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify_sdk_error("Query", &e))?;
            for item in out.items.unwrap_or_default() {
                records.push(read_record(&item)?);
            }
            start = out.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                break;
            }
        }
        let now = Utc::now();
        records.retain(|r| r.expires_at.is_none_or(|at| at > now));
        records.truncate(limit);
        Ok(records)
    }
}
