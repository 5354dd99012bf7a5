//! The overview (`/`): the job queue and its dead-letter queue, each kind with its paused
//! state and its jobs of the last hour by status, and the chart of jobs finished per minute.
//! It reloads itself every `--refresh`. Its cost a load: two `GetQueueAttributes`, one look at
//! the dead-letter queue (a receive with no visibility timeout: it hides nothing, and the job
//! queue is never looked at, since there a receive counts towards the redrive policy), one
//! read of the pause item and one index query per status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use chrono::Utc;
use maud::{html, Markup};
use shoal_common::ledger::{Ledger, Paused, Record, Status, MAX_LISTED};
use shoal_common::JobKind;

use super::html::{layout, span, status, verb};
use super::{chart, Console, PageError};
use crate::operate::{self, QueueStatus};

/// The records of the last hour, of every status, and whether a status had more than one
/// query answers ([`MAX_LISTED`]), so that its counts are a floor.
async fn last_hour(ledger: &Ledger) -> Result<(Vec<Record>, bool), PageError> {
    let since = Utc::now() - chrono::Duration::hours(1);
    let queries = Status::ALL.map(|status| ledger.recent(status, since, MAX_LISTED));
    let mut records = Vec::new();
    let mut capped = false;
    for answer in futures::future::join_all(queries).await {
        let answer = answer?;
        capped |= answer.len() >= MAX_LISTED;
        records.extend(answer);
    }
    Ok((records, capped))
}

pub(super) async fn page(State(console): State<Arc<Console>>) -> Result<Html<String>, PageError> {
    let ledger = console.ledger()?;
    let (queues, paused, hour) = tokio::join!(
        operate::status(&console.clients, &console.producer.queue().url),
        ledger.paused(),
        last_hour(ledger),
    );
    let (queues, paused, (records, capped)) = (queues?, paused?, hour?);
    let now = Utc::now();
    let minutes = chart::per_minute(&records, now);
    let finished: u32 = minutes.iter().flatten().sum();
    let body = html! {
        section.queues {
            h2 { "Queues" }
            table {
                thead { tr { th { "Queue" } th.n { "Visible" } th.n { "In flight" } th.n { "Delayed" } th.n { "Oldest" } } }
                tbody {
                    (queue_row("jobs", &queues.jobs))
                    @if let Some(dlq) = &queues.dead_letter { (queue_row("dead letters", dlq)) }
                }
            }
            @if let Some(count) = queues.max_receive_count {
                p.hint { "SQS dead-letters a message after " (count) " receives." }
            }
        }
        section.hour {
            h2 { "Finished in the last hour: " (finished) @if capped { "+" } }
            (chart::draw(&minutes, now))
            p.legend {
                span.key.s-succeeded { "succeeded" } " " span.key.s-failed { "failed" } " "
                span.key.s-cancelled { "cancelled" }
                @if capped { " · over " (MAX_LISTED) " jobs of one status: the counts are a floor" }
            }
        }
        section.kinds {
            h2 { "Kinds" }
            (kinds(&console, &records, &paused))
        }
    };
    Ok(layout(&console, "Overview", true, body))
}

fn queue_row(role: &str, queue: &QueueStatus) -> Markup {
    html! {
        tr {
            td { (role) " " span.hint { (queue.name) } }
            td.n { (queue.visible) }
            td.n { (queue.in_flight) }
            td.n { (queue.delayed) }
            td.n { @match queue.oldest_message_age_secs {
                Some(age) => { (span(age as u64)) }
                None => { "-" }
            } }
        }
    }
}

/// Every kind this console knows, has seen in the last hour, or finds paused: its paused
/// state and the verb that changes it, and its records by status.
fn kinds(console: &Console, records: &[Record], paused: &Paused) -> Markup {
    let mut counts: BTreeMap<String, [usize; Status::ALL.len()]> = BTreeMap::new();
    let mut names: BTreeSet<String> = JobKind::all()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    names.extend(paused.kinds.iter().cloned());
    for record in records {
        let kind = record.kind.clone().unwrap_or_else(|| "unknown".into());
        let row = counts.entry(kind.clone()).or_default();
        if let Some(i) = Status::ALL.iter().position(|s| *s == record.status) {
            if let Some(n) = row.get_mut(i) {
                *n += 1;
            }
        }
        names.insert(kind);
    }
    html! {
        @if !console.read_only {
            div.bulk {
                @if paused.all {
                    (verb(console, "resume", "Resume all kinds", &[("all", "yes")], "go"))
                } @else {
                    (verb(console, "pause", "Pause all kinds", &[("all", "yes")], "stop"))
                }
            }
        }
        @if !paused.is_empty() {
            p.notice {
                @if paused.all { "Every kind is paused" } @else { "Paused: " (paused.kinds.iter().cloned().collect::<Vec<_>>().join(", ")) }
                @if let Some(by) = &paused.by { ", last changed by " (by) }
                @if let Some(at) = paused.updated_at { " " (super::html::ago(at, Utc::now())) }
                ". Their jobs wait on the queue, spending no attempts."
            }
        }
        table.kinds {
            thead { tr {
                th { "Kind" } th { "State" }
                @for s in Status::ALL { th.n { (s.as_str()) } }
                th {}
            } }
            tbody {
                @for name in &names {
                    @let is_paused = paused.all || paused.kinds.contains(name);
                    tr id={ "kind-" (name) } {
                        td { a href={ "/jobs?kind=" (form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()) } { (name) } }
                        td { @if is_paused { (status("paused")) } @else { (status("active")) } }
                        @for n in counts.get(name).copied().unwrap_or_default() {
                            td.n { @if n > 0 { (n) } @else { span.none { "·" } } }
                        }
                        td { (kind_verb(console, name, paused)) }
                    }
                }
            }
        }
    }
}

/// Pause or resume for one kind; a kind this console cannot name (a worker's own kind, with
/// no `--kinds-schema`) says how to reach it.
fn kind_verb(console: &Console, name: &str, paused: &Paused) -> Markup {
    if JobKind::parse(name).is_none() {
        return html! { span.hint title="start the console with --kinds-schema to act on it" { "unknown here" } };
    }
    if paused.kinds.contains(name) {
        verb(console, "resume", "Resume", &[("kind", name)], "go")
    } else if paused.all {
        html! {}
    } else {
        verb(console, "pause", "Pause", &[("kind", name)], "stop")
    }
}
