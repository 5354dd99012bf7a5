//! The `shoal-producer` command line: one subcommand per job kind (derived from
//! [`shoal_common::Job`], so a new kind appears here by itself), bulk `submit` from JSON
//! Lines, `schema` for other languages' teams, `stack create` for a development stack,
//! `peek` and `events` to look at the queues, `job` and `jobs` to look jobs up in the
//! ledger, the operator's `status`, `dlq list|redrive|delete|purge`, `retry`, `cancel`,
//! `pause`, `resume`, and `console` (the web console, [`crate::console`]).
//!
//! The arguments are in [`args`]; this file holds the dispatch, the exit statuses and the
//! one output helper; each command's printing is in a file of its own (`submit`, `watch`
//! for peek/events/status, `verbs` for the operator's, `lookup`, `follow`), and the AWS work
//! they print is in the library ([`crate::inspect`], [`crate::operate`], [`crate::lookup`]). It lives in the library
//! so tests can run it in-process against the emulator; `main.rs` only parses arguments and
//! loads the AWS configuration.

mod args;
mod follow;
mod lookup;
mod submit;
mod verbs;
mod watch;

pub use args::*;

use std::io::{IsTerminal, Write};

use aws_config::SdkConfig;
use shoal_common::aws::AwsClients;
use shoal_common::config::{QueueArgs, QueueConfigError, QueueTarget};
use shoal_common::error::Error;
use shoal_common::ledger::Ledger;
use shoal_common::stack::{self, StackSpec};
use shoal_common::{Job, JobEnvelope, JobId};

use crate::{EnqueueError, Producer, SendOptions};

/// Where the CLI writes: results to `out`, diagnostics and progress to `err`.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    /// Show a progress bar (standard error is a terminal and output is not JSON).
    pub progress: bool,
}

/// Why a command could not do its work, and the exit status that says so.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Options that do not go together (exit 2, like the argument parser's own errors).
    #[error("{0}")]
    Usage(String),
    /// A job or option refused before anything was sent, naming the field (exit 2, as the
    /// argument parser's own refusals: a script tells a bad argument from a failed job).
    #[error("{0}")]
    Refused(String),
    /// No region or no credentials: nothing can be sent.
    #[error(transparent)]
    Setup(#[from] shoal_common::aws::SetupError),
    /// The queue could not be found.
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] Error),
    /// The output could not be written.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Refused(_) => 2,
            _ => 1,
        }
    }
}

impl From<EnqueueError> for CliError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Aws(e) => CliError::Aws(e),
            other => CliError::Refused(other.to_string()),
        }
    }
}

/// What a command did, when it could do its work: everything, or not all of it (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    All,
    NotAll,
    /// Nothing done: the input was refused, each reason printed (2, as a refused argument).
    Refused,
    /// A follow ran out of time (124, as `timeout(1)` exits).
    TimedOut,
    /// Interrupted by the user (130, as a shell reports SIGINT).
    Interrupted,
}

impl Done {
    fn exit_code(self) -> i32 {
        match self {
            Done::All => 0,
            Done::NotAll => 1,
            Done::Refused => 2,
            Done::TimedOut => 124,
            Done::Interrupted => 130,
        }
    }

    fn when(all: bool) -> Done {
        if all {
            Done::All
        } else {
            Done::NotAll
        }
    }
}

/// Writes results: each one a JSON line with `--json`, text otherwise; notes go to standard
/// error either way.
pub(crate) struct Output<'a, 'b> {
    io: &'a mut Io<'b>,
    json: bool,
}

impl Output<'_, '_> {
    /// One result: `value` as a JSON line, or what `text` writes.
    fn item<T: serde::Serialize>(
        &mut self,
        value: &T,
        text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), CliError> {
        if self.json {
            let line = serde_json::to_string(value).map_err(std::io::Error::other)?;
            writeln!(self.io.out, "{line}")?;
        } else {
            text(&mut *self.io.out)?;
        }
        Ok(())
    }

