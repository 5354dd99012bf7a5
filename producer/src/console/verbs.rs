//! The verbs (`POST /actions/{verb}`): retry, cancel, pause, resume and redrive, each calling
//! the producer library as the CLI does, so the console adds no behaviour of its own. Each
//! checks the form token first; one acting on more than one job or kind (the selected, or all)
//! first shows what it would do and acts only once confirmed. The answer is a page of what was
//! done, job by job.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use maud::{html, Markup};
use shoal_common::{JobId, JobKind};

use super::html::{csrf, job_link, layout, Fields};
use super::{Console, PageError};
use crate::operate::{self, Redrive, RedriveFilter};

pub(super) async fn act(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Html<String>, PageError> {
    if console.read_only {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this console is read-only (--read-only)",
        ));
    }
    let form = Fields::parse(&body);
    if !form.is("csrf", &console.csrf) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "the form's token is missing or stale (the console restarted?): reload the page and try again",
        ));
    }
    let confirmed = form.is("confirm", "yes");
    let all = form.is("all", "yes");
    match name.as_str() {
        "retry" => {
            let ids = job_ids(&form)?;
            if ids.len() > 1 && !confirmed {
                return Ok(confirm(
                    &console,
                    &form,
                    &format!("Retry {} jobs?", ids.len()),
                    listed(&ids),
                ));
            }
            let report = console.producer.retry(&ids).await?;
            let body = html! {
                @for (id, run) in &report.rerun { p.notice.good { (job_link(id)) " run " (run) " queued." } }
                @for (id, why) in &report.refused { p.notice.bad { (job_link(id)) " not rerun: " (why) } }
            };
            Ok(layout(&console, "Retry", false, body))
        }
        "cancel" => {
            let ids = job_ids(&form)?;
            let chain = form.is("chain", "yes");
            if (ids.len() > 1 || chain) && !confirmed {
                let question = match chain {
                    true => format!(
                        "Cancel {} job(s) and every unfinished step of their chains?",
                        ids.len()
                    ),
                    false => format!("Cancel {} jobs?", ids.len()),
                };
                return Ok(confirm(&console, &form, &question, listed(&ids)));
            }
            let report = console.producer.cancel(&ids, chain, &console.by).await?;
            let body = html! {
                @for id in &report.cancelled { p.notice.good { (job_link(id)) " cancelled: it will not run." } }
                @for (id, holder) in &report.requested {
                    p.notice { (job_link(id)) " is running on " (holder.as_deref().unwrap_or("a worker")) ": told to stop at its next lease extension." }
                }
                @for (id, how) in &report.finished { p.notice.bad { (job_link(id)) " had finished already (" (how) ")." } }
            };
            Ok(layout(&console, "Cancel", false, body))
        }
        "pause" | "resume" => {
            let pause = name == "pause";
            let kinds = kinds(&form)?;
            if !all && kinds.is_empty() {
                return Err(PageError::new(
                    StatusCode::BAD_REQUEST,
                    "kind: name a kind, or all",
                ));
            }
            if (all || kinds.len() > 1) && !confirmed {
                let what = if all {
                    "every kind".to_owned()
                } else {
                    kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let question = format!("{} {what}?", if pause { "Pause" } else { "Resume" });
                return Ok(confirm(&console, &form, &question, html! {}));
            }
            let paused = match pause {
                true => console.producer.pause(&kinds, all, &console.by).await?,
                false => console.producer.resume(&kinds, all, &console.by).await?,
            };
            let body = html! {
                p.notice.good {
                    @if pause { "Paused" } @else { "Resumed" } " "
                    @if all { "every kind" } @else { (kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")) }
                    ". Workers see it within their pause check interval."
                }
                p { "Paused now: "
                    @if paused.all { "every kind" } @else if paused.kinds.is_empty() { "nothing" }
                    @else { (paused.kinds.iter().cloned().collect::<Vec<_>>().join(", ")) } "." }
                p { a href="/" { "Back to the overview" } }
            };
            Ok(layout(
                &console,
                if pause { "Pause" } else { "Resume" },
                false,
                body,
            ))
        }
        "redrive" => {
            let ids = match form.one("one") {
                Some(one) => vec![parse_id(one)?],
                None => job_ids(&form).or_else(|e| if all { Ok(Vec::new()) } else { Err(e) })?,
            };
            if (all || ids.len() > 1) && !confirmed {
                let question = match all {
                    true => "Redrive every dead letter to the job queue?".to_owned(),
                    false => format!("Redrive {} dead-lettered jobs?", ids.len()),
                };
                return Ok(confirm(&console, &form, &question, listed(&ids)));
            }
            let dlq_url = console.dlq_url().await?;
            let at = Redrive {
                sqs: &console.clients.sqs,
                dlq_url: &dlq_url,
                queue_url: &console.producer.queue().url,
                ledger: console.producer.ledger(),
            };
            let filter = RedriveFilter {
                job_ids: if all {
                    Vec::new()
                } else {
                    ids.iter().map(|i| i.to_string()).collect()
                },
                kinds: Vec::new(),
            };
            let report = operate::redrive(
                at,
                &filter,
                operate::DEFAULT_HOLD,
                None,
                std::future::pending(),
            )
            .await?;
            let body = html! {
                p.notice.good { "Moved " (report.moved.len()) " job(s) to the job queue." }
                ul { @for letter in &report.moved {
                    li { @match &letter.job_id { Some(id) => { (job_link(id)) } None => { (letter.message_id) } }
                         @if let Some((_, run)) = report.rerun.iter().find(|(id, _)| Some(id) == letter.job_id.as_ref()) { " (run " (run) ")" } }
                } }
                @if !all && report.moved.len() < ids.len() {
                    p.notice.bad { (ids.len() - report.moved.len()) " of the chosen were not on the dead-letter queue (redriven already?)." }
                }
                @for (id, why) in &report.failed { p.notice.bad { (id) " not moved: " (why) } }
                @if report.arrived_since > 0 { p.hint { (report.arrived_since) " arrived meanwhile, left for the next redrive." } }
                p { a href="/dead-letters" { "Back to the dead letters" } }
            };
            Ok(layout(&console, "Redrive", false, body))
        }
        "delete" => {
            let messages = form.all("message");
            if messages.is_empty() {
                return Err(PageError::new(
                    StatusCode::BAD_REQUEST,
                    "message: choose a dead letter to delete",
                ));
            }
            // Deleting is for good: always asked first, one letter or many.
            if !confirmed {
                let question = format!("Delete {} dead letter(s) for good?", messages.len());
                let chosen = html! { ul.chosen { @for m in &messages { li { code { (m) } } } } };
                return Ok(confirm(&console, &form, &question, chosen));
            }
            let dlq_url = console.dlq_url().await?;
            let report = operate::delete_dead_letters(
                &console.clients.sqs,
                &dlq_url,
                &messages,
                operate::DEFAULT_HOLD,
            )
            .await?;
            let body = html! {
                @for letter in &report.deleted {
                    p.notice.good { "Deleted " code { (letter.message_id) } @if let Some(id) = &letter.job_id { " (" (job_link(id)) ")" } "." }
                }
                @for id in &report.not_found { p.notice.bad { code { (id) } " is not on the dead-letter queue (deleted or redriven already?)." } }
                @for (id, why) in &report.failed { p.notice.bad { code { (id) } " not deleted: " (why) } }
                p { a href="/dead-letters" { "Back to the dead letters" } }
            };
            Ok(layout(&console, "Delete", false, body))
        }
        other => Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("no verb `{other}`"),
        )),
    }
}

