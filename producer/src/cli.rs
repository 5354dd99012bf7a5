//! The `shoal-producer` command line: one subcommand per job kind (derived from
//! [`shoal_common::Job`], so a new kind appears here by itself), bulk `submit` from JSON
//! Lines, `schema` for other languages' teams, `stack create` for a development stack,
//! `peek` to look at what is queued, and the operator's `status` and `dlq list|redrive`.
//!
//! It lives in the library so tests can run it in-process against the emulator; `main.rs`
//! only parses arguments and loads the AWS configuration.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shoal_common::aws::AwsClients;
use shoal_common::config::{QueueArgs, QueueTarget};
use shoal_common::error::{classify_sdk_error, ShoalCode};
use shoal_common::stack::{self, StackSpec};
use shoal_common::{Job, JobEnvelope, JobId};

use crate::{operate, Producer, SendOptions};

/// Enqueue Shoal jobs on SQS.
#[derive(Debug, Parser)]
#[command(name = "shoal-producer", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Job(Job),
    /// Enqueue jobs from JSON Lines (a file, or - for standard input), one job a line:
    /// `{"kind": …, "params": …}`, optionally with `job_id`.
    Submit(SubmitArgs),
    /// Print the JSON Schema of the job envelope.
    Schema,
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
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every INTERVAL (e.g. 5s) until interrupted.
    #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
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
    /// job ids or kinds. Each is sent before it is deleted, so an interruption loses none.
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
}

fn parse_kind(s: &str) -> Result<String, String> {
    shoal_common::JobKind::parse(s)
        .map(|k| k.as_str().to_owned())
        .ok_or_else(|| {
            let known: Vec<_> = shoal_common::JobKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect();
            format!("`{s}` is not a job kind (known: {})", known.join(", "))
        })
}

/// Options for sending, shared by every enqueueing command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Sending")]
pub struct SendArgs {
    /// Job id (idempotency key); generated when not given. Single-job commands only.
    #[arg(long, global = true)]
    pub job_id: Option<String>,
    /// Delay delivery by this many seconds (0 to 900; standard queues only).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub delay: Option<u32>,
    /// FIFO message group id (default: the job's kind).
    #[arg(long, global = true)]
    pub group_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// JSON Lines file, or - for standard input.
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Create (or find) the job queue, DLQ, completion topic and events queue.
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
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
}

/// Where the CLI writes: results to `out`, diagnostics and progress to `err`.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    /// Show a progress bar (standard error is a terminal and output is not JSON).
    pub progress: bool,
}

/// Runs the CLI; the return value is the process exit code (0 all sent, 1 anything failed).
pub async fn run(cli: Cli, sdk: &SdkConfig, io: &mut Io<'_>) -> i32 {
    match execute(cli, sdk, io).await {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(io.err, "error: {message}");
            1
        }
    }
}

async fn execute(cli: Cli, sdk: &SdkConfig, io: &mut Io<'_>) -> Result<i32, String> {
    let send = &cli.send;
    let clients = AwsClients::new(sdk);
    let options = SendOptions {
        delay_seconds: send.delay,
        message_group_id: send.group_id.clone(),
    };
    match cli.command {
        Command::Schema => {
            let schema = shoal_common::job::json_schema();
            writeln!(io.out, "{}", pretty(&schema)).map_err(io_error)?;
            Ok(0)
        }
        Command::Stack(StackCommand::Create {
            prefix,
            fifo,
            max_receive_count,
            visibility_timeout,
        }) => {
            let spec = StackSpec {
                prefix,
                fifo,
                max_receive_count,
                visibility_timeout_secs: visibility_timeout,
            };
            let stack = stack::provision(&clients, &spec)
                .await
                .map_err(|e| e.to_string())?;
            if cli.json {
                writeln!(io.out, "{}", pretty(&stack)).map_err(io_error)?;
            } else {
                for (name, value) in stack.env_vars() {
                    writeln!(io.out, "{name}={value}").map_err(io_error)?;
                }
            }
            Ok(0)
        }
        Command::Job(job) => {
            let producer = connect(&cli.queue, &clients).await?;
            let mut envelope = JobEnvelope::new(job);
            if let Some(id) = &send.job_id {
                let id = JobId::parse(id).map_err(|m| format!("job_id: {m}"))?;
                envelope = envelope.with_job_id(id);
            }
            let enqueued = producer
                .enqueue(&envelope, &options)
                .await
                .map_err(|e| e.to_string())?;
            if cli.json {
                writeln!(
                    io.out,
                    "{}",
                    serde_json::json!({
                        "job_id": enqueued.job_id,
                        "kind": enqueued.kind,
                        "message_id": enqueued.message_id,
                        "queue_url": producer.queue().url,
                    })
                )
                .map_err(io_error)?;
            } else {
                writeln!(io.out, "{}", enqueued.job_id).map_err(io_error)?;
            }
            Ok(0)
        }
        Command::Submit(args) => {
            if send.job_id.is_some() {
                return Err(
                    "job_id: --job-id is for single jobs; give each line its own `job_id`".into(),
                );
            }
            let producer = connect(&cli.queue, &clients).await?;
            submit(&producer, &args, &options, cli.json, io).await
        }
        Command::Peek(args) => peek(&cli.queue, &clients, args.max, cli.json, io).await,
        Command::Events(args) => events(&clients, &args, cli.json, io).await,
        Command::Status(args) => status(&cli.queue, &clients, &args, cli.json, io).await,
        Command::Dlq(command) => dlq(&cli.queue, &clients, command, cli.json, io).await,
    }
}

