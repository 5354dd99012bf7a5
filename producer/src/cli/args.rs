//! The command line's arguments: the subcommands (one per job kind, derived from
//! [`shoal_common::Job`]) and their options. Where queues, topic and ledger are is global (every
//! command may need it); how a job is sent ([`SendArgs`], [`JobIdArg`]) and followed
//! ([`FollowArgs`]) belongs to the commands that send, and [`command`] attaches it to them
//! alone, so `stack create --delay 5` is refused rather than ignored.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_common::config::QueueArgs;
use shoal_common::job::BuiltinJob;
use shoal_common::validate::TagRules;

/// Enqueue Shoal jobs on SQS.
#[derive(Debug, Parser)]
#[command(name = "shoal-producer", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// The completion topic (for --follow, `follow` and `stack gc`).
    #[arg(long, global = true, env = "SHOAL_TOPIC_ARN")]
    pub topic_arn: Option<String>,
    /// Filled from the sending command's own options by [`command`]'s parse.
    #[arg(skip)]
    pub job_id: JobIdArg,
    #[arg(skip)]
    pub send: SendArgs,
    #[arg(skip)]
    pub follow: FollowArgs,
    /// The job ledger's DynamoDB table: `job` and `jobs` read it, and following answers a
    /// job that already finished from it.
    #[arg(long, global = true, env = "SHOAL_LEDGER_TABLE")]
    pub ledger_table: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The envelope schema a worker with kinds of its own publishes (`shoal-worker schema`):
    /// its kinds can then be sent (`send KIND --params JSON`, `submit`), checked against it,
    /// and named wherever a kind is (`pause`, `jobs --kind`).
    #[arg(long, global = true, env = "SHOAL_KINDS_SCHEMA", value_name = "FILE")]
    pub kinds_schema: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Job(BuiltinJob),
    /// Enqueue one job of any kind by name, its parameters as JSON: a built-in, or a kind of
    /// a worker's own (with --kinds-schema), checked against its schema before it is sent.
    Send(SendKind),
    /// Enqueue jobs from JSON Lines (a file, or - for standard input), one job a line:
    /// `{"kind": …, "params": …}`, optionally with `job_id` and `then`; or one JSON job (a
    /// chain) or array of jobs.
    Submit(SubmitArgs),
    /// Wait for jobs submitted earlier (and their chains' follow-ups) to finish, printing
    /// each completion event as it arrives. Exit 0 when all succeeded, 1 when one failed,
    /// 124 on --timeout.
    Follow(FollowJobs),
    /// Show one job as the ledger holds it: status, attempts, holder, timings, result or
    /// error, and for a chain every step with its status. Exit 1 when there is no record.
    #[command(name = "job")]
    Lookup(LookupArgs),
    /// List recent jobs from the ledger, newest first, by status.
    Jobs(JobsArgs),
    /// Print the JSON Schema of the job envelope (or, with --event, of a completion event).
    Schema(SchemaArgs),
    /// Create queues and topic for a development stack, and print their addresses.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Show queued messages without consuming them (each look counts as a receive).
    Peek(PeekArgs),
    /// Read completion events from the events queue (consuming them) and print them.
    Events(EventsArgs),
    /// Show the job queue and its dead-letter queue: visible, in flight, delayed, and the
    /// age of the oldest message.
    Status(StatusArgs),
    /// Inspect and redrive the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run failed jobs again under their own ids, from their ledger records (no dead letter
    /// needed): each record is opened for its next run, its progress kept so nothing it
    /// created is created again, and its job sent. Give job ids, or `--status failed` with
    /// `--kind` and `--since` to choose from the ledger. Exit 1 when one could not be rerun.
    Retry(RetryArgs),
    /// Cancel jobs: one queued, waiting or retrying never runs again (the worker that
    /// receives it deletes it and announces it cancelled); one running stops at its next
    /// lease extension, creating nothing more. Needs the ledger. Exit 1 when one had
    /// finished already.
    Cancel(CancelArgs),
    /// Pause kinds during an incident: their jobs stay on the queue unstarted, spending no
    /// attempts, until resumed (workers see it within --pause-check-interval). Needs the
    /// ledger.
    Pause(PauseArgs),
    /// Resume paused kinds.
    Resume(PauseArgs),
    /// Serve the web console: the queues, jobs, chains and dead letters on one page, with
    /// retry, cancel, pause, resume and redrive. Listens on loopback unless given a token.
    /// Needs the ledger.
    Console(ConsoleArgs),
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to listen. Anything but loopback needs --auth-token.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Serve the pages without a single verb.
    #[arg(long)]
    pub read_only: bool,
    /// Ask every visitor for this token (at least 16 characters): required to listen beyond
    /// loopback. Serve it behind TLS (a load balancer, an ingress): the console speaks plain
    /// HTTP.
    #[arg(long, env = "SHOAL_CONSOLE_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// How often the overview reloads itself.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Who acts, recorded with each cancel and pause (default: $USER).
    #[arg(long, env = "USER", default_value = "an operator")]
    pub by: String,
    #[command(flatten)]
    pub dlq: DlqArgs,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The kinds.
    #[arg(value_name = "KIND", value_parser = parse_job_kind, required_unless_present = "all")]
    pub kinds: Vec<shoal_common::JobKind>,
    /// Every kind (resume --all also resumes the kinds paused one by one).
    #[arg(long, conflicts_with = "kinds")]
    pub all: bool,
    /// Who pauses or resumes, recorded (default: $USER).
    #[arg(long, env = "USER", default_value = "an operator")]
    pub by: String,
}

