//! `shoal-producer console`: a web page for operators. It owns the server: its settings
//! ([`ConsoleConfig`]), its routes, and what every page shares. The pages are rendered on the
//! server ([`overview`], [`jobs`], [`dead_letters`]); the verbs ([`verbs`]) are POSTs that call
//! the producer library, as the CLI's do; [`guard`] keeps the whole of it to the operator who
//! started it. Every asset is in the binary and the page runs no script: it refreshes by itself
//! with a `<meta http-equiv="refresh">`.

mod chart;
mod dead_letters;
mod guard;
mod html;
mod jobs;
mod overview;
mod verbs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use shoal_common::aws::AwsClients;
use shoal_common::error::Error;
use shoal_common::ledger::Ledger;

use crate::Producer;

/// What the console serves, and for whom.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The producer of the job queue, with the job ledger (every page but the dead letters
    /// reads it, and every verb but redrive writes it).
    pub producer: Producer,
    pub clients: AwsClients,
    /// The dead-letter queue; `None` for the job queue's redrive target.
    pub dlq_url: Option<String>,
    /// Serve the pages without a single verb.
    pub read_only: bool,
    /// Asked of every visitor (at `/login`, or as `Authorization: Bearer`); required to
    /// listen anywhere but loopback.
    pub auth_token: Option<String>,
    /// How often the overview reloads itself.
    pub refresh: Duration,
    /// Who acts, recorded with each cancel and pause.
    pub by: String,
}

/// The console as every request sees it.
pub(crate) struct Console {
    producer: Producer,
    clients: AwsClients,
    dlq_url: Option<String>,
    read_only: bool,
    refresh: Duration,
    by: String,
    /// Put in every form and asked back by every verb.
    csrf: String,
    /// The cookie a visitor gets for the right token.
    session: String,
    auth_token: Option<String>,
    /// Answer only to loopback names in `Host` (any port: a tunnel or a port-forward may
    /// reach it on another): so a page of another site that rebinds its own name to
    /// 127.0.0.1 is refused. Off when a token guards the console.
    loopback_names_only: bool,
}

impl Console {
    fn ledger(&self) -> Result<&Ledger, PageError> {
        self.producer.ledger().ok_or_else(|| {
            PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the console reads the job ledger: start it with --ledger-table (SHOAL_LEDGER_TABLE)",
            )
        })
    }

    async fn dlq_url(&self) -> Result<String, PageError> {
        match &self.dlq_url {
            Some(url) => Ok(url.clone()),
            None => Ok(crate::operate::dead_letter_queue_url(
                &self.clients.sqs,
                &self.producer.queue().url,
            )
            .await?),
        }
    }
}

/// Whether the console may listen at `addr`: loopback always; anywhere else only with a token,
/// since every verb would otherwise be open to whoever reaches the port.
pub fn check_listen(addr: &SocketAddr, auth_token: Option<&str>) -> Result<(), String> {
    match (addr.ip().is_loopback(), auth_token) {
        (true, _) => Ok(()),
        (false, Some(token)) if token.len() >= 16 => Ok(()),
        (false, Some(_)) => Err(
            "auth_token: at least 16 characters, to listen beyond loopback (e.g. `openssl rand -hex 16`)"
                .into(),
        ),
        (false, None) => Err(format!(
            "listen: {addr} is not a loopback address; the console's verbs would be open to anyone \
             who reaches it. Give --auth-token (SHOAL_CONSOLE_TOKEN), or listen on 127.0.0.1 and \
             reach it through an SSH tunnel or kubectl port-forward"
        )),
    }
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    config: ConsoleConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    check_listen(&addr, config.auth_token.as_deref()).map_err(std::io::Error::other)?;
    let loopback_names_only = config.auth_token.is_none() && addr.ip().is_loopback();
    let console = Arc::new(Console {
        producer: config.producer,
        clients: config.clients,
        dlq_url: config.dlq_url,
        read_only: config.read_only,
        refresh: config.refresh,
        by: config.by,
        csrf: guard::random_token(),
        session: guard::random_token(),
        auth_token: config.auth_token,
        loopback_names_only,
    });
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::one))
        .route("/dead-letters", get(dead_letters::page))
        .route("/actions/{verb}", post(verbs::act))
        .route("/login", get(guard::login_form).post(guard::login))
        .route("/assets/console.css", get(stylesheet))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::check,
        ))
        .with_state(console)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "no such page")
}

/// Why a page could not be shown: its status and a sentence for the operator.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        PageError::new(StatusCode::BAD_GATEWAY, e.to_string())
    }
}

impl From<crate::LookupError> for PageError {
    fn from(e: crate::LookupError) -> Self {
        match e {
            crate::LookupError::NoLedger => {
                PageError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            crate::LookupError::Aws(e) => e.into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html::error_page(self.status, &self.message);
        (self.status, body).into_response()
    }
}
