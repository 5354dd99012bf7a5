//! `--follow` and `shoal-producer follow`: printing each completion event of the followed
//! jobs and their chains as it arrives, then the exit status that sums them up.

use std::time::Duration;

use shoal_common::aws::AwsClients;
use shoal_common::error::{ErrorClass, ShoalCode};
use shoal_common::event::{EventError, EventSource, JobEvent, JobStatus};
use tokio::time::Instant;

use super::{CliError, Done, Output};
use crate::follow::{FollowError, Follower};
use crate::operate;

/// The completion topic, which following needs.
pub(super) fn topic(topic_arn: &Option<String>) -> Result<&str, CliError> {
    topic_arn.as_deref().ok_or_else(|| {
        CliError::Usage(
            "topic_arn: following needs the completion topic: set --topic-arn (SHOAL_TOPIC_ARN)"
                .into(),
        )
    })
}

/// Prints the events `follower` receives until every followed job and follow-up has one,
/// `timeout` passes (124) or the user interrupts (130); the follower is closed either way.
pub(super) async fn follow(
    mut follower: Follower,
    timeout: Duration,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let deadline = Instant::now() + timeout;
    let ended = loop {
        let next = tokio::select! {
            next = follower.next_event(deadline) => next,
            _ = tokio::signal::ctrl_c() => break Ok(Done::Interrupted),
        };
        match next {
            Ok(Some(event)) => print_event(&event, out)?,
            Ok(None) => break Ok(Done::when(follower.tracker().all_succeeded())),
            Err(FollowError::Timeout { pending }) => {
                out.note(FollowError::Timeout { pending })?;
                break Ok(Done::TimedOut);
            }
            Err(e) => break Err(e),
        }
    };
    let events = follower.tracker().events().len();
    let failed: Vec<String> = follower
        .tracker()
        .events()
        .iter()
        .filter(|e| e.status == JobStatus::Failed)
        .filter_map(|e| e.job_id.clone())
        .collect();
    follower.close().await;
    let done = ended.map_err(|e| match e {
        FollowError::Aws(e) => CliError::Aws(e),
        other => CliError::Refused(other.to_string()),
    })?;
    if done != Done::Interrupted {
        out.note(format_args!(
            "{events} job(s) finished, {} failed{}",
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.join(", "))
            }
        ))?;
    }
    Ok(done)
}

fn print_event(event: &JobEvent, out: &mut Output<'_, '_>) -> Result<(), CliError> {
    out.item(event, |w| {
        let id = event.job_id.as_deref().unwrap_or("-");
        let kind = match &event.step {
            Some(step) => format!("{} ({step})", event.kind.as_deref().unwrap_or("?")),
            None => event.kind.clone().unwrap_or_else(|| "?".to_owned()),
        };
        match (&event.status, &event.error) {
            (JobStatus::Failed, Some(error)) => writeln!(
                w,
                "{id} {kind} failed after {} attempt(s): {}: {}{}",
                event.attempts,
                error.code.as_deref().unwrap_or("no code"),
                error.message,
                if error.dead_lettered {
                    " (dead-lettered)"
                } else {
                    ""
                }
            ),
            (JobStatus::Cancelled, Some(error)) => {
                writeln!(w, "{id} {kind} cancelled: {}", error.message)
            }
            _ => {
                writeln!(
                    w,
                    "{id} {kind} {} in {}{}",
                    event.status.as_str(),
                    took(&event.timings),
                    match event.follow_ups.len() {
                        0 => String::new(),
                        n => format!("; {n} follow-up(s): {}", event.follow_ups.join(", ")),
                    }
                )?;
                write_result(w, event.result.as_ref())
            }
        }
    })
}

/// Most lines of a result printed under its job; `--json` prints it whole.
const RESULT_LINES: usize = 40;

/// What the job made (a launch's instances, a dry run's would-delete list), as indented
/// JSON under its line.
fn write_result(
    w: &mut dyn std::io::Write,
    result: Option<&serde_json::Value>,
) -> std::io::Result<()> {
    let Some(result) = result.filter(|r| !r.is_null()) else {
        return Ok(());
    };
    let pretty = serde_json::to_string_pretty(result).unwrap_or_default();
    let lines: Vec<&str> = pretty.lines().collect();
    for line in lines.iter().take(RESULT_LINES) {
        writeln!(w, "  {line}")?;
    }
    if lines.len() > RESULT_LINES {
        writeln!(
            w,
            "  … {} more lines (--json prints the whole result)",
            lines.len() - RESULT_LINES
        )?;
    }
    Ok(())
}

/// How long a job took, as a person reads it: the whole job from its first start (its waits
/// for EC2 and retries included) and, when that differs, this last run.
fn took(t: &shoal_common::event::Timings) -> String {
    match t.job_ms {
        Some(job_ms) if job_ms > t.run_ms => {
            format!("{} (last run {} ms)", human_ms(job_ms), t.run_ms)
        }
        _ => format!("{} ms", t.run_ms),
    }
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// Looks for the followed jobs (and their chains) in the dead-letter queue, where a job that
/// failed before the follower subscribed waits with its reason, and tells the follower.
pub(super) async fn look_in_dead_letters(
    clients: &AwsClients,
    dlq_url: &str,
    follower: &mut Follower,
    out: &mut Output<'_, '_>,
) -> Result<(), CliError> {
    let letters =
        operate::list_dead_letters(&clients.sqs, dlq_url, operate::DEFAULT_HOLD, None).await?;
    for letter in letters {
        let event = JobEvent::new(
            EventSource::not_run(
                letter.job_id.clone(),
                letter.kind.clone(),
                letter.attempts.unwrap_or(0),
                letter.message_id.clone(),
                "dead-letter queue".into(),
            ),
            JobStatus::Failed,
            None,
            Some(EventError {
                class: ErrorClass::Permanent,
                code: Some(
                    letter
                        .error_code
                        .clone()
                        .unwrap_or_else(|| ShoalCode::RedrivenBySqs.as_str().to_owned()),
                ),
                message: letter
                    .error
                    .clone()
                    .unwrap_or_else(|| "moved by the queue's redrive policy".into()),
                dead_lettered: true,
            }),
        );
        if follower.observe(&event) {
            print_event(&event, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shoal_common::event::Timings;

    fn timings(run_ms: u64, job_ms: Option<u64>) -> Timings {
        Timings {
            submitted_at: None,
            enqueued_at: None,
            first_started_at: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            queue_ms: None,
            run_ms,
            job_ms,
        }
    }

    #[test]
    fn a_job_that_waited_reports_its_whole_time_and_its_last_run() {
        assert_eq!(took(&timings(37, Some(154_000))), "2m34s (last run 37 ms)");
        assert_eq!(took(&timings(37, Some(12_300))), "12.3 s (last run 37 ms)");
        assert_eq!(took(&timings(37, Some(37))), "37 ms");
        assert_eq!(took(&timings(37, None)), "37 ms", "the first start unknown");
    }
}
