//! The operator's verbs: `shoal-producer dlq list|redrive|delete|purge`, `retry`, `cancel`,
//! `pause`, `resume` and `console`, printing what [`crate::operate`] finds on, moves off and
//! deletes from the dead-letter queue, the failed jobs it runs again, the jobs it cancels and
//! the kinds it pauses; and starting the web console ([`crate::console`]).

use shoal_common::aws::AwsClients;
use shoal_common::config::QueueArgs;
use shoal_common::error::ShoalCode;

use super::{CancelArgs, CliError, DlqArgs, DlqCommand, Done, Output, PauseArgs, RetryArgs};
use crate::operate;
use crate::Producer;
use shoal_common::ledger::Ledger;
use shoal_common::JobId;

pub(super) async fn dlq(
    queue: &QueueArgs,
    clients: &AwsClients,
    ledger: Option<&Ledger>,
    command: DlqCommand,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let given = match &command {
        DlqCommand::List { dlq, .. }
        | DlqCommand::Redrive { dlq, .. }
        | DlqCommand::Delete { dlq, .. }
        | DlqCommand::Purge { dlq, .. } => dlq.dlq_url.clone(),
    };
    dlq_commands(queue, clients, ledger, command, out)
        .await
        .map_err(|e| match (e, given) {
            // The generic hint names the job queue's settings; this queue was --dlq-url.
            (CliError::Aws(e), Some(url)) if e.code.as_deref().is_some_and(is_no_such_queue) => {
                CliError::Refused(format!(
                    "dlq_url: {url} does not exist in this account and region: check --dlq-url \
                     (SHOAL_DLQ_URL) and AWS_REGION, or leave it out for the job queue's own \
                     dead-letter queue"
                ))
            }
            (e, _) => e,
        })
}

fn is_no_such_queue(code: &str) -> bool {
    matches!(
        code,
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue"
    )
}

async fn dlq_commands(
    queue: &QueueArgs,
    clients: &AwsClients,
    ledger: Option<&Ledger>,
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
            let at = operate::Redrive {
                sqs: &clients.sqs,
                dlq_url: &url,
                queue_url: &target.url,
                ledger,
            };
            let interrupted = async {
                // No signal handler (an unusual host): never interrupted.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let report =
                operate::redrive(at, &filter, operate::DEFAULT_HOLD, limit, interrupted).await?;
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
                "moved {} job(s) back to the job queue ({} opened for a rerun), left {}, {} dead-lettered since the redrive began, {} failed{}",
                report.moved.len(),
                report.rerun.len(),
                report.skipped,
                report.arrived_since,
                report.failed.len(),
                if report.interrupted { "; interrupted" } else { "" },
            ))?;
            if report.interrupted {
                return Ok(Done::Interrupted);
            }
            Ok(Done::when(report.failed.is_empty()))
        }
        DlqCommand::Delete { dlq, ids } => {
            let url = dlq_url(queue, clients, &dlq).await?;
            let report =
                operate::delete_dead_letters(&clients.sqs, &url, &ids, operate::DEFAULT_HOLD)
                    .await?;
            out.item(&report, |w| {
                for letter in &report.deleted {
                    writeln!(
                        w,
                        "deleted {} {}",
                        letter.message_id,
                        letter.job_id.as_deref().unwrap_or("(no job id)")
                    )?;
                }
                Ok(())
            })?;
            for id in &report.not_found {
                out.note(format_args!(
                    "not on the dead-letter queue: {id} (neither a message id nor a job id there)"
                ))?;
            }
            for (id, why) in &report.failed {
                out.note(format_args!("not deleted: message {id}: {why}"))?;
            }
            Ok(Done::when(
                report.not_found.is_empty() && report.failed.is_empty(),
            ))
        }
        DlqCommand::Purge { dlq, yes } => {
            let url = dlq_url(queue, clients, &dlq).await?;
            if !yes {
                let now = shoal_common::queue::QueueAttributes::fetch(&clients.sqs, &url).await?;
                return Err(CliError::Refused(format!(
                    "yes: purge deletes every message on {} (about {} now), for good; give --yes \
                     to do it, or `dlq delete ID...` for some",
                    shoal_common::queue::name_from_url(&url),
                    now.visible + now.in_flight + now.delayed
                )));
            }
            let gone = operate::purge_dead_letters(&clients.sqs, &url).await?;
            let name = shoal_common::queue::name_from_url(&url);
            out.item(
                &serde_json::json!({ "purged": name, "messages": gone }),
                |w| {
                    writeln!(
                        w,
                        "purged {name}: about {gone} message(s), gone within a minute"
                    )
                },
            )?;
            Ok(Done::All)
        }
    }
}

