//! Following jobs to their outcome: request–response over SNS and SQS.
//!
//! A [`Follower`] makes a queue of its own (`shoal-follow-…`), subscribed to the completion
//! topic with raw delivery and a filter policy on the events' `job_id` attribute: each
//! followed id, and every id starting with `<id>.`, which is how a chain's follow-ups are
//! named. It reads and deletes only its own copies of events, so the events queue and every
//! other subscriber get everything exactly as before.
//!
//! Which events end a follow is the [`Tracker`]'s business: a followed job, and for each
//! success every follow-up its event lists (`follow_ups`), until every one of them has an
//! event. Events arrive at least once and not in order (a quick follow-up can finish before
//! its parent's event is out); duplicates are dropped by job id.
//!
//! Cleanup: [`Follower::close`] unsubscribes and deletes the queue. A follower killed before
//! it could leaves both behind, marked by the queue's name and a `shoal:follower` tag;
//! messages on it expire after its retention (one minute past the follow's timeout) and
//! `shoal-producer stack gc` ([`crate::operate::collect_followers`]) removes such queues, and
//! their subscriptions, once they are older than an hour (or `--older-than`).
//!
//! The window: a follower sees only events published after its subscription took effect
//! (on AWS a new subscription can take a few seconds to receive). With the job ledger
//! ([`Follower::answering_from`]) the window is gone: a job that finished before the
//! subscription, or while it was taking effect, is answered from its record, which the
//! worker wrote before it announced the event. The follower reads the record of every job it
//! still waits for at once, and again every few seconds while it waits. Without a ledger,
//! `follow JOB_ID` for a job submitted earlier first looks in the dead-letter queue, where a
//! failed job waits with its reason; a job that already succeeded left no trace to find, and
//! the follow ends at its timeout (exit 124) saying so.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use shoal_common::aws::AwsClients;
use shoal_common::error::{classify_sdk_error, Error, ErrorClass};
use shoal_common::event::{CloudEvent, JobEvent, JobStatus};
use shoal_common::ledger::Ledger;
use shoal_common::stack;
use shoal_common::JobId;
use tokio::time::Instant;

/// Names of follower queues start with this; `stack gc` looks for it.
pub const QUEUE_PREFIX: &str = "shoal-follow-";
/// The tag marking a follower's queue, holding the topic it is subscribed to.
pub const FOLLOWER_TAG: &str = "shoal:follower";
/// SNS allows 150 values in one filter policy; each followed id takes two.
pub const MAX_FOLLOWED: usize = 75;
/// How often a follower with a ledger reads the records of the jobs it still waits for.
const LEDGER_LOOK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{}", timeout_text(.pending))]
    Timeout { pending: Vec<String> },
    #[error("job_id: {0}")]
    TooMany(String),
    #[error(transparent)]
    Enqueue(#[from] crate::EnqueueError),
    #[error(transparent)]
    Aws(#[from] Error),
}

fn timeout_text(pending: &[String]) -> String {
    format!(
        "timed out waiting for {}: a follower sees only events published after it subscribed, so a job that finished before then leaves nothing to see",
        pending.join(", ")
    )
}

/// Which events a follow still waits for.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    followed: Vec<String>,
    events: HashMap<String, JobEvent>,
}

impl Tracker {
    pub fn new(job_ids: &[JobId]) -> Self {
        Tracker {
            followed: job_ids.iter().map(ToString::to_string).collect(),
            events: HashMap::new(),
        }
    }

    /// Takes an event; true if it is new and belongs to a followed job or its chain.
    pub fn observe(&mut self, event: &JobEvent) -> bool {
        let Some(id) = &event.job_id else {
            return false;
        };
        let ours = self.followed.iter().any(|f| {
            id == f
                || id
                    .strip_prefix(f.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        });
        if !ours || self.events.contains_key(id) {
            return false;
        }
        self.events.insert(id.clone(), event.clone());
        true
    }

    /// Every job the follow waits for: the followed ones, and the follow-ups of each success.
    pub fn expected(&self) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut order = Vec::new();
        let mut stack: Vec<String> = self.followed.iter().rev().cloned().collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(e) = self.events.get(&id) {
                if e.status == JobStatus::Succeeded {
                    stack.extend(e.follow_ups.iter().rev().cloned());
                }
            }
            order.push(id);
        }
        order
    }

    /// The expected jobs without an event yet.
    pub fn pending(&self) -> Vec<String> {
        self.expected()
            .into_iter()
            .filter(|id| !self.events.contains_key(id))
            .collect()
    }

    pub fn done(&self) -> bool {
        self.pending().is_empty()
    }

    /// The expected jobs' events, in chain order.
    pub fn events(&self) -> Vec<&JobEvent> {
        self.expected()
            .iter()
            .filter_map(|id| self.events.get(id))
            .collect()
    }

    /// Whether every expected job has succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.done()
            && self
                .events()
                .iter()
                .all(|e| e.status == JobStatus::Succeeded)
    }
}

/// What a finished follow saw.
#[derive(Debug, Clone)]
pub struct FollowOutcome {
    /// Every job's event, in chain order (a job, then its follow-ups).
    pub events: Vec<JobEvent>,
    pub succeeded: bool,
}

