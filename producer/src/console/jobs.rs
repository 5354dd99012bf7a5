//! The jobs (`/jobs`): recent records by status, kind and time range through the ledger's
//! status index (never a scan), with the failed ones selectable for a retry and the unfinished
//! ones for a cancel; and one job (`/jobs/{id}`): its record, every run with its error, its
//! timings, its result as indented JSON, its chain as a tree, and what happens to it next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use shoal_common::event::JobStatus;
use shoal_common::ledger::{Record, Status};
use shoal_common::JobId;

use super::html::{csrf, job_link, json, layout, nothing, status, took, verb, when, Fields};
use super::{Console, PageError};
use crate::JobReport;

/// The time ranges the list offers, as `--since` spells them.
const RANGES: [(&str, Duration); 5] = [
    ("15m", Duration::from_secs(15 * 60)),
    ("1h", Duration::from_secs(3600)),
    ("6h", Duration::from_secs(6 * 3600)),
    ("24h", Duration::from_secs(24 * 3600)),
    ("7d", Duration::from_secs(7 * 24 * 3600)),
];

const LIMIT: usize = 200;

/// `GET /jobs?status=…&kind=…&since=…`, or `?id=…` to go to one job.
pub(super) async fn list(
    State(console): State<Arc<Console>>,
    uri: Uri,
) -> Result<Response, PageError> {
    let query = Fields::query(&uri);
    if let Some(id) = query.one("id") {
        return match JobId::parse(id) {
            Ok(id) => Ok(Redirect::to(&format!("/jobs/{id}")).into_response()),
            Err(why) => Err(PageError::new(
                StatusCode::BAD_REQUEST,
                format!("job_id: `{id}` {why}"),
            )),
        };
    }
    let mut statuses = Vec::new();
    for name in query.all("status") {
        statuses.push(Status::parse(&name).ok_or_else(|| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("status: `{name}` is not a status"),
            )
        })?);
    }
    let chosen = statuses.clone();
    if statuses.is_empty() {
        statuses = Status::ALL.to_vec();
    }
    let kinds = query.all("kind");
    let range = query.one("since").unwrap_or("1h");
    let since = RANGES
        .iter()
        .find(|(name, _)| *name == range)
        .map(|(_, d)| *d)
        .ok_or_else(|| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("since: `{range}` is not one of 15m, 1h, 6h, 24h, 7d"),
            )
        })?;
    let ledger = console.ledger()?;
    let records = crate::lookup::recent(ledger, &statuses, &kinds, since, LIMIT).await?;
    let now = Utc::now();
    let body = html! {
        form.filters method="get" action="/jobs" {
            fieldset {
                legend { "Status" }
                @for s in Status::ALL {
                    label { input type="checkbox" name="status" value=(s.as_str()) checked[chosen.contains(&s)]; (s.as_str()) }
                }
            }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in shoal_common::JobKind::all() {
                        option value=(k.as_str()) selected[kinds.iter().any(|c| c == k.as_str())] { (k.as_str()) }
                    }
                }
            }
            label { "Changed in the last "
                select name="since" {
                    @for (name, _) in RANGES { option value=(name) selected[name == range] { (name) } }
                }
            }
            button type="submit" { "Show" }
        }
        @if records.is_empty() {
            (nothing("No job on record matches."))
        } @else {
            form.jobs method="post" action="/actions/retry" {
                (csrf(&console))
                @if !console.read_only {
                    div.bulk {
                        button type="submit" formaction="/actions/retry" { "Retry selected" }
                        button.stop type="submit" formaction="/actions/cancel" { "Cancel selected" }
                    }
                }
                table.jobs {
                    thead { tr {
                        th {} th { "Job" } th { "Kind" } th { "Status" } th.n { "Attempt" }
                        th.n { "Took" } th { "Changed" } th { "Error" }
                    } }
                    tbody {
                        @for record in &records { (row(&console, record, now)) }
                    }
                }
            }
            p.hint { (records.len()) " job(s), newest first" @if records.len() >= LIMIT { " (the first " (LIMIT) ")" } "." }
        }
    };
    Ok(layout(&console, "Jobs", false, body).into_response())
}

fn row(console: &Console, record: &Record, now: DateTime<Utc>) -> Markup {
    // Every job that is not done for good can be retried (failed, cancelled) or cancelled.
    let selectable = !console.read_only && record.status != Status::Succeeded;
    html! {
        tr {
            td { @if selectable { input type="checkbox" name="job" value=(record.job_id) aria-label={ "select " (record.job_id) }; } }
            td { (job_link(&record.job_id)) }
            td { (record.kind.as_deref().unwrap_or("?")) }
            td { (status(record.status.as_str())) }
            td.n { (record.attempt) @if record.run > 1 { " · run " (record.run) } }
            td.n { @match crate::lookup::took(record, now) { Some(t) => { (took(t.num_milliseconds())) } None => { "-" } } }
            td { (when(record.updated_at, now)) }
            td.error { (error_code(record)) }
        }
    }
}

