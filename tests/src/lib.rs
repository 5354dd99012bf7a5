//! The test harness: a local AWS emulator per test binary, SDK clients pointed at it, and
//! small helpers that read queues the way the assertions need.
//!
//! [`moto`] starts moto's server (through `deploy/local/emulator.py`) on a free loopback
//! port the first time a test asks for it. The server watches its standard input, which
//! this process holds open, so it exits when the test binary exits, however it exits. No
//! test depends on a server started by hand.

pub mod console;
pub mod fault_proxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use shoal_common::aws::AwsClients;
use shoal_common::event::JobEvent;
use shoal_common::metrics::Metrics;
use shoal_common::stack::{self, Stack, StackSpec};
use shoal_worker::{Registry, Worker, WorkerConfig};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Sends the in-process workers' logs (WARN and up, or as `RUST_LOG` says) to the test's
/// output, which the runner shows only for a test that failed: a failure on a loaded CI
/// machine then says what the worker saw. Only under nextest, where each test is a process of
/// its own: a test that installs its own process-wide subscriber (`tracing.rs`) does so before
/// its stack exists, and `cargo test`'s shared process would let another test's stack take the
/// one global slot first.
fn log_to_test_output() {
    if std::env::var_os("NEXTEST").is_none() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second call (or a test's own subscriber) keeps the one already installed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// A running emulator, reachable at `endpoint`.
pub struct Emulator {
    pub endpoint: String,
    /// Kept open so the emulator lives exactly as long as this process.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The path of a file in this repository, from this crate's manifest directory.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Starts an emulator launcher that prints its port and exits when its stdin closes.
fn start_emulator(mut command: Command, what: &str) -> Emulator {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("emulator prints its port");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| {
        panic!("emulator did not start (printed {line:?}); is moto[server] installed?")
    });
    let stdin = child.stdin.take().expect("piped stdin");
    Emulator {
        endpoint: format!("http://127.0.0.1:{port}"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

/// The moto server of this test binary, started on first use.
pub fn moto() -> &'static Emulator {
    static MOTO: OnceLock<Emulator> = OnceLock::new();
    MOTO.get_or_init(|| {
        let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut command = Command::new(python);
        command
            .arg(repo_path("deploy/local/emulator.py"))
            .arg("--until-stdin-closes");
        start_emulator(command, "moto (pip install 'moto[server]')")
    })
}

/// The fauxqs server of this test binary (fast SQS and SNS, for load), started on first use.
pub fn fauxqs() -> &'static Emulator {
    static FAUXQS: OnceLock<Emulator> = OnceLock::new();
    FAUXQS.get_or_init(|| {
        let mut command = Command::new("node");
        command.arg(repo_path("deploy/local/fauxqs.mjs"));
        if std::env::var_os("SHOAL_FAUXQS_DIR").is_none() {
            let home = std::env::var("HOME").unwrap_or_default();
            command.env(
                "SHOAL_FAUXQS_DIR",
                format!("{home}/.cache/shoal/fauxqs-1.9.2"),
            );
        }
        start_emulator(command, "fauxqs (npm fauxqs@1)")
    })
}

/// The environment a Shoal binary needs to talk to `endpoint` through the SDK's standard
/// variables, with dummy credentials.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `shoal-worker` binary at `binary` (a test's `CARGO_BIN_EXE_…`), configured for the
/// stack given (its ledger table too, when it has one; `--no-ledger` otherwise), on the
/// emulator at `endpoint`, with 1-second long polls, JSON logs and its HTTP listener on
/// `metrics`. The process is killed if the handle is dropped.
pub fn worker_command(
    binary: &str,
    endpoint: &str,
    stack: &Stack,
    worker_id: &str,
    metrics: std::net::SocketAddr,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command.args([
        "--queue-url",
        &stack.queue_url,
        "--topic-arn",
        &stack.topic_arn,
    ]);
    match &stack.ledger_table {
        Some(table) => command.args(["--ledger-table", table]),
        None => command.arg("--no-ledger"),
    };
    command
        .args(["--worker-id", worker_id, "--wait-time-seconds", "1"])
        .args([
            "--log-format",
            "json",
            "--metrics-addr",
            &metrics.to_string(),
        ])
        .envs(aws_env(endpoint))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// SDK configuration for the emulator, as `aws_env` would give it: the same endpoint
/// setting the SDK reads from `AWS_ENDPOINT_URL`.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    sdk_config_as(endpoint, "testing").await
}

/// SDK configuration for `endpoint`, signing with the access key `key` (the fault proxy
/// leaves calls signed with [`fault_proxy::OBSERVER_KEY`] alone).
pub async fn sdk_config_as(endpoint: &str, key: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            key,
            "testing",
            None,
            None,
            "shoal-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A name no other test uses, for resources on the shared emulator.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..10])
}

/// A fresh stack (job queue, DLQ, topic, events queue) on the emulator, for one test.
pub struct TestStack {
    pub sdk: SdkConfig,
    pub clients: AwsClients,
    pub stack: Stack,
}

impl TestStack {
    pub async fn new(name: &str) -> Self {
        Self::with_spec(StackSpec::new(unique(name))).await
    }

    pub async fn with_spec(spec: StackSpec) -> Self {
        Self::on(&moto().endpoint, spec).await
    }

    /// A stack on the emulator at `endpoint`.
    pub async fn on(endpoint: &str, spec: StackSpec) -> Self {
        Self::with_sdk(sdk_config(endpoint).await, spec).await
    }

    /// A stack behind the fault proxy at `endpoint`, provisioned and watched by the test as
    /// an observer, so the faults the proxy injects reach only the workers.
    pub async fn observing(endpoint: &str, spec: StackSpec) -> Self {
        Self::with_sdk(
            sdk_config_as(endpoint, fault_proxy::OBSERVER_KEY).await,
            spec,
        )
        .await
    }

    /// A stack on the shared emulator behind a fresh fault proxy: the test watches it as an
    /// observer, and workers given [`FaultProxy::sdk`] live through the proxy's faults.
    pub async fn behind_proxy(spec: StackSpec) -> (fault_proxy::FaultProxy, Self) {
        let proxy = fault_proxy::FaultProxy::start(&moto().endpoint).await;
        let t = Self::observing(&proxy.endpoint, spec).await;
        (proxy, t)
    }

    async fn with_sdk(sdk: SdkConfig, spec: StackSpec) -> Self {
        log_to_test_output();
        let clients = AwsClients::new(&sdk);
        let stack = stack::provision(&clients, &spec)
            .await
            .expect("provision test stack");
        TestStack {
            sdk,
            clients,
            stack,
        }
    }

    /// Receives from `queue_url` until `count` distinct messages have arrived or `timeout`
    /// passes, hiding each for ten minutes so none is seen twice. Returns them all,
    /// including any duplicates SQS delivered.
    /// Sends `bodies` to `queue_url` as they are, ten to a `SendMessageBatch`, each with the
    /// `kind` attribute when given: what a sender other than Shoal's producer (or SQS's
    /// redrive, for a dead-letter queue) puts there.
    pub async fn send_raw(&self, queue_url: &str, bodies: &[String], kind: Option<&str>) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .set_message_attributes(kind.map(|kind| {
                            HashMap::from([(
                                "kind".to_owned(),
                                shoal_common::queue::attribute_value("String", kind),
                            )])
                        }))
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = self
                .clients
                .sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send a batch");
            assert!(
                out.failed().is_empty(),
                "every entry sent: {:?}",
                out.failed()
            );
        }
    }

    pub async fn receive(&self, queue_url: &str, count: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut seen = HashMap::new();
        let mut all = Vec::new();
        while seen.len() < count && Instant::now() < deadline {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(600)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            for msg in out.messages.unwrap_or_default() {
                seen.insert(msg.message_id.clone().unwrap_or_default(), ());
                all.push(msg);
            }
        }
        all
    }

    /// Deletes received messages, e.g. to let a FIFO group deliver its next message.
    pub async fn delete(&self, queue_url: &str, messages: &[Message]) {
        for msg in messages {
            self.clients
                .sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(msg.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }

    /// Visible plus in-flight plus delayed messages on `queue_url`, as SQS reports them.
    pub async fn depth(&self, queue_url: &str) -> u64 {
        let out = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes");
        out.attributes
            .unwrap_or_default()
            .values()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum()
    }
}

impl TestStack {
    /// An AMI the emulator lists (owned by anyone), to launch from; AWS has such AMIs too.
    pub async fn stock_ami(&self) -> String {
        self.clients
            .ec2
            .describe_images()
            .send()
            .await
            .expect("describe images")
            .images()
            .iter()
            .find_map(|i| {
                i.image_id()
                    .filter(|id| id.starts_with("ami-"))
                    .map(str::to_owned)
            })
            .expect("the emulator lists stock AMIs")
    }

    /// Completion events from the events queue, until `count` have arrived or `timeout`.
    pub async fn events(&self, count: usize, timeout: Duration) -> Vec<JobEvent> {
        let msgs = self
            .receive(&self.stack.events_queue_url, count, timeout)
            .await;
        self.delete(&self.stack.events_queue_url, &msgs).await;
        msgs.iter()
            .map(|m| {
                serde_json::from_str::<shoal_common::event::CloudEvent>(
                    m.body().unwrap_or_default(),
                )
                .expect("an event is a CloudEvent")
                .data
            })
            .collect()
    }

    /// The one completion event a test expects, within `timeout`; fails naming how many came.
    pub async fn one_event(&self, timeout: Duration) -> JobEvent {
        let mut events = self.events(1, timeout).await;
        assert_eq!(
            events.len(),
            1,
            "expected the job's one event, got {}",
            events.len()
        );
        events.remove(0)
    }

    /// Enqueues `job` under `job_id` on this stack's job queue.
    pub async fn enqueue_job(&self, job: &shoal_common::Job, job_id: &str) {
        let envelope = shoal_common::JobEnvelope::new(job.clone())
            .with_job_id(shoal_common::JobId::parse(job_id).expect("a valid job id"));
        shoal_producer::Producer::new(
            self.clients.sqs.clone(),
            shoal_common::config::QueueTarget::new(&self.stack.queue_url),
        )
        .enqueue(&envelope, &shoal_producer::SendOptions::default())
        .await
        .expect("enqueue");
    }

    /// Enqueues `job` under `job_id` and returns its event, the next one to arrive (within
    /// `timeout`), checked to be that job's.
    pub async fn run_job(
        &self,
        job: &shoal_common::Job,
        job_id: &str,
        timeout: Duration,
    ) -> JobEvent {
        self.enqueue_job(job, job_id).await;
        let event = self.one_event(timeout).await;
        assert_eq!(event.job_id.as_deref(), Some(job_id), "{event:?}");
        event
    }

    /// [`TestStack::run_job`] of a job that must succeed.
    pub async fn run_succeeding(&self, job: &shoal_common::Job, job_id: &str) -> JobEvent {
        let event = self.run_job(job, job_id, Duration::from_secs(60)).await;
        assert_eq!(
            event.status,
            shoal_common::event::JobStatus::Succeeded,
            "{event:?}"
        );
        event
    }

    /// A fresh job-ledger table beside this stack, and the ledger on it as a worker reaching
    /// AWS through `sdk` sees it.
    pub async fn ledger(&self, sdk: &SdkConfig) -> shoal_common::ledger::Ledger {
        let table = unique("ledger");
        shoal_common::ledger::Ledger::create_table(&self.clients.dynamodb, &table)
            .await
            .expect("create the ledger table");
        shoal_common::ledger::Ledger::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table,
            Duration::from_secs(14 * 24 * 3600),
        )
    }

    /// Sends `body` straight to the job queue with `state` as its `shoal-state`, as any
    /// sender allowed to write to the queue could.
    pub async fn send_with_state(&self, body: &serde_json::Value, state: &str) {
        self.clients
            .sqs
            .send_message()
            .queue_url(&self.stack.queue_url)
            .message_body(body.to_string())
            .message_attributes(
                shoal_common::queue::CARRIED_STATE,
                shoal_common::queue::attribute_value("String", state),
            )
            .send()
            .await
            .expect("send");
    }

    /// The ledger on `table` (this stack's own, say) as a worker reaching AWS through `sdk`
    /// sees it.
    pub fn ledger_named(&self, sdk: &SdkConfig, table: &str) -> shoal_common::ledger::Ledger {
        shoal_common::ledger::Ledger::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table,
            Duration::from_secs(14 * 24 * 3600),
        )
    }

    /// Worker settings for this stack, quick enough for tests: 1 s long polls, 5 s
    /// visibility, 1 s retries.
    pub fn worker_config(&self, worker_id: &str) -> WorkerConfig {
        WorkerConfig {
            queue_url: self.stack.queue_url.clone(),
            fifo: self.stack.queue_url.ends_with(".fifo"),
            dlq_url: self.stack.dlq_url.clone(),
            topic_arn: self.stack.topic_arn.clone(),
            event_source: self.stack.queue_url.clone(),
            concurrency: 8,
            pollers: 2,
            wait_time_seconds: 1,
            visibility_timeout: Duration::from_secs(5),
            max_attempts: 5,
            kind_limits: HashMap::new(),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            batch_flush: Duration::from_millis(5),
            queue_stats_interval: Some(Duration::from_millis(500)),
            pause_check_interval: Duration::from_millis(500),
            worker_id: worker_id.to_owned(),
            announce_hold: Duration::from_secs(3),
            consistency_window: Duration::from_secs(2),
            on_panic: shoal_common::error::ErrorClass::Permanent,
            guardrails: Default::default(),
            ledger: None,
        }
    }

    /// [`TestStack::worker_config`] with this stack's job ledger (it must have one).
    pub fn worker_config_with_ledger(&self, worker_id: &str) -> WorkerConfig {
        let table = self.stack.ledger_table.as_deref().expect("a ledger");
        WorkerConfig {
            ledger: Some(self.ledger_named(&self.sdk, table)),
            ..self.worker_config(worker_id)
        }
    }

    /// Starts a worker in this process with `registry`, serving metrics on a free port.
    pub async fn start_worker(&self, config: WorkerConfig, registry: Registry) -> RunningWorker {
        let sdk = self.sdk.clone();
        Self::start_worker_with(&sdk, config, registry).await
    }

    /// Starts a worker whose AWS calls go through `sdk` (e.g. a fault proxy's endpoint).
    pub async fn start_worker_with(
        sdk: &SdkConfig,
        config: WorkerConfig,
        registry: Registry,
    ) -> RunningWorker {
        let metrics = Metrics::new();
        let clients = AwsClients::instrumented(sdk, &metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics port");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let worker = Worker::new(config, clients, registry, metrics.clone());
        let task = tokio::spawn(worker.run(shutdown.clone(), Some(listener)));
        RunningWorker {
            shutdown,
            task,
            metrics,
            addr,
        }
    }
}

/// A worker running in this process.
pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub metrics: Arc<Metrics>,
    pub addr: std::net::SocketAddr,
}

impl RunningWorker {
    /// Shuts the worker down as SIGTERM would, and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("worker task");
    }

    /// GETs `path` from the worker's HTTP listener: status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }
}

