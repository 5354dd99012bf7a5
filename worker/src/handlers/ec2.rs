//! What the EC2 handlers share: one way to call EC2 (paced, sent, classified), the job-id
//! tag, the idempotency token, the wait schedule, and the rules for an eventually
//! consistent API.
//!
//! Every EC2 effect is keyed on the job id twice over: a `shoal:job-id` tag on everything
//! created, looked up before creating, and a `ClientToken` where the API takes one. SQS
//! delivers at least once and workers die mid-job; a redelivered job finds its resources and
//! creates nothing new.
//!
//! EC2 is eventually consistent: for a while after a create, `Describe*` may not list the
//! new resource and calls naming it may answer `…NotFound`. So no create is repeated unless
//! a client token makes it idempotent or Shoal has proof that the first did not happen:
//! - a handler records the ids it creates in the job's [`Progress`], which travels with the
//!   message, and the next run asks for those ids directly; `…NotFound` for an id Shoal
//!   created is "not yet" for [`Ec2Settings::consistency_window`] ([`on_own_resource`]);
//! - a lookup by tag that finds nothing proves nothing while an earlier run of the job may
//!   have created something less than a window ago ([`look_until_settled`]): every earlier
//!   run's calls happened before this delivery was received, so a window after that, an
//!   empty answer is proof;
//! - a handler checks its lease before a create ([`ensure_lease`]): a worker that lost its
//!   message to another creates nothing more.
//!
//! [`Progress`]: crate::handler::Progress

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag as Ec2Tag, TagSpecification};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use shoal_common::error::{classify_sdk_error, ShoalCode};
use shoal_common::job::Tag;
use shoal_common::validate::JOB_ID_TAG;
use shoal_common::JobId;
use tokio::time::Instant;

use crate::handler::{JobContext, JobError, Outcome};

/// How the EC2 handlers pace their calls and their waits.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    /// Calls per second allowed for each EC2 operation, in this worker.
    pub calls_per_second: f64,
    /// Per-operation overrides, e.g. `RunInstances` → 2.
    pub operation_rates: HashMap<String, f64>,
    /// Shortest and longest pause between checks of an operation under way.
    pub wait_check_min: Duration,
    pub wait_check_max: Duration,
    /// How long a wait may last, from the resource's start, before the job fails.
    pub wait_deadline: Duration,
    /// How long EC2 may take to show what was just created: until then, a lookup that finds
    /// nothing is no proof that an earlier run created nothing, and `…NotFound` for an id
    /// Shoal itself created is "not yet", not "gone".
    pub consistency_window: Duration,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Ec2Settings {
            calls_per_second: 10.0,
            operation_rates: HashMap::new(),
            wait_check_min: Duration::from_secs(5),
            wait_check_max: Duration::from_secs(600),
            wait_deadline: Duration::from_secs(6 * 60 * 60),
            consistency_window: Duration::from_secs(60),
        }
    }
}

/// A token bucket per EC2 operation (governor's), holding one second's worth of calls, so a
/// burst of jobs is paced instead of turning into `RequestLimitExceeded` storms.
#[derive(Debug)]
pub struct Ec2Limiter {
    settings: Ec2Settings,
    buckets: Mutex<HashMap<&'static str, Arc<DefaultDirectRateLimiter>>>,
}

/// `rate` calls a second, and a burst of one second's worth (at least one call).
fn quota(rate: f64) -> Quota {
    let rate = if rate.is_finite() {
        rate.max(0.001)
    } else {
        1.0
    };
    let burst = NonZeroU32::new(rate.min(u32::MAX as f64) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs_f64(1.0 / rate))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl Ec2Limiter {
    pub fn new(settings: Ec2Settings) -> Self {
        Ec2Limiter {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    fn bucket(&self, operation: &'static str) -> Arc<DefaultDirectRateLimiter> {
        let rate = self
            .settings
            .operation_rates
            .get(operation)
            .copied()
            .unwrap_or(self.settings.calls_per_second);
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_insert_with(|| Arc::new(RateLimiter::direct(quota(rate))))
            .clone()
    }

    /// Waits until `operation` may be called.
    pub async fn acquire(&self, operation: &'static str) {
        self.bucket(operation).until_ready().await;
    }
}

impl Ec2Limiter {
    /// One EC2 call: paced, sent, and its error classified with the AWS code and message
    /// kept. `operation` names it for the pacing and the error.
    pub async fn call<T, E, Fut>(&self, operation: &'static str, send: Fut) -> Result<T, JobError>
    where
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.paced(operation, send)
            .await
            .map_err(|e| ec2_error(operation, e))
    }

    /// A paced call whose raw SDK error the caller inspects itself (dry runs, duplicates).
    pub async fn paced<T, E, Fut>(
        &self,
        operation: &'static str,
        send: Fut,
    ) -> Result<T, SdkError<E>>
    where
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
    {
        self.acquire(operation).await;
        send.await
    }
}

impl Ec2Limiter {
    /// A create call without a client token, sent exactly once per try: `send` must turn
    /// the SDK's own retry off ([`no_sdk_retry`]), since a retry after a lost answer would
    /// create a second resource. A throttling answer is AWS's word that nothing happened,
    /// so that alone is tried again here; any other failure ends the attempt, and the next
    /// run looks (until the consistency window has passed) before it creates.
    pub async fn create_once<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut send: F,
    ) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut pause = Duration::from_millis(500);
        for _ in 0..4 {
            match self.call(operation, send()).await {
                Err(e) if e.code.as_deref().is_some_and(is_throttling) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        Err(JobError::transient(
            "RequestLimitExceeded",
            format!("{operation}: throttled on every try"),
        ))
    }
}

/// The configuration override that turns the SDK's own retry off for one call.
pub fn no_sdk_retry() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
}

/// EC2's codes for a call refused for its rate, with nothing done.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException"
    )
}