fn error_code(record: &Record) -> String {
    record
        .outcome
        .as_ref()
        .and_then(|o| o.error.as_ref())
        .map(|e| e.code.clone().unwrap_or_else(|| "no code".into()))
        .unwrap_or_default()
}

/// `GET /jobs/{id}`.
pub(super) async fn one(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let job_id = JobId::parse(&id)
        .map_err(|why| PageError::new(StatusCode::BAD_REQUEST, format!("job_id: `{id}` {why}")))?;
    let report = JobReport::read(console.ledger()?, &job_id).await?;
    let Some(record) = &report.record else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no record of job {job_id}: not enqueued by a producer with this ledger (nor claimed \
                 by a worker with it), or expired"
            ),
        ));
    };
    let now = Utc::now();
    let envelope = record.envelope.as_ref();
    let body = html! {
        div.summary {
            (status(record.status.as_str()))
            span.kind { (record.kind.as_deref().unwrap_or("?")) }
            @if record.run > 1 { span.hint { "run " (record.run) } }
        }
        (verbs(&console, record))
        section.next { h2 { "Next" } p { (next(record, now)) } }
        @if !report.chain.is_empty() {
            section.chain {
                h2 { "Chain " span.hint { (record.chain_id.as_deref().unwrap_or(&record.job_id)) } }
                (tree(&report.chain, &record.job_id))
            }
        }
        (outcome(record))
        (runs(record, now))
        section.record {
            h2 { "Record" }
            dl {
                dt { "Attempt" } dd { (record.attempt) }
                @if let Some(parent) = &record.parent_job_id { dt { "Parent" } dd { (job_link(parent)) } }
                @if let Some(holder) = &record.holder { dt { "Last held by" } dd { (holder) } }
                dt { "Submitted" } dd { (when(envelope.and_then(|e| e.get("submitted_at")).and_then(|t| t.as_str()).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc)), now)) }
                dt { "First started" } dd { (when(record.first_started_at, now)) }
                dt { "Finished" } dd { (when(record.finished_at, now)) }
                dt { "Changed" } dd { (when(record.updated_at, now)) }
                dt { "Took" } dd { @match crate::lookup::took(record, now) { Some(t) => { (took(t.num_milliseconds())) } None => { "-" } } }
                @if let Some(timings) = record.outcome.as_ref().map(|o| &o.timings) {
                    @if let Some(ms) = timings.queue_ms { dt { "Waited on the queue" } dd { (took(ms as i64)) } }
                    dt { "Last run" } dd { (took(timings.run_ms as i64)) }
                }
                @if let Some(why) = &record.cancel_requested { dt { "Cancel asked" } dd { (why) } }
                dt { "Expires" } dd { (when(record.expires_at, now)) }
            }
        }
        @if !record.progress.is_empty() {
            section.progress { h2 { "Progress on record" } (json(&serde_json::Value::Object(record.progress.clone()))) }
        }
        @if let Some(envelope) = envelope {
            section.params {
                h2 { "Parameters" }
                (json(envelope.get("params").unwrap_or(envelope)))
                @if let Some(tags) = envelope.get("tags").or_else(|| envelope.get("params").and_then(|p| p.get("tags"))) {
                    h3 { "Tags" } (json(tags))
                }
                details { summary { "The whole envelope" } (json(envelope)) }
            }
        }
    };
    Ok(layout(
        &console,
        &record.job_id,
        !record.status.is_finished(),
        body,
    ))
}

/// The verbs this job's status allows.
fn verbs(console: &Console, record: &Record) -> Markup {
    let id = record.job_id.as_str();
    html! {
        div.verbs {
            @match record.status {
                Status::Failed | Status::Cancelled => {
                    (verb(console, "retry", "Retry", &[("job", id)], "go"))
                }
                Status::Succeeded => {}
                _ => {
                    (verb(console, "cancel", "Cancel", &[("job", id)], "stop"))
                    @if record.chain_id.is_some() || record.envelope.as_ref().is_some_and(|e| e.get("then").is_some()) {
                        (verb(console, "cancel", "Cancel with its chain", &[("job", id), ("chain", "yes")], "stop"))
                    }
                }
            }
        }
    }
}

