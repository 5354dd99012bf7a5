//! `shoal-producer submit`: bulk enqueue from JSON Lines (or one JSON job, such as a chain
//! written over many lines, or an array of jobs), with a progress bar on a terminal and a
//! summary at the end; with `--follow`, the jobs' events after that.
//!
//! The whole file is refused if any line is invalid: sending the good lines and leaving the
//! bad would make a corrected re-run enqueue the good ones twice. JSON Lines are read twice
//! so that memory does not grow with the file: a first pass checks every line (reporting
//! each bad one), a second sends them, packed into batches as they are read. Standard input
//! is spooled to a temporary file first. A JSON document (a chain, an array) is small by
//! nature and read whole, and so are the jobs of a `--follow`, whose ids must be known
//! before anything is sent.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shoal_common::aws::AwsClients;
use shoal_common::job::{parse_request_line_as, with_default_id};
use shoal_common::{JobEnvelope, JobId};

use super::{CliError, Done, Output, SubmitArgs};
use crate::follow::MAX_FOLLOWED;
use crate::message::OutgoingMessage;
use crate::{BatchReport, Follower, Producer, SendOptions};

/// With `--follow`: where to follow the jobs once they are sent.
pub(super) struct Following<'a> {
    pub clients: &'a AwsClients,
    pub topic_arn: &'a str,
    pub timeout: Duration,
}

/// Where a job was in the input: `line 3`, `job 2` (of an array), or `job`.
type At = String;

pub(super) async fn submit(
    producer: &Producer,
    args: &SubmitArgs,
    options: &SendOptions,
    following: Option<Following<'_>>,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let input = Input::open(&args.file)?;
    let fifo = producer.queue().is_fifo();
    let seed = IdSeed::new(args.id_seed.as_deref());
    out.note(format_args!(
        "job ids from --id-seed {}: sending this file again with it sends the same jobs",
        seed.0
    ))?;
    let checked = match input.format()? {
        Format::Lines if following.is_none() => check_lines(&input, options, fifo, &seed)?,
        format => {
            return match read_whole(&input, format, &seed)? {
                Ok(jobs) => send_held(producer, jobs, options, following, out).await,
                Err(invalid) => refuse(&invalid, out),
            };
        }
    };
    if !checked.invalid.is_empty() {
        return refuse(&checked.invalid, out);
    }

    let bar = progress(out, checked.valid);
    let on_sent = |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let mut summary = Summary::start(out)?;
    let mut changed = None;
    let mut unread = None;
    let messages = read_lines(&input)?
        .map_while(|(n, line)| match line {
            Ok(line) => Some((n, line)),
            Err(e) => {
                unread = Some((n, e));
                None
            }
        })
        .filter_map(|(n, line)| {
            let built = parse_request_line_as(&line, || seed.id(n, &line))
                .and_then(|job| build(&job, options, fifo).map_err(|e| e.to_string()));
            match built {
                Ok(msg) => Some((n, msg)),
                Err(e) => {
                    // Checked a moment ago: the file changed while it was being sent.
                    changed.get_or_insert((n, e));
                    None
                }
            }
        });
    let mut written = Ok(());
    producer
        .enqueue_stream(messages, &on_sent, |report| {
            if written.is_ok() {
                written = summary.batch(out, report, |i| format!("line {i}"));
            }
        })
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    written?;
    let incomplete = changed.is_some() || unread.is_some();
    if let Some((n, e)) = changed {
        out.note(format_args!(
            "line {n}: {e} (the file changed while it was being sent: that line was not sent)"
        ))?;
    }
    if let Some((n, e)) = unread {
        out.note(format_args!(
            "line {n}: cannot read: {e} (no line from it on was sent; send the file again with \
             --id-seed {} once it reads)",
            seed.0
        ))?;
    }
    let done = summary.finish(out, checked.valid)?;
    Ok(if incomplete { Done::NotAll } else { done })
}

