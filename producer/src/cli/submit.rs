//! `shoal-producer submit`: bulk enqueue from JSON Lines (or one JSON job, such as a chain
//! written over many lines, or an array of jobs), with a progress bar on a terminal and a
//! summary at the end; with `--follow`, the jobs' events after that.
//!
//! Every line is read and checked first, and the whole file is refused if any line is
//! invalid: sending the good lines and leaving the bad would make a corrected re-run
//! enqueue the good ones twice.

use std::io::Read;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shoal_common::aws::AwsClients;
use shoal_common::{JobEnvelope, JobId};

use super::{CliError, Done, Output, SubmitArgs};
use crate::{Follower, Producer, SendOptions};

/// With `--follow`: where to follow the jobs once they are sent.
pub(super) struct Following<'a> {
    pub clients: &'a AwsClients,
    pub topic_arn: &'a str,
    pub timeout: Duration,
}

/// The jobs of a file, each with where it was (`line 3`, `job 2`), or every bad one.
type Parsed = Result<Vec<(String, JobEnvelope)>, Vec<(String, String)>>;

/// Reads JSON Lines, or one JSON job written over many lines (a chain), or an array of jobs.
fn parse(text: &str) -> Parsed {
    let whole = text.trim_start();
    let document = if whole.starts_with('[') {
        Some(serde_json::from_str::<serde_json::Value>(text))
    } else if whole.starts_with('{') && text.trim().contains('\n') {
        // One object over many lines; JSON Lines would fail on its first line.
        serde_json::from_str::<serde_json::Value>(text).ok().map(Ok)
    } else {
        None
    };
    let mut jobs = Vec::new();
    let mut invalid = Vec::new();
    match document {
        Some(Err(e)) => invalid.push(("file".to_owned(), format!("body: {e}"))),
        Some(Ok(serde_json::Value::Array(items))) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("job {}", i + 1);
                match JobEnvelope::from_request(item) {
                    Ok(job) => jobs.push((at, job)),
                    Err(e) => invalid.push((at, e.to_string())),
                }
            }
        }
        Some(Ok(item)) => match JobEnvelope::from_request(item) {
            Ok(job) => jobs.push(("job".to_owned(), job)),
            Err(e) => invalid.push(("job".to_owned(), e.to_string())),
        },
        None => {
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("line {}", n + 1);
                match shoal_common::job::parse_request_line(line) {
                    Ok(job) => jobs.push((at, job)),
                    Err(message) => invalid.push((at, message)),
                }
            }
        }
    }
    if invalid.is_empty() {
        Ok(jobs)
    } else {
        Err(invalid)
    }
}

pub(super) async fn submit(
    producer: &Producer,
    args: &SubmitArgs,
    options: &SendOptions,
    following: Option<Following<'_>>,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let mut text = String::new();
    let read = if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(&args.file).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| CliError::Refused(format!("file: cannot read {}: {e}", args.file.display())))?;
    let (line_numbers, jobs): (Vec<String>, Vec<JobEnvelope>) = match parse(&text) {
        Ok(jobs) => jobs.into_iter().unzip(),
        Err(invalid) => {
            for (at, message) in &invalid {
                out.note(format_args!("{at}: {message}"))?;
            }
            out.note(format_args!(
                "{} invalid job(s); nothing was sent",
                invalid.len()
            ))?;
            return Ok(Done::NotAll);
        }
    };
    let follower = match &following {
        Some(f) => {
            let ids: Vec<JobId> = jobs.iter().map(|j| j.job_id.clone()).collect();
            Some(
                Follower::start(f.clients, f.topic_arn, &ids, f.timeout)
                    .await
                    .map_err(|e| CliError::Refused(e.to_string()))?,
            )
        }
        None => None,
    };

    let bar = out.io.progress.then(|| {
        let bar = ProgressBar::new(jobs.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let on_sent = |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let result = producer.enqueue_many(&jobs, options, &on_sent).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(invalid) => {
            for (i, e) in invalid {
                out.note(format_args!("{}: {e}", line_numbers[i]))?;
            }
            out.note("nothing was sent")?;
            return Ok(Done::NotAll);
        }
    };

    let summary = serde_json::json!({
        "sent": report.enqueued.len(),
        "failed": report.failed.iter().map(|f| serde_json::json!({
            "at": line_numbers[f.index], "job_id": f.job_id, "code": f.code, "message": f.message,
        })).collect::<Vec<_>>(),
        "retried_entries": report.retried_entries,
        "calls": report.calls,
        "jobs": report.enqueued.iter().map(|(i, e)| serde_json::json!({
            "at": line_numbers[*i], "job_id": e.job_id, "kind": e.kind, "message_id": e.message_id,
        })).collect::<Vec<_>>(),
    });
    // In text the failures are diagnostics; with --json they are in the summary. A follow's
    // output is its events, one a line.
    if follower.is_none() {
        out.item(&summary, |_| Ok(()))?;
    }
    if !out.json {
        for f in &report.failed {
            out.note(format_args!(
                "{}: job {}: {}: {}",
                line_numbers[f.index], f.job_id, f.code, f.message
            ))?;
        }
    }
    out.note(format_args!(
        "sent {} of {} jobs in {} batch calls ({} entries retried), {} failed",
        report.enqueued.len(),
        jobs.len(),
        report.calls,
        report.retried_entries,
        report.failed.len()
    ))?;
    match follower {
        Some(follower) if report.failed.is_empty() => {
            let timeout = following.map_or(Duration::ZERO, |f| f.timeout);
            super::follow::follow(follower, timeout, out).await
        }
        Some(follower) => {
            follower.close().await;
            Ok(Done::NotAll)
        }
        None => Ok(Done::when(report.failed.is_empty())),
    }
}