    /// A whole document: `value` as indented JSON, or what `text` writes.
    fn document<T: serde::Serialize>(
        &mut self,
        value: &T,
        text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), CliError> {
        if self.json {
            let doc = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
            writeln!(self.io.out, "{doc}")?;
        } else {
            text(&mut *self.io.out)?;
        }
        Ok(())
    }

    /// Text for the reader only: nothing with `--json`.
    fn text(
        &mut self,
        text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), CliError> {
        if !self.json {
            text(&mut *self.io.out)?;
        }
        Ok(())
    }

    /// A line for the reader, on standard error.
    fn note(&mut self, line: impl std::fmt::Display) -> Result<(), CliError> {
        writeln!(self.io.err, "{line}")?;
        Ok(())
    }
}

/// The `shoal-producer` process: parses arguments, sets up logging (the SDK's own warnings
/// only when `RUST_LOG` asks for them), loads the AWS configuration and runs the command.
/// Returns the exit status.
pub fn main() -> i32 {
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Flushes the traces (if any are exported) when dropped, after the runtime is done.
    let _telemetry = shoal_common::logging::init("warn", false, "shoal-producer");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let sdk = shoal_common::aws::load_sdk_config().await;
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        let progress = !cli.json && stderr_is_terminal();
        run(
            cli,
            &sdk,
            &mut Io {
                out: &mut out,
                err: &mut err,
                progress,
            },
        )
        .await
    })
}

/// Parses `argv` (the program's name first). The kinds a `--kinds-schema` file (or
/// `SHOAL_KINDS_SCHEMA`) describes are learnt first, so every argument that names a kind
/// knows them; a schema that cannot be read is refused as a bad argument.
pub fn parse<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    if let Some(path) = kinds_schema_arg(&argv) {
        if let Err(e) = shoal_common::job::learn_kinds_from_file(&path) {
            return Err(command().error(
                clap::error::ErrorKind::InvalidValue,
                format!("--kinds-schema: {e}"),
            ));
        }
    }
    let matches = command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(sends) = args::sends(name) {
            cli.send = SendArgs::from_arg_matches(sub)?;
            cli.follow = FollowArgs::from_arg_matches(sub)?;
            if let args::Sends::One = sends {
                cli.job_id = JobIdArg::from_arg_matches(sub)?;
            }
        }
    }
    Ok(cli)
}

/// The `--kinds-schema` file named in `argv` (either spelling), else `SHOAL_KINDS_SCHEMA`.
fn kinds_schema_arg(argv: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--kinds-schema" {
            return args.next().map(std::path::PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--kinds-schema=") {
            return Some(path.into());
        }
    }
    std::env::var_os("SHOAL_KINDS_SCHEMA").map(std::path::PathBuf::from)
}

/// Runs the CLI; the return value is the process exit code: 0 when everything was done, 1
/// otherwise, 2 for arguments refused (options that do not go together, a job or option that
/// breaks a rule), as for the ones the parser refuses.
pub async fn run(cli: Cli, sdk: &SdkConfig, io: &mut Io<'_>) -> i32 {
    let json = cli.json;
    let mut output = Output { io, json };
    match execute(cli, sdk, &mut output).await {
        Ok(done) => done.exit_code(),
        Err(e) => {
            let _ = writeln!(output.io.err, "error: {e}");
            e.exit_code()
        }
    }
}

