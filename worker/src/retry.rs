//! How long a transiently failed job waits before SQS delivers it again.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;

/// SQS's longest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Doublings after which any base has reached any cap SQS allows: past this, more steps
/// change nothing, so an attempt number from a message (which anyone may have written) is
/// never walked step by step.
const MAX_STEPS: u32 = 64;

/// The delay after failed attempt `attempt` (from 1): exponential from `base`, doubling,
/// jittered by ±50% so a burst of failures does not return as a burst, capped at `cap` and at
/// SQS's 12-hour limit. The attempt number comes from `ApproximateReceiveCount`, so the
/// schedule survives worker restarts with no state of its own.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let cap = cap.min(MAX_VISIBILITY);
    let mut backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(base)
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_interval(cap)
        .with_max_elapsed_time(None)
        .build();
    let mut delay = base;
    for _ in 0..attempt.clamp(1, MAX_STEPS) {
        delay = backoff.next_backoff().unwrap_or(cap);
    }
    delay.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_attempts_within_jitter_and_stop_at_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for attempt in 1..=3u32 {
            let nominal = 2f64 * 2f64.powi(attempt as i32 - 1);
            let d = retry_delay(attempt, base, cap).as_secs_f64();
            assert!(
                d >= nominal * 0.5 - 1e-9 && d <= nominal * 1.5 + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
        for attempt in 8..20 {
            assert!(retry_delay(attempt, base, cap) <= cap);
        }
        assert!(retry_delay(40, base, Duration::from_secs(100_000)) <= MAX_VISIBILITY);
        let huge = retry_delay(u32::MAX, Duration::from_millis(1), cap);
        assert!(huge >= cap / 2 && huge <= cap, "{huge:?}");
    }
}
