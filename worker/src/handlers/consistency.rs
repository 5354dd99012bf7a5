//! The rules for an eventually consistent EC2: for a while after a create, `Describe*` may
//! not list the new resource and calls naming it may answer `…NotFound`. So no create is
//! repeated unless a client token makes it idempotent or Shoal has proof that the first did
//! not happen:
//! - a handler records the ids it creates in the job's [`Progress`], which travels with the
//!   message, and the next run asks for those ids directly; `…NotFound` for an id Shoal
//!   created is "not yet" for [`Ec2Settings::consistency_window`] ([`on_own_resource`]);
//! - a lookup by tag that finds nothing proves nothing while an earlier run of the job may
//!   have created something less than a window ago ([`look_until_settled`]). Since when is
//!   [`JobContext::created_since`]: with a job ledger, every create is put on record before
//!   it is sent, so a run that finds no such note knows none went out, and one that finds a
//!   note counts the window from it; without a ledger, every earlier run's calls happened
//!   before this delivery was received, so a window after that, an empty answer is proof.
//!   A worker killed before its create went out costs the next run no wait (a fleet in a
//!   crash loop still makes progress);
//! - a handler checks its lease, and notes the create, right before it goes out
//!   ([`JobContext::before_create`]): a worker that lost its message to another creates
//!   nothing more.
//!
//! [`Progress`]: crate::handler::Progress

use std::time::Duration;

use shoal_common::error::ShoalCode;
use tokio::time::Instant;

use super::settings::Ec2Settings;
use crate::ec2_errors::is_not_found;
use crate::handler::{JobContext, JobError};

/// How often to look again while waiting for EC2 to show what was created.
const SETTLE_POLL: Duration = Duration::from_secs(1);

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
/// until an incomplete answer is proof: at once when no earlier run can have created
/// anything, and otherwise a consistency window after [`JobContext::created_since`].
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
    loop {
        let found = lookup().await?;
        let Some(settled_at) = ctx.created_since.map(|t| t + settings.consistency_window) else {
            return Ok(found);
        };
        if complete(&found) || Instant::now() >= settled_at {
            return Ok(found);
        }
        tracing::debug!("an earlier run may have created what is missing; looking again");
        tokio::time::sleep(SETTLE_POLL.min(settled_at - Instant::now())).await;
    }
}

/// The resource this job made on an earlier run, if any: the one its progress recorded under
/// `key`, asked for by that id (`by_id`; not listed yet is `not_found`, "not yet" for a
/// window, [`on_own_resource`]), else the one carrying the job's tag (`by_tag`, trusted
/// empty only once settled, [`look_until_settled`]). The create kinds without a client token
/// look with this before they create.
pub async fn made_before<T, ById, ByIdFut, ByTag, ByTagFut>(
    ctx: &JobContext,
    settings: &Ec2Settings,
    key: &str,
    not_found: &'static str,
    by_id: ById,
    by_tag: ByTag,
) -> Result<Option<T>, JobError>
where
    ById: Fn(String) -> ByIdFut,
    ByIdFut: std::future::Future<Output = Result<Option<T>, JobError>>,
    ByTag: FnMut() -> ByTagFut,
    ByTagFut: std::future::Future<Output = Result<Option<T>, JobError>>,
{
    let recorded = ctx
        .progress
        .get(key)
        .and_then(|v| v.as_str().map(str::to_owned));
    let Some(id) = recorded else {
        return look_until_settled(ctx, settings, Option::is_some, by_tag).await;
    };
    let found = on_own_resource(settings, ctx.received_at, || {
        let look = by_id(id.clone());
        let id = id.clone();
        async move {
            look.await?
                .ok_or_else(|| JobError::transient(not_found, format!("{id} is not listed")))
        }
    })
    .await?;
    Ok(Some(found))
}

/// Refuses to create anything once the message may belong to another worker: its
/// visibility lapsed (the heartbeat could not extend it), so another delivery may be running
/// the same job.
pub fn ensure_lease(ctx: &JobContext) -> Result<(), JobError> {
    ctx.lease.ensure()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::error::ErrorClass;

    fn context(earlier_runs: bool) -> JobContext {
        JobContext {
            created_since: earlier_runs.then(Instant::now),
            ..crate::handler::test_context()
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
    fn a_handler_without_a_runtime_lease_may_create() {
        assert!(ensure_lease(&context(false)).is_ok());
    }
}
