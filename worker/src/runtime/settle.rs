//! What happens to a message after an attempt: pure functions of plain inputs, with a
//! table test of every row. The rest of the runtime only carries the answers out, and each
//! function's answer is exactly what can vary where it is asked, so no caller has a case to
//! ignore.
//!
//! - [`settle`]: the end of a run of the handler (or of a run that could not start because
//!   its kind was busy): let the message go ([`Fate`]), or keep holding it here.
//! - [`carry_forward_delay`]: a delivery whose job is over but whose outcome it could not
//!   announce, or whose failure the dead-letter queue would not take, goes forward on a copy
//!   that does only that, after this delay.
//! - [`after_stop`]: the worker stopped a handler mid-run at shutdown.
//! - [`hold_pause`]: the pause between tries of a call a delivery retries while it holds the
//!   message (announce, delete, copy, dead-letter, follow-ups).
//!
//! Two rules shape the table. An *attempt* is a run of the handler that failed (or died):
//! nothing else may spend the message's receives, because SQS dead-letters a message after
//! `maxReceiveCount` receives whatever they were for. So a job that waits for EC2, is
//! deferred, carries an outcome it could not announce, or a failure the dead-letter queue
//! could not take yet, goes back on a *fresh copy* of the message (whose receive count starts
//! again), carrying what the next delivery needs: the failures so far, the handler's
//! progress, the outcome, the pending dead-letter. On a FIFO queue a copy would go to the back
//! of its group, so there the worker keeps holding the message instead while the job's work
//! is not done.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_common::error::{Error, ErrorClass};

use crate::retry::retry_delay;

/// SQS's longest per-message delay, the most a copy can be held back.
pub const MAX_COPY_DELAY: Duration = Duration::from_secs(900);

/// The shortest wait before a job that could not be claimed is looked at again.
pub const MIN_CLAIM_RETRY: Duration = Duration::from_secs(1);

/// The longest hop of a job waiting for its `not_before`: SQS's longest delay.
pub const MAX_HOP: Duration = Duration::from_secs(900);

/// How long a FIFO job due later is held before it is looked at again.
const MAX_FIFO_HOLD_FOR_DUE: Duration = Duration::from_secs(60);

/// How long a delivery of a paused kind waits before it looks again: a resumed kind starts
/// within this, and a paused backlog costs one copy a job this often.
pub const PAUSED_LOOK_AGAIN: Duration = Duration::from_secs(10);

/// The longest pause between tries of a call retried while the message is held.
pub const MAX_HOLD_PAUSE: Duration = Duration::from_secs(10);

/// What [`settle`] reads of a failure: its class. The runtime passes its errors through, so
/// a dead-letter decision hands back the very error it was made for.
pub trait Classified {
    fn class(&self) -> ErrorClass;
}

impl Classified for ErrorClass {
    fn class(&self) -> ErrorClass {
        *self
    }
}

impl Classified for Error {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// How a run ended (or could not start), with what it gave: `R` its result, `E` its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome<R, E> {
    /// The handler finished with this result: announce it.
    Done(R),
    /// An EC2 operation is under way: look again after this long.
    CheckAgain(Duration),
    /// The handler failed (or panicked).
    Failed(E),
    /// Not started: the kind is at its concurrency limit in this worker.
    KindBusy,
    /// Not started: the job could not be claimed in the ledger, because another run holds
    /// its lease until this long from now (`Some`), or because the ledger did not answer
    /// (`None`). Nothing may be created without the claim, and it is no attempt.
    NotClaimed(Option<Duration>),
    /// Not started: an operator paused the job's kind. No attempt.
    Paused,
    /// Not started: the job is due this long from now (`not_before`). No attempt.
    NotDue(Duration),
}

/// Everything [`settle`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation<R, E> {
    pub outcome: AttemptOutcome<R, E>,
    /// This run's number: failed runs of the job before it, plus one.
    pub attempt: u32,
    pub max_attempts: u32,
    pub fifo: bool,
    /// The handler recorded progress that the message does not carry yet.
    pub new_progress: bool,
}