fn parse_id(id: &str) -> Result<JobId, PageError> {
    JobId::parse(id)
        .map_err(|why| PageError::new(StatusCode::BAD_REQUEST, format!("job: `{id}` {why}")))
}

/// The jobs a form names; at least one.
fn job_ids(form: &Fields) -> Result<Vec<JobId>, PageError> {
    let ids = form
        .all("job")
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "job: select at least one job",
        ));
    }
    Ok(ids)
}

fn kinds(form: &Fields) -> Result<Vec<JobKind>, PageError> {
    form.all("kind")
        .iter()
        .map(|name| {
            JobKind::parse(name).ok_or_else(|| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    format!("kind: `{name}` is not a kind this console knows"),
                )
            })
        })
        .collect()
}

/// The jobs a verb would act on, each a link.
fn listed(ids: &[JobId]) -> Markup {
    html! { ul.chosen { @for id in ids { li { (job_link(id.as_str())) } } } }
}

/// The page that asks before a verb acts on many: the same form again, confirmed.
fn confirm(console: &Console, form: &Fields, question: &str, chosen: Markup) -> Html<String> {
    let carried = form
        .pairs()
        .iter()
        .filter(|(name, _)| name != "csrf" && name != "confirm");
    let body: Markup = html! {
        (chosen)
        form.confirm method="post" {
            (csrf(console))
            @for (name, value) in carried { input type="hidden" name=(name) value=(value); }
            input type="hidden" name="confirm" value="yes";
            button.stop type="submit" { "Yes, do it" }
            " "
            a href="/" { "No, back to the overview" }
        }
    };
    layout(console, question, false, body)
}
