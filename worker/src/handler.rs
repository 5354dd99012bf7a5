//! What a job handler is, and the registry the runtime dispatches through.
//!
//! A handler is typed by its kind's parameters: [`JobHandler::Params`] ties it to one
//! [`JobKind`], so the registry can hand it exactly its parameters. Tests and users register
//! their own handlers (for the built-in kinds) in place of the defaults.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use crate::heartbeat::Lease;
use shoal_common::aws::AwsClients;
use shoal_common::job::{JobParams, JobVisitor};
use shoal_common::{Job, JobId, JobKind};

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: JobId,
    pub kind: JobKind,
    /// This attempt's number, from 1: the job's failed runs before it, plus one. Waiting for
    /// EC2 and being deferred are not attempts.
    pub attempt: u32,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
    /// Whether an earlier delivery of this job may have run its handler (and so made calls
    /// whose effects EC2 may not show yet).
    pub earlier_runs: bool,
    /// When this delivery was received: an earlier delivery's last call happened before it.
    pub received_at: tokio::time::Instant,
    /// The message's hold, to check before a call that must not happen twice.
    pub lease: Lease,
    /// What earlier runs recorded, and where this run records what the next must know.
    pub progress: Progress,
    pub worker_id: Arc<str>,
    pub clients: AwsClients,
    /// When SQS accepted the message.
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
}

/// A handler's notes for its job's next run, carried on the message between deliveries
/// and, with a job ledger, written there the moment they change. EC2 is eventually
/// consistent: what a run created may not be listed yet when the next run looks, so a
/// handler records the ids it created here, as soon as the create call answers, rather than
/// trusting a lookup.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<std::sync::Mutex<(serde_json::Map<String, serde_json::Value>, bool)>>,
    /// Woken by each change, for the runtime to write it to the ledger at once.
    changes: Arc<tokio::sync::Notify>,
}

impl Progress {
    /// Progress carried in from an earlier run.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Progress {
            inner: Arc::new(std::sync::Mutex::new((map, false))),
            changes: Arc::default(),
        }
    }

    /// Returns once something was recorded since the last time it returned.
    pub async fn changes(&self) {
        self.changes.notified().await
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (serde_json::Map<String, serde_json::Value>, bool)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.lock().0.get(key).cloned()
    }

    /// Records `value` under `key` for the next run.
    pub fn set(&self, key: &str, value: serde_json::Value) {
        let mut guard = self.lock();
        if guard.0.get(key) != Some(&value) {
            guard.0.insert(key.to_owned(), value);
            guard.1 = true;
            self.changes.notify_one();
        }
    }

    /// Takes what the job ledger recorded for the job as what earlier runs recorded: the
    /// ledger, written by workers alone, speaks for the job, where a message's carried
    /// state may have been written by anyone.
    pub fn adopt(&self, recorded: serde_json::Map<String, serde_json::Value>) {
        let mut guard = self.lock();
        guard.0 = recorded;
        guard.1 = false;
    }

    /// Whether this run recorded anything the message does not carry yet.
    pub fn changed(&self) -> bool {
        self.lock().1
    }

    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.lock().0.clone()
    }
}

/// How an attempt ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: this result goes into the completion event.
    Done(serde_json::Value),
    /// An EC2 operation is under way: put the message back and check again after this
    /// long, without holding a worker slot meanwhile.
    CheckAgainAfter(Duration),
}

/// A failed attempt, classified where it arose: Shoal's one error type
/// ([`shoal_common::error::Error`]), named for what handlers return.
pub type JobError = shoal_common::error::Error;

/// Runs the jobs of one kind. A handler is idempotent by its job id: SQS delivers at least
/// once, so a second run of the same job must find what the first created (by the job-id tag,
/// a client token, or what `ctx.progress` recorded) rather than create it again.
///
/// ```
/// use shoal_common::job::Canary;
/// use shoal_worker::{JobContext, JobError, JobHandler, Outcome, Registry};
///
/// /// Sleeps as asked, then reports how long it slept.
/// struct Sleepy;
///
/// impl JobHandler for Sleepy {
///     type Params = Canary;
///
///     async fn run(&self, ctx: JobContext, params: Canary) -> Result<Outcome, JobError> {
///         if ctx.attempt > 5 {
///             // Classified where it arises: permanent goes to the dead-letter queue.
///             return Err(JobError::permanent("TooManyTries", "this sleeper gives up"));
///         }
///         tokio::time::sleep(std::time::Duration::from_millis(params.sleep_ms)).await;
///         Ok(Outcome::Done(serde_json::json!({"slept_ms": params.sleep_ms})))
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register(Sleepy);
/// assert!(registry.contains(shoal_common::JobKind::Canary));
/// ```
pub trait JobHandler: Send + Sync + 'static {
    type Params: JobParams + Send + 'static;

    fn run(
        &self,
        ctx: JobContext,
        params: Self::Params,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send;
}