/// The job queue's URL, from `--queue-url` or by name.
async fn resolve(queue: &QueueArgs, clients: &AwsClients) -> Result<QueueTarget, String> {
    queue.resolve(&clients.sqs).await.map_err(|e| e.to_string())
}

async fn connect(queue: &QueueArgs, clients: &AwsClients) -> Result<Producer, String> {
    let target = resolve(queue, clients).await?;
    Ok(Producer::new(clients.sqs.clone(), target))
}

/// Reads every line first and refuses the whole file if any line is invalid: sending the
/// good lines and leaving the bad would make a corrected re-run enqueue the good ones twice.
async fn submit(
    producer: &Producer,
    args: &SubmitArgs,
    options: &SendOptions,
    json: bool,
    io: &mut Io<'_>,
) -> Result<i32, String> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| format!("file: cannot open {}: {e}", args.file.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut jobs = Vec::new();
    let mut line_numbers = Vec::new();
    let mut invalid = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line_no = n + 1;
        let line = line.map_err(|e| format!("line {line_no}: cannot read: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line)
            .map_err(|e| format!("body: {e}"))
            .and_then(|v| JobEnvelope::from_request(v).map_err(|e| e.to_string()));
        match parsed {
            Ok(job) => {
                jobs.push(job);
                line_numbers.push(line_no);
            }
            Err(message) => invalid.push((line_no, message)),
        }
    }
    if !invalid.is_empty() {
        for (line, message) in &invalid {
            writeln!(io.err, "line {line}: {message}").map_err(io_error)?;
        }
        writeln!(
            io.err,
            "{} invalid line(s); nothing was sent",
            invalid.len()
        )
        .map_err(io_error)?;
        return Ok(1);
    }

    let bar = if io.progress {
        let bar = ProgressBar::new(jobs.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let on_sent = |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let result = producer.enqueue_many(&jobs, options, &on_sent).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(invalid) => {
            for (i, e) in invalid {
                writeln!(io.err, "line {}: {e}", line_numbers[i]).map_err(io_error)?;
            }
            writeln!(io.err, "nothing was sent").map_err(io_error)?;
            return Ok(1);
        }
    };

    if json {
        let summary = serde_json::json!({
            "sent": report.enqueued.len(),
            "failed": report.failed.iter().map(|f| serde_json::json!({
                "line": line_numbers[f.index], "job_id": f.job_id, "code": f.code, "message": f.message,
            })).collect::<Vec<_>>(),
            "retried_entries": report.retried_entries,
            "calls": report.calls,
            "jobs": report.enqueued.iter().map(|(i, e)| serde_json::json!({
                "line": line_numbers[*i], "job_id": e.job_id, "kind": e.kind, "message_id": e.message_id,
            })).collect::<Vec<_>>(),
        });
        writeln!(io.out, "{summary}").map_err(io_error)?;
    } else {
        for f in &report.failed {
            writeln!(
                io.err,
                "line {}: job {}: {}: {}",
                line_numbers[f.index], f.job_id, f.code, f.message
            )
            .map_err(io_error)?;
        }
    }
    writeln!(
        io.err,
        "sent {} of {} jobs in {} batch calls ({} entries retried), {} failed",
        report.enqueued.len(),
        jobs.len(),
        report.calls,
        report.retried_entries,
        report.failed.len()
    )
    .map_err(io_error)?;
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

async fn peek(
    queue: &QueueArgs,
    clients: &AwsClients,
    max: usize,
    json: bool,
    io: &mut Io<'_>,
) -> Result<i32, String> {
    let target = resolve(queue, clients).await?;
    let mut seen = std::collections::HashSet::new();
    // SQS samples a subset of its servers per receive, so look a few times.
    for _ in 0..5 {
        if seen.len() >= max {
            break;
        }
        let out = clients
            .sqs
            .receive_message()
            .queue_url(&target.url)
            .max_number_of_messages((max - seen.len()).min(10) as i32)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ReceiveMessage", &e).to_string())?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for msg in messages {
            let id = msg.message_id.clone().unwrap_or_default();
            if !seen.insert(id.clone()) {
                continue;
            }
            let attr = |name: &str| {
                msg.message_attributes
                    .as_ref()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.string_value.clone())
                    .unwrap_or_default()
            };
            let body = msg.body.clone().unwrap_or_default();
            let receives = msg
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .cloned()
                .unwrap_or_default();
            if json {
                let body: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                writeln!(
                    io.out,
                    "{}",
                    serde_json::json!({
                        "message_id": id, "kind": attr("kind"), "schema": attr("schema"),
                        "receive_count": receives, "body": body,
                    })
                )
                .map_err(io_error)?;
            } else {
                writeln!(
                    io.out,
                    "{:<28} schema={} receives={} {}",
                    attr("kind"),
                    attr("schema"),
                    receives,
                    body
                )
                .map_err(io_error)?;
            }
        }
    }
    Ok(0)
}

/// Receives events until `count` have arrived or none came for `idle`, deleting each once
/// printed. Events are at-least-once: a repeat of a job id is shown as such.
async fn events(
    clients: &AwsClients,
    args: &EventsArgs,
    json: bool,
    io: &mut Io<'_>,
) -> Result<i32, String> {
    let mut seen = std::collections::HashSet::new();
    let mut shown = 0usize;
    let mut last = std::time::Instant::now();
    while args.count.is_none_or(|n| shown < n) && last.elapsed() < args.idle {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(&args.events_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(args.idle.as_secs().clamp(1, 20) as i32)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ReceiveMessage", &e).to_string())?;
        for msg in out.messages.unwrap_or_default() {
            last = std::time::Instant::now();
            let body = msg.body.clone().unwrap_or_default();
            let event: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            let job_id = event["job_id"].as_str().unwrap_or("-").to_owned();
            let repeat = !seen.insert(job_id.clone());
            if json {
                writeln!(io.out, "{event}").map_err(io_error)?;
            } else {
                let detail = match (&event["result"], &event["error"]) {
                    (serde_json::Value::Null, serde_json::Value::Null) => String::new(),
                    (result, serde_json::Value::Null) => result.to_string(),
                    (_, error) => error.to_string(),
                };
                writeln!(
                    io.out,
                    "{:<10} {:<27} {job_id} attempts={}{} {detail}",
                    event["status"].as_str().unwrap_or("?"),
                    event["kind"].as_str().unwrap_or("?"),
                    event["attempts"],
                    if repeat { " (repeat)" } else { "" },
                )
                .map_err(io_error)?;
            }
            shown += 1;
            if let Some(receipt) = &msg.receipt_handle {
                clients
                    .sqs
                    .delete_message()
                    .queue_url(&args.events_queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(|e| classify_sdk_error("DeleteMessage", &e).to_string())?;
            }
        }
    }
    Ok(0)
}

async fn status(
    queue: &QueueArgs,
    clients: &AwsClients,
    args: &StatusArgs,
    json: bool,
    io: &mut Io<'_>,
) -> Result<i32, String> {
    let target = resolve(queue, clients).await?;
    let mut shown = 0usize;
    loop {
        let status = operate::status(clients, &target.url)
            .await
            .map_err(|e| e.to_string())?;
        if json {
            writeln!(io.out, "{}", serde_json::json!(status)).map_err(io_error)?;
        } else {
            write_status(io.out, &status).map_err(io_error)?;
        }
        shown += 1;
        match args.watch {
            Some(every) if args.count.is_none_or(|n| shown < n) => {
                tokio::time::sleep(every).await;
                if !json {
                    writeln!(io.out).map_err(io_error)?;
                }
            }
            _ => return Ok(0),
        }
    }
}

fn write_status(out: &mut (dyn Write + Send), status: &operate::Status) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:>9} {:>9} {:>9} {:>8}",
        "queue", "visible", "in flight", "delayed", "oldest"
    )?;
    for q in std::iter::once(&status.jobs).chain(&status.dead_letter) {
        let age = q
            .oldest_message_age_secs
            .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<40} {:>9} {:>9} {:>9} {:>8}",
            q.name, q.visible, q.in_flight, q.delayed, age
        )?;
    }
    match (&status.dead_letter, status.max_receive_count) {
        (Some(_), Some(n)) => writeln!(out, "dead-lettered by SQS after {n} receives"),
        _ => writeln!(out, "no redrive policy: failed jobs have nowhere to go"),
    }
}

