//! Creating the queues, topic and table Shoal runs on: the job queue and its dead-letter
//! queue (redrive policy), the SNS completion topic, an events queue subscribed to that topic
//! with raw delivery and a policy that admits only the topic, and the job ledger's DynamoDB
//! table.
//!
//! This is the one provisioning definition that the local emulator stack, every test and
//! `shoal-producer stack create` use. It is written against the SDK rather than as a
//! CloudFormation template because the emulator's CloudFormation creates no standalone
//! subscriptions and cannot set raw delivery. Every call is idempotent: provisioning an
//! existing stack returns its addresses.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::aws::AwsClients;
use crate::error::{classify_sdk_error, Error};

/// What to create.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Prefix of every resource name: `<prefix>-jobs`, `<prefix>-jobs-dlq`, `<prefix>-events`.
    pub prefix: String,
    /// A FIFO job queue (and DLQ), for jobs that must run in order within a group.
    pub fifo: bool,
    /// Receives before SQS moves a message to the DLQ; the worker's attempt limit.
    pub max_receive_count: u32,
    /// The job queue's default visibility timeout, in seconds.
    pub visibility_timeout_secs: u32,
    /// Make the job ledger's table, `<prefix>-ledger`. Off only where no DynamoDB is
    /// reachable (an SQS-only emulator).
    pub ledger: bool,
}

impl StackSpec {
    pub fn new(prefix: impl Into<String>) -> Self {
        StackSpec {
            prefix: prefix.into(),
            fifo: false,
            max_receive_count: 5,
            visibility_timeout_secs: 60,
            ledger: true,
        }
    }
}

/// The addresses of a provisioned stack.
#[derive(Debug, Clone, Serialize)]
pub struct Stack {
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
    pub topic_arn: String,
    pub events_queue_url: String,
    pub events_queue_arn: String,
    /// The job ledger's table, when the stack has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_table: Option<String>,
}

impl Stack {
    /// The stack as the environment variables Shoal's binaries read.
    pub fn env_vars(&self) -> Vec<(&'static str, &str)> {
        let mut vars = vec![
            ("SHOAL_QUEUE_URL", self.queue_url.as_str()),
            ("SHOAL_DLQ_URL", &self.dlq_url),
            ("SHOAL_TOPIC_ARN", &self.topic_arn),
            ("SHOAL_EVENTS_QUEUE_URL", &self.events_queue_url),
        ];
        if let Some(table) = &self.ledger_table {
            vars.push(("SHOAL_LEDGER_TABLE", table));
        }
        vars
    }
}

/// SQS's longest retention: a dead-lettered job should wait as long as possible for a human.
const DLQ_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

pub async fn provision(clients: &AwsClients, spec: &StackSpec) -> Result<Stack, Error> {
    let suffix = if spec.fifo { ".fifo" } else { "" };
    let fifo_attrs = |attrs: &mut HashMap<QueueAttributeName, String>| {
        if spec.fifo {
            attrs.insert(QueueAttributeName::FifoQueue, "true".into());
        }
    };

    let mut dlq_attrs = HashMap::from([
        (
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        ),
        (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
    ]);
    fifo_attrs(&mut dlq_attrs);
    let dlq_url = create_queue(
        clients,
        &format!("{}-jobs-dlq{suffix}", spec.prefix),
        dlq_attrs,
    )
    .await?;
    let dlq_arn = get_queue_arn(clients, &dlq_url).await?;

    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": spec.max_receive_count,
    });
    let mut job_attrs = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            spec.visibility_timeout_secs.to_string(),
        ),
        (
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            "20".into(),
        ),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
    ]);
    fifo_attrs(&mut job_attrs);
    let queue_url =
        create_queue(clients, &format!("{}-jobs{suffix}", spec.prefix), job_attrs).await?;
    let queue_arn = get_queue_arn(clients, &queue_url).await?;

    let topic_arn = clients
        .sns
        .create_topic()
        .name(format!("{}-events", spec.prefix))
        .send()
        .await
        .map_err(|e| classify_sdk_error("CreateTopic", &e))?
        .topic_arn
        .unwrap_or_default();

    let events_queue_url = create_queue(
        clients,
        &format!("{}-events", spec.prefix),
        HashMap::from([(QueueAttributeName::SqsManagedSseEnabled, "true".to_owned())]),
    )
    .await?;
    let events_queue_arn = get_queue_arn(clients, &events_queue_url).await?;
    subscribe_queue(
        clients,
        &topic_arn,
        &events_queue_url,
        &events_queue_arn,
        None,
    )
    .await?;

    let ledger_table = if spec.ledger {
        let table = format!("{}-ledger", spec.prefix);
        crate::ledger::Ledger::create_table(&clients.dynamodb, &table).await?;
        Some(table)
    } else {
        None
    };

    Ok(Stack {
        ledger_table,
        queue_url,
        queue_arn,
        dlq_url,
        dlq_arn,
        topic_arn,
        events_queue_url,
        events_queue_arn,
    })
}

/// Subscribes a queue to the topic with raw delivery, after giving it a policy that admits
/// only that topic; `filter_policy` (on message attributes) narrows what it gets. Returns the
/// subscription's ARN.
pub async fn subscribe_queue(
    clients: &AwsClients,
    topic_arn: &str,
    queue_url: &str,
    queue_arn: &str,
    filter_policy: Option<&serde_json::Value>,
) -> Result<String, Error> {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "OnlyTheShoalTopic",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }],
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| classify_sdk_error("SetQueueAttributes", &e))?;
    let mut subscribe = clients
        .sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .return_subscription_arn(true);
    if let Some(filter) = filter_policy {
        // Set at creation, so the subscription never delivers unfiltered.
        subscribe = subscribe.attributes("FilterPolicy", filter.to_string());
    }
    let out = subscribe
        .send()
        .await
        .map_err(|e| classify_sdk_error("Subscribe", &e))?;
    Ok(out.subscription_arn.unwrap_or_default())
}

/// Creates (or finds) a queue by name.
pub async fn create_queue(
    clients: &AwsClients,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, Error> {
    let out = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| classify_sdk_error("CreateQueue", &e))?;
    Ok(out.queue_url.unwrap_or_default())
}

/// A queue's ARN.
pub async fn get_queue_arn(clients: &AwsClients, url: &str) -> Result<String, Error> {
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?;
    Ok(out
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default())
}
