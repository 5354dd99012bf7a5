//! What a job handler is, and the registry the runtime dispatches through.
//!
//! A handler is typed by its kind's parameters: [`JobHandler::Params`] ties it to one
//! [`Kind`], so the registry (keyed by the kind's name) can hand it exactly its parameters.
//! A library user registers a handler for a kind of their own the same way as for a built-in
//! one, and tests register their own handlers in place of the defaults.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use crate::heartbeat::Lease;
use shoal_common::aws::AwsClients;
use shoal_common::job::Kind;
use shoal_common::ledger::CREATES_NOTED;
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
    /// Since when an earlier run of this job may have created something EC2 does not list
    /// yet: `None` when none can have (the job's first run, or, with a job ledger, no
    /// earlier run put a create on record before sending it). A lookup that finds nothing
    /// is proof once a consistency window has passed since.
    pub created_since: Option<tokio::time::Instant>,
    /// When this delivery was received: an earlier delivery's last call happened before it.
    pub received_at: tokio::time::Instant,
    /// The message's hold, to check before a call that must not happen twice.
    pub lease: Lease,
    /// What earlier runs recorded, and where this run records what the next must know.
    pub progress: Progress,
    /// Set when an operator cancels the job while it runs (`shoal-producer cancel`): the
    /// handler creates nothing more ([`JobContext::before_create`] refuses) and should end
    /// at its next wait; the runtime records and announces the cancellation.
    pub cancel: Cancellation,
    pub worker_id: Arc<str>,
    pub clients: AwsClients,
    /// When SQS accepted the message.
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
}

impl JobContext {
    /// To call right before a create goes out, after any pacing: `Err` when the lease is
    /// (nearly) over, or, with a job ledger, when the create could not be put on record
    /// first ([`Progress::note_create`]). Either way nothing may be sent.
    pub async fn before_create(&self, operation: &str) -> Result<(), JobError> {
        if self.cancel.is_requested() {
            return Err(JobError::shoal(
                shoal_common::error::ShoalCode::Cancelled,
                format!("the job was cancelled: {operation} is not sent"),
            ));
        }
        self.lease.ensure()?;
        self.progress.note_create(operation).await?;
        // The note took a ledger call: the lease is read again, closest to the send.
        self.lease.ensure()
    }
}

/// An operator's request that a running job stop, as its run learns it (at a lease
/// extension, or at its claim).
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<std::sync::atomic::AtomicBool>);

impl Cancellation {
    pub fn is_requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A context for a handler's unit test: a first run, no lease to run out, clients that
/// reach nowhere.
#[cfg(test)]
pub(crate) fn test_context() -> JobContext {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    JobContext {
        job_id: JobId::parse("job-1").expect("id"),
        kind: JobKind::Snapshot,
        attempt: 1,
        max_attempts: 3,
        created_since: None,
        received_at: tokio::time::Instant::now(),
        lease: Lease::default(),
        progress: Progress::default(),
        cancel: Cancellation::default(),
        worker_id: "w".into(),
        clients: AwsClients::new(&sdk),
        enqueued_at: None,
        started_at: Utc::now(),
    }
}

/// A handler's notes for its job's next run, carried on the message between deliveries
/// and, with a job ledger, written there the moment they change. EC2 is eventually
/// consistent: what a run created may not be listed yet when the next run looks, so a
/// handler records the ids it created here, as soon as the create call answers, rather than
/// trusting a lookup. With a ledger, each create is also put on record before it is sent
/// ([`Progress::note_create`]), so a later run knows whether (and since when) an earlier one
/// may have created something it cannot see yet.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<std::sync::Mutex<Notes>>,
    /// Woken by each change, for the runtime to write it to the ledger at once.
    changes: Arc<tokio::sync::Notify>,
    /// How far the ledger has taken the notes (or refused them), by version.
    written: Arc<tokio::sync::watch::Sender<Written>>,
}