/// A queue of one's own on the completion topic, for the events of some jobs and their
/// chains.
pub struct Follower {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    queue_url: String,
    subscription_arn: String,
    tracker: Tracker,
    closed: bool,
    /// Where finished jobs' outcomes are on record, and when it was last read.
    ledger: Option<(Ledger, Option<Instant>)>,
}

impl Follower {
    /// Subscribes a new queue to `topic_arn` for the events of `job_ids` and their chains.
    /// `timeout` sets how long events may wait on it (a minute more).
    pub async fn start(
        clients: &AwsClients,
        topic_arn: &str,
        job_ids: &[JobId],
        timeout: Duration,
    ) -> Result<Follower, FollowError> {
        if job_ids.len() > MAX_FOLLOWED {
            return Err(FollowError::TooMany(format!(
                "{} jobs followed at once; at most {MAX_FOLLOWED} (one SNS filter policy)",
                job_ids.len()
            )));
        }
        let name = format!("{QUEUE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let retention = (timeout.as_secs() + 60).clamp(60, 14 * 24 * 3600);
        let out = clients
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                retention.to_string(),
            )
            .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
            .tags(FOLLOWER_TAG, topic_arn)
            .send()
            .await
            .map_err(|e| classify_sdk_error("CreateQueue", &e))?;
        let queue_url = out.queue_url.unwrap_or_default();
        let mut follower = Follower {
            sqs: clients.sqs.clone(),
            sns: clients.sns.clone(),
            queue_url,
            subscription_arn: String::new(),
            tracker: Tracker::new(job_ids),
            closed: false,
            ledger: None,
        };
        let subscribed = async {
            let queue_arn = stack::get_queue_arn(clients, &follower.queue_url).await?;
            stack::subscribe_queue(
                clients,
                topic_arn,
                &follower.queue_url,
                &queue_arn,
                Some(&filter_policy(job_ids)),
            )
            .await
        }
        .await;
        match subscribed {
            Ok(arn) => {
                follower.subscription_arn = arn;
                Ok(follower)
            }
            Err(e) => {
                follower.close().await;
                Err(e.into())
            }
        }
    }