fn parse_job_kind(s: &str) -> Result<shoal_common::JobKind, String> {
    parse_kind(s).and_then(|k| {
        shoal_common::JobKind::parse(&k).ok_or_else(|| format!("`{s}` is not a job kind"))
    })
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The jobs to cancel, by id.
    #[arg(value_name = "JOB_ID", required = true)]
    pub job_ids: Vec<String>,
    /// Also every unfinished step of each job's chain on record.
    #[arg(long)]
    pub chain: bool,
    /// Who cancels, recorded and named in the cancellation's event (default: $USER).
    #[arg(long, env = "USER", default_value = "an operator")]
    pub by: String,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The jobs to rerun, by id.
    #[arg(value_name = "JOB_ID", required_unless_present = "status")]
    pub job_ids: Vec<String>,
    /// Rerun the jobs the ledger records with this status (`failed` or `cancelled`).
    #[arg(long, value_name = "STATUS", value_parser = parse_rerunnable, conflicts_with = "job_ids")]
    pub status: Option<shoal_common::ledger::Status>,
    /// With --status: only jobs of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND", value_parser = parse_kind, requires = "status")]
    pub kinds: Vec<String>,
    /// With --status: only jobs whose record changed this recently, e.g. 1h or 30m.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,
    /// With --status: rerun at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

fn parse_rerunnable(s: &str) -> Result<shoal_common::ledger::Status, String> {
    match shoal_common::ledger::Status::parse(s) {
        Some(
            status @ (shoal_common::ledger::Status::Failed
            | shoal_common::ledger::Status::Cancelled),
        ) => Ok(status),
        Some(_) => Err(format!(
            "`{s}`: only failed and cancelled jobs can be rerun"
        )),
        None => Err(format!(
            "`{s}` is not a status (rerunnable: failed, cancelled)"
        )),
    }
}

/// Following jobs to their completion events, after sending them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Following")]
pub struct FollowArgs {
    /// After sending, wait for the job's completion event (for a chain, every job's) and
    /// print each as it arrives; exit 0 when all succeeded, 1 when one failed, 124 on
    /// --timeout.
    #[arg(long)]
    pub follow: bool,
    /// How long to follow before giving up (exit 124).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Default for FollowArgs {
    fn default() -> Self {
        FollowArgs {
            follow: false,
            timeout: DEFAULT_FOLLOW,
        }
    }
}

const DEFAULT_FOLLOW: Duration = Duration::from_secs(30 * 60);

/// The id of a job given on the command line.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Sending")]
pub struct JobIdArg {
    /// Job id (idempotency key); generated when not given.
    #[arg(long)]
    pub job_id: Option<String>,
}

/// The command line: [`Cli`]'s, with the sending options attached to the commands that send
/// (one per kind, `send`: a job id too; `submit`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .filter(|name| sends(name).is_some())
        .collect();
    for name in names {
        command = command.mut_subcommand(&name, |sub| {
            let sub = SendArgs::augment_args(FollowArgs::augment_args(sub));
            match sends(sub.get_name()) {
                Some(Sends::One) => JobIdArg::augment_args(sub),
                _ => sub,
            }
        });
    }
    command
}

