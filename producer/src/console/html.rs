//! What every page is made of: the layout, a form's fields, times, statuses, JSON and the
//! verb buttons. Pages are maud templates, which escape every value they print, so whatever a
//! sender wrote (parameters, tags, reasons, results) is shown as text, never read as markup.

use axum::http::StatusCode;
use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use shoal_common::JobId;

use super::Console;

/// A page: the navigation, `title` and `body`; with `refresh`, it reloads itself.
pub(super) fn layout(console: &Console, title: &str, refresh: bool, body: Markup) -> Html<String> {
    let queue = &console.producer.queue().url;
    let queue_name = shoal_common::queue::name_from_url(queue);
    let refresh = refresh.then(|| console.refresh.as_secs().max(1));
    let header = html! {
        nav {
            a href="/" { "Overview" }
            a href="/jobs" { "Jobs" }
            a href="/dead-letters" { "Dead letters" }
        }
        form.search method="get" action="/jobs" {
            input type="search" name="id" placeholder="job id" aria-label="Find a job by id";
            button type="submit" { "Find" }
        }
        span.queue title=(queue) { (queue_name) }
        @if console.read_only { span.badge { "read-only" } }
    };
    document(title, refresh, header, html! { h1 { (title) } (body) })
}

/// The page for a request the console could not answer.
pub(super) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    let header = html! { nav { a href="/" { "Overview" } } };
    let main = html! { h1 { (title) } p.notice.bad { (message) } };
    document(&title, None, header, main)
}

/// The HTML document every page is: its head, the bar along the top, and `main`.
fn document(title: &str, refresh: Option<u64>, header: Markup, main: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(secs) = refresh { meta http-equiv="refresh" content=(secs); }
                    title { (title) " · Shoal" }
                    link rel="stylesheet" href="/assets/console.css";
                }
                body {
                    header.top { a.brand href="/" { "Shoal" } (header) }
                    main { (main) }
                }
            }
        }
        .into_string(),
    )
}

/// A form body or a query string, its fields in order; a name may repeat (checkboxes).
#[derive(Debug, Default)]
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(super) fn parse(bytes: &[u8]) -> Fields {
        Fields(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(super) fn query(uri: &axum::http::Uri) -> Fields {
        Fields::parse(uri.query().unwrap_or_default().as_bytes())
    }

    /// The first non-empty value of `name`.
    pub(super) fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// Every non-empty value of `name`, once each, in order.
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for (_, v) in self.0.iter().filter(|(k, _)| k == name) {
            let v = v.trim();
            if !v.is_empty() && !values.iter().any(|seen| seen == v) {
                values.push(v.to_owned());
            }
        }
        values
    }

    pub(super) fn is(&self, name: &str, value: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && v == value)
    }

    pub(super) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A time as the operator reads it: UTC to the second, and how long ago (or ahead).
pub(super) fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match t {
        None => html! { span.none { "-" } },
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) {
                (t.format("%Y-%m-%d %H:%M:%S")) " " span.ago { "(" (ago(t, now)) ")" }
            }
        },
    }
}

/// `3 min ago`, `in 40 s`.
pub(super) fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let span = span(secs.unsigned_abs());
    if secs >= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A length of time in its largest whole unit: `40 s`, `3 min`, `5 h`, `2 d`.
pub(super) fn span(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

/// A run time: `840 ms`, `12.5 s`, `3 min`.
pub(super) fn took(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => span((ms / 1000).unsigned_abs()),
    }
}

pub(super) fn status(status: &str) -> Markup {
    html! { span class={ "status s-" (status) } { (status) } }
}

/// A JSON value, indented.
pub(super) fn json(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    html! { pre.json { (text) } }
}

/// A link to a job's page; plain text for an id no job could have.
pub(super) fn job_link(id: &str) -> Markup {
    match JobId::parse(id) {
        Ok(id) => html! { a.job href={ "/jobs/" (id.as_str()) } { (id.as_str()) } },
        Err(_) => html! { span.job { (id) } },
    }
}

/// The form token, in a verb's form.
pub(super) fn csrf(console: &Console) -> Markup {
    html! { input type="hidden" name="csrf" value=(console.csrf); }
}

/// A button that POSTs `fields` to the verb `verb`; nothing on a read-only console.
pub(super) fn verb(
    console: &Console,
    verb: &str,
    label: &str,
    fields: &[(&str, &str)],
    class: &str,
) -> Markup {
    if console.read_only {
        return html! {};
    }
    html! {
        form.verb method="post" action={ "/actions/" (verb) } {
            (csrf(console))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A blank where a page has nothing to say.
pub(super) fn nothing(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_repeats_once_and_skip_blanks() {
        let f = Fields::parse(b"job=a&job=b&job=a&job=&kind=+snapshot+&all=yes");
        assert_eq!(f.all("job"), vec!["a", "b"]);
        assert_eq!(f.one("kind"), Some("snapshot"));
        assert!(f.is("all", "yes"));
        assert_eq!(f.one("missing"), None);
    }

    #[test]
    fn times_read_as_spans() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(40), now), "40 s ago");
        assert_eq!(ago(now + chrono::Duration::minutes(5), now), "in 5 min");
        assert_eq!(took(840), "840 ms");
        assert_eq!(took(12_500), "12.5 s");
        assert_eq!(span(3 * 86400), "3 d");
    }

    #[test]
    fn what_a_sender_wrote_is_text() {
        let markup =
            html! { (json(&serde_json::json!({"name": "</pre><script>alert(1)</script>"}))) };
        let page = markup.into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert_eq!(
            job_link("<b>").into_string(),
            "<span class=\"job\">&lt;b&gt;</span>"
        );
    }
}
