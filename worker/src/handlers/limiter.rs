//! One way to call EC2: each call paced by a token bucket per operation (governor's), sent,
//! and its error classified with the AWS code kept; and create calls without a client
//! token, sent exactly once per try.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::settings::Ec2Settings;
use crate::ec2_errors::{ec2_error, is_throttling};
use crate::handler::{JobContext, JobError};

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

    /// Every page of a listing, each a [`call`](Self::call): `send` asks for the page after
    /// a token (none for the first), `next` reads the following token off an answer.
    pub async fn pages<T, E, Fut>(
        &self,
        operation: &'static str,
        mut send: impl FnMut(Option<String>) -> Fut,
        next: impl Fn(&T) -> Option<&str>,
    ) -> Result<Vec<T>, JobError>
    where
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let page = self.call(operation, send(token.take())).await?;
            token = next(&page).filter(|t| !t.is_empty()).map(str::to_owned);
            pages.push(page);
            if token.is_none() {
                return Ok(pages);
            }
        }
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
    ///
    /// Right before each try goes out, after the pacing and any backoff (seconds,
    /// together), the lease is read and the create put on record
    /// ([`JobContext::before_create`]): a lease that ran out meanwhile, or a note the ledger
    /// did not take, sends nothing.
    pub async fn create_once<T, E, F, Fut>(
        &self,
        operation: &'static str,
        ctx: &JobContext,
        mut send: F,
    ) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut pause = Duration::from_millis(500);
        for _ in 0..4 {
            self.acquire(operation).await;
            ctx.before_create(operation).await?;
            let sent = send().await.map_err(|e| ec2_error(operation, e));
            match sent {
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::error::ShoalCode;

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

    /// The lease is read after the pacing, right before the create goes out: one that ran
    /// out while the call waited for its turn sends nothing.
    #[tokio::test]
    async fn a_create_waits_its_turn_then_sends_nothing_if_the_lease_ran_out_meanwhile() {
        use aws_sdk_ec2::operation::create_snapshot::CreateSnapshotError;
        use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
        let limiter = Ec2Limiter::new(Ec2Settings {
            calls_per_second: 1.0,
            ..Ec2Settings::default()
        });
        // Another job's call has this second's turn.
        limiter.acquire("CreateSnapshot").await;
        let until = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
        let ctx = JobContext {
            lease: crate::handler::Lease::default()
                .with_ledger(Arc::new(AtomicI64::new(until.timestamp_millis()))),
            ..crate::handler::test_context()
        };
        assert!(
            ctx.lease.ensure().is_ok(),
            "enough left when the handler checked"
        );
        let sends = AtomicU32::new(0);
        let result = limiter
            .create_once("CreateSnapshot", &ctx, || {
                sends.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), SdkError<CreateSnapshotError>>(SdkError::timeout_error("x")) }
            })
            .await;
        let error = result.expect_err("not sent");
        assert!(error.is(ShoalCode::LeaseLost), "{error:?}");
        assert_eq!(sends.load(Ordering::Relaxed), 0, "nothing went out");
    }
}