pub(crate) enum Sends {
    One,
    Many,
}

/// Whether the subcommand `name` sends one job (a kind's, `send`) or many (`submit`).
pub(crate) fn sends(name: &str) -> Option<Sends> {
    match name {
        "send" => Some(Sends::One),
        "submit" => Some(Sends::Many),
        kind if shoal_common::JobKind::parse(kind).is_some() => Some(Sends::One),
        _ => None,
    }
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The completion event's schema (a CloudEvent whose `data` is the job's outcome).
    #[arg(long)]
    pub event: bool,
}

#[derive(Debug, Args)]
pub struct FollowJobs {
    /// The jobs to follow, by id.
    #[arg(required = true, value_name = "JOB_ID")]
    pub job_ids: Vec<String>,
    /// How long to follow before giving up (exit 124).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The job, by id.
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs of this status (repeatable; default: every status).
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status)]
    pub statuses: Vec<shoal_common::ledger::Status>,
    /// Only jobs whose record changed this recently, e.g. 1h or 30m.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,
    /// Only jobs of this kind (repeatable; default: every kind).
    #[arg(long = "kind", value_name = "KIND", value_parser = parse_kind)]
    pub kinds: Vec<String>,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

fn parse_status(s: &str) -> Result<shoal_common::ledger::Status, String> {
    shoal_common::ledger::Status::parse(s).ok_or_else(|| {
        let known: Vec<&str> = shoal_common::ledger::Status::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("`{s}` is not a status (known: {})", known.join(", "))
    })
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every INTERVAL (e.g. 5s) until interrupted.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// With --watch, stop after this many refreshes.
    #[arg(long, requires = "watch")]
    pub count: Option<usize>,
}

/// Where the dead-letter queue is, for the `dlq` commands.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// The dead-letter queue (default: the job queue's redrive target).
    #[arg(long, env = "SHOAL_DLQ_URL")]
    pub dlq_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered jobs with their failure reasons (consumes nothing).
    List {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Move dead-lettered jobs back to the job queue: all of them, or those of the given
    /// job ids or kinds. Each is sent before it is deleted, so an interruption loses none;
    /// with --ledger-table, each failed job is opened for a rerun first (else its worker
    /// would answer it from its failed record). Only what was dead-lettered when the
    /// redrive began is moved; Ctrl-C stops it with a summary.
    Redrive {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Only this job (repeatable).
        #[arg(long = "job", value_name = "JOB_ID")]
        jobs: Vec<String>,
        /// Only jobs of this kind (repeatable).
        #[arg(long = "kind", value_name = "KIND", value_parser = parse_kind)]
        kinds: Vec<String>,
        /// Move at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete dead letters for good, by message id (as `dlq list` shows it: the only handle
    /// of a message that carries no job id) or by job id. Exit 1 when one was not found.
    Delete {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Message ids or job ids.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
    /// Delete every dead letter for good (SQS's PurgeQueue: within a minute, once a minute at
    /// most). Refused without --yes.
    Purge {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Yes, delete them all.
        #[arg(long)]
        yes: bool,
    },
}

/// A duration as `90s`, `30m`, `1h`, `2d` or `1h30m`; anything else is refused saying so
/// (humantime's own words, "expected number at 0", name no unit).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| {
        format!("`{s}` is not a duration: a number and a unit, such as 90s, 30m, 1h or 2d")
    })
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (2026-12-06T18:00:00Z): {e}"))
}

