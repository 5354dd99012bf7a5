//! `shoal-producer stack gc`: what killed followers left behind (see [`crate::follow`]):
//! their queues, found by name, and the topic's subscriptions to queues that are gone.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use shoal_common::aws::AwsClients;
use shoal_common::error::{classify_sdk_error, Error};

use crate::follow::QUEUE_PREFIX;

/// What `stack gc` removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Collected {
    pub queues: Vec<String>,
    pub subscriptions: Vec<String>,
}

/// Removes follower queues older than `older_than` (by their creation time) and every
/// subscription of `topic_arn` that delivers to a follower queue that no longer exists.
pub async fn collect_followers(
    clients: &AwsClients,
    topic_arn: Option<&str>,
    older_than: Duration,
) -> Result<Collected, Error> {
    let mut collected = Collected::default();
    let now = chrono::Utc::now().timestamp();
    let mut live = HashSet::new();
    let mut next_token = None;
    loop {
        let out = clients
            .sqs
            .list_queues()
            .queue_name_prefix(QUEUE_PREFIX)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ListQueues", &e))?;
        for url in out.queue_urls.unwrap_or_default() {
            let attrs = clients
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::CreatedTimestamp)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| classify_sdk_error("GetQueueAttributes", &e))?
                .attributes
                .unwrap_or_default();
            let created: i64 = attrs
                .get(&QueueAttributeName::CreatedTimestamp)
                .and_then(|t| t.parse().ok())
                .unwrap_or(now);
            let arn = attrs
                .get(&QueueAttributeName::QueueArn)
                .cloned()
                .unwrap_or_default();
            if now - created >= older_than.as_secs() as i64 {
                clients
                    .sqs
                    .delete_queue()
                    .queue_url(&url)
                    .send()
                    .await
                    .map_err(|e| classify_sdk_error("DeleteQueue", &e))?;
                collected.queues.push(url);
            } else {
                live.insert(arn);
            }
        }
        next_token = out.next_token;
        if next_token.is_none() {
            break;
        }
    }
    let Some(topic_arn) = topic_arn else {
        return Ok(collected);
    };
    let mut next_token = None;
    loop {
        let out = clients
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ListSubscriptionsByTopic", &e))?;
        for sub in out.subscriptions.unwrap_or_default() {
            let endpoint = sub.endpoint().unwrap_or_default();
            let follower = endpoint
                .rsplit(':')
                .next()
                .is_some_and(|name| name.starts_with(QUEUE_PREFIX));
            if follower && !live.contains(endpoint) {
                if let Some(arn) = sub.subscription_arn() {
                    clients
                        .sns
                        .unsubscribe()
                        .subscription_arn(arn)
                        .send()
                        .await
                        .map_err(|e| classify_sdk_error("Unsubscribe", &e))?;
                    collected.subscriptions.push(arn.to_owned());
                }
            }
        }
        next_token = out.next_token;
        if next_token.is_none() {
            break;
        }
    }
    Ok(collected)
}
