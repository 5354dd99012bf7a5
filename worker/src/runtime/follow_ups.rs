//! A chain's next steps: when a job that carries `then` succeeds, its follow-ups go on the
//! job queue before its event is published and its message deleted, so an outcome is never
//! announced for a chain that then loses its continuation.
//!
//! The follow-ups are built from the job and its result alone ([`chain::expand`], once per
//! success, by the caller), so a second delivery of the parent builds the very same jobs,
//! with the same ids; sent twice, each finds its work done by its job id (on a FIFO queue SQS
//! drops the second copy outright, the job id being the deduplication id). A follow-up whose
//! references do not resolve is never enqueued: it gets a failed event of its own, naming the
//! pointer.
//!
//! [`chain::expand`]: shoal_common::job::chain::expand

use shoal_common::error::{Error, ErrorClass, ShoalCode};
use shoal_common::event::{EventError, EventSource, JobEvent, JobStatus};
use shoal_common::job::chain::Expanded;
use shoal_common::JobEnvelope;

use super::calls::{announce, send_follow_up};
use super::delivery::Delivery;
use super::Shared;

/// Enqueues the follow-ups of `parent` and announces the failure of each that could not be
/// built. An error means some follow-up may not be out yet, and the caller keeps the outcome
/// to try again.
pub(super) async fn dispatch(
    shared: &Shared,
    msg: &Delivery,
    parent: &JobEnvelope,
    follow_ups: &[Expanded],
) -> Result<(), Error> {
    for follow_up in follow_ups {
        match &follow_up.job {
            Ok(job) => {
                send_follow_up(shared, msg, job).await?;
                tracing::info!(job_id = %job.job_id, kind = %job.kind(), "follow-up enqueued");
            }
            Err(reason) => {
                tracing::warn!(job_id = %follow_up.job_id, reason = %reason, "a follow-up's references do not resolve; it fails without running");
                let event = unresolved(shared, msg, parent, follow_up, reason);
                announce(shared, &event).await?;
                shared
                    .metrics
                    .jobs_failed
                    .with_label_values(&[follow_up.kind.as_str(), ErrorClass::Permanent.as_str()])
                    .inc();
            }
        }
    }
    Ok(())
}

/// The failed event of a follow-up that was never enqueued.
fn unresolved(
    shared: &Shared,
    msg: &Delivery,
    parent: &JobEnvelope,
    follow_up: &Expanded,
    reason: &str,
) -> JobEvent {
    let source = EventSource {
        chain_id: Some(parent.chain_id().to_string()),
        parent_job_id: Some(parent.job_id.to_string()),
        ..EventSource::not_run(
            Some(follow_up.job_id.clone()),
            Some(follow_up.kind.as_str().to_owned()),
            0,
            msg.message_id.clone(),
            shared.worker_id.to_string(),
        )
    };
    JobEvent::new(
        source,
        JobStatus::Failed,
        None,
        Some(EventError {
            class: ErrorClass::Permanent,
            code: Some(ShoalCode::UnresolvedReference.as_str().to_owned()),
            message: reason.to_owned(),
            dead_lettered: false,
        }),
    )
}