/// `submit --check`: every job decoded, validated and built as it would be sent, and none
/// sent; no queue is needed (a FIFO queue's own rules, the message group, are not checked).
pub(super) fn check(
    args: &SubmitArgs,
    options: &SendOptions,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let input = Input::open(&args.file)?;
    let seed = IdSeed::new(args.id_seed.as_deref());
    let checked = match input.format()? {
        Format::Lines => check_lines(&input, options, false, &seed)?,
        format => match read_whole(&input, format, &seed)? {
            Ok(jobs) => {
                let mut checked = Checked {
                    valid: 0,
                    invalid: Vec::new(),
                };
                for (at, job) in jobs {
                    match build(&job, options, false) {
                        Ok(_) => checked.valid += 1,
                        Err(e) => checked.invalid.push((at, e.to_string())),
                    }
                }
                checked
            }
            Err(invalid) => Checked { valid: 0, invalid },
        },
    };
    if !checked.invalid.is_empty() {
        return refuse(&checked.invalid, out);
    }
    out.note(format_args!(
        "{} valid job(s); nothing was sent (--check)",
        checked.valid
    ))?;
    Ok(Done::All)
}

/// The input, as a file that can be read twice.
struct Input {
    path: PathBuf,
    /// A spooled copy of standard input, removed when done.
    spooled: bool,
}

impl Input {
    fn open(path: &Path) -> Result<Input, CliError> {
        if path.as_os_str() != "-" {
            File::open(path).map_err(|e| cannot_read(path, e))?;
            return Ok(Input {
                path: path.to_owned(),
                spooled: false,
            });
        }
        let spool = std::env::temp_dir().join(format!(
            "shoal-submit-{}.jsonl",
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = File::create(&spool).map_err(|e| cannot_read(&spool, e))?;
        let input = Input {
            path: spool,
            spooled: true,
        };
        std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| CliError::Refused(format!("file: cannot spool standard input: {e}")))?;
        Ok(input)
    }

    fn reader(&self) -> Result<BufReader<File>, CliError> {
        File::open(&self.path)
            .map(BufReader::new)
            .map_err(|e| cannot_read(&self.path, e))
    }

    /// JSON Lines, unless the input is one JSON document: an array, or an object that its
    /// first line does not complete.
    fn format(&self) -> Result<Format, CliError> {
        let mut reader = self.reader()?;
        let mut first = String::new();
        while first.trim().is_empty() {
            first.clear();
            if reader
                .read_line(&mut first)
                .map_err(|e| cannot_read(&self.path, e))?
                == 0
            {
                return Ok(Format::Lines);
            }
        }
        let first = first.trim();
        Ok(if first.starts_with('[') {
            Format::Array
        } else if first.starts_with('{')
            && serde_json::from_str::<serde_json::Value>(first).is_err()
        {
            Format::Document
        } else {
            Format::Lines
        })
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        if self.spooled {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn cannot_read(path: &Path, e: std::io::Error) -> CliError {
    CliError::Refused(format!("file: cannot read {}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Lines,
    Array,
    Document,
}

/// The non-blank lines of the input, numbered from 1; a line that cannot be read is its
/// error, and the caller stops there.
fn read_lines(
    input: &Input,
) -> Result<impl Iterator<Item = (usize, std::io::Result<String>)>, CliError> {
    let reader = input.reader()?;
    Ok(reader
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line))
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty())))
}

/// Where the ids of a submission's jobs that name none come from: a job's id is derived from
/// the seed, its place and its text, the same on every run with the same seed.
struct IdSeed(String);

impl IdSeed {
    fn new(given: Option<&str>) -> IdSeed {
        IdSeed(given.map_or_else(|| JobId::generate().to_string(), str::to_owned))
    }

    /// The id of the job at line (or item) `n` whose text is `text`.
    fn id(&self, n: usize, text: &str) -> JobId {
        let name = format!("shoal-submit\n{}\n{n}\n{}", self.0, text.trim());
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string();
        JobId::parse(&id).unwrap_or_else(|_| JobId::generate())
    }
}

/// What the first pass found.
struct Checked {
    valid: usize,
    invalid: Vec<(At, String)>,
}

/// The first pass: every line decoded, validated and built as it would be sent; nothing kept
/// but the count and the faults.
fn check_lines(
    input: &Input,
    options: &SendOptions,
    fifo: bool,
    seed: &IdSeed,
) -> Result<Checked, CliError> {
    let mut checked = Checked {
        valid: 0,
        invalid: Vec::new(),
    };
    let mut reader = input.reader()?;
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| CliError::Refused(format!("line {}: cannot read: {e}", n + 1)))?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        let built = parse_request_line_as(text, || seed.id(n, text))
            .and_then(|job| build(&job, options, fifo).map_err(|e| e.to_string()));
        match built {
            Ok(_) => checked.valid += 1,
            Err(message) => checked.invalid.push((format!("line {n}"), message)),
        }
    }
    Ok(checked)
}