async fn dlq(
    queue: &QueueArgs,
    clients: &AwsClients,
    command: DlqCommand,
    json: bool,
    io: &mut Io<'_>,
) -> Result<i32, String> {
    let dlq_url = |args: &DlqArgs| {
        let given = args.dlq_url.clone();
        async move {
            if let Some(url) = given {
                return Ok(url);
            }
            let target = resolve(queue, clients).await?;
            operate::dead_letter_queue_url(&clients.sqs, &target.url)
                .await
                .map_err(|e| format!("dlq_url: {e}"))
        }
    };
    match command {
        DlqCommand::List { dlq, limit } => {
            let url = dlq_url(&dlq).await?;
            let letters =
                operate::list_dead_letters(&clients.sqs, &url, operate::DEFAULT_HOLD, limit)
                    .await
                    .map_err(|e| e.to_string())?;
            for letter in &letters {
                if json {
                    writeln!(io.out, "{}", serde_json::json!(letter)).map_err(io_error)?;
                } else {
                    writeln!(
                        io.out,
                        "{} {:<27} {} attempts={} {}: {}",
                        letter.sent_at.as_deref().unwrap_or("-"),
                        letter.kind.as_deref().unwrap_or("?"),
                        letter.job_id.as_deref().unwrap_or("-"),
                        letter.attempts.map_or("?".into(), |a| a.to_string()),
                        letter
                            .error_code
                            .as_deref()
                            .unwrap_or(ShoalCode::RedrivenBySqs.as_str()),
                        letter.error.as_deref().unwrap_or(
                            "moved by the queue's redrive policy: no worker finished it"
                        ),
                    )
                    .map_err(io_error)?;
                }
            }
            writeln!(io.err, "{} dead-lettered job(s)", letters.len()).map_err(io_error)?;
            Ok(0)
        }
        DlqCommand::Redrive {
            dlq,
            jobs,
            kinds,
            limit,
        } => {
            let url = dlq_url(&dlq).await?;
            let target = resolve(queue, clients).await?;
            let filter = operate::RedriveFilter {
                job_ids: jobs,
                kinds,
            };
            let report = operate::redrive(
                &clients.sqs,
                &url,
                &target.url,
                &filter,
                operate::DEFAULT_HOLD,
                limit,
            )
            .await
            .map_err(|e| e.to_string())?;
            if json {
                writeln!(io.out, "{}", serde_json::json!(report)).map_err(io_error)?;
            } else {
                for letter in &report.moved {
                    writeln!(
                        io.out,
                        "{} {}",
                        letter.kind.as_deref().unwrap_or("?"),
                        letter.job_id.as_deref().unwrap_or(&letter.message_id)
                    )
                    .map_err(io_error)?;
                }
                for (id, reason) in &report.failed {
                    writeln!(io.err, "not moved: message {id}: {reason}").map_err(io_error)?;
                }
            }
            writeln!(
                io.err,
                "moved {} job(s) back to the job queue, left {}, {} failed",
                report.moved.len(),
                report.skipped,
                report.failed.len()
            )
            .map_err(io_error)?;
            Ok(if report.failed.is_empty() { 0 } else { 1 })
        }
    }
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn io_error(e: std::io::Error) -> String {
    format!("cannot write output: {e}")
}

/// Whether standard error is a terminal, for the progress bar.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
