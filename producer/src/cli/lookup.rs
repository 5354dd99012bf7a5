//! `job` and `jobs`: jobs as the ledger holds them, one with its chain, or recent ones by
//! status.

use std::io::Write;

use chrono::{DateTime, Utc};
use shoal_common::event::JobStatus;
use shoal_common::ledger::{Ledger, Record, Status};
use shoal_common::JobId;

use super::{CliError, Done, JobsArgs, LookupArgs, Output};
use crate::{JobReport, LookupError};

impl From<LookupError> for CliError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NoLedger => CliError::Usage(e.to_string()),
            LookupError::Aws(e) => CliError::Aws(e),
        }
    }
}

/// `job JOB_ID`: the record, then the chain's steps; exit 1 when there is no record.
pub(super) async fn job(
    ledger: &Ledger,
    args: &LookupArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let job_id = JobId::parse(&args.job_id)
        .map_err(|m| CliError::Refused(format!("job_id: `{}` {m}", args.job_id)))?;
    let report = JobReport::read(ledger, &job_id).await?;
    let Some(record) = &report.record else {
        out.note(format_args!(
            "no record of job {job_id}: not enqueued by a producer with this ledger (nor claimed by a worker with it), or expired"
        ))?;
        out.item(&report, |_| Ok(()))?;
        return Ok(Done::NotAll);
    };
    out.document(&report, |w| {
        describe(w, record)?;
        if !report.chain.is_empty() {
            writeln!(
                w,
                "chain {} ({} steps on record):",
                chain_of(record),
                report.chain.len()
            )?;
            let now = Utc::now();
            for step in &report.chain {
                writeln!(w, "  {}", line(step, now))?;
            }
        }
        Ok(())
    })?;
    Ok(Done::All)
}

/// `jobs`: recent records, newest first, one line each.
pub(super) async fn jobs(
    ledger: &Ledger,
    args: &JobsArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let statuses: Vec<Status> = if args.statuses.is_empty() {
        Status::ALL.to_vec()
    } else {
        args.statuses.clone()
    };
    let records =
        crate::lookup::recent(ledger, &statuses, &args.kinds, args.since, args.limit).await?;
    if !records.is_empty() {
        out.text(|w| writeln!(w, "{}", header()))?;
    }
    let now = Utc::now();
    for record in &records {
        out.item(record, |w| writeln!(w, "{}", line(record, now)))?;
    }
    out.note(format_args!("{} job(s)", records.len()))?;
    Ok(Done::All)
}

fn chain_of(record: &Record) -> &str {
    record.chain_id.as_deref().unwrap_or(&record.job_id)
}

fn at(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

/// The column names over [`line`]'s columns.
fn header() -> String {
    format!(
        "{:<40} {:<26} {:<9} {:>7} {:>9}  {:<24} ERROR",
        "JOB", "KIND", "STATUS", "ATTEMPT", "DURATION", "CHANGED"
    )
}

/// One record on one line: id, kind, status, attempt, how long it ran (from its first start
/// to its end, or to `now` while unfinished), last change, and the error's code.
fn line(record: &Record, now: DateTime<Utc>) -> String {
    let error = record
        .outcome
        .as_ref()
        .and_then(|o| o.error.as_ref())
        .map(|e| e.code.as_deref().unwrap_or("no code").to_owned())
        .unwrap_or_default();
    let duration = crate::lookup::took(record, now)
        .map(|took| format!("{:.1}s", took.num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<40} {:<26} {:<9} {:>7} {:>9}  {:<24} {error}",
        record.job_id,
        record.kind.as_deref().unwrap_or("?"),
        record.status.as_str(),
        record.attempt,
        duration,
        at(record.updated_at),
    )
    .trim_end()
    .to_owned()
}

/// The whole record, as a person reads it.
fn describe(w: &mut dyn Write, record: &Record) -> std::io::Result<()> {
    writeln!(w, "job        {}", record.job_id)?;
    writeln!(w, "kind       {}", record.kind.as_deref().unwrap_or("?"))?;
    writeln!(w, "status     {}", record.status.as_str())?;
    if record.run > 1 {
        writeln!(w, "run        {}", record.run)?;
    }
    writeln!(w, "attempt    {}", record.attempt)?;
    let due = record
        .envelope
        .as_ref()
        .and_then(|e| e.get("not_before"))
        .and_then(|t| t.as_str());
    if let (Some(due), false) = (due, record.status.is_finished()) {
        writeln!(w, "due        {due}")?;
    }
    if let Some(parent) = &record.parent_job_id {
        writeln!(w, "parent     {parent}")?;
    }
    if record
        .chain_id
        .as_deref()
        .is_some_and(|c| c != record.job_id)
    {
        writeln!(w, "chain      {}", chain_of(record))?;
    }
    match (&record.holder, record.lease_until) {
        (Some(holder), Some(until)) if !record.status.is_finished() => {
            writeln!(w, "held by    {holder} until {}", at(Some(until)))?
        }
        (Some(holder), _) => writeln!(w, "last run   {holder}")?,
        _ => {}
    }
    writeln!(w, "started    {}", at(record.first_started_at))?;
    if record.finished_at.is_some() {
        writeln!(w, "finished   {}", at(record.finished_at))?;
    }
    if !record.progress.is_empty() && !record.status.is_finished() {
        writeln!(
            w,
            "progress   {}",
            serde_json::Value::Object(record.progress.clone())
        )?;
    }
    if let Some(outcome) = &record.outcome {
        if let Some(ms) = outcome.timings.job_ms.or(Some(outcome.timings.run_ms)) {
            writeln!(w, "took       {ms} ms")?;
        }
        match (&outcome.status, &outcome.error) {
            (JobStatus::Failed | JobStatus::Cancelled, Some(e)) => writeln!(
                w,
                "error      {}: {}{}",
                e.code.as_deref().unwrap_or("no code"),
                e.message,
                if e.dead_lettered {
                    " (dead-lettered)"
                } else {
                    ""
                }
            )?,
            _ => {
                if let Some(result) = &outcome.result {
                    writeln!(w, "result     {result}")?;
                }
                if !outcome.follow_ups.is_empty() {
                    writeln!(w, "follow-ups {}", outcome.follow_ups.join(", "))?;
                }
            }
        }
    }
    for failure in &record.earlier_failures {
        let error = &failure["error"];
        writeln!(
            w,
            "run {} failed {}: {}",
            failure["run"],
            error["code"].as_str().unwrap_or("no code"),
            error["message"].as_str().unwrap_or("no message"),
        )?;
    }
    Ok(())
}