/// A minimal HTTP/1.1 GET, enough for /metrics, /healthz and /readyz.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample in Prometheus text, e.g.
/// `shoal_jobs_succeeded_total{kind="canary"}`; `None` when the series is not there.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// The value of a series that must be exported: a missing series fails the test rather
/// than reading as zero.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| panic!("the series {series} is not exported"))
}

/// Waits until `check` holds or `timeout` passes; true if it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `tag:shoal:job-id = job_id`: finds what a job created.
pub fn job_filter(job_id: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:shoal:job-id")
        .values(job_id)
        .build()
}

/// This account's snapshots that `filter` selects, as `ec2` lists them.
pub async fn snapshots_where(
    ec2: &aws_sdk_ec2::Client,
    filter: aws_sdk_ec2::types::Filter,
) -> Vec<aws_sdk_ec2::types::Snapshot> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .filters(filter)
        .send()
        .await
        .expect("describe snapshots")
        .snapshots
        .unwrap_or_default()
}

/// Whether `ec2` lists the snapshot `id`.
pub async fn snapshot_listed(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    let by_id = aws_sdk_ec2::types::Filter::builder()
        .name("snapshot-id")
        .values(id)
        .build();
    snapshots_where(ec2, by_id).await.len() == 1
}

/// Whether `instance` has termination protection on, as `ec2` reads it.
pub async fn termination_protection(ec2: &aws_sdk_ec2::Client, instance: &str) -> Option<bool> {
    ec2.describe_instance_attribute()
        .instance_id(instance)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .expect("describe the attribute")
        .disable_api_termination()
        .and_then(|v| v.value())
}