/// The delays [`settle`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// Why the job goes on later; it decides what a copy carries and what is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A failed attempt: the next run is the next attempt.
    Retry,
    /// A wait for EC2: the next run checks again, spending no attempt.
    Wait,
    /// The kind was busy: the next delivery starts it, spending no attempt.
    Defer,
}

/// Why a job is dead-lettered; also the `reason` label of `shoal_jobs_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    Permanent,
    AttemptsExhausted,
    Malformed,
    /// A kind this worker has no handler for.
    NoHandler,
    /// Outside this worker's limits (its guardrails).
    NotAllowed,
    /// Sent under a job id the ledger records for another job (another kind, or another
    /// envelope).
    JobIdReused,
}

impl DeadLetterReason {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::AttemptsExhausted => "attempts_exhausted",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::NoHandler => "no_handler",
            DeadLetterReason::NotAllowed => "not_allowed",
            DeadLetterReason::JobIdReused => "job_id_reused",
        }
    }

    /// Whether the message was refused before any run: it is not the job its id names (or
    /// not one this worker takes), so its failure is no outcome of that job, and nothing of
    /// it is written to the job's ledger record.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            DeadLetterReason::Malformed
                | DeadLetterReason::NoHandler
                | DeadLetterReason::NotAllowed
                | DeadLetterReason::JobIdReused
        )
    }
}

/// What becomes of the message once this delivery lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate<R, E> {
    /// Announce the result, then delete the message.
    AnnounceAndDelete(R),
    /// Leave the job on this message, visible again after the delay: its next delivery is
    /// its next attempt.
    RetryAfter(Duration),
    /// Send a fresh copy carrying the job's state, visible after the delay, then delete this
    /// message.
    Copy { delay: Duration, purpose: Purpose },
    /// Copy the message to the dead-letter queue with this error, announce the failure,
    /// delete it.
    DeadLetter(DeadLetterReason, E),
}

/// What to do after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<R, E> {
    /// This delivery is done with the message.
    Let(Fate<R, E>),
    /// Keep holding the message and run the handler again in this process after the delay,
    /// holding no worker slot meanwhile.
    HoldAndRunAgain { after: Duration, purpose: Purpose },
    /// Keep holding the message until its kind has a free slot, holding no worker slot
    /// meanwhile.
    HoldForSlot,
}

