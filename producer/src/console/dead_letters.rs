//! The dead letters (`/dead-letters`): each with its reason, kind, age and body, to redrive one,
//! the selected or all. Listing pages through the queue hiding each page for a moment and
//! releases them all at the end (as `dlq list` does), so this page does not reload itself:
//! a listing every few seconds would keep the dead letters from any other reader.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::html;
use shoal_common::error::ShoalCode;

use super::html::{csrf, job_link, layout, nothing, verb, when, Fields};
use super::{Console, PageError};
use crate::operate::{self, DeadLetter};

/// Most dead letters one page lists.
const LIMIT: usize = 200;

/// How long the listing hides each page from other readers (released at its end anyway).
const HOLD: Duration = Duration::from_secs(20);

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    uri: Uri,
) -> Result<Html<String>, PageError> {
    let dlq_url = console.dlq_url().await?;
    let letters =
        operate::list_dead_letters(&console.clients.sqs, &dlq_url, HOLD, Some(LIMIT)).await?;
    let kind_filter = Fields::query(&uri).all("kind");
    let shown: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| {
            kind_filter.is_empty() || l.kind.as_ref().is_some_and(|k| kind_filter.contains(k))
        })
        .collect();
    let now = Utc::now();
    let body = html! {
        p.hint { (shoal_common::queue::name_from_url(&dlq_url)) ": " (letters.len()) " dead letter(s)"
            @if letters.len() >= LIMIT { " (the first " (LIMIT) ")" } "." }
        @if !letters.is_empty() {
            div.bulk { (verb(&console, "redrive", "Redrive all", &[("all", "yes")], "go")) }
        }
        @if shown.is_empty() {
            (nothing("Nothing is dead-lettered."))
        } @else {
            form.letters method="post" action="/actions/redrive" {
                (csrf(&console))
                @if !console.read_only {
                    div.bulk { button type="submit" { "Redrive selected" } }
                }
                table.letters {
                    thead { tr {
                        th {} th { "Dead-lettered" } th { "Kind" } th { "Job" } th.n { "Attempts" }
                        th { "Reason" } th {}
                    } }
                    tbody {
                        @for letter in &shown {
                            @let sent = letter.sent_at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
                            tr {
                                td { @if let (Some(id), false) = (&letter.job_id, console.read_only) {
                                    input type="checkbox" name="job" value=(id) aria-label={ "select " (id) };
                                } }
                                td { (when(sent, now)) }
                                td { (letter.kind.as_deref().unwrap_or("?")) }
                                td { @match &letter.job_id { Some(id) => { (job_link(id)) } None => { span.none { "no job id" } } } }
                                td.n { @match letter.attempts { Some(a) => { (a) } None => { "?" } } }
                                td.reason {
                                    code { (letter.error_code.as_deref().unwrap_or(ShoalCode::RedrivenBySqs.as_str())) } " "
                                    span.reason { (letter.error.as_deref().unwrap_or("moved by the queue's redrive policy: no worker finished it")) }
                                    details { summary { "body" } pre.json { (letter.body) } }
                                }
                                td.actions {
                                    @if let (Some(id), false) = (&letter.job_id, console.read_only) {
                                        button.go type="submit" name="one" value=(id) { "Redrive" }
                                    }
                                    @if !console.read_only {
                                        button.stop type="submit" formaction="/actions/delete" name="message" value=(letter.message_id) { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&console, "Dead letters", false, body))
}
