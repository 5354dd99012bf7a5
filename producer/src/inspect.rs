//! Looking at queues without working them: [`peek`] shows what is queued without consuming
//! it, and [`EventReader`] reads completion events off an events queue, deleting each only
//! once the caller has handled it.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client as SqsClient;
use serde::Serialize;
use shoal_common::error::{classify_sdk_error, Error};

/// A queued message as `peek` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Peeked {
    pub message_id: String,
    /// The `kind` and `schema` message attributes, as the sender set them.
    pub kind: String,
    pub schema: String,
    /// Receives so far (SQS's `ApproximateReceiveCount`), this look included.
    pub receive_count: String,
    /// The body: parsed when it is JSON, as text otherwise.
    pub body: serde_json::Value,
    /// The body exactly as sent.
    #[serde(skip)]
    pub text: String,
}

/// Up to `max` messages of the queue at `url`, received with a visibility timeout of 0 so
/// nothing is hidden from workers; each look still counts as a receive.
pub async fn peek(sqs: &SqsClient, url: &str, max: usize) -> Result<Vec<Peeked>, Error> {
    let mut seen = HashSet::new();
    let mut peeked = Vec::new();
    // SQS samples a subset of its servers per receive, so look a few times.
    for _ in 0..5 {
        if peeked.len() >= max {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((max - peeked.len()).min(10) as i32)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ReceiveMessage", &e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for msg in messages {
            let message_id = msg.message_id.clone().unwrap_or_default();
            if seen.insert(message_id.clone()) {
                peeked.push(Peeked {
                    kind: string_attribute(&msg, "kind"),
                    schema: string_attribute(&msg, "schema"),
                    receive_count: msg
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .cloned()
                        .unwrap_or_default(),
                    body: json_or_text(msg.body.clone().unwrap_or_default()),
                    text: msg.body.unwrap_or_default(),
                    message_id,
                });
            }
        }
    }
    Ok(peeked)
}

fn string_attribute(msg: &Message, name: &str) -> String {
    msg.message_attributes
        .as_ref()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value.clone())
        .unwrap_or_default()
}

fn json_or_text(body: String) -> serde_json::Value {
    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
}

/// One completion event off the events queue.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub event: serde_json::Value,
    /// Events are delivered at least once: this job id was seen before in this reader.
    pub repeat: bool,
    receipt: Option<String>,
}

impl ReadEvent {
    pub fn job_id(&self) -> &str {
        self.data()["job_id"].as_str().unwrap_or("-")
    }

    /// What happened: the CloudEvent's `data` (an event from before CloudEvents is its own).
    pub fn data(&self) -> &serde_json::Value {
        match self.event.get("specversion") {
            Some(_) => self.event.get("data").unwrap_or(&serde_json::Value::Null),
            None => &self.event,
        }
    }
}

/// Reads completion events from a queue subscribed to the completion topic.
pub struct EventReader<'a> {
    sqs: &'a SqsClient,
    url: &'a str,
    seen: HashSet<String>,
}

impl<'a> EventReader<'a> {
    pub fn new(sqs: &'a SqsClient, url: &'a str) -> Self {
        EventReader {
            sqs,
            url,
            seen: HashSet::new(),
        }
    }

    /// The events that arrive within `wait` (long polling, at most 20 s), up to `max` (at
    /// most ten): a reader that wants three receives no more, so none is taken from the
    /// queue that it will not print.
    pub async fn receive(&mut self, wait: Duration, max: usize) -> Result<Vec<ReadEvent>, Error> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().clamp(1, 20) as i32)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ReceiveMessage", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|msg| {
                let mut read = ReadEvent {
                    repeat: false,
                    event: json_or_text(msg.body.unwrap_or_default()),
                    receipt: msg.receipt_handle,
                };
                read.repeat = !self.seen.insert(read.job_id().to_owned());
                read
            })
            .collect())
    }

    /// Deletes a handled event from the queue.
    pub async fn ack(&self, event: &ReadEvent) -> Result<(), Error> {
        if let Some(receipt) = &event.receipt {
            self.sqs
                .delete_message()
                .queue_url(self.url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| classify_sdk_error("DeleteMessage", &e))?;
        }
        Ok(())
    }
}