async fn execute(cli: Cli, sdk: &SdkConfig, out: &mut Output<'_, '_>) -> Result<Done, CliError> {
    let send = &cli.send;
    // A delay beyond SQS's 900 s is a time to run at: the job waits for it in hops.
    let (delay_seconds, not_before) = match (send.delay, send.at) {
        (Some(delay), _) if delay > 900 => (
            None,
            Some(chrono::Utc::now() + chrono::Duration::seconds(i64::from(delay))),
        ),
        (delay, at) => (delay, at),
    };
    let options = SendOptions {
        delay_seconds,
        message_group_id: send.group_id.clone(),
        tag_rules: send.tag_rules,
        not_before,
    };
    // A job given here is checked first, in its own arm: an invalid one is refused, naming
    // its field, before any AWS setup is looked at.
    let offline = match &cli.command {
        Command::Schema(_) | Command::Job(_) | Command::Send(_) => true,
        Command::Submit(args) => args.check,
        _ => false,
    };
    if !offline {
        shoal_common::aws::check_setup(sdk).await?;
    }
    let clients = AwsClients::new(sdk);
    // Where a job given on the command line goes (`Job`, `Send`): fields the match leaves be.
    let target = Target {
        queue: &cli.queue,
        ledger_table: &cli.ledger_table,
        follow: &cli.follow,
        topic_arn: &cli.topic_arn,
    };
    match cli.command {
        Command::Schema(args) => {
            let schema = if args.event {
                shoal_common::event::json_schema()
            } else {
                shoal_common::job::json_schema()
            };
            let doc = serde_json::to_string_pretty(&schema).map_err(std::io::Error::other)?;
            writeln!(out.io.out, "{doc}")?;
            Ok(Done::All)
        }
        Command::Stack(StackCommand::Create {
            prefix,
            fifo,
            max_receive_count,
            visibility_timeout,
            no_ledger,
        }) => {
            let spec = StackSpec {
                prefix,
                fifo,
                max_receive_count,
                visibility_timeout_secs: visibility_timeout,
                ledger: !no_ledger,
            };
            let stack = stack::provision(&clients, &spec).await?;
            out.document(&stack, |w| {
                for (name, value) in stack.env_vars() {
                    writeln!(w, "{name}={value}")?;
                }
                Ok(())
            })?;
            Ok(Done::All)
        }
        Command::Job(job) => {
            let envelope = job_envelope(job.into(), cli.job_id.job_id.as_deref())?;
            send_one(target, sdk, &clients, envelope, &options, out).await
        }
        Command::Send(args) => {
            let params: serde_json::Value = match &args.params {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| CliError::Refused(format!("--params: not a JSON object: {e}")))?,
                None => serde_json::json!({}),
            };
            let mut request = serde_json::Map::new();
            request.insert("kind".into(), args.kind.clone().into());
            request.insert("params".into(), params);
            if let Some(id) = &cli.job_id.job_id {
                request.insert("job_id".into(), id.clone().into());
            }
            let request = serde_json::Value::Object(request);
            let envelope =
                JobEnvelope::from_request(request).map_err(|e| CliError::Refused(e.to_string()))?;
            send_one(target, sdk, &clients, envelope, &options, out).await
        }
        Command::Follow(args) => {
            let topic = follow::topic(&cli.topic_arn)?;
            let ids = args
                .job_ids
                .iter()
                .map(|id| {
                    JobId::parse(id).map_err(|m| CliError::Refused(format!("job_id: `{id}` {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut follower = crate::Follower::start(&clients, topic, &ids, args.timeout)
                .await
                .map_err(follow_error)?;
            match ledger(&cli.ledger_table, &clients) {
                // A job that finished before the follower subscribed is on record; one the
                // ledger has never heard of is said at once (a typo, or a job sent by a
                // producer without the ledger, whose record appears when a worker claims it).
                Some(ledger) => {
                    for id in &ids {
                        if let Ok(None) = ledger.get(id.as_str()).await {
                            out.note(format_args!(
                                "no record of job {id}: not enqueued by a producer with this ledger, or not an id; following it anyway"
                            ))?;
                        }
                    }
                    follower = follower.answering_from(ledger)
                }
                // A job that failed before the follower subscribed is waiting in the DLQ.
                None => {
                    if let Ok(target) = cli.queue.resolve(&clients.sqs).await {
                        match crate::operate::dead_letter_queue_url(&clients.sqs, &target.url).await
                        {
                            Ok(dlq_url) => {
                                follow::look_in_dead_letters(&clients, &dlq_url, &mut follower, out)
                                    .await?
                            }
                            Err(e) => {
                                tracing::info!(error = %e, "no dead-letter queue to look in")
                            }
                        }
                    }
                }
            }
            follow::follow(follower, args.timeout, out).await
        }
        Command::Lookup(args) => {
            lookup::job(&needed(&cli.ledger_table, &clients)?, &args, out).await
        }
        Command::Jobs(args) => {
            lookup::jobs(&needed(&cli.ledger_table, &clients)?, &args, out).await
        }
        Command::Submit(args) => {
            if args.check {
                return submit::check(&args, &options, out);
            }
            let follow = match cli.follow.follow {
                true => Some(submit::Following {
                    clients: &clients,
                    topic_arn: follow::topic(&cli.topic_arn)?,
                    timeout: cli.follow.timeout,
                }),
                false => None,
            };
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            submit::submit(&producer, &args, &options, follow, out).await
        }
        Command::Stack(StackCommand::Gc { older_than }) => {
            let collected =
                crate::operate::collect_followers(&clients, cli.topic_arn.as_deref(), older_than)
                    .await?;
            out.document(&collected, |w| {
                writeln!(
                    w,
                    "removed {} follower queue(s) and {} subscription(s)",
                    collected.queues.len(),
                    collected.subscriptions.len()
                )
            })?;
            Ok(Done::All)
        }
        Command::Peek(args) => {
            let target = cli.queue.resolve(&clients.sqs).await?;
            watch::peek(&clients, &target, args.max, out).await
        }
        Command::Events(args) => watch::events(&clients, &args, out).await,
        Command::Status(args) => {
            let target = cli.queue.resolve(&clients.sqs).await?;
            let ledger = ledger(&cli.ledger_table, &clients);
            watch::status(&clients, &target, ledger.as_ref(), &args, out).await
        }
        Command::Dlq(command) => {
            let ledger = ledger(&cli.ledger_table, &clients);
            verbs::dlq(&cli.queue, &clients, ledger.as_ref(), command, out).await
        }
        Command::Pause(args) => {
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            verbs::pause(&producer, &args, true, out).await
        }
        Command::Resume(args) => {
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            verbs::pause(&producer, &args, false, out).await
        }
        Command::Cancel(args) => {
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            verbs::cancel(&producer, &args, out).await
        }
        Command::Retry(args) => {
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            verbs::retry(&producer, &args, out).await
        }
        Command::Console(args) => {
            needed(&cli.ledger_table, &clients)?;
            let producer = connect(&cli.queue, &cli.ledger_table, &clients).await?;
            verbs::console(producer, clients, args, out).await
        }
    }
}

fn follow_error(e: crate::FollowError) -> CliError {
    match e {
        crate::FollowError::Enqueue(e) => e.into(),
        crate::FollowError::Aws(e) => CliError::Aws(e),
        other => CliError::Refused(other.to_string()),
    }
}

/// Where a job given on the command line goes, and how it is followed.
struct Target<'a> {
    queue: &'a shoal_common::config::QueueArgs,
    ledger_table: &'a Option<String>,
    follow: &'a args::FollowArgs,
    topic_arn: &'a Option<String>,
}

/// Checks one job given on the command line (refused, naming its field, before any AWS setup
/// is looked at), sends it, and follows it with `--follow`.
async fn send_one(
    cli: Target<'_>,
    sdk: &SdkConfig,
    clients: &AwsClients,
    envelope: JobEnvelope,
    options: &SendOptions,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    crate::message::check_job(&envelope, options)?;
    shoal_common::aws::check_setup(sdk).await?;
    let following = cli.follow;
    let topic = following
        .follow
        .then(|| follow::topic(cli.topic_arn))
        .transpose()?;
    let producer = connect(cli.queue, cli.ledger_table, clients).await?;
    let (enqueued, follower) = match topic {
        Some(topic) => {
            let (enqueued, follower) = producer
                .enqueue_and_follow(clients, topic, &envelope, options, following.timeout)
                .await
                .map_err(follow_error)?;
            (enqueued, Some(follower))
        }
        None => (producer.enqueue(&envelope, options).await?, None),
    };
    let printed = serde_json::json!({
        "job_id": enqueued.job_id,
        "kind": enqueued.kind,
        "message_id": enqueued.message_id,
        "queue_url": producer.queue().url,
    });
    match follower {
        // With --follow, the events are the output; the id goes to the reader.
        Some(follower) => {
            out.note(format_args!("enqueued {}; following", enqueued.job_id))?;
            follow::follow(follower, following.timeout, out).await
        }
        None => {
            out.item(&printed, |w| writeln!(w, "{}", enqueued.job_id))?;
            Ok(Done::All)
        }
    }
}

/// The envelope of a job given on the command line, under `--job-id` when given.
fn job_envelope(job: Job, job_id: Option<&str>) -> Result<JobEnvelope, CliError> {
    let envelope = JobEnvelope::new(job);
    match job_id {
        Some(id) => {
            let id = JobId::parse(id).map_err(|m| CliError::Refused(format!("job_id: {m}")))?;
            Ok(envelope.with_job_id(id))
        }
        None => Ok(envelope),
    }
}

async fn connect(
    queue: &QueueArgs,
    ledger_table: &Option<String>,
    clients: &AwsClients,
) -> Result<Producer, CliError> {
    let target: QueueTarget = queue.resolve(&clients.sqs).await?;
    let producer = Producer::new(clients.sqs.clone(), target);
    Ok(match ledger(ledger_table, clients) {
        Some(ledger) => producer.with_ledger(ledger),
        None => producer,
    })
}

/// The ledger `--ledger-table` names, for reading: a record's lifetime is the workers' to set.
fn ledger(table: &Option<String>, clients: &AwsClients) -> Option<Ledger> {
    table.as_ref().map(|table| {
        Ledger::new(
            clients.dynamodb.clone(),
            table.clone(),
            std::time::Duration::ZERO,
        )
    })
}

/// The ledger, for a command that cannot do without it.
fn needed(table: &Option<String>, clients: &AwsClients) -> Result<Ledger, CliError> {
    ledger(table, clients).ok_or_else(|| CliError::from(crate::LookupError::NoLedger))
}

/// Whether standard error is a terminal, for the progress bar.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_exit_status() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Refused("job_id: bad".into()).exit_code(), 2);
        assert_eq!(CliError::Queue(QueueConfigError::Missing).exit_code(), 1);
        assert_eq!(
            CliError::Aws(Error::transient("Throttling", "slow down")).exit_code(),
            1
        );
        assert_eq!(Done::All.exit_code(), 0);
        assert_eq!(Done::when(false).exit_code(), 1);
    }

    #[test]
    fn output_writes_json_lines_or_text_and_notes_to_stderr() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        };
        let mut json = Output {
            io: &mut io,
            json: true,
        };
        json.item(&serde_json::json!({"a": 1}), |w| writeln!(w, "text"))
            .expect("write");
        json.text(|w| writeln!(w, "only for people"))
            .expect("write");
        json.note("a note").expect("write");
        assert_eq!(String::from_utf8_lossy(&out), "{\"a\":1}\n");
        assert_eq!(String::from_utf8_lossy(&err), "a note\n");

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        };
        let mut text = Output {
            io: &mut io,
            json: false,
        };
        text.item(&serde_json::json!({"a": 1}), |w| writeln!(w, "text"))
            .expect("write");
        text.text(|w| writeln!(w, "only for people"))
            .expect("write");
        assert_eq!(String::from_utf8_lossy(&out), "text\nonly for people\n");
    }
}