/// `retry`: the given failed jobs, or those the ledger lists, run again under their ids.
pub(super) async fn retry(
    producer: &Producer,
    args: &RetryArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let ids = match args.status {
        None => parse_ids(&args.job_ids)?,
        Some(status) => {
            let ledger = producer
                .ledger()
                .ok_or_else(|| CliError::from(crate::LookupError::NoLedger))?;
            crate::lookup::recent(ledger, &[status], &args.kinds, args.since, args.limit)
                .await?
                .into_iter()
                .filter_map(|r| JobId::parse(&r.job_id).ok())
                .collect()
        }
    };
    let report = producer.retry(&ids).await?;
    out.item(&report, |w| {
        for (job, run) in &report.rerun {
            writeln!(w, "{job} run {run}")?;
        }
        Ok(())
    })?;
    if !out.json {
        for (job, why) in &report.refused {
            out.note(format_args!("not rerun: {job}: {why}"))?;
        }
    }
    out.note(format_args!(
        "{} job(s) sent for another run, {} not",
        report.rerun.len(),
        report.refused.len()
    ))?;
    Ok(Done::when(report.refused.is_empty()))
}

/// `cancel`: the given jobs (and their chains), cancelled or told to stop.
pub(super) async fn cancel(
    producer: &Producer,
    args: &CancelArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let ids = parse_ids(&args.job_ids)?;
    let report = producer.cancel(&ids, args.chain, &args.by).await?;
    out.item(&report, |w| {
        for job in &report.cancelled {
            writeln!(w, "{job} cancelled")?;
        }
        for (job, holder) in &report.requested {
            writeln!(
                w,
                "{job} running on {}: told to stop at its next lease extension",
                holder.as_deref().unwrap_or("a worker")
            )?;
        }
        for (job, status) in &report.finished {
            writeln!(w, "{job} {status} already: not cancelled")?;
        }
        Ok(())
    })?;
    Ok(Done::when(report.finished.is_empty()))
}

/// `pause` and `resume`: what is paused after.
pub(super) async fn pause(
    producer: &Producer,
    args: &PauseArgs,
    pause: bool,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let paused = match pause {
        true => producer.pause(&args.kinds, args.all, &args.by).await?,
        false => producer.resume(&args.kinds, args.all, &args.by).await?,
    };
    out.document(&paused, |w| writeln!(w, "{}", describe_paused(&paused)))?;
    Ok(Done::All)
}

/// What is paused, as a person reads it.
pub(super) fn describe_paused(paused: &shoal_common::ledger::Paused) -> String {
    let kinds: Vec<&str> = paused.kinds.iter().map(String::as_str).collect();
    match (paused.all, kinds.is_empty()) {
        (true, _) => "paused: every kind".to_owned(),
        (false, true) => "paused: nothing".to_owned(),
        (false, false) => format!("paused: {}", kinds.join(", ")),
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<JobId>, CliError> {
    ids.iter()
        .map(|id| JobId::parse(id).map_err(|m| CliError::Refused(format!("job_id: `{id}` {m}"))))
        .collect()
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

/// `console`: serves the web console until interrupted, after saying where.
pub(super) async fn console(
    producer: Producer,
    clients: AwsClients,
    args: super::ConsoleArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    crate::console::check_listen(&args.listen, args.auth_token.as_deref())
        .map_err(CliError::Refused)?;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(CliError::Refused(format!(
                "listen: {} is in use (another console?); give another with --listen, such as \
                 127.0.0.1:0 for any free port",
                args.listen
            )))
        }
        Err(e) => return Err(CliError::Output(e)),
    };
    let addr = listener.local_addr()?;
    out.item(
        &serde_json::json!({ "console": format!("http://{addr}/") }),
        |w| writeln!(w, "Shoal console: http://{addr}/ (Ctrl-C stops it)"),
    )?;
    out.io.out.flush()?;
    let config = crate::console::ConsoleConfig {
        producer,
        clients,
        dlq_url: args.dlq.dlq_url,
        read_only: args.read_only,
        auth_token: args.auth_token,
        refresh: args.refresh,
        by: args.by,
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::console::serve(config, listener, stop).await?;
    Ok(Done::All)
}