/// What happens to the job next, by its record.
fn next(record: &Record, now: DateTime<Utc>) -> Markup {
    let due = record
        .envelope
        .as_ref()
        .and_then(|e| e.get("not_before"))
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let follow_ups = record
        .envelope
        .as_ref()
        .and_then(|e| e.get("then"))
        .map(|then| match then {
            serde_json::Value::Array(steps) => steps.len(),
            _ => 1,
        })
        .unwrap_or(0);
    html! {
        @match record.status {
            Status::Queued => { "Waiting on the queue for a worker." }
            Status::Scheduled => { "Runs at " (when(due, now)) ", waiting on the queue meanwhile." }
            Status::Running => {
                "Running on " (record.holder.as_deref().unwrap_or("a worker"))
                ", its lease until " (when(record.lease_until, now)) "."
                @if record.cancel_requested.is_some() { " A cancel was asked: it stops at its next lease extension." }
            }
            Status::Open => { "Between attempts: a worker takes it up when its message is visible again (attempt " (record.attempt + 1) ")." }
            Status::Succeeded => { "Nothing: it succeeded." }
            Status::Failed => { "Nothing until it is retried (its run " (record.run + 1) " would take up what earlier runs made)." }
            Status::Cancelled => { "Nothing: it was cancelled. Retry runs it again." }
        }
        @if follow_ups > 0 && !record.status.is_finished() {
            " On success it sends " (follow_ups) " follow-up(s)."
        }
    }
}

fn outcome(record: &Record) -> Markup {
    let Some(outcome) = &record.outcome else {
        return html! {};
    };
    html! {
        section.outcome {
            @match (&outcome.status, &outcome.error) {
                (JobStatus::Failed | JobStatus::Cancelled, Some(e)) => {
                    h2 { "Error" }
                    p.error {
                        code { (e.code.as_deref().unwrap_or("no code")) } " (" (e.class.as_str()) ") "
                        span.reason { (e.message) }
                        @if e.dead_lettered { " " span.badge { "dead-lettered" } }
                    }
                }
                _ => {
                    h2 { "Result" }
                    @match &outcome.result { Some(result) => { (json(result)) } None => { (nothing("No result.")) } }
                    @if !outcome.follow_ups.is_empty() {
                        p { "Follow-ups: " @for id in &outcome.follow_ups { (job_link(id)) " " } }
                    }
                }
            }
        }
    }
}

/// Every run: the failed ones before a rerun, then the last.
fn runs(record: &Record, now: DateTime<Utc>) -> Markup {
    let error_of = |v: &serde_json::Value| {
        let e = v.get("error");
        let code = e
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .unwrap_or("no code")
            .to_owned();
        let message = e
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned();
        (code, message)
    };
    html! {
        section.runs {
            h2 { "Runs" }
            table {
                thead { tr { th.n { "Run" } th { "Ended" } th { "How" } th { "Error" } } }
                tbody {
                    @for failure in &record.earlier_failures {
                        @let (code, message) = error_of(failure);
                        @let ended = failure.get("finished_at").and_then(|t| t.as_str()).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
                        tr {
                            td.n { (failure.get("run").and_then(|r| r.as_u64()).unwrap_or(0)) }
                            td { (when(ended, now)) }
                            td { (status("failed")) }
                            td.error { code { (code) } " " span.reason { (message) } }
                        }
                    }
                    tr {
                        td.n { (record.run) }
                        td { (when(record.finished_at, now)) }
                        td { (status(record.status.as_str())) " after " (record.attempt) " attempt(s)" }
                        td.error { (error_code(record)) }
                    }
                }
            }
        }
    }
}

/// The chain's steps as a tree, each under the step whose success sent it; `current` marked.
fn tree(steps: &[Record], current: &str) -> Markup {
    let ids: Vec<&str> = steps.iter().map(|s| s.job_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    let mut roots = Vec::new();
    for step in steps {
        match step.parent_job_id.as_deref() {
            Some(parent) if ids.contains(&parent) && parent != step.job_id => {
                children.entry(parent).or_default().push(step)
            }
            _ => roots.push(step),
        }
    }
    html! { ul.tree { @for root in roots { (branch(root, &children, current, 0)) } } }
}

fn branch(
    step: &Record,
    children: &BTreeMap<&str, Vec<&Record>>,
    current: &str,
    depth: usize,
) -> Markup {
    html! {
        li.here[step.job_id == current] {
            (status(step.status.as_str())) " " (job_link(&step.job_id)) " "
            span.kind { (step.kind.as_deref().unwrap_or("?")) }
            @let error = error_code(step);
            @if !error.is_empty() { " " code { (error) } }
            // A chain is a tree by construction; the depth bound keeps a forged record that
            // names its own descendant as parent from recursing for ever.
            @if let (Some(next), true) = (children.get(step.job_id.as_str()), depth < 64) {
                ul { @for child in next { (branch(child, children, current, depth + 1)) } }
            }
        }
    }
}