fn build(
    job: &JobEnvelope,
    options: &SendOptions,
    fifo: bool,
) -> Result<OutgoingMessage, CliError> {
    crate::enqueue_span(job)
        .in_scope(|| OutgoingMessage::build(job, options, fifo))
        .map_err(CliError::from)
}

/// A JSON document (one job, or an array of jobs), or the lines of a followed submission,
/// read whole.
#[allow(clippy::type_complexity)]
fn read_whole(
    input: &Input,
    format: Format,
    seed: &IdSeed,
) -> Result<Result<Vec<(At, JobEnvelope)>, Vec<(At, String)>>, CliError> {
    let mut jobs = Vec::new();
    let mut invalid = Vec::new();
    match format {
        Format::Lines => {
            for (n, line) in read_lines(input)? {
                let line = line.map_err(|e| {
                    CliError::Refused(format!("line {n}: cannot read: {e}; nothing was sent"))
                })?;
                match parse_request_line_as(&line, || seed.id(n, &line)) {
                    Ok(job) => jobs.push((format!("line {n}"), job)),
                    Err(message) => invalid.push((format!("line {n}"), message)),
                }
            }
        }
        Format::Array | Format::Document => {
            let mut text = String::new();
            input
                .reader()?
                .read_to_string(&mut text)
                .map_err(|e| cannot_read(&input.path, e))?;
            let items = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (i + 1, format!("job {}", i + 1), item))
                    .collect(),
                Ok(item) => vec![(1, "job".to_owned(), item)],
                Err(e) => {
                    invalid.push(("file".to_owned(), format!("body: {e}")));
                    Vec::new()
                }
            };
            for (n, at, item) in items {
                let text = item.to_string();
                let item = with_default_id(item, || seed.id(n, &text));
                match JobEnvelope::from_request(item) {
                    Ok(job) => jobs.push((at, job)),
                    Err(e) => invalid.push((at, e.to_string())),
                }
            }
        }
    }
    Ok(if invalid.is_empty() {
        Ok(jobs)
    } else {
        Err(invalid)
    })
}

/// Sends jobs held in memory (and follows them, with `--follow`).
async fn send_held(
    producer: &Producer,
    jobs: Vec<(At, JobEnvelope)>,
    options: &SendOptions,
    following: Option<Following<'_>>,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let (at, jobs): (Vec<At>, Vec<JobEnvelope>) = jobs.into_iter().unzip();
    let follower = match &following {
        Some(f) => {
            if jobs.len() > MAX_FOLLOWED {
                return Err(CliError::Usage(format!(
                    "follow: {} jobs; one follow takes at most {MAX_FOLLOWED} (submit without --follow, then `follow` them in groups)",
                    jobs.len()
                )));
            }
            let ids: Vec<JobId> = jobs.iter().map(|j| j.job_id.clone()).collect();
            let follower = Follower::start(f.clients, f.topic_arn, &ids, f.timeout)
                .await
                .map_err(|e| CliError::Refused(e.to_string()))?;
            Some(match producer.ledger() {
                Some(ledger) => follower.answering_from(ledger.clone()),
                None => follower,
            })
        }
        None => None,
    };
    let bar = progress(out, jobs.len());
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
            if let Some(follower) = follower {
                follower.close().await;
            }
            let invalid: Vec<(At, String)> = invalid
                .into_iter()
                .map(|(i, e)| (at.get(i).cloned().unwrap_or_default(), e.to_string()))
                .collect();
            return refuse(&invalid, out);
        }
    };
    let all_sent = report.failed.is_empty();
    match follower {
        // A follow's output is its events, one a line.
        Some(follower) if all_sent => {
            out.note(format_args!("sent {} job(s); following", jobs.len()))?;
            let timeout = following.map_or(Duration::ZERO, |f| f.timeout);
            super::follow::follow(follower, timeout, out).await
        }
        follower => {
            if let Some(follower) = follower {
                follower.close().await;
            }
            let mut summary = Summary::start(out)?;
            summary.batch(out, report, |i| at.get(i).cloned().unwrap_or_default())?;
            summary.finish(out, jobs.len())
        }
    }
}

