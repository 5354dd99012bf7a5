//! The end of a finished job's delivery: enqueue its follow-ups (a success of a chain's
//! step), publish its event, then delete its message, in that order, so no outcome is
//! announced for a chain that then loses its continuation and no message is deleted before
//! its outcome is out.
//!
//! Each call is retried while the delivery holds the message. What could not be done in that
//! time comes back as [`Unannounced`]: the caller carries the outcome forward on a fresh copy
//! that only announces, so the handler's work is never redone and the job never reaches the
//! dead-letter queue because of an announcement.

use shoal_common::error::Error;
use shoal_common::event::JobEvent;
use shoal_common::job::chain::Expanded;
use shoal_common::JobEnvelope;

use super::calls::{announce, delete};
use super::delivery::{Delivery, Disposition};
use super::follow_ups;
use super::Shared;

/// A chain step's follow-ups still to enqueue before its event.
pub(super) struct FollowUps<'a> {
    pub parent: &'a JobEnvelope,
    pub jobs: Vec<Expanded>,
}

/// An outcome this delivery could not get out.
pub(super) struct Unannounced {
    pub event: JobEvent,
    /// Whether some follow-up may not be enqueued yet: the next delivery sends them first.
    pub follow_ups_pending: bool,
    pub error: Error,
}

/// Enqueues `follow_ups` (if any), publishes `event`, then deletes the message.
pub(super) async fn announce_then_delete(
    shared: &Shared,
    msg: &Delivery,
    follow_ups: Option<FollowUps<'_>>,
    event: JobEvent,
) -> Result<Disposition, Unannounced> {
    if let Some(f) = follow_ups.filter(|f| !f.jobs.is_empty()) {
        if let Err(error) = follow_ups::dispatch(shared, msg, f.parent, &f.jobs).await {
            return Err(Unannounced {
                event,
                follow_ups_pending: true,
                error,
            });
        }
    }
    // Once out, follow-ups are not sent again for a failed announcement.
    if let Err(error) = announce(shared, &event).await {
        return Err(Unannounced {
            event,
            follow_ups_pending: false,
            error,
        });
    }
    Ok(delete(shared, msg).await)
}
