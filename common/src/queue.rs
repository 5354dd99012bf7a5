//! What a job queue says about itself: its redrive policy (which dead-letter queue, after how
//! many receives) and how many messages it holds in each state.
//!
//! The worker reads the redrive policy at start-up and samples the depth for its gauges; the
//! operator commands (`shoal-producer status`, `dlq …`) read all of it. One module, so the two
//! cannot come to disagree about what a queue's attributes mean.

use std::collections::HashMap;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use serde::Serialize;

use crate::error::{classify_sdk_error, Error, ErrorClass};
use crate::job::SCHEMA_VERSION;
use crate::JobKind;

/// The attributes every job message carries, whoever sends it (a producer, or a worker
/// enqueueing a chain's follow-up): `kind` and `schema`, then the W3C trace context of the
/// enqueue when it is traced (4 of the 10 SQS allows). As (name, SQS data type, value).
pub fn job_attributes(
    kind: JobKind,
    trace: &[(&'static str, String)],
) -> Vec<(&'static str, &'static str, String)> {
    let mut attributes = vec![
        ("kind", "String", kind.as_str().to_owned()),
        ("schema", "Number", SCHEMA_VERSION.to_string()),
    ];
    attributes.extend(
        trace
            .iter()
            .map(|(name, value)| (*name, "String", value.clone())),
    );
    attributes
}

/// One message attribute as the SDK takes it.
pub fn attribute_value(data_type: &str, value: impl Into<String>) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        // The builder refuses only a missing data type, and one is always given.
        .unwrap_or_else(|e| unreachable!("data type is always set: {e}"))
}

/// The sender's own attributes of a received message: all but Shoal's `shoal-…` ones, which
/// a dead-lettered or redriven copy must not take along (they describe the old copy).
pub fn senders_attributes(
    attributes: &HashMap<String, MessageAttributeValue>,
) -> impl Iterator<Item = (&String, &MessageAttributeValue)> {
    attributes
        .iter()
        .filter(|(name, _)| !name.starts_with(dead_letter_attribute::PREFIX))
}

/// Message attributes a worker adds to a job it moves to the dead-letter queue: the
/// contract between the worker that writes them and the operator commands that read them.
/// All start with `shoal-`, so a redrive can strip them and keep the sender's own.
pub mod dead_letter_attribute {
    pub const PREFIX: &str = "shoal-";
    /// `transient` or `permanent`.
    pub const CLASS: &str = "shoal-error-class";
    /// The AWS or Shoal error code (`InvalidAMIID.NotFound`, `AttemptsExhausted`), or `none`.
    pub const CODE: &str = "shoal-error-code";
    pub const MESSAGE: &str = "shoal-error";
    /// Deliveries of the job before it was dead-lettered.
    pub const ATTEMPTS: &str = "shoal-attempts";
    /// RFC 3339.
    pub const FAILED_AT: &str = "shoal-failed-at";
    /// The message id the job had on the job queue.
    pub const SOURCE_MESSAGE_ID: &str = "shoal-source-message-id";
}

/// The message attribute in which a worker's re-sent copy of a job carries its state to the
/// next delivery (failed runs so far, the handler's progress, an outcome to announce). It
/// starts with `shoal-` like the dead-letter attributes, so dead-lettering and redrive drop it.
pub const CARRIED_STATE: &str = "shoal-state";

/// A queue's redrive policy: where SQS moves a message after too many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

impl RedrivePolicy {
    /// Reads the `RedrivePolicy` attribute. SQS writes `maxReceiveCount` as a number, but
    /// CloudFormation and older tools store it as a string; both mean the same.
    pub fn parse(attribute: &str) -> Option<RedrivePolicy> {
        let v: serde_json::Value = serde_json::from_str(attribute).ok()?;
        let max_receive_count = match v.get("maxReceiveCount")? {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }?;
        Some(RedrivePolicy {
            dead_letter_target_arn: v.get("deadLetterTargetArn")?.as_str()?.to_owned(),
            max_receive_count,
        })
    }
}

/// The parts of `arn:aws:sqs:REGION:ACCOUNT:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueArn<'a> {
    pub account: &'a str,
    pub name: &'a str,
}

