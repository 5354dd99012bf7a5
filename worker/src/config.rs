//! The worker's settings: flags and `SHOAL_*` environment variables, resolved at start-up
//! against the queue itself.
//!
//! The queue is the source of truth for what it already says: the visibility timeout (unless
//! overridden), the dead-letter queue (from its redrive policy) and the attempt limit
//! (`maxReceiveCount`). A `--max-attempts` that disagrees with the redrive policy is refused at
//! start-up rather than left to surprise someone at the third retry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use shoal_common::aws::AwsClients;
use shoal_common::config::{QueueArgs, QueueConfigError};
use shoal_common::error::{Error, ErrorClass};
use shoal_common::ledger::Ledger;
use shoal_common::queue::{self, QueueAttributes};
use shoal_common::validate::TagRules;
use shoal_common::JobKind;

use crate::guardrails::Guardrails;
use crate::handlers::Ec2Settings;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// SNS topic for completion events.
    #[arg(long, env = "SHOAL_TOPIC_ARN")]
    pub topic_arn: String,
    /// The CloudEvents `source` of the completion events: a URI naming this fleet (default:
    /// the job queue's URL).
    #[arg(long, env = "SHOAL_EVENT_SOURCE")]
    pub event_source: Option<String>,
    /// Dead-letter queue URL (default: the job queue's redrive target).
    #[arg(long, env = "SHOAL_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Jobs held at once; pollers stop receiving while this many are in flight.
    #[arg(long, env = "SHOAL_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Concurrent long-polling receivers. One keeps up with thousands of jobs a second (a
    /// receive returns at once when messages wait) and fills every batch: its ten jobs end
    /// together, so their events and deletes go out ten to a call.
    #[arg(long, env = "SHOAL_POLLERS", default_value_t = 1)]
    pub pollers: usize,
    /// Threads of the async runtime. The work is waiting on AWS, not computing: one thread
    /// carries thousands of jobs a second, and more spend CPU on waking each other.
    #[arg(long, env = "SHOAL_RUNTIME_THREADS", default_value_t = 1)]
    pub runtime_threads: usize,
    /// Long-poll wait of each receive, 0 to 20 seconds.
    #[arg(long, env = "SHOAL_WAIT_TIME_SECONDS", default_value_t = 20)]
    pub wait_time_seconds: u32,
    /// Visibility timeout asked for on receive and by each heartbeat (default: the queue's).
    #[arg(long, env = "SHOAL_VISIBILITY_TIMEOUT", value_parser = humantime::parse_duration)]
    pub visibility_timeout: Option<Duration>,
    /// Deliveries before a job is dead-lettered (default and check: the queue's
    /// `maxReceiveCount`).
    #[arg(long, env = "SHOAL_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Limit one kind's jobs in flight, e.g. `run-instances=2` (repeatable).
    #[arg(long = "kind-concurrency", env = "SHOAL_KIND_CONCURRENCY", value_name = "KIND=N", value_delimiter = ',', value_parser = parse_kind_limit)]
    pub kind_concurrency: Vec<(JobKind, usize)>,
    /// First retry delay after a transient failure; doubles per attempt, jittered.
    #[arg(long, env = "SHOAL_RETRY_BASE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "SHOAL_RETRY_MAX", default_value = "15m", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// On SIGTERM, how long jobs in flight may take to finish before they are released.
    #[arg(long, env = "SHOAL_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Longest wait for a batch (delete, publish, visibility) to fill before it is sent.
    #[arg(long, env = "SHOAL_BATCH_FLUSH", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub batch_flush: Duration,
    /// How often to read which kinds operators paused (`shoal-producer pause`) from the
    /// ledger: one read per interval per worker, whatever the traffic.
    #[arg(long, env = "SHOAL_PAUSE_CHECK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pause_check_interval: Duration,
    /// How often to sample the job queue's and DLQ's depth for `/metrics` (0 turns it off).
    #[arg(long, env = "SHOAL_QUEUE_STATS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub queue_stats_interval: Duration,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "SHOAL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This worker's name in events and logs (default: host name and process id).
    #[arg(long, env = "SHOAL_WORKER_ID")]
    pub worker_id: Option<String>,
    /// EC2 calls per second allowed for each operation, in this worker.
    #[arg(long, env = "SHOAL_EC2_CALLS_PER_SECOND", default_value_t = 10.0)]
    pub ec2_calls_per_second: f64,
    /// A different rate for one EC2 operation, e.g. `RunInstances=2` (repeatable).
    #[arg(long = "ec2-rate", env = "SHOAL_EC2_RATES", value_name = "OPERATION=RATE", value_delimiter = ',', value_parser = parse_rate)]
    pub ec2_rates: Vec<(String, f64)>,
    /// Shortest pause between checks of an EC2 operation under way.
    #[arg(long, env = "SHOAL_WAIT_CHECK_MIN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub wait_check_min: Duration,
    /// Longest pause between checks (at most SQS's 12 hours).
    #[arg(long, env = "SHOAL_WAIT_CHECK_MAX", default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_check_max: Duration,
    /// How long a wait may last before the job fails.
    #[arg(long, env = "SHOAL_WAIT_DEADLINE", default_value = "6h", value_parser = humantime::parse_duration)]
    pub wait_deadline: Duration,
    /// How long EC2 may take to show what a job created; until then a lookup that finds
    /// nothing is no proof that an earlier run created nothing.
    #[arg(long, env = "SHOAL_EC2_CONSISTENCY_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ec2_consistency_window: Duration,
    /// How long one delivery keeps retrying an announcement (or a delete) while holding the
    /// message, before carrying the outcome forward on a fresh copy.
    #[arg(long, env = "SHOAL_ANNOUNCE_HOLD", default_value = "60s", value_parser = humantime::parse_duration)]
    pub announce_hold: Duration,
    /// Job kinds this worker accepts, comma-separated (default: every kind).
    #[arg(long = "allow-kinds", env = "SHOAL_ALLOW_KINDS", value_name = "KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub allow_kinds: Vec<JobKind>,
    /// Instance types a launch may use, as globs such as `t3.*` (default: any).
    #[arg(
        long = "allow-instance-types",
        env = "SHOAL_ALLOW_INSTANCE_TYPES",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    pub allow_instance_types: Vec<String>,
    /// AMI ids a launch may use, as globs (default: any).
    #[arg(
        long = "allow-images",
        env = "SHOAL_ALLOW_IMAGES",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    pub allow_images: Vec<String>,
    /// Owners whose AMIs a launch may use: account ids, or `amazon` (default: any).
    #[arg(
        long = "allow-image-owners",
        env = "SHOAL_ALLOW_IMAGE_OWNERS",
        value_name = "OWNER",
        value_delimiter = ','
    )]
    pub allow_image_owners: Vec<String>,
    /// Regions besides the worker's own that a job may reach: a `copy-snapshot`'s
    /// destination, a `prune-snapshots` region (default: none; the worker's IAM policy holds
    /// the same line with `aws:RequestedRegion`).
    #[arg(
        long = "allow-regions",
        env = "SHOAL_ALLOW_REGIONS",
        value_name = "REGION",
        value_delimiter = ','
    )]
    pub allow_regions: Vec<String>,
    /// The most instances one job may launch (its `max_count`).
    #[arg(long, env = "SHOAL_MAX_INSTANCES_PER_JOB")]
    pub max_instances_per_job: Option<u32>,
    /// Let `terminate-instances` end instances, and `prune-snapshots` delete snapshots,
    /// that Shoal did not make (without `shoal:job-id`). Off: such an instance is refused
    /// before anything ends, such a snapshot kept. The worker's IAM policy holds the same
    /// line on its own and needs widening too.
    #[arg(long, env = "SHOAL_ALLOW_DESTROYING_UNTAGGED")]
    pub allow_destroying_untagged: bool,
    /// Run only EC2 dry runs: a job that would change something is refused.
    #[arg(long, env = "SHOAL_DRY_RUN_ONLY")]
    pub dry_run_only: bool,
    /// Tag rules beyond EC2's: `portable` (AWS's generally allowed set) or
    /// `instance-metadata` (also keys instance metadata can expose).
    #[arg(long, env = "SHOAL_TAG_RULES", value_enum, default_value_t = TagRules::Ec2)]
    pub tag_rules: TagRules,
    /// The job ledger's DynamoDB table: with it, a job of a kind that creates something is
    /// claimed across the fleet before it runs (one run per job id at a time), what it
    /// creates is recorded there, and its outcome too, so a redelivery or a resubmission
    /// announces the recorded outcome instead of running again.
    #[arg(long, env = "SHOAL_LEDGER_TABLE")]
    pub ledger_table: Option<String>,
    /// Run without a job ledger, giving up what only it gives: two deliveries of one job id
    /// on two workers may both run (and, while EC2 lags, both create), a finished job cannot
    /// be looked up (`job`, `jobs`, `follow` after the fact), and an outcome carried on a
    /// message is trusted as written. Without this flag the worker refuses to start with no
    /// `--ledger-table`.
    #[arg(long, env = "SHOAL_NO_LEDGER", conflicts_with = "ledger_table")]
    pub no_ledger: bool,
    /// How long a job's ledger record lives after its last write: for that long, its job id
    /// is an idempotency key. 14 days, as long as the dead-letter queue keeps a message, so
    /// a job redriven from it still finds its record.
    #[arg(long, env = "SHOAL_LEDGER_TTL", default_value = "14d", value_parser = humantime::parse_duration)]
    pub ledger_ttl: Duration,
    /// What a panicking handler counts as: `dead-letter` (a permanent failure, the default:
    /// a bug rarely heals itself) or `retry` (a transient one).
    #[arg(long, env = "SHOAL_ON_PANIC", value_enum, default_value_t = OnPanic::DeadLetter)]
    pub on_panic: OnPanic,
}