#[derive(Debug, Default)]
struct Notes {
    map: serde_json::Map<String, serde_json::Value>,
    /// Changed since the message's copy was made.
    changed: bool,
    /// Raised by every change, so the ledger's writer can say which one it wrote.
    version: u64,
    /// The notes are the ledger's: a create waits until its note is written there.
    in_ledger: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Written {
    /// The latest version on record.
    taken: u64,
    /// The latest version the ledger did not take (`u64::MAX` once the claim is lost).
    refused: u64,
}

impl Progress {
    /// Progress carried in from an earlier run.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Progress {
            inner: Arc::new(std::sync::Mutex::new(Notes {
                map,
                ..Notes::default()
            })),
            ..Progress::default()
        }
    }

    /// Returns once something was recorded since the last time it returned.
    pub async fn changes(&self) {
        self.changes.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.lock().map.get(key).cloned()
    }

    /// Records `value` under `key` for the next run.
    pub fn set(&self, key: &str, value: serde_json::Value) {
        let mut guard = self.lock();
        if guard.map.get(key) != Some(&value) {
            guard.map.insert(key.to_owned(), value);
            guard.changed = true;
            guard.version += 1;
            self.changes.notify_one();
        }
    }

    /// Puts on record that `operation` (a create) is about to be sent, and, when the notes
    /// are the job ledger's, returns only once the ledger has it: `Err` (transient, nothing
    /// sent) when the ledger did not take it or the claim was lost. A later run that finds
    /// no such note knows no create went out before it, and trusts an empty lookup at once.
    pub async fn note_create(&self, operation: &str) -> Result<(), JobError> {
        let (version, in_ledger) = {
            let mut guard = self.lock();
            let mut creates = guard
                .map
                .get(CREATES_NOTED)
                .and_then(|c| c.as_object())
                .cloned()
                .unwrap_or_default();
            creates.insert(operation.to_owned(), Utc::now().to_rfc3339().into());
            guard.map.insert(CREATES_NOTED.to_owned(), creates.into());
            guard.changed = true;
            guard.version += 1;
            (guard.version, guard.in_ledger)
        };
        self.changes.notify_one();
        if !in_ledger {
            return Ok(());
        }
        let mut written = self.written.subscribe();
        let taken = written
            .wait_for(|w| w.taken >= version || w.refused >= version)
            .await
            .is_ok_and(|w| w.taken >= version);
        if taken {
            Ok(())
        } else {
            Err(JobError::shoal(
                shoal_common::error::ShoalCode::CreateNotNoted,
                format!("{operation} was not put on record in the job ledger, so it was not sent"),
            ))
        }
    }

    /// The latest time an earlier run noted it was about to send a create, if any.
    pub fn latest_create(&self) -> Option<DateTime<Utc>> {
        self.lock()
            .map
            .get(CREATES_NOTED)?
            .as_object()?
            .values()
            .filter_map(|at| at.as_str())
            .filter_map(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc))
            .max()
    }

    /// Takes what the job ledger recorded for the job as what earlier runs recorded: the
    /// ledger, written by workers alone, speaks for the job, where a message's carried
    /// state may have been written by anyone. From here on the notes are the ledger's.
    pub fn adopt(&self, recorded: serde_json::Map<String, serde_json::Value>) {
        let mut guard = self.lock();
        guard.map = recorded;
        guard.changed = false;
        guard.in_ledger = true;
    }

    /// Whether this run recorded anything the message does not carry yet.
    pub fn changed(&self) -> bool {
        self.lock().changed
    }

    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.lock().map.clone()
    }

    /// The notes and their version, for the ledger's writer.
    pub(crate) fn versioned(&self) -> (serde_json::Map<String, serde_json::Value>, u64) {
        let guard = self.lock();
        (guard.map.clone(), guard.version)
    }

    /// The ledger's writer reports on `version`: on record (`true`) or not.
    pub(crate) fn written(&self, version: u64, taken: bool) {
        self.written.send_modify(|w| {
            if taken {
                w.taken = w.taken.max(version);
            } else {
                w.refused = w.refused.max(version);
            }
        });
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
    type Params: Kind;

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
    P: Kind,
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

/// A handler as the registry stores it: it takes any job, and runs the ones of its kind.
trait ErasedHandler: Send + Sync {
    fn run(&self, ctx: JobContext, job: &Job) -> Option<BoxFuture<'_, Result<Outcome, JobError>>>;
}

impl<H: JobHandler> ErasedHandler for H {
    fn run(&self, ctx: JobContext, job: &Job) -> Option<BoxFuture<'_, Result<Outcome, JobError>>> {
        let params = job.params::<H::Params>()?.clone();
        Some(Box::pin(JobHandler::run(self, ctx, params)))
    }
}

/// Handlers by kind name. Registering a handler makes its kind known to the process (so its
/// jobs decode), and a job's parameters reach the handler as the handler's own type.
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
    handlers: HashMap<JobKind, Arc<dyn ErasedHandler>>,
    /// A kind that could not be registered (a bad name, or one another type holds), for the
    /// worker to refuse to start with.
    refused: Vec<shoal_common::job::KindError>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for its kind, replacing any handler registered before. A kind
    /// whose name is malformed or taken by another type is not registered, and
    /// [`Registry::check`] says why.
    pub fn register<H: JobHandler>(&mut self, handler: H) -> &mut Self {
        match shoal_common::job::register::<H::Params>() {
            Ok(kind) => {
                self.handlers.insert(kind, Arc::new(handler));
            }
            Err(e) => self.refused.push(e),
        }
        self
    }

    /// Registers a closure as the handler for `P`'s kind.
    pub fn register_fn<P, F, Fut>(&mut self, f: F) -> &mut Self
    where
        P: Kind,
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

    /// The kinds this registry has handlers for, in the process's order of kinds (the
    /// built-ins first): a worker's metrics labels and the kinds its settings may name.
    pub fn kinds(&self) -> Vec<JobKind> {
        JobKind::all()
            .into_iter()
            .filter(|k| self.contains(*k))
            .collect()
    }

    /// The built-in kinds this registry has no handler for; their jobs would be
    /// dead-lettered as `NoHandler`. The `shoal-worker` binary refuses to start with any.
    pub fn missing(&self) -> Vec<JobKind> {
        JobKind::builtin()
            .into_iter()
            .filter(|k| !self.contains(*k))
            .collect()
    }

    /// `Err` naming each kind that could not be registered.
    pub fn check(&self) -> Result<(), String> {
        if self.refused.is_empty() {
            return Ok(());
        }
        Err(self
            .refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// The run of `job` by its kind's handler; `None` when this registry has none.
    pub(crate) fn run(
        &self,
        ctx: JobContext,
        job: &Job,
    ) -> Option<BoxFuture<'_, Result<Outcome, JobError>>> {
        self.handlers.get(&job.kind())?.run(ctx, job)
    }
}