/// How often to look again while waiting for EC2 to show what was created.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// Whether an error says a named resource does not exist (`InvalidInstanceID.NotFound`,
/// `InvalidAMIID.NotFound`, `InvalidSnapshot.NotFound`, `InvalidVolume.NotFound`, …).
pub fn is_not_found(e: &JobError) -> bool {
    e.code
        .as_deref()
        .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with(".NotFoundException"))
}

/// Runs `call`, which names a resource Shoal created at or after `since`. While EC2 may not
/// show it yet, a `…NotFound` answer means "not yet": the call is tried again until the
/// window has passed, and then, the resource still missing, fails transiently (the next
/// delivery looks again; it was Shoal's own, so it is not "gone" on EC2's word alone).
pub async fn on_own_resource<T, F, Fut>(
    settings: &Ec2Settings,
    since: Instant,
    mut call: F,
) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, JobError>>,
{
    let settled_at = since + settings.consistency_window;
    loop {
        match call().await {
            Err(e) if is_not_found(&e) && Instant::now() < settled_at => {
                tracing::debug!(code = ?e.code, "a resource this job created is not visible yet");
                tokio::time::sleep(SETTLE_POLL.min(settled_at - Instant::now())).await;
            }
            Err(e) if is_not_found(&e) => {
                return Err(JobError::shoal(
                    ShoalCode::NotVisibleYet,
                    format!(
                        "{e} (created by this job; still not visible after the consistency window)"
                    ),
                ))
            }
            other => return other,
        }
    }
}

/// Looks up a job's resources with `lookup` until `complete` holds of what it found, or
/// until an incomplete answer is proof: at once on a job's first run, and otherwise a
/// consistency window after this delivery was received (every earlier run's calls came
/// before it).
pub async fn look_until_settled<T, F, Fut>(
    ctx: &JobContext,
    settings: &Ec2Settings,
    complete: impl Fn(&T) -> bool,
    mut lookup: F,
) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, JobError>>,
{
    let settled_at = ctx.received_at + settings.consistency_window;
    loop {
        let found = lookup().await?;
        if complete(&found) || !ctx.earlier_runs || Instant::now() >= settled_at {
            return Ok(found);
        }
        tracing::debug!("an earlier run may have created what is missing; looking again");
        tokio::time::sleep(SETTLE_POLL.min(settled_at - Instant::now())).await;
    }
}

/// Refuses to create anything once the message may belong to another worker: its
/// visibility lapsed (the heartbeat could not extend it), so another delivery may be running
/// the same job.
pub fn ensure_lease(ctx: &JobContext) -> Result<(), JobError> {
    if ctx.lease.remaining() < Duration::from_secs(1) {
        return Err(JobError::shoal(
            ShoalCode::LeaseLost,
            "the message's visibility lapsed: creating nothing another delivery may create too",
        ));
    }
    Ok(())
}

/// An EC2 failure as a job error, classified, with the AWS code and message kept for the
/// failure event.
pub fn ec2_error<E>(operation: &'static str, err: SdkError<E>) -> JobError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    JobError::from(classify_sdk_error(operation, &err))
}

/// The AWS code of an SDK error, if the service answered with one.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

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

pub fn has_job_id(tags: &[Ec2Tag], job_id: &JobId) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(JOB_ID_TAG) && t.value() == Some(job_id.as_str()))
}