/// A `shoal-state` a sender could write, claiming that `job_id` (of `kind`) succeeded with
/// `result`.
pub fn forged_success(job_id: &str, kind: &str, result: serde_json::Value) -> String {
    use shoal_common::event::{EventSource, JobEvent, JobStatus};
    let event = JobEvent::new(
        EventSource::not_run(
            Some(job_id.to_owned()),
            Some(kind.to_owned()),
            1,
            "forged".into(),
            "nobody".into(),
        ),
        JobStatus::Succeeded,
        Some(result),
        None,
    );
    serde_json::json!({"outcome": event}).to_string()
}

/// A message attribute's string value.
pub fn attribute(msg: &Message, name: &str) -> Option<String> {
    msg.message_attributes
        .as_ref()?
        .get(name)?
        .string_value
        .clone()
}

/// A system attribute (`MessageGroupId`, `ApproximateReceiveCount`, …).
pub fn system_attribute(msg: &Message, name: MessageSystemAttributeName) -> Option<String> {
    msg.attributes.as_ref()?.get(&name).cloned()
}

/// What one in-process run of the producer CLI did.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `shoal-producer` in-process with `args` (without the program name).
pub async fn producer_cli(sdk: &SdkConfig, args: &[&str]) -> CliRun {
    let argv = std::iter::once("shoal-producer").chain(args.iter().copied());
    let cli = match shoal_producer::cli::parse(argv) {
        Ok(cli) => cli,
        Err(e) => {
            return CliRun {
                code: 2,
                stdout: String::new(),
                stderr: e.to_string(),
            }
        }
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = shoal_producer::cli::run(
        cli,
        sdk,
        &mut shoal_producer::cli::Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        },
    )
    .await;
    CliRun {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// A `snapshot` of the volume whose `Name` tag is `name`, not waiting for it to complete.
pub fn snapshot_of_volume_named(name: &str) -> shoal_common::job::Snapshot {
    use shoal_common::job::Kind;
    shoal_common::job::Snapshot {
        volume_name: Some(name.to_owned()),
        ..shoal_common::job::Snapshot::example()
    }
}

/// The kinds an envelope schema's `oneOf` names, in its order.
pub fn schema_kinds(schema: &serde_json::Value) -> Vec<&str> {
    schema["oneOf"]
        .as_array()
        .map(|kinds| {
            kinds
                .iter()
                .filter_map(|v| v["properties"]["kind"]["const"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// A valid job of `kind`, from the kind's own example ([`shoal_common::job::Kind::example`]):
/// every test that claims "each kind" iterates the known kinds through this, so a new kind is
/// in each of them by itself.
pub fn example_job(kind: shoal_common::JobKind) -> shoal_common::Job {
    kind.example().expect("a known kind")
}

/// The plainest launch: one `t2.micro` from `image_id`, no tags, no protection. Tests
/// change the fields they are about.
pub fn plain_launch(image_id: &str) -> shoal_common::job::RunInstances {
    shoal_common::job::RunInstances {
        image_id: image_id.to_owned(),
        min_count: 1,
        max_count: 1,
        key_name: None,
        instance_type: "t2.micro".into(),
        availability_zone: None,
        disable_api_termination: false,
        tags: vec![],
        subnet_id: None,
        security_group_ids: vec![],
        user_data: None,
        wait: false,
        dry_run: false,
    }
}

/// A new instance of `image` (in `zone`, when given), launched with `ec2`: a fixture the
/// test made, not a launch by Shoal (no `shoal:job-id`).
pub async fn new_instance(ec2: &aws_sdk_ec2::Client, image: &str, zone: Option<&str>) -> String {
    ec2.run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .set_placement(zone.map(|z| {
            aws_sdk_ec2::types::Placement::builder()
                .availability_zone(z)
                .build()
        }))
        .send()
        .await
        .expect("launch")
        .instances()[0]
        .instance_id()
        .expect("instance id")
        .to_owned()
}

/// A new 8 GiB volume in `zone`, made with `ec2` (a test's observer client, so it exists
/// before any lag the test injects).
pub async fn new_volume(ec2: &aws_sdk_ec2::Client, zone: &str) -> String {
    new_volume_tagged(ec2, zone, &[]).await
}

/// A new 8 GiB volume in `zone` carrying `tags`, made with `ec2`.
pub async fn new_volume_tagged(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    tags: &[(&str, &str)],
) -> String {
    ec2.create_volume()
        .availability_zone(zone)
        .size(8)
        .set_tag_specifications(tagged(aws_sdk_ec2::types::ResourceType::Volume, tags))
        .send()
        .await
        .expect("volume")
        .volume_id()
        .expect("volume id")
        .to_owned()
}

/// The tag specification of a create carrying `tags`; none for no tags.
fn tagged(
    resource: aws_sdk_ec2::types::ResourceType,
    tags: &[(&str, &str)],
) -> Option<Vec<aws_sdk_ec2::types::TagSpecification>> {
    (!tags.is_empty()).then(|| {
        let mut spec = aws_sdk_ec2::types::TagSpecification::builder().resource_type(resource);
        for (k, v) in tags {
            spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        vec![spec.build()]
    })
}

/// A snapshot of `volume` carrying `tags`, made with `ec2`.
pub async fn new_snapshot(
    ec2: &aws_sdk_ec2::Client,
    volume: &str,
    tags: &[(&str, &str)],
) -> String {
    ec2.create_snapshot()
        .volume_id(volume)
        .set_tag_specifications(tagged(aws_sdk_ec2::types::ResourceType::Snapshot, tags))
        .send()
        .await
        .expect("snapshot")
        .snapshot_id()
        .expect("snapshot id")
        .to_owned()
}

/// A registry whose only handler, for `K`, fails for good on its first call ("Boom") and
/// succeeds with `{"ran": "again"}` on every later one: a job whose cause is then fixed. The
/// counter says how many times it ran.
pub fn failing_once<K: shoal_common::job::Kind>() -> (Registry, Arc<std::sync::atomic::AtomicUsize>)
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut registry = Registry::new();
    registry.register_fn(move |_, _: K| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            match first {
                true => Err(shoal_worker::JobError::permanent(
                    "Boom",
                    "broken the first time",
                )),
                false => Ok(shoal_worker::Outcome::Done(
                    serde_json::json!({"ran": "again"}),
                )),
            }
        }
    });
    (registry, calls)
}
