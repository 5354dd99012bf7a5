//! `shoal-producer dlq list|redrive`: printing what [`crate::operate`] finds on, and moves
//! off, the dead-letter queue.

use shoal_common::aws::AwsClients;
use shoal_common::config::QueueArgs;
use shoal_common::error::ShoalCode;

use super::{CliError, DlqArgs, DlqCommand, Done, Output};
use crate::operate;

pub(super) async fn dlq(
    queue: &QueueArgs,
    clients: &AwsClients,
    command: DlqCommand,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    match command {
        DlqCommand::List { dlq, limit } => {
            let url = dlq_url(queue, clients, &dlq).await?;
            let letters =
                operate::list_dead_letters(&clients.sqs, &url, operate::DEFAULT_HOLD, limit)
                    .await?;
            for letter in &letters {
                out.item(letter, |w| {
                    writeln!(
                        w,
                        "{} {:<27} {} attempts={} {}: {}",
                        letter.sent_at.as_deref().unwrap_or("-"),
                        letter.kind.as_deref().unwrap_or("?"),
                        letter.job_id.as_deref().unwrap_or("-"),
                        letter.attempts.map_or("?".into(), |a| a.to_string()),
                        letter
                            .error_code
                            .as_deref()
                            .unwrap_or(ShoalCode::RedrivenBySqs.as_str()),
                        letter.error.as_deref().unwrap_or(
                            "moved by the queue's redrive policy: no worker finished it"
                        ),
                    )
                })?;
            }
            out.note(format_args!("{} dead-lettered job(s)", letters.len()))?;
            Ok(Done::All)
        }
        DlqCommand::Redrive {
            dlq,
            jobs,
            kinds,
            limit,
        } => {
            let url = dlq_url(queue, clients, &dlq).await?;
            let target = queue.resolve(&clients.sqs).await?;
            let filter = operate::RedriveFilter {
                job_ids: jobs,
                kinds,
            };
            let report = operate::redrive(
                &clients.sqs,
                &url,
                &target.url,
                &filter,
                operate::DEFAULT_HOLD,
                limit,
            )
            .await?;
            out.item(&report, |w| {
                for letter in &report.moved {
                    writeln!(
                        w,
                        "{} {}",
                        letter.kind.as_deref().unwrap_or("?"),
                        letter.job_id.as_deref().unwrap_or(&letter.message_id)
                    )?;
                }
                Ok(())
            })?;
            if !report.failed.is_empty() && !out.json {
                for (id, reason) in &report.failed {
                    out.note(format_args!("not moved: message {id}: {reason}"))?;
                }
            }
            out.note(format_args!(
                "moved {} job(s) back to the job queue, left {}, {} failed",
                report.moved.len(),
                report.skipped,
                report.failed.len()
            ))?;
            Ok(Done::when(report.failed.is_empty()))
        }
    }
}

/// The dead-letter queue: as given, or the job queue's redrive target.
async fn dlq_url(
    queue: &QueueArgs,
    clients: &AwsClients,
    args: &DlqArgs,
) -> Result<String, CliError> {
    if let Some(url) = &args.dlq_url {
        return Ok(url.clone());
    }
    let target = queue.resolve(&clients.sqs).await?;
    operate::dead_letter_queue_url(&clients.sqs, &target.url)
        .await
        .map_err(|e| CliError::Refused(format!("dlq_url: {e}")))
}