impl<'a> QueueArn<'a> {
    pub fn parse(arn: &'a str) -> Option<QueueArn<'a>> {
        let mut parts = arn.split(':');
        let (Some("arn"), Some(_partition), Some("sqs"), Some(_region), Some(account), Some(name)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (!account.is_empty() && !name.is_empty() && parts.next().is_none())
            .then_some(QueueArn { account, name })
    }
}

/// A queue's URL from its ARN, through `GetQueueUrl` (the URL's host is the SDK's business;
/// building it by hand would break on emulators and in other partitions).
pub async fn url_from_arn(sqs: &aws_sdk_sqs::Client, arn: &str) -> Result<String, Error> {
    let Some(parsed) = QueueArn::parse(arn) else {
        return Err(Error {
            operation: Some("GetQueueUrl"),
            class: ErrorClass::Permanent,
            code: None,
            message: format!("`{arn}` is not an SQS queue ARN"),
        });
    };
    let out = sqs
        .get_queue_url()
        .queue_name(parsed.name)
        .queue_owner_aws_account_id(parsed.account)
        .send()
        .await
        .map_err(|e| classify_sdk_error("GetQueueUrl", &e))?;
    Ok(out.queue_url.unwrap_or_default())
}

/// The last path segment of a queue URL: its name.
pub fn name_from_url(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// What `GetQueueAttributes` says of a queue, the parts Shoal reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueAttributes {
    pub arn: String,
    /// Messages ready to be received.
    pub visible: u64,
    /// Received and not yet deleted or released: jobs running, or waiting on EC2.
    pub in_flight: u64,
    /// Sent with a delay that has not passed yet (also jobs checking EC2 later by re-sending).
    pub delayed: u64,
    pub visibility_timeout_secs: Option<u32>,
    #[serde(skip)]
    pub redrive_policy: Option<RedrivePolicy>,
}

impl QueueAttributes {
    pub async fn fetch(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Self, Error> {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?
            .attributes
            .unwrap_or_default();
        let number = |name: QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueAttributes {
            arn: attrs
                .get(&QueueAttributeName::QueueArn)
                .cloned()
                .unwrap_or_default(),
            visible: number(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: number(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            visibility_timeout_secs: attrs
                .get(&QueueAttributeName::VisibilityTimeout)
                .and_then(|v| v.parse().ok()),
            redrive_policy: attrs
                .get(&QueueAttributeName::RedrivePolicy)
                .and_then(|p| RedrivePolicy::parse(p)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_read_numbers_and_strings() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:jobs-dlq";
        let expected = Some(RedrivePolicy {
            dead_letter_target_arn: arn.into(),
            max_receive_count: 5,
        });
        assert_eq!(
            RedrivePolicy::parse(&format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":5}}"#
            )),
            expected
        );
        assert_eq!(
            RedrivePolicy::parse(&format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#
            )),
            expected
        );
        assert_eq!(RedrivePolicy::parse(r#"{"maxReceiveCount":5}"#), None);
        assert_eq!(RedrivePolicy::parse("not json"), None);
    }

    #[test]
    fn queue_arns_split_into_account_and_name() {
        assert_eq!(
            QueueArn::parse("arn:aws:sqs:eu-west-1:000000000000:jobs.fifo"),
            Some(QueueArn {
                account: "000000000000",
                name: "jobs.fifo"
            })
        );
        assert_eq!(QueueArn::parse("arn:aws:sns:eu-west-1:0:topic"), None);
        assert_eq!(QueueArn::parse("arn:aws:sqs:eu-west-1:0"), None);
        assert_eq!(
            name_from_url("https://sqs.us-east-1.amazonaws.com/123/shoal-jobs"),
            "shoal-jobs"
        );
    }
}