/// A `ClientToken` (at most 64 ASCII characters) that is the same for every delivery of a
/// job: the job id itself when it fits, otherwise a stable hash of it.
pub fn client_token(job_id: &JobId) -> String {
    let id = job_id.as_str();
    if id.len() <= 58 {
        return format!("shoal-{id}");
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("shoal-{}-{hash:016x}", &id[..41])
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
    use shoal_common::error::ErrorClass;

    #[test]
    fn each_operation_has_its_own_bucket_of_one_seconds_calls() {
        let mut settings = Ec2Settings {
            calls_per_second: 2.0,
            ..Ec2Settings::default()
        };
        settings.operation_rates.insert("RunInstances".into(), 1.0);
        let limiter = Ec2Limiter::new(settings);
        let describe = limiter.bucket("DescribeInstances");
        assert!(describe.check().is_ok() && describe.check().is_ok());
        assert!(
            describe.check().is_err(),
            "a third call within the second waits"
        );
        let run = limiter.bucket("RunInstances");
        assert!(run.check().is_ok(), "another operation is not held up");
        assert!(run.check().is_err(), "the override allows one a second");
        let slow = Ec2Limiter::new(Ec2Settings {
            calls_per_second: 0.5,
            ..Ec2Settings::default()
        });
        assert!(
            slow.bucket("CreateImage").check().is_ok(),
            "a rate below one still allows a call"
        );
    }

    fn context(earlier_runs: bool) -> JobContext {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        JobContext {
            job_id: JobId::parse("job-1").expect("id"),
            kind: shoal_common::JobKind::Snapshot,
            attempt: 1,
            max_attempts: 3,
            earlier_runs,
            received_at: Instant::now(),
            lease: Default::default(),
            progress: Default::default(),
            worker_id: "w".into(),
            clients: shoal_common::aws::AwsClients::new(&sdk),
            enqueued_at: None,
            started_at: Utc::now(),
        }
    }

    fn not_found() -> JobError {
        JobError::permanent("InvalidSnapshot.NotFound", "no such snapshot")
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_for_an_own_resource_is_not_yet_until_the_window_passes() {
        let settings = Ec2Settings::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let found = on_own_resource(&settings, Instant::now(), || async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0..=2 => Err(not_found()),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(found, Ok(3), "looked again until it showed");

        let started = Instant::now();
        let gone =
            on_own_resource(&settings, started, || async { Err::<(), _>(not_found()) }).await;
        let e = gone.expect_err("never shows");
        assert!(
            e.is(ShoalCode::NotVisibleYet) && e.class == ErrorClass::Transient,
            "{e:?}"
        );
        assert!(started.elapsed() >= settings.consistency_window);

        let other = on_own_resource(&settings, Instant::now(), || async {
            Err::<(), _>(JobError::permanent("UnauthorizedOperation", "no"))
        })
        .await;
        assert_eq!(
            other.map_err(|e| e.code),
            Err(Some("UnauthorizedOperation".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_lookup_is_proof_only_on_a_first_run_or_after_the_window() {
        let settings = Ec2Settings::default();
        let first = context(false);
        let started = Instant::now();
        let found: Vec<u32> = look_until_settled(
            &first,
            &settings,
            |v: &Vec<u32>| !v.is_empty(),
            || async { Ok(vec![]) },
        )
        .await
        .expect("lookup");
        assert!(found.is_empty());
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a first run trusts the answer"
        );

        let again = context(true);
        let looks = std::sync::atomic::AtomicU32::new(0);
        let found = look_until_settled(
            &again,
            &settings,
            |v: &Vec<u32>| !v.is_empty(),
            || async {
                let n = looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(if n < 5 { vec![] } else { vec![n] })
            },
        )
        .await
        .expect("lookup");
        assert_eq!(
            found,
            vec![5],
            "an earlier run's snapshot showed up on the sixth look"
        );

        let never = context(true);
        let found: Vec<u32> = look_until_settled(
            &never,
            &settings,
            |v: &Vec<u32>| !v.is_empty(),
            || async { Ok(vec![]) },
        )
        .await
        .expect("lookup");
        assert!(found.is_empty());
        assert!(
            never.received_at.elapsed() >= settings.consistency_window,
            "trusted only after the window"
        );
    }

    #[test]
    fn a_handler_without_a_runtime_lease_may_create_and_not_found_codes_are_recognised() {
        assert!(ensure_lease(&context(false)).is_ok());
        assert!(is_not_found(&not_found()));
        assert!(is_not_found(&JobError::permanent(
            "InvalidInstanceID.NotFound",
            "x"
        )));
        assert!(!is_not_found(&JobError::permanent(
            "InvalidInstanceID.Malformed",
            "x"
        )));
    }

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
