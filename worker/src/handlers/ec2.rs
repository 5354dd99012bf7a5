//! What the EC2 handlers share: the job-id tag, the idempotency token, dry runs, the wait
//! schedule and finding volumes by name. Their settings are in `settings.rs`, how calls are paced and sent in
//! `limiter.rs`, the rules for an eventually consistent API in `consistency.rs`, and how
//! EC2's errors are read in [`crate::ec2_errors`].
//!
//! Every EC2 effect is keyed on the job id twice over: a `shoal:job-id` tag on everything
//! created, looked up before creating, and a `ClientToken` where the API takes one. SQS
//! delivers at least once and workers die mid-job; a redelivered job finds its resources and
//! creates nothing new.

use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag as Ec2Tag, TagSpecification, Volume};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use shoal_common::error::ShoalCode;
use shoal_common::job::Tag;
use shoal_common::validate::JOB_ID_TAG;
use shoal_common::JobId;

use super::limiter::Ec2Limiter;
use super::settings::Ec2Settings;
use crate::ec2_errors::{ec2_error, error_code};
use crate::handler::{JobError, Outcome};

/// A dry run's answer: AWS says `DryRunOperation` when the call would have succeeded.
pub fn dry_run_outcome<T, E>(
    operation: &'static str,
    result: Result<T, SdkError<E>>,
) -> Result<Outcome, JobError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Err(e) if error_code(&e) == Some("DryRunOperation") => {
            Ok(Outcome::Done(serde_json::json!({
                "dry_run": true,
                "operation": operation,
                "would_succeed": true,
            })))
        }
        Err(e) => Err(ec2_error(operation, e)),
        Ok(_) => Err(JobError::shoal(
            ShoalCode::DryRunIgnored,
            format!("{operation} ran although DryRun was set; nothing else is done"),
        )),
    }
}

/// The user's tags plus the job-id tag.
pub fn tags_with_job_id(tags: &[Tag], job_id: &JobId) -> Vec<Ec2Tag> {
    tags.iter()
        .map(|t| Ec2Tag::builder().key(&t.key).value(&t.value).build())
        .chain(std::iter::once(
            Ec2Tag::builder()
                .key(JOB_ID_TAG)
                .value(job_id.as_str())
                .build(),
        ))
        .collect()
}

pub fn tag_spec(resource: ResourceType, tags: &[Ec2Tag]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags.to_vec()))
        .build()
}

/// `tag:shoal:job-id = <job id>`: what finds a job's resources on redelivery.
pub fn job_id_filter(job_id: &JobId) -> Filter {
    filter(&format!("tag:{JOB_ID_TAG}"), job_id.as_str())
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Whether `tags` carry a `shoal:job-id` at all: what Shoal made, and all that the kinds
/// that destroy touch unless the worker allows more.
pub fn made_by_shoal(tags: &[Ec2Tag]) -> bool {
    tags.iter().any(|t| t.key() == Some(JOB_ID_TAG))
}

/// The instances `ids` as EC2 lists them, for a kind that ends or unprotects them (`what` it
/// does, for the reason): each must be listed (`InvalidInstanceID.NotFound` otherwise, which a
/// follow-up reads as "not yet" for a window) and, unless the worker is told
/// `--allow-destroying-untagged`, carry `shoal:job-id` (`NotAllowed` otherwise, before any
/// call that changes something). IAM holds the same line on its own (an
/// `aws:ResourceTag/shoal:job-id` condition).
pub async fn shoals_instances(
    limiter: &Ec2Limiter,
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
    what: &str,
) -> Result<Vec<aws_sdk_ec2::types::Instance>, JobError> {
    let described = limiter
        .call(
            "DescribeInstances",
            ec2.describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send(),
        )
        .await?;
    let instances: Vec<aws_sdk_ec2::types::Instance> = described
        .reservations
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.instances.unwrap_or_default())
        .collect();
    let find = |id: &str| instances.iter().find(|i| i.instance_id() == Some(id));
    if let Some(missing) = ids.iter().find(|id| find(id).is_none()) {
        return Err(JobError::permanent(
            "InvalidInstanceID.NotFound",
            format!("{missing} is not listed by EC2"),
        ));
    }
    if !limiter.settings().allow_destroying_untagged {
        let untagged: Vec<&str> = ids
            .iter()
            .filter(|id| find(id).is_some_and(|i| !made_by_shoal(i.tags())))
            .map(String::as_str)
            .collect();
        if !untagged.is_empty() {
            return Err(JobError::shoal(
                shoal_common::error::ShoalCode::NotAllowed,
                format!(
                    "params.instance_ids: {} not launched by Shoal (no `{JOB_ID_TAG}` tag); this worker {what} only what Shoal launched (--allow-destroying-untagged)",
                    untagged.join(", ")
                ),
            ));
        }
    }
    Ok(instances)
}