/// What a panicking handler counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnPanic {
    DeadLetter,
    Retry,
}

impl OnPanic {
    pub fn class(self) -> ErrorClass {
        match self {
            OnPanic::DeadLetter => ErrorClass::Permanent,
            OnPanic::Retry => ErrorClass::Transient,
        }
    }
}

fn parse_rate(s: &str) -> Result<(String, f64), String> {
    let (op, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected OPERATION=RATE, e.g. RunInstances=2"))?;
    let rate: f64 = rate
        .parse()
        .map_err(|_| format!("`{rate}` is not a number"))?;
    if rate.is_nan() || rate <= 0.0 {
        return Err("a rate must be above zero".into());
    }
    Ok((op.to_owned(), rate))
}

impl WorkerArgs {
    /// How the EC2 handlers pace calls and waits.
    pub fn ec2_settings(&self) -> Ec2Settings {
        Ec2Settings {
            calls_per_second: self.ec2_calls_per_second,
            operation_rates: self.ec2_rates.iter().cloned().collect(),
            wait_check_min: self.wait_check_min,
            wait_check_max: self.wait_check_max.min(crate::retry::MAX_VISIBILITY),
            wait_deadline: self.wait_deadline,
            consistency_window: self.ec2_consistency_window,
            allowed_image_owners: self.allow_image_owners.clone(),
            allow_destroying_untagged: self.allow_destroying_untagged,
        }
    }

    /// The gate every job passes before any AWS call.
    pub fn guardrails(&self) -> Guardrails {
        Guardrails {
            kinds: self.allow_kinds.clone(),
            instance_types: self.allow_instance_types.clone(),
            images: self.allow_images.clone(),
            max_instances_per_job: self.max_instances_per_job,
            dry_run_only: self.dry_run_only,
            tag_rules: self.tag_rules,
            regions: self.allow_regions.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_kind(s: &str) -> Result<JobKind, String> {
    JobKind::parse(s).ok_or_else(|| format!("`{s}` is not a job kind"))
}

fn parse_kind_limit(s: &str) -> Result<(JobKind, usize), String> {
    let (kind, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KIND=N, e.g. run-instances=2"))?;
    let kind = JobKind::parse(kind).ok_or_else(|| format!("`{kind}` is not a job kind"))?;
    let n: usize = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
    if n == 0 {
        return Err("a kind's limit must be at least 1".into());
    }
    Ok((kind, n))
}

/// Settings after resolution against the queue: what the runtime runs with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_url: String,
    pub fifo: bool,
    pub dlq_url: String,
    pub topic_arn: String,
    /// The CloudEvents `source` of the completion events.
    pub event_source: String,
    pub concurrency: usize,
    pub pollers: usize,
    pub wait_time_seconds: u32,
    pub visibility_timeout: Duration,
    pub max_attempts: u32,
    pub kind_limits: HashMap<JobKind, usize>,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub shutdown_grace: Duration,
    pub batch_flush: Duration,
    /// How often to sample the queues' depth into gauges; `None` samples never.
    pub queue_stats_interval: Option<Duration>,
    /// How often to read the paused kinds from the ledger.
    pub pause_check_interval: Duration,
    pub worker_id: String,
    /// How long EC2 may take to show a new resource: a follow-up naming what its parent
    /// just created treats `…NotFound` as "not yet" (and looks again, spending no attempt)
    /// for this long after it was enqueued.
    pub consistency_window: Duration,
    /// How long one delivery retries an announcement, a delete, or a copy while holding the
    /// message.
    pub announce_hold: Duration,
    /// The class of a panicking handler's failure.
    pub on_panic: ErrorClass,
    /// What jobs this worker accepts.
    pub guardrails: Guardrails,
    /// The job ledger, when the worker has one (`--ledger-table`).
    pub ledger: Option<Ledger>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
    #[error("cannot read the job queue's attributes: {0}")]
    Attributes(#[source] Error),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl WorkerArgs {
    pub async fn resolve(&self, clients: &AwsClients) -> Result<WorkerConfig, ConfigError> {
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.pollers == 0 {
            return Err(invalid("pollers", "must be at least 1"));
        }
        self.check_consistent()?;
        if self.wait_time_seconds > 20 {
            return Err(invalid(
                "wait_time_seconds",
                "SQS long polls for at most 20 seconds",
            ));
        }
        let queue_url = self.queue.resolve(&clients.sqs).await?.url;
        let attrs = QueueAttributes::fetch(&clients.sqs, &queue_url)
            .await
            .map_err(ConfigError::Attributes)?;

        let visibility_timeout = match self.visibility_timeout {
            Some(v) => v,
            None => Duration::from_secs(attrs.visibility_timeout_secs.unwrap_or(30).into()),
        };
        if visibility_timeout < Duration::from_secs(2)
            || visibility_timeout > crate::retry::MAX_VISIBILITY
            || visibility_timeout.subsec_nanos() != 0
        {
            return Err(invalid(
                "visibility_timeout",
                "must be whole seconds from 2 (so the heartbeat can extend it in time) to 12 hours (SQS's most)",
            ));
        }

        let redrive = attrs.redrive_policy.as_ref();
        let max_receive_count = redrive.map(|r| r.max_receive_count);
        let max_attempts = match (self.max_attempts, max_receive_count) {
            (Some(mine), Some(queue)) if mine != queue => {
                return Err(invalid(
                    "max_attempts",
                    format!("is {mine} but the queue's redrive policy moves messages to the DLQ after {queue} receives; make them equal"),
                ))
            }
            (_, Some(queue)) => queue,
            (Some(mine), None) => mine,
            (None, None) => 5,
        };
        if max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }

        let dlq_url = match (&self.dlq_url, redrive) {
            (Some(url), _) => url.clone(),
            (None, Some(r)) => queue::url_from_arn(&clients.sqs, &r.dead_letter_target_arn)
                .await
                .map_err(|e| invalid("dlq_url", format!("cannot find the dead-letter queue: {e}")))?,
            (None, None) => {
                return Err(invalid(
                    "dlq_url",
                    "the job queue has no redrive policy and no --dlq-url was given; Shoal needs a dead-letter queue so no failed job is lost",
                ))
            }
        };

        // A DLQ that does not exist would otherwise show only when the first failure cannot
        // be dead-lettered, and every failure would then circle on copies.
        if let Err(e) = QueueAttributes::fetch(&clients.sqs, &dlq_url).await {
            return Err(invalid(
                "dlq_url",
                format!("cannot use the dead-letter queue `{dlq_url}`: {e}"),
            ));
        }

        // A wrong topic would otherwise show only when the first outcome cannot be announced.
        if let Err(e) = clients
            .sns
            .get_topic_attributes()
            .topic_arn(&self.topic_arn)
            .send()
            .await
        {
            let e = shoal_common::error::classify_sdk_error("GetTopicAttributes", &e);
            return Err(invalid(
                "topic_arn",
                format!("cannot use the completion topic `{}`: {e}", self.topic_arn),
            ));
        }

        // A missing table would otherwise show only when the first job cannot be claimed.
        let ledger = match &self.ledger_table {
            // `check_consistent` refused no table without `--no-ledger`.
            None => {
                tracing::warn!("running without a job ledger (--no-ledger): one job id may run on two workers at once, finished jobs cannot be looked up, and carried outcomes are trusted as written");
                None
            }
            Some(table) => {
                clients
                    .dynamodb
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| {
                        let e = shoal_common::error::classify_sdk_error("DescribeTable", &e);
                        invalid(
                            "ledger_table",
                            format!("cannot use the ledger table `{table}`: {e}"),
                        )
                    })?;
                Some(Ledger::new(
                    clients.dynamodb.clone(),
                    table.clone(),
                    self.ledger_ttl,
                ))
            }
        };

        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        Ok(WorkerConfig {
            event_source: self
                .event_source
                .clone()
                .unwrap_or_else(|| queue_url.clone()),
            fifo: queue_url.ends_with(".fifo"),
            queue_url,
            dlq_url,
            topic_arn: self.topic_arn.clone(),
            concurrency: self.concurrency,
            pollers: self.pollers,
            wait_time_seconds: self.wait_time_seconds,
            visibility_timeout,
            max_attempts,
            kind_limits: self.kind_concurrency.iter().copied().collect(),
            retry_base: self.retry_base,
            retry_max: self.retry_max,
            shutdown_grace: self.shutdown_grace,
            batch_flush: self.batch_flush,
            queue_stats_interval: Some(self.queue_stats_interval).filter(|d| !d.is_zero()),
            pause_check_interval: self.pause_check_interval,
            worker_id,
            announce_hold: self.announce_hold,
            consistency_window: self.ec2_consistency_window,
            on_panic: self.on_panic.class(),
            guardrails: {
                // The worker's own region is always one a job may reach.
                let mut guardrails = self.guardrails();
                if let Some(own) = clients.sqs.config().region() {
                    guardrails.regions.insert(0, own.to_string());
                }
                guardrails
            },
            ledger,
        })
    }

    /// Refuses settings that contradict each other, before anything runs: each would
    /// otherwise surface later as a panic or a silent surprise.
    pub fn check_consistent(&self) -> Result<(), ConfigError> {
        if self.wait_check_min > self.wait_check_max {
            return Err(invalid(
                "wait_check_min",
                format!(
                    "is {} but wait_check_max is {}; the shortest pause between checks cannot exceed the longest",
                    humantime::format_duration(self.wait_check_min),
                    humantime::format_duration(self.wait_check_max)
                ),
            ));
        }
        if self.wait_check_min.is_zero() {
            return Err(invalid("wait_check_min", "must be above zero"));
        }
        if self.retry_base > self.retry_max {
            return Err(invalid(
                "retry_base",
                format!(
                    "is {} but retry_max is {}; the first retry delay cannot exceed the longest",
                    humantime::format_duration(self.retry_base),
                    humantime::format_duration(self.retry_max)
                ),
            ));
        }
        if !self.ec2_calls_per_second.is_finite() || self.ec2_calls_per_second <= 0.0 {
            return Err(invalid(
                "ec2_calls_per_second",
                "must be a number above zero",
            ));
        }
        if self.max_instances_per_job == Some(0) {
            return Err(invalid("max_instances_per_job", "must be at least 1"));
        }
        for (field, value, least, most) in [
            (
                "retry_base",
                self.retry_base,
                Duration::from_millis(1),
                crate::retry::MAX_VISIBILITY,
            ),
            (
                "retry_max",
                self.retry_max,
                Duration::from_millis(1),
                crate::retry::MAX_VISIBILITY,
            ),
            ("shutdown_grace", self.shutdown_grace, Duration::ZERO, HOUR),
            (
                "batch_flush",
                self.batch_flush,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
            (
                "queue_stats_interval",
                self.queue_stats_interval,
                Duration::ZERO,
                HOUR,
            ),
            (
                "pause_check_interval",
                self.pause_check_interval,
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
            (
                "wait_check_max",
                self.wait_check_max,
                Duration::from_secs(1),
                crate::retry::MAX_VISIBILITY,
            ),
            (
                "wait_deadline",
                self.wait_deadline,
                Duration::from_secs(1),
                7 * DAY,
            ),
            (
                "ec2_consistency_window",
                self.ec2_consistency_window,
                Duration::ZERO,
                HOUR,
            ),
            (
                "announce_hold",
                self.announce_hold,
                Duration::from_millis(1),
                HOUR,
            ),
            // DynamoDB's TTL ignores an expiry more than five years ahead.
            ("ledger_ttl", self.ledger_ttl, HOUR, 5 * 365 * DAY),
        ] {
            if value < least || value > most {
                return Err(invalid(
                    field,
                    format!(
                        "is {}; it must be from {} to {}",
                        humantime::format_duration(value),
                        humantime::format_duration(least),
                        humantime::format_duration(most)
                    ),
                ));
            }
        }
        if let Some(timeout) = self.visibility_timeout {
            if timeout > crate::retry::MAX_VISIBILITY {
                return Err(invalid(
                    "visibility_timeout",
                    "must be at most 12 hours, SQS's longest",
                ));
            }
        }
        if self.wait_time_seconds > 20 {
            return Err(invalid(
                "wait_time_seconds",
                "must be 0 to 20, SQS's long-poll range",
            ));
        }
        for region in &self.allow_regions {
            if !shoal_common::job::is_region(region) {
                return Err(invalid(
                    "allow_regions",
                    format!("`{region}` is not an AWS region name (`us-west-2`)"),
                ));
            }
        }
        for (operation, _) in &self.ec2_rates {
            if !crate::handlers::EC2_OPERATIONS.contains(&operation.as_str()) {
                return Err(invalid(
                    "ec2_rate",
                    format!(
                        "`{operation}` is no EC2 operation Shoal calls (one of {})",
                        crate::handlers::EC2_OPERATIONS.join(", ")
                    ),
                ));
            }
        }
        if self.ledger_table.is_none() && !self.no_ledger {
            return Err(invalid(
                "ledger_table",
                "no job ledger: set --ledger-table (SHOAL_LEDGER_TABLE) to its DynamoDB table, or --no-ledger to run without one and give up one run per job id across the fleet and looking finished jobs up",
            ));
        }
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