    /// Answers jobs that finished before the subscription (or while it took effect) from
    /// their records in `ledger`.
    pub fn answering_from(mut self, ledger: Ledger) -> Self {
        self.ledger = Some((ledger, None));
        self
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The first recorded outcome of a job still waited for that is new to the tracker, if
    /// the ledger is due a look. A ledger that does not answer is looked at again later: the
    /// events still come on the queue.
    async fn look_in_ledger(&mut self) -> Option<JobEvent> {
        let (ledger, last) = self.ledger.as_mut()?;
        if last.is_some_and(|at| at.elapsed() < LEDGER_LOOK_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        let ledger = ledger.clone();
        for id in self.tracker.pending() {
            match ledger.get(&id).await {
                Ok(Some(record)) if record.status.is_finished() => {
                    if let Some(event) = record.outcome {
                        if self.tracker.observe(&event) {
                            // Its follow-ups are waited for now: look for them at once.
                            if let Some((_, last)) = self.ledger.as_mut() {
                                *last = None;
                            }
                            return Some(event);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the job ledger; waiting for events");
                    return None;
                }
            }
        }
        None
    }

    /// Records an event found elsewhere (e.g. a dead-lettered job's), as if it had arrived.
    pub fn observe(&mut self, event: &JobEvent) -> bool {
        self.tracker.observe(event)
    }

    /// The next new event of a followed job or chain; `None` once every expected job has its
    /// event. Fails with [`FollowError::Timeout`] at `deadline`.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<JobEvent>, FollowError> {
        loop {
            if self.tracker.done() {
                return Ok(None);
            }
            if let Some(event) = self.look_in_ledger().await {
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FollowError::Timeout {
                    pending: self.tracker.pending(),
                });
            }
            let longest = match self.ledger {
                Some(_) => LEDGER_LOOK_EVERY,
                None => Duration::from_secs(20),
            };
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(1)
                .wait_time_seconds(left.min(longest).as_secs().clamp(1, 20) as i32)
                .send()
                .await
                .map_err(|e| classify_sdk_error("ReceiveMessage", &e));
            let out = match received {
                Ok(out) => out,
                // The events wait on the queue: a follow outlives a bad minute of SQS.
                Err(e) if e.class == ErrorClass::Transient => {
                    tracing::warn!(error = %e, "cannot receive events yet; trying again");
                    tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for msg in out.messages.unwrap_or_default() {
                // The queue is this follower's own: a copy read is a copy done with.
                // If the delete fails, the copy comes back and is dropped as a repeat.
                if let Some(receipt) = &msg.receipt_handle {
                    if let Err(e) = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                    {
                        tracing::debug!(error = %classify_sdk_error("DeleteMessage", &e), "an event stays on the follower's queue");
                    }
                }
                let body = msg.body.unwrap_or_default();
                match serde_json::from_str::<CloudEvent>(&body).map(|e| e.data) {
                    Ok(event) if self.tracker.observe(&event) => return Ok(Some(event)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "not a completion event; skipped"),
                }
            }
        }
    }

    /// Waits for every expected event, then closes the follower.
    pub async fn outcome(mut self, timeout: Duration) -> Result<FollowOutcome, FollowError> {
        let deadline = Instant::now() + timeout;
        let result = loop {
            match self.next_event(deadline).await {
                Ok(Some(_)) => continue,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let outcome = FollowOutcome {
            events: self.tracker.events().into_iter().cloned().collect(),
            succeeded: self.tracker.all_succeeded(),
        };
        self.close().await;
        result.map(|()| outcome)
    }

    /// Unsubscribes and deletes the queue. Failures are logged: `stack gc` removes leftovers.
    pub async fn close(mut self) {
        self.cleanup().await;
    }

    async fn cleanup(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if !self.subscription_arn.is_empty() {
            if let Err(e) = self
                .sns
                .unsubscribe()
                .subscription_arn(&self.subscription_arn)
                .send()
                .await
            {
                tracing::warn!(error = %classify_sdk_error("Unsubscribe", &e), "cannot unsubscribe a follower; `stack gc` removes it");
            }
        }
        if let Err(e) = self
            .sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
        {
            tracing::warn!(error = %classify_sdk_error("DeleteQueue", &e), "cannot delete a follower's queue; `stack gc` removes it");
        }
    }
}

impl Drop for Follower {
    /// A follower dropped without [`Follower::close`] still cleans up, on the runtime it
    /// lives on.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut leftover = Follower {
                sqs: self.sqs.clone(),
                sns: self.sns.clone(),
                queue_url: std::mem::take(&mut self.queue_url),
                subscription_arn: std::mem::take(&mut self.subscription_arn),
                tracker: Tracker::default(),
                closed: false,
                ledger: None,
            };
            self.closed = true;
            runtime.spawn(async move { leftover.cleanup().await });
        }
    }
}

/// The filter policy for `job_ids` and their chains' follow-ups.
pub fn filter_policy(job_ids: &[JobId]) -> serde_json::Value {
    let values: Vec<serde_json::Value> = job_ids
        .iter()
        .flat_map(|id| {
            [
                serde_json::json!(id.as_str()),
                serde_json::json!({"prefix": format!("{id}.")}),
            ]
        })
        .collect();
    serde_json::json!({ "job_id": values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::event::{EventSource, JobEvent};

    fn event(id: &str, status: JobStatus, follow_ups: &[&str]) -> JobEvent {
        let mut e = JobEvent::new(
            EventSource {
                job_id: Some(id.into()),
                kind: Some("canary".into()),
                chain_id: None,
                parent_job_id: None,
                attempts: 1,
                message_id: "m".into(),
                worker_id: "w".into(),
                submitted_at: None,
                enqueued_at: None,
                first_started_at: None,
                started_at: chrono::Utc::now(),
            },
            status,
            None,
            None,
        );
        e.follow_ups = follow_ups.iter().map(|s| s.to_string()).collect();
        e
    }

    fn ids(ids: &[&str]) -> Vec<JobId> {
        ids.iter().map(|i| JobId::parse(i).expect("id")).collect()
    }

    #[test]
    fn a_chain_is_done_when_every_follow_up_of_every_success_has_its_event() {
        let mut t = Tracker::new(&ids(&["a"]));
        assert_eq!(t.pending(), vec!["a"]);
        // A follow-up can finish before its parent's event is out.
        assert!(t.observe(&event("a.1", JobStatus::Succeeded, &["a.1.1"])));
        assert!(!t.done());
        assert!(t.observe(&event("a", JobStatus::Succeeded, &["a.1", "a.2"])));
        assert_eq!(t.pending(), vec!["a.1.1", "a.2"]);
        assert!(
            !t.observe(&event("a", JobStatus::Succeeded, &["a.1", "a.2"])),
            "a repeat"
        );
        assert!(
            !t.observe(&event("ab", JobStatus::Succeeded, &[])),
            "not this chain"
        );
        t.observe(&event("a.2", JobStatus::Failed, &[]));
        t.observe(&event("a.1.1", JobStatus::Succeeded, &[]));
        assert!(t.done());
        assert!(!t.all_succeeded());
        let order: Vec<_> = t.events().iter().filter_map(|e| e.job_id.clone()).collect();
        assert_eq!(order, vec!["a", "a.1", "a.1.1", "a.2"]);
    }

    #[test]
    fn a_failure_ends_its_branch() {
        let mut t = Tracker::new(&ids(&["a", "b"]));
        t.observe(&event("a", JobStatus::Failed, &[]));
        assert_eq!(t.pending(), vec!["b"]);
        t.observe(&event("b", JobStatus::Succeeded, &[]));
        assert!(t.done() && !t.all_succeeded());
    }

    #[test]
    fn the_filter_takes_each_id_and_its_follow_ups() {
        assert_eq!(
            filter_policy(&ids(&["a"])),
            serde_json::json!({"job_id": ["a", {"prefix": "a."}]})
        );
    }
}