pub fn has_job_id(tags: &[Ec2Tag], job_id: &JobId) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(JOB_ID_TAG) && t.value() == Some(job_id.as_str()))
}

/// A `ClientToken` (at most 64 ASCII characters) that is the same for every delivery of a
/// job: the job id itself when it fits, otherwise a stable hash of it.
/// The volumes carrying the `Name` tag `name`, every page of them: how the kinds that take
/// `volume_name` find what it names.
pub async fn volumes_named(
    limiter: &Ec2Limiter,
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> Result<Vec<Volume>, JobError> {
    let pages = limiter
        .pages(
            "DescribeVolumes",
            |token| {
                ec2.describe_volumes()
                    .filters(filter("tag:Name", name))
                    .set_next_token(token)
                    .send()
            },
            |page| page.next_token(),
        )
        .await?;
    Ok(pages
        .into_iter()
        .flat_map(|p| p.volumes.unwrap_or_default())
        .collect())
}

pub fn client_token(job_id: &JobId) -> String {
    let id = job_id.as_str();
    if id.len() <= 58 {
        return format!("shoal-{id}");
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    // A job id is ASCII, so 41 bytes are 41 characters; `get` keeps that from being a panic.
    format!("shoal-{}-{hash:016x}", id.get(..41).unwrap_or(id))
}

/// When to look again at an operation that started at `started`: a quarter of the time it
/// has taken so far, within the configured bounds, so short operations are checked often and
/// long ones rarely, with no state but the resource's own start time. Past the deadline the
/// job fails.
pub fn next_check(
    settings: &Ec2Settings,
    what: &str,
    started: Option<DateTime<Utc>>,
) -> Result<Outcome, JobError> {
    next_check_at(settings, what, started, Utc::now())
}

/// [`next_check`] as seen at `now`: the schedule is a pure function of the two instants.
fn next_check_at(
    settings: &Ec2Settings,
    what: &str,
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Outcome, JobError> {
    let elapsed = started
        .map(|s| (now - s).to_std().unwrap_or_default())
        .unwrap_or_default();
    if elapsed > settings.wait_deadline {
        return Err(JobError::shoal(
            ShoalCode::WaitDeadlineExceeded,
            format!(
                "{what} is still not done after {}s, past the {}s wait deadline",
                elapsed.as_secs(),
                settings.wait_deadline.as_secs()
            ),
        ));
    }
    let delay = (elapsed / 4).clamp(settings.wait_check_min, settings.wait_check_max);
    Ok(Outcome::CheckAgainAfter(delay))
}

pub fn to_chrono(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
}

pub fn rfc3339(t: Option<&aws_smithy_types::DateTime>) -> Option<String> {
    to_chrono(t).map(|t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn client_tokens_are_stable_and_fit() {
        let short = JobId::parse("job-1").expect("id");
        assert_eq!(client_token(&short), "shoal-job-1");
        let long = JobId::parse(&"x".repeat(128)).expect("id");
        let token = client_token(&long);
        assert!(token.len() <= 64, "{}", token.len());
        assert_eq!(token, client_token(&long));
        let other = JobId::parse(&format!("{}y", "x".repeat(127))).expect("id");
        assert_ne!(token, client_token(&other));
    }

    #[test]
    fn checks_grow_with_the_wait_and_stop_at_the_deadline() {
        let s = Ec2Settings::default();
        let now = Utc::now();
        let at =
            |secs: i64| next_check_at(&s, "x", Some(now - chrono::Duration::seconds(secs)), now);
        assert_eq!(at(0), Ok(Outcome::CheckAgainAfter(s.wait_check_min)));
        assert_eq!(
            at(400),
            Ok(Outcome::CheckAgainAfter(Duration::from_secs(100)))
        );
        assert_eq!(at(5 * 3600), Ok(Outcome::CheckAgainAfter(s.wait_check_max)));
        assert!(
            matches!(at(7 * 3600), Err(e) if e.code.as_deref() == Some("WaitDeadlineExceeded"))
        );
    }
}
