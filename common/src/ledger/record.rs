//! Reading a record from its item.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::{attr, Record, Status};
use crate::error::{Error, ErrorClass};

/// A record from its item. Whatever the table holds was written by a worker, but a record is
/// still read defensively: an attribute that does not parse is absent, never a panic.
pub(super) fn read_record(item: &HashMap<String, AttributeValue>) -> Result<Record, Error> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let instant = |name: &str| {
        number(name)
            .filter(|ms| *ms > 0)
            .and_then(DateTime::<Utc>::from_timestamp_millis)
    };
    let Some(job_id) = text(attr::JOB_ID) else {
        return Err(Error {
            class: ErrorClass::Permanent,
            code: None,
            operation: Some("GetItem"),
            message: "a ledger record without a job id".into(),
        });
    };
    Ok(Record {
        status: text(attr::STATUS)
            .as_deref()
            .and_then(Status::parse)
            .unwrap_or(Status::Open),
        kind: text(attr::KIND),
        chain_id: text(attr::CHAIN_ID),
        parent_job_id: text(attr::PARENT_JOB_ID),
        holder: text(attr::HOLDER),
        lease_until: instant(attr::LEASE_UNTIL),
        fence: number(attr::FENCE)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        attempt: number(attr::ATTEMPT)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        progress: text(attr::PROGRESS)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        outcome: text(attr::OUTCOME).and_then(|o| serde_json::from_str(&o).ok()),
        digest: text(attr::DIGEST),
        envelope: text(attr::ENVELOPE).and_then(|e| serde_json::from_str(&e).ok()),
        first_started_at: instant(attr::FIRST_STARTED_AT),
        updated_at: instant(attr::UPDATED_AT),
        finished_at: instant(attr::FINISHED_AT),
        expires_at: number(attr::EXPIRES_AT).and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)),
        run: number(attr::RUN)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1),
        cancel_requested: text(attr::CANCEL_REQUESTED),
        earlier_failures: text(attr::EARLIER_FAILURES)
            .and_then(|f| serde_json::from_str(&f).ok())
            .unwrap_or_default(),
        job_id,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{n, s};
    use super::*;

    #[test]
    fn a_record_is_read_defensively() {
        let mut item = HashMap::from([
            (attr::JOB_ID.to_owned(), s("job-1")),
            (attr::STATUS.to_owned(), s("succeeded")),
            (attr::FENCE.to_owned(), n(3)),
            (attr::ATTEMPT.to_owned(), AttributeValue::N("-1".into())),
            (attr::PROGRESS.to_owned(), s("{not json")),
            (attr::LEASE_UNTIL.to_owned(), n(0)),
        ]);
        let record = read_record(&item).expect("a record");
        assert_eq!(record.status, Status::Succeeded);
        assert_eq!(record.fence, 3);
        assert_eq!(record.attempt, 0, "a count out of range reads as none");
        assert!(record.progress.is_empty(), "unreadable progress is none");
        assert_eq!(record.lease_until, None, "a lease given back");
        item.remove(attr::JOB_ID);
        assert!(read_record(&item).is_err());
        assert_eq!(Status::parse("bogus"), None);
    }
}