fn refuse(invalid: &[(At, String)], out: &mut Output<'_, '_>) -> Result<Done, CliError> {
    for (at, message) in invalid {
        out.note(format_args!("{at}: {message}"))?;
    }
    out.note(format_args!(
        "{} invalid job(s); nothing was sent",
        invalid.len()
    ))?;
    Ok(Done::Refused)
}

fn progress(out: &Output<'_, '_>, total: usize) -> Option<ProgressBar> {
    out.io.progress.then(|| {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    })
}

/// The run's summary, written as it goes: with `--json`, one JSON document whose `jobs`
/// array is streamed as batches complete (so nothing grows with the input but the failures);
/// in text, each sent job's id on standard output, the failures as notes and a closing line.
struct Summary {
    sent: usize,
    failed: Vec<serde_json::Value>,
    retried_entries: usize,
    calls: usize,
}

impl Summary {
    fn start(out: &mut Output<'_, '_>) -> Result<Summary, CliError> {
        if out.json {
            write!(out.io.out, "{{\"jobs\":[")?;
        }
        Ok(Summary {
            sent: 0,
            failed: Vec::new(),
            retried_entries: 0,
            calls: 0,
        })
    }

    fn batch(
        &mut self,
        out: &mut Output<'_, '_>,
        report: BatchReport,
        at: impl Fn(usize) -> At,
    ) -> Result<(), CliError> {
        self.retried_entries += report.retried_entries;
        self.calls += report.calls;
        for (i, e) in report.enqueued {
            if out.json {
                let job = serde_json::json!({
                    "at": at(i), "job_id": e.job_id, "kind": e.kind, "message_id": e.message_id,
                });
                let sep = if self.sent == 0 { "" } else { "," };
                write!(out.io.out, "{sep}{job}")?;
            } else {
                // Each job's id as it is sent, as a single job's command prints its id.
                writeln!(out.io.out, "{}", e.job_id)?;
            }
            self.sent += 1;
        }
        for f in report.failed {
            if !out.json {
                out.note(format_args!(
                    "{}: job {}: {}: {}",
                    at(f.index),
                    f.job_id,
                    f.code,
                    f.message
                ))?;
            }
            self.failed.push(serde_json::json!({
                "at": at(f.index), "job_id": f.job_id, "code": f.code, "message": f.message,
            }));
        }
        Ok(())
    }

    fn finish(self, out: &mut Output<'_, '_>, total: usize) -> Result<Done, CliError> {
        if out.json {
            let failed = serde_json::Value::Array(self.failed.clone());
            writeln!(
                out.io.out,
                "],\"sent\":{},\"failed\":{failed},\"retried_entries\":{},\"calls\":{}}}",
                self.sent, self.retried_entries, self.calls
            )?;
        }
        out.note(format_args!(
            "sent {} of {total} jobs in {} batch calls ({} entries retried), {} failed",
            self.sent,
            self.calls,
            self.retried_entries,
            self.failed.len()
        ))?;
        Ok(Done::when(self.failed.is_empty() && self.sent == total))
    }
}