fn parse_kind(s: &str) -> Result<String, String> {
    shoal_common::JobKind::parse(s)
        .map(|k| k.as_str().to_owned())
        .ok_or_else(|| {
            let known: Vec<_> = shoal_common::JobKind::all()
                .iter()
                .map(|k| k.as_str())
                .collect();
            format!("`{s}` is not a job kind (known: {})", known.join(", "))
        })
}

/// `send KIND --params JSON`.
#[derive(Debug, Args)]
pub struct SendKind {
    /// The kind's name (`snapshot`, or a kind from --kinds-schema).
    pub kind: String,
    /// Its parameters, a JSON object (`{"volume_id": "vol-…", "size_gib": 16}`); none means `{}`.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
}

/// Options for sending, shared by every enqueueing command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Sending")]
pub struct SendArgs {
    /// Delay the job by this many seconds (standard queues only): up to 900 by SQS's own
    /// delay, beyond that (up to a year) by waiting on the queue in hops.
    #[arg(long, value_name = "SECONDS", conflicts_with = "at")]
    pub delay: Option<u32>,
    /// Run the job no earlier than this time (RFC 3339, e.g. 2026-12-06T18:00:00Z; up to a
    /// year ahead; standard queues only). It waits on the queue in hops of at most 15
    /// minutes, spending no attempt, and can be cancelled meanwhile.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// FIFO message group id (default: the job's kind).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Tag rules beyond EC2's: `portable` (AWS's generally allowed set) or
    /// `instance-metadata` (also keys instance metadata can expose).
    #[arg(long, env = "SHOAL_TAG_RULES", value_enum, default_value_t = TagRules::Ec2)]
    pub tag_rules: TagRules,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// JSON Lines file (one job a line), a file holding one JSON job (e.g. a chain, written
    /// over many lines) or a JSON array of jobs; - for standard input.
    pub file: PathBuf,
    /// Check every job against the contract and send nothing: exit 0 when all are valid,
    /// 1 naming each invalid one (e.g. a schedule's job before it is deployed).
    #[arg(long)]
    pub check: bool,
    /// Derive the id of each job that names no `job_id` from this seed, its place in the
    /// file and its text, so that sending the file again with the same seed (after a
    /// partial failure, say) sends the same jobs, which the job ledger runs once. Without
    /// it a fresh seed is used and printed; a job whose text changed gets a new id.
    #[arg(long, value_name = "SEED")]
    pub id_seed: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Create (or find) the job queue, DLQ, completion topic, events queue and the job
    /// ledger's table.
    Create {
        /// Prefix of every resource name.
        #[arg(long, default_value = "shoal")]
        prefix: String,
        /// Make the job queue and its DLQ FIFO queues.
        #[arg(long)]
        fifo: bool,
        /// Receives before a message moves to the DLQ.
        #[arg(long, default_value_t = 5)]
        max_receive_count: u32,
        /// The job queue's visibility timeout, in seconds.
        #[arg(long, default_value_t = 60)]
        visibility_timeout: u32,
        /// Make no ledger table: for an emulator that serves SQS and SNS alone (its workers
        /// then need one elsewhere, or `--no-ledger`).
        #[arg(long)]
        no_ledger: bool,
    },
    /// Remove what killed followers left behind: follower queues older than --older-than,
    /// and the topic's subscriptions to follower queues that are gone.
    Gc {
        /// Only follower queues at least this old.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        older_than: Duration,
    },
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    /// Show at most this many messages.
    #[arg(long, default_value_t = 10)]
    pub max: usize,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The queue subscribed to the completion topic.
    #[arg(long, env = "SHOAL_EVENTS_QUEUE_URL")]
    pub events_queue_url: String,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this long without a new event.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub idle: Duration,
}