/// The fate of a message after a run.
pub fn settle<R, E: Classified>(s: Situation<R, E>, policy: Policy) -> Settle<R, E> {
    use AttemptOutcome::*;
    let retry = || retry_delay(s.attempt, policy.retry_base, policy.retry_max);
    let copy = |delay: Duration, purpose| {
        Settle::Let(Fate::Copy {
            delay: copy_delay(s.fifo, delay),
            purpose,
        })
    };
    match s.outcome {
        Done(result) => Settle::Let(Fate::AnnounceAndDelete(result)),
        CheckAgain(after) if s.fifo => Settle::HoldAndRunAgain {
            after,
            purpose: Purpose::Wait,
        },
        CheckAgain(after) => copy(after, Purpose::Wait),
        // Held in place on FIFO (its group keeps its order); a fresh copy, looked at again
        // after a while, on a standard queue: no receive is spent either way.
        Paused if s.fifo => Settle::HoldAndRunAgain {
            after: PAUSED_LOOK_AGAIN,
            purpose: Purpose::Defer,
        },
        Paused => copy(PAUSED_LOOK_AGAIN, Purpose::Defer),
        // Hops of at most SQS's longest delay, on fresh copies (no receive spent); FIFO
        // holds its group (a producer refuses to schedule there; another sender may not).
        NotDue(left) if s.fifo => Settle::HoldAndRunAgain {
            after: left.min(MAX_FIFO_HOLD_FOR_DUE),
            purpose: Purpose::Defer,
        },
        NotDue(left) => copy(left.min(MAX_HOP), Purpose::Defer),
        KindBusy if s.fifo => Settle::HoldForSlot,
        KindBusy => copy(
            retry_delay(1, policy.retry_base, policy.retry_max),
            Purpose::Defer,
        ),
        // Look again when the other run's lease ends (it may finish first), or after a
        // backoff while the ledger does not answer.
        NotClaimed(held_for) => {
            let after = held_for
                .unwrap_or_else(|| retry_delay(1, policy.retry_base, policy.retry_max))
                .max(MIN_CLAIM_RETRY);
            if s.fifo {
                Settle::HoldAndRunAgain {
                    after,
                    purpose: Purpose::Defer,
                }
            } else {
                copy(after, Purpose::Defer)
            }
        }
        Failed(e) => match e.class() {
            ErrorClass::Permanent => Settle::Let(Fate::DeadLetter(DeadLetterReason::Permanent, e)),
            ErrorClass::Transient if s.attempt >= s.max_attempts => {
                Settle::Let(Fate::DeadLetter(DeadLetterReason::AttemptsExhausted, e))
            }
            // Progress must reach the next attempt, and a FIFO copy would lose its place.
            ErrorClass::Transient if s.new_progress && s.fifo => Settle::HoldAndRunAgain {
                after: retry(),
                purpose: Purpose::Retry,
            },
            ErrorClass::Transient if s.new_progress => copy(retry(), Purpose::Retry),
            ErrorClass::Transient => Settle::Let(Fate::RetryAfter(retry())),
        },
    }
}

/// The delay of a copy that only carries a finished job forward: its outcome to announce, or
/// its failure to dead-letter, after `copies` copies so far. Repeated copies back off, so a
/// long outage is not a storm of copies; on FIFO, where a copy takes no delay, at once (the
/// work is done, so its place in the group no longer matters).
pub fn carry_forward_delay(copies: u32, fifo: bool, policy: Policy) -> Duration {
    copy_delay(
        fifo,
        retry_delay(
            copies.saturating_add(1),
            policy.retry_base,
            policy.retry_max,
        ),
    )
}

/// What becomes of a message whose handler the worker stopped mid-run at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// A fresh copy at once, carrying what the run created: the next delivery runs the same
    /// attempt.
    Resume,
    /// The message itself, visible again at once.
    Release,
}

/// Being stopped is not the job's failure, and what the run created must reach the next
/// run; on FIFO a copy would lose its place, so the message itself goes back.
pub fn after_stop(new_progress: bool, fifo: bool) -> AfterStop {
    if new_progress && !fifo {
        AfterStop::Resume
    } else {
        AfterStop::Release
    }
}

/// A copy's delay: FIFO queues take no per-message delay, standard ones at most SQS's.
fn copy_delay(fifo: bool, delay: Duration) -> Duration {
    if fifo {
        Duration::ZERO
    } else {
        delay.min(MAX_COPY_DELAY)
    }
}

