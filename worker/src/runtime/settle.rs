//! What happens to a message after an attempt: one pure function of plain inputs
//! ([`settle`]), with a table test of every row. The rest of the runtime only carries the
//! answer out.
//!
//! Two rules shape the table. An *attempt* is a run of the handler that failed (or died):
//! nothing else may spend the message's receives, because SQS dead-letters a message after
//! `maxReceiveCount` receives whatever they were for. So a job that waits for EC2, is
//! deferred, or carries an outcome it could not announce goes back on a *fresh copy* of the
//! message (whose receive count starts again), carrying what the next delivery needs: the
//! failures so far, the handler's progress, the outcome. On a FIFO queue a copy would go to
//! the back of its group, so there the worker keeps holding the message instead.

use std::time::Duration;

use shoal_common::error::ErrorClass;

use crate::retry::retry_delay;

/// SQS's longest per-message delay, the most a copy can be held back.
pub const MAX_COPY_DELAY: Duration = Duration::from_secs(900);

/// How an attempt ended, as far as the message's fate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The handler finished: announce its event.
    Done,
    /// An EC2 operation is under way: look again after this long.
    CheckAgain(Duration),
    /// The handler failed (or panicked) with an error of this class.
    Failed(ErrorClass),
    /// Not started: the kind is at its concurrency limit in this worker.
    KindBusy,
    /// Refused before any run, for this reason: not a job, no handler, outside the
    /// worker's limits.
    Refused(DeadLetterReason),
    /// The outcome is known but could not be announced for as long as one delivery holds it.
    AnnounceFailed,
}

/// Everything [`settle`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub outcome: AttemptOutcome,
    /// This run's number: failed runs of the job before it, plus one.
    pub attempt: u32,
    pub max_attempts: u32,
    pub fifo: bool,
    /// The handler recorded progress that the message does not carry yet.
    pub new_progress: bool,
    /// Fresh copies of this job so far (for the backoff of repeated announcements).
    pub copies: u32,
}

/// The delays [`settle`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// Why a copy is made; it decides what the copy carries and what is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFor {
    /// A failed attempt whose progress must reach the next one.
    Retry,
    /// A wait for EC2: the next delivery checks again.
    Wait,
    /// The kind was busy: the next delivery starts it.
    Defer,
    /// The outcome waits to be announced: the next delivery only announces.
    Announce,
}

/// Why a job is dead-lettered; also the `reason` label of `shoal_jobs_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    Permanent,
    AttemptsExhausted,
    Malformed,
    /// A kind this worker has no handler for.
    NoHandler,
    /// Outside this worker's limits (its guardrails).
    NotAllowed,
}

impl DeadLetterReason {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::AttemptsExhausted => "attempts_exhausted",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::NoHandler => "no_handler",
            DeadLetterReason::NotAllowed => "not_allowed",
        }
    }
}

/// What to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Announce the event, then delete the message.
    AnnounceAndDelete,
    /// Leave the job on this message, visible again after the delay: its next delivery is
    /// its next attempt.
    RetryAfter(Duration),
    /// Send a fresh copy, visible after the delay, then delete this message.
    Copy { delay: Duration, for_: CopyFor },
    /// Keep holding the message and run the handler again in this process after the delay.
    HoldAndRunAgain(Duration),
    /// Keep holding the message until its kind has a free slot.
    HoldForSlot,
    /// Copy the message to the dead-letter queue with its reason, announce the failure,
    /// delete it.
    DeadLetter(DeadLetterReason),
}

