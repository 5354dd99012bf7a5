//! Who may use the console, and how a page of another site is kept from acting through a
//! visitor's browser: the `Host` a request names (a loopback console answers only to its
//! loopback names, so a site that rebinds its own name to 127.0.0.1 reads nothing), the token
//! (`--auth-token`: a login sets a `SameSite=Strict`, `HttpOnly` cookie), the `Origin` of every
//! POST, and the form token every verb carries ([`Console::csrf`]). Every answer carries a
//! Content-Security-Policy that allows no script at all and forms only to the console itself.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::html::{layout, Fields};
use super::{Console, PageError};

const COOKIE: &str = "shoal_console";

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// 128 random bits, as hex: a form token or a session.
pub(super) fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares secrets in a time that does not depend on where they first differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// Runs before every route: refuses what the console must not answer, then adds the headers
/// every answer carries.
pub(super) async fn check(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match refusal(&console, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn refusal(console: &Console, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if console.loopback_names_only && !is_loopback_name(host) {
        return Some(
            PageError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this console answers to 127.0.0.1, localhost and [::1] only (the request \
                     named host `{host}`); to reach it by another name, give it --auth-token"
                ),
            )
            .into_response(),
        );
    }
    if request.method() == Method::POST && !same_origin(headers, host) {
        return Some(
            PageError::new(
                StatusCode::FORBIDDEN,
                "a form of another site, or one with no Origin, may not act here",
            )
            .into_response(),
        );
    }
    let path = request.uri().path();
    let open = path == "/login" || path.starts_with("/assets/");
    if open || signed_in(console, headers) {
        return None;
    }
    Some(match request.method() {
        &Method::GET => Redirect::to("/login").into_response(),
        _ => PageError::new(StatusCode::UNAUTHORIZED, "sign in at /login first").into_response(),
    })
}

/// Whether `host` (a `Host` header: name, then maybe a port) names this machine's loopback.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|inner| format!("[{inner}]")),
        None => host.split(':').next().map(str::to_owned),
    };
    name.is_some_and(|n| {
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|l| n.eq_ignore_ascii_case(l))
    })
}

/// Whether the request's `Origin` is the console's own. Browsers send it with every POST;
/// a request without one is not a browser's form, and is refused too.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let origin = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin.is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
}

fn signed_in(console: &Console, headers: &HeaderMap) -> bool {
    let Some(token) = &console.auth_token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim(), token));
    bearer
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same_secret(value, &console.session))
}

/// `GET /login`: the token form (or, with no token asked, the overview).
pub(super) async fn login_form(State(console): State<Arc<Console>>) -> Response {
    if console.auth_token.is_none() {
        return Redirect::to("/").into_response();
    }
    login_page(&console, None)
}

fn login_page(console: &Console, refused: Option<&str>) -> Response {
    let body = html! {
        @if let Some(why) = refused { p.notice.bad { (why) } }
        form.login method="post" action="/login" {
            label { "Token " input type="password" name="token" autocomplete="current-password" autofocus; }
            button type="submit" { "Sign in" }
        }
        p.hint { "The token the console was started with (--auth-token, SHOAL_CONSOLE_TOKEN)." }
    };
    layout(console, "Sign in", false, body).into_response()
}

/// `POST /login`: the right token sets the session cookie.
pub(super) async fn login(
    State(console): State<Arc<Console>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = &console.auth_token else {
        return Redirect::to("/").into_response();
    };
    let fields = Fields::parse(&body);
    if !same_secret(fields.one("token").unwrap_or_default(), token) {
        let mut page = login_page(&console, Some("That is not the console's token."));
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        console.session
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let mut headers = HeaderMap::new();
        assert!(!same_origin(&headers, "127.0.0.1:8080"), "no Origin");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers, "127.0.0.1:8080"));
        assert!(!same_origin(&headers, "localhost:8080"));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(
            !same_origin(&headers, "127.0.0.1:8080"),
            "a sandboxed frame"
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers, "evil.example.127.0.0.1:8080"));
    }

    #[test]
    fn only_loopback_names_on_any_port() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:8080",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "",
            "[::2]:80",
            "localhost.evil:1",
        ] {
            assert!(!is_loopback_name(refused), "{refused}");
        }
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