/// The pause after `tries` failed tries of a call retried while the message is held:
/// doubling from a quarter of a second, at most [`MAX_HOLD_PAUSE`].
pub fn hold_pause(tries: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(tries.min(6))).min(MAX_HOLD_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome::*;

    const POLICY: Policy = Policy {
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(2),
    };
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    /// In the table, a result is `()` and an error is its class alone.
    type Outcome = AttemptOutcome<(), ErrorClass>;
    type Decision = Settle<(), ErrorClass>;

    fn situation(outcome: Outcome) -> Situation<(), ErrorClass> {
        Situation {
            outcome,
            attempt: 1,
            max_attempts: 3,
            fifo: false,
            new_progress: false,
        }
    }

    fn copy(delay: Duration, purpose: Purpose) -> Decision {
        Settle::Let(Fate::Copy { delay, purpose })
    }

    const PERMANENT: Outcome = Failed(ErrorClass::Permanent);
    const TRANSIENT: Outcome = Failed(ErrorClass::Transient);

    /// Each row: the situation, changed from the default; what must happen. The retry
    /// delays are jittered, so a row with a delay checks its bounds (±50% of 2 s).
    #[test]
    fn every_row_of_the_settle_table() {
        type Row = (
            &'static str,
            Situation<(), ErrorClass>,
            fn(Decision) -> bool,
        );
        let rows: Vec<Row> = vec![
            ("done: announce, then delete", situation(Done(())), |s| {
                s == Settle::Let(Fate::AnnounceAndDelete(()))
            }),
            (
                "done on FIFO: the same",
                Situation {
                    fifo: true,
                    ..situation(Done(()))
                },
                |s| s == Settle::Let(Fate::AnnounceAndDelete(())),
            ),
            (
                "waiting: a copy that checks again, spending no attempt",
                situation(CheckAgain(SECS(40))),
                |s| s == copy(SECS(40), Purpose::Wait),
            ),
            (
                "waiting longer than SQS can delay: the copy comes back at the limit",
                situation(CheckAgain(SECS(3600))),
                |s| s == copy(MAX_COPY_DELAY, Purpose::Wait),
            ),
            (
                "waiting on the last attempt: still a copy, never the DLQ",
                Situation {
                    attempt: 3,
                    ..situation(CheckAgain(SECS(5)))
                },
                |s| s == copy(SECS(5), Purpose::Wait),
            ),
            (
                "waiting on FIFO: keep holding, keep the group's order",
                Situation {
                    fifo: true,
                    ..situation(CheckAgain(SECS(5)))
                },
                |s| {
                    s == Settle::HoldAndRunAgain {
                        after: SECS(5),
                        purpose: Purpose::Wait,
                    }
                },
            ),
            (
                "kind busy: a deferred copy, spending no attempt",
                Situation {
                    attempt: 3,
                    ..situation(KindBusy)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::Copy {
                            purpose: Purpose::Defer,
                            ..
                        })
                    )
                },
            ),
            (
                "kind busy on FIFO: hold until a slot frees",
                Situation {
                    fifo: true,
                    ..situation(KindBusy)
                },
                |s| s == Settle::HoldForSlot,
            ),
            (
                "held elsewhere: a deferred copy when the other run's lease ends, no attempt spent",
                Situation {
                    attempt: 3,
                    ..situation(NotClaimed(Some(SECS(12))))
                },
                |s| s == copy(SECS(12), Purpose::Defer),
            ),
            (
                "held elsewhere, its lease about to end: looked at again after a second at least",
                situation(NotClaimed(Some(Duration::ZERO))),
                |s| s == copy(MIN_CLAIM_RETRY, Purpose::Defer),
            ),
            (
                "the ledger does not answer: a deferred copy after a backoff, no attempt spent",
                Situation {
                    attempt: 3,
                    ..situation(NotClaimed(None))
                },
                |s| matches!(s, Settle::Let(Fate::Copy { delay, purpose: Purpose::Defer }) if delay >= SECS(1) && delay <= SECS(3)),
            ),
            (
                "not claimed on FIFO: hold and try the claim again",
                Situation {
                    fifo: true,
                    ..situation(NotClaimed(Some(SECS(7))))
                },
                |s| {
                    s == Settle::HoldAndRunAgain {
                        after: SECS(7),
                        purpose: Purpose::Defer,
                    }
                },
            ),
            (
                "permanent failure: dead-letter at once, with its error",
                situation(PERMANENT),
                |s| {
                    s == Settle::Let(Fate::DeadLetter(
                        DeadLetterReason::Permanent,
                        ErrorClass::Permanent,
                    ))
                },
            ),
            (
                "permanent failure on FIFO: the same",
                Situation {
                    fifo: true,
                    ..situation(PERMANENT)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::DeadLetter(DeadLetterReason::Permanent, _))
                    )
                },
            ),
            (
                "transient failure: retry on this message after the backoff",
                situation(TRANSIENT),
                |s| matches!(s, Settle::Let(Fate::RetryAfter(d)) if d >= SECS(1) && d <= SECS(3)),
            ),
            (
                "transient failure on the last attempt: dead-letter, attempts exhausted",
                Situation {
                    attempt: 3,
                    ..situation(TRANSIENT)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::DeadLetter(DeadLetterReason::AttemptsExhausted, _))
                    )
                },
            ),
            (
                "transient failure after progress: a copy that carries it",
                Situation {
                    new_progress: true,
                    ..situation(TRANSIENT)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::Copy {
                            purpose: Purpose::Retry,
                            ..
                        })
                    )
                },
            ),
            (
                "transient failure after progress on FIFO: run again while holding",
                Situation {
                    new_progress: true,
                    fifo: true,
                    ..situation(TRANSIENT)
                },
                |s| matches!(s, Settle::HoldAndRunAgain { after, purpose: Purpose::Retry } if after >= SECS(1) && after <= SECS(3)),
            ),
            (
                "transient failure after progress on the last attempt: dead-letter",
                Situation {
                    new_progress: true,
                    attempt: 3,
                    ..situation(TRANSIENT)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::DeadLetter(DeadLetterReason::AttemptsExhausted, _))
                    )
                },
            ),
            (
                "an attempt number past every bound (a forged count): dead-letter, no spin",
                Situation {
                    attempt: u32::MAX,
                    max_attempts: u32::MAX,
                    ..situation(TRANSIENT)
                },
                |s| {
                    matches!(
                        s,
                        Settle::Let(Fate::DeadLetter(DeadLetterReason::AttemptsExhausted, _))
                    )
                },
            ),
        ];
        for (name, situation, expected) in rows {
            let got = settle(situation, POLICY);
            assert!(expected(got), "{name}: got {got:?}");
        }
    }

    #[test]
    fn a_finished_job_goes_forward_after_a_backoff_that_grows_with_its_copies() {
        let policy = Policy {
            retry_base: SECS(1),
            retry_max: SECS(600),
        };
        let first = carry_forward_delay(0, false, POLICY);
        assert!(first >= SECS(1) && first <= SECS(3), "{first:?}");
        assert_eq!(
            carry_forward_delay(5, true, policy),
            Duration::ZERO,
            "FIFO: at once"
        );
        assert!(carry_forward_delay(0, false, policy) <= SECS(2));
        assert!(carry_forward_delay(6, false, policy) >= SECS(32));
        assert!(carry_forward_delay(30, false, policy) <= MAX_COPY_DELAY);
        assert!(
            carry_forward_delay(u32::MAX, false, policy) <= MAX_COPY_DELAY,
            "a forged count is bounded"
        );
    }

    #[test]
    fn a_stopped_run_resumes_on_a_copy_only_with_new_progress_on_a_standard_queue() {
        let rows = [
            (
                (true, false),
                AfterStop::Resume,
                "progress: a copy carries it",
            ),
            (
                (false, false),
                AfterStop::Release,
                "nothing new: the message itself",
            ),
            (
                (true, true),
                AfterStop::Release,
                "FIFO: the message keeps its place",
            ),
            ((false, true), AfterStop::Release, "FIFO, nothing new"),
        ];
        for ((progress, fifo), expected, name) in rows {
            assert_eq!(after_stop(progress, fifo), expected, "{name}");
        }
    }

    #[test]
    fn held_calls_pause_longer_each_try_up_to_the_cap() {
        let pauses: Vec<Duration> = (0..10).map(hold_pause).collect();
        assert_eq!(pauses[0], Duration::from_millis(250));
        assert_eq!(pauses[1], Duration::from_millis(500));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], MAX_HOLD_PAUSE);
        assert_eq!(hold_pause(u32::MAX), MAX_HOLD_PAUSE);
    }
}