/// A handler made of a closure, for small handlers and tests.
pub struct FnHandler<P, F> {
    f: F,
    _params: std::marker::PhantomData<fn(P)>,
}

impl<P, F, Fut> JobHandler for FnHandler<P, F>
where
    P: JobParams + Send + 'static,
    F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, JobError>> + Send + 'static,
{
    type Params = P;

    fn run(
        &self,
        ctx: JobContext,
        params: P,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send {
        (self.f)(ctx, params)
    }
}

/// A handler as the registry stores it: typed by its parameters, callable on them alone.
trait TypedHandler<P>: Send + Sync {
    fn run(&self, ctx: JobContext, params: P) -> BoxFuture<'_, Result<Outcome, JobError>>;
}

impl<H: JobHandler> TypedHandler<H::Params> for H {
    fn run(&self, ctx: JobContext, params: H::Params) -> BoxFuture<'_, Result<Outcome, JobError>> {
        Box::pin(JobHandler::run(self, ctx, params))
    }
}

/// Handlers by kind. Each is stored under its own kind as an `Arc<dyn TypedHandler<P>>`;
/// [`Job::visit`] hands the job's parameters back typed, so the lookup by kind and type is
/// the only question dispatch asks.
///
/// ```
/// use shoal_common::job::Canary;
/// use shoal_common::JobKind;
/// use shoal_worker::{handlers, JobContext, Outcome, Registry};
///
/// // Only canaries: every other kind would be dead-lettered as `NoHandler`.
/// let mut registry = Registry::new();
/// registry.register_fn(|_ctx: JobContext, _canary: Canary| async {
///     Ok(Outcome::Done(serde_json::Value::Null))
/// });
/// assert!(registry.missing().contains(&JobKind::Snapshot));
///
/// // Every built-in handler.
/// assert!(handlers::default_registry().missing().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<JobKind, Arc<dyn Any + Send + Sync>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for its kind, replacing any handler registered before.
    pub fn register<H: JobHandler>(&mut self, handler: H) -> &mut Self {
        let typed: Arc<dyn TypedHandler<H::Params>> = Arc::new(handler);
        self.handlers.insert(H::Params::KIND, Arc::new(typed));
        self
    }

    /// Registers a closure as the handler for `P`'s kind.
    pub fn register_fn<P, F, Fut>(&mut self, f: F) -> &mut Self
    where
        P: JobParams + Send + 'static,
        F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, JobError>> + Send + 'static,
    {
        self.register(FnHandler {
            f,
            _params: std::marker::PhantomData,
        })
    }

    pub fn contains(&self, kind: JobKind) -> bool {
        self.handlers.contains_key(&kind)
    }

    /// The kinds this registry has no handler for; their jobs would be dead-lettered as
    /// `NoHandler`. The `shoal-worker` binary refuses to start with any.
    pub fn missing(&self) -> Vec<JobKind> {
        JobKind::ALL
            .iter()
            .copied()
            .filter(|k| !self.contains(*k))
            .collect()
    }

    /// The run of `job` by its kind's handler; `None` when this registry has none.
    pub(crate) fn run(
        &self,
        ctx: JobContext,
        job: Job,
    ) -> Option<BoxFuture<'_, Result<Outcome, JobError>>> {
        job.visit(Dispatch {
            registry: self,
            ctx,
        })
    }
}

/// Finds the handler of a job's kind, given its parameters typed.
struct Dispatch<'a> {
    registry: &'a Registry,
    ctx: JobContext,
}

impl<'a> JobVisitor for Dispatch<'a> {
    type Output = Option<BoxFuture<'a, Result<Outcome, JobError>>>;

    fn visit<P: JobParams>(self, params: P) -> Self::Output {
        let handler = self
            .registry
            .handlers
            .get(&P::KIND)?
            .downcast_ref::<Arc<dyn TypedHandler<P>>>()?;
        Some(handler.run(self.ctx, params))
    }
}
