//! `shoal-producer submit`: bulk enqueue from JSON Lines, with a progress bar on a terminal
//! and a summary at the end.
//!
//! Every line is read and checked first, and the whole file is refused if any line is
//! invalid: sending the good lines and leaving the bad would make a corrected re-run
//! enqueue the good ones twice.

use std::io::BufRead;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, Done, Output, SubmitArgs};
use crate::{Producer, SendOptions};

pub(super) async fn submit(
    producer: &Producer,
    args: &SubmitArgs,
    options: &SendOptions,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file).map_err(|e| {
            CliError::Refused(format!("file: cannot open {}: {e}", args.file.display()))
        })?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut jobs = Vec::new();
    let mut line_numbers = Vec::new();
    let mut invalid = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line_no = n + 1;
        let line =
            line.map_err(|e| CliError::Refused(format!("line {line_no}: cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = shoal_common::job::parse_request_line(&line);
        match parsed {
            Ok(job) => {
                jobs.push(job);
                line_numbers.push(line_no);
            }
            Err(message) => invalid.push((line_no, message)),
        }
    }
    if !invalid.is_empty() {
        for (line, message) in &invalid {
            out.note(format_args!("line {line}: {message}"))?;
        }
        out.note(format_args!(
            "{} invalid line(s); nothing was sent",
            invalid.len()
        ))?;
        return Ok(Done::NotAll);
    }

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
                out.note(format_args!("line {}: {e}", line_numbers[i]))?;
            }
            out.note("nothing was sent")?;
            return Ok(Done::NotAll);
        }
    };

    let summary = serde_json::json!({
        "sent": report.enqueued.len(),
        "failed": report.failed.iter().map(|f| serde_json::json!({
            "line": line_numbers[f.index], "job_id": f.job_id, "code": f.code, "message": f.message,
        })).collect::<Vec<_>>(),
        "retried_entries": report.retried_entries,
        "calls": report.calls,
        "jobs": report.enqueued.iter().map(|(i, e)| serde_json::json!({
            "line": line_numbers[*i], "job_id": e.job_id, "kind": e.kind, "message_id": e.message_id,
        })).collect::<Vec<_>>(),
    });
    // In text the failures are diagnostics; with --json they are in the summary.
    out.item(&summary, |_| Ok(()))?;
    if !out.json {
        for f in &report.failed {
            out.note(format_args!(
                "line {}: job {}: {}: {}",
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
    Ok(Done::when(report.failed.is_empty()))
}