/// The fate of a message after an attempt.
pub fn settle(s: Situation, policy: Policy) -> Settle {
    use AttemptOutcome::*;
    let retry = || retry_delay(s.attempt, policy.retry_base, policy.retry_max);
    let copy = |delay: Duration, for_| Settle::Copy {
        // FIFO queues take no per-message delay.
        delay: if s.fifo {
            Duration::ZERO
        } else {
            delay.min(MAX_COPY_DELAY)
        },
        for_,
    };
    match s.outcome {
        Done => Settle::AnnounceAndDelete,
        // The work is done, so its place in a FIFO group no longer matters.
        AnnounceFailed => copy(
            retry_delay(s.copies + 1, policy.retry_base, policy.retry_max),
            CopyFor::Announce,
        ),
        CheckAgain(after) if s.fifo => Settle::HoldAndRunAgain(after),
        CheckAgain(after) => copy(after, CopyFor::Wait),
        KindBusy if s.fifo => Settle::HoldForSlot,
        KindBusy => copy(
            retry_delay(1, policy.retry_base, policy.retry_max),
            CopyFor::Defer,
        ),
        Refused(reason) => Settle::DeadLetter(reason),
        Failed(ErrorClass::Permanent) => Settle::DeadLetter(DeadLetterReason::Permanent),
        Failed(ErrorClass::Transient) if s.attempt >= s.max_attempts => {
            Settle::DeadLetter(DeadLetterReason::AttemptsExhausted)
        }
        // Progress must reach the next attempt, and a FIFO copy would lose its place.
        Failed(ErrorClass::Transient) if s.new_progress && s.fifo => {
            Settle::HoldAndRunAgain(retry())
        }
        Failed(ErrorClass::Transient) if s.new_progress => copy(retry(), CopyFor::Retry),
        Failed(ErrorClass::Transient) => Settle::RetryAfter(retry()),
    }
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

    fn situation(outcome: AttemptOutcome) -> Situation {
        Situation {
            outcome,
            attempt: 1,
            max_attempts: 3,
            fifo: false,
            new_progress: false,
            copies: 0,
        }
    }

    /// Each row: the situation, changed from the default; what must happen. The retry
    /// delays are jittered, so a row with a delay checks its bounds (±50% of 2 s).
    #[test]
    fn every_row_of_the_settle_table() {
        type Row = (&'static str, Situation, fn(Settle) -> bool);
        let rows: Vec<Row> = vec![
            ("done: announce, then delete", situation(Done), |s| {
                s == Settle::AnnounceAndDelete
            }),
            (
                "done on FIFO: the same",
                Situation {
                    fifo: true,
                    ..situation(Done)
                },
                |s| s == Settle::AnnounceAndDelete,
            ),
            (
                "announce failed: a copy that only announces, after a backoff",
                situation(AnnounceFailed),
                |s| matches!(s, Settle::Copy { delay, for_: CopyFor::Announce } if delay >= SECS(1) && delay <= SECS(3)),
            ),
            (
                "announce failed on FIFO: a copy at once (no per-message delay)",
                Situation {
                    fifo: true,
                    ..situation(AnnounceFailed)
                },
                |s| {
                    s == Settle::Copy {
                        delay: Duration::ZERO,
                        for_: CopyFor::Announce,
                    }
                },
            ),
            (
                "waiting: a copy that checks again, spending no attempt",
                situation(CheckAgain(SECS(40))),
                |s| {
                    s == Settle::Copy {
                        delay: SECS(40),
                        for_: CopyFor::Wait,
                    }
                },
            ),
            (
                "waiting longer than SQS can delay: the copy comes back at the limit",
                situation(CheckAgain(SECS(3600))),
                |s| {
                    s == Settle::Copy {
                        delay: MAX_COPY_DELAY,
                        for_: CopyFor::Wait,
                    }
                },
            ),
            (
                "waiting on the last attempt: still a copy, never the DLQ",
                Situation {
                    attempt: 3,
                    ..situation(CheckAgain(SECS(5)))
                },
                |s| {
                    s == Settle::Copy {
                        delay: SECS(5),
                        for_: CopyFor::Wait,
                    }
                },
            ),
            (
                "waiting on FIFO: keep holding, keep the group's order",
                Situation {
                    fifo: true,
                    ..situation(CheckAgain(SECS(5)))
                },
                |s| s == Settle::HoldAndRunAgain(SECS(5)),
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
                        Settle::Copy {
                            for_: CopyFor::Defer,
                            ..
                        }
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
                "not a job: dead-letter as malformed",
                situation(Refused(DeadLetterReason::Malformed)),
                |s| s == Settle::DeadLetter(DeadLetterReason::Malformed),
            ),
            (
                "outside the worker's limits: dead-letter as not allowed, even on FIFO",
                Situation {
                    fifo: true,
                    ..situation(Refused(DeadLetterReason::NotAllowed))
                },
                |s| s == Settle::DeadLetter(DeadLetterReason::NotAllowed),
            ),
            (
                "permanent failure: dead-letter at once",
                situation(Failed(ErrorClass::Permanent)),
                |s| s == Settle::DeadLetter(DeadLetterReason::Permanent),
            ),
            (
                "transient failure: retry on this message after the backoff",
                situation(Failed(ErrorClass::Transient)),
                |s| matches!(s, Settle::RetryAfter(d) if d >= SECS(1) && d <= SECS(3)),
            ),
            (
                "transient failure on the last attempt: dead-letter, attempts exhausted",
                Situation {
                    attempt: 3,
                    ..situation(Failed(ErrorClass::Transient))
                },
                |s| s == Settle::DeadLetter(DeadLetterReason::AttemptsExhausted),
            ),
            (
                "transient failure after progress: a copy that carries it",
                Situation {
                    new_progress: true,
                    ..situation(Failed(ErrorClass::Transient))
                },
                |s| {
                    matches!(
                        s,
                        Settle::Copy {
                            for_: CopyFor::Retry,
                            ..
                        }
                    )
                },
            ),
            (
                "transient failure after progress on FIFO: run again while holding",
                Situation {
                    new_progress: true,
                    fifo: true,
                    ..situation(Failed(ErrorClass::Transient))
                },
                |s| matches!(s, Settle::HoldAndRunAgain(d) if d >= SECS(1) && d <= SECS(3)),
            ),
            (
                "transient failure after progress on the last attempt: dead-letter",
                Situation {
                    new_progress: true,
                    attempt: 3,
                    ..situation(Failed(ErrorClass::Transient))
                },
                |s| s == Settle::DeadLetter(DeadLetterReason::AttemptsExhausted),
            ),
        ];
        for (name, situation, expected) in rows {
            let got = settle(situation, POLICY);
            assert!(expected(got), "{name}: got {got:?}");
        }
    }

    #[test]
    fn repeated_announcements_back_off() {
        let policy = Policy {
            retry_base: SECS(1),
            retry_max: SECS(600),
        };
        let delay = |copies| match settle(
            Situation {
                copies,
                ..situation(AnnounceFailed)
            },
            policy,
        ) {
            Settle::Copy { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert!(delay(0) <= SECS(2));
        assert!(delay(6) >= SECS(32), "{:?}", delay(6));
        assert!(delay(30) <= MAX_COPY_DELAY);
    }
}
