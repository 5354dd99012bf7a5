//! The worker as a process: signals, graceful shutdown and crashes. Each test runs the real
//! binary against the emulator through the SDK's standard environment variables.

use std::time::{Duration, Instant};

use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::Canary;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{
    eventually, free_port, http_get, metric, moto, unique, worker_command, TestStack,
};
use tokio::process::{Child, Command};

const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");

struct WorkerProcess {
    child: Child,
    metrics: std::net::SocketAddr,
}

fn spawn_worker(t: &TestStack, id: &str, extra: &[&str]) -> WorkerProcess {
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let child = worker_command(WORKER, &moto().endpoint, &t.stack, id, metrics)
        .args(extra)
        .spawn()
        .expect("start the worker binary");
    WorkerProcess { child, metrics }
}

impl WorkerProcess {
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn jobs_in_flight(&self) -> f64 {
        match tokio::time::timeout(Duration::from_secs(2), http_get(self.metrics, "/metrics")).await
        {
            Ok((200, text)) => metric(&text, r#"shoal_jobs_in_flight{kind="canary"}"#),
            _ => 0.0,
        }
    }

    async fn wait_until_running_a_job(&self) {
        let running = eventually(Duration::from_secs(30), || async {
            // The listener may not be up yet; connection errors read as "not yet".
            std::net::TcpStream::connect(self.metrics).is_ok() && self.jobs_in_flight().await == 1.0
        })
        .await;
        assert!(running, "the worker started the job");
    }

    async fn exit_code(mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the worker exits in time")
            .expect("wait");
        status.code().unwrap_or(-1)
    }
}

async fn stack(name: &str, visibility_timeout_secs: u32) -> TestStack {
    let mut spec = StackSpec::new(unique(name));
    spec.visibility_timeout_secs = visibility_timeout_secs;
    TestStack::with_spec(spec).await
}

async fn enqueue_sleeper(t: &TestStack, job_id: &str, sleep_ms: u64) {
    let job = JobEnvelope::new(Job::new(Canary { sleep_ms }))
        .with_job_id(JobId::parse(job_id).expect("id"));
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue(&job, &SendOptions::default())
        .await
        .expect("enqueue");
}

#[tokio::test]
async fn sigterm_releases_an_unfinished_job_and_the_next_worker_finishes_it_at_once() {
    // A long visibility timeout: only a release can explain a quick second delivery.
    let t = stack("sigterm", 120).await;
    enqueue_sleeper(&t, "sigterm-1", 5000).await;
    let first = spawn_worker(&t, "first", &["--shutdown-grace", "500ms"]);
    first.wait_until_running_a_job().await;

    first.signal("TERM");
    let released_at = Instant::now();
    assert_eq!(
        first.exit_code(Duration::from_secs(10)).await,
        0,
        "graceful shutdown exits 0"
    );

    let second = spawn_worker(&t, "second", &[]);
    let events = t.events(1, Duration::from_secs(60)).await;
    assert_eq!(
        events.len(),
        1,
        "expected the job's one event, got {}",
        events.len()
    );
    let e = &events[0];
    assert_eq!(e.status, JobStatus::Succeeded);
    assert_eq!(e.worker_id, "second", "the first worker did not finish it");
    assert_eq!(e.attempts, 2);
    assert!(
        released_at.elapsed() < Duration::from_secs(60),
        "redelivered long before the visibility timeout"
    );
    assert!(
        t.events(1, Duration::from_secs(2)).await.is_empty(),
        "one completion"
    );
    second.signal("TERM");
    assert_eq!(second.exit_code(Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn sigterm_lets_a_job_within_the_grace_period_finish() {
    let t = stack("grace", 120).await;
    enqueue_sleeper(&t, "grace-1", 1500).await;
    let worker = spawn_worker(&t, "only", &["--shutdown-grace", "20s"]);
    worker.wait_until_running_a_job().await;
    worker.signal("TERM");
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, 0);
    let events = t.events(1, Duration::from_secs(5)).await;
    assert_eq!(
        events.len(),
        1,
        "the job finished and was announced before exit"
    );
    assert_eq!(events[0].worker_id, "only");
    assert_eq!(t.depth(&t.stack.queue_url).await, 0, "and deleted");
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing() {
    let t = stack("sigkill", 3).await;
    enqueue_sleeper(&t, "sigkill-1", 2000).await;
    let victim = spawn_worker(&t, "victim", &[]);
    victim.wait_until_running_a_job().await;
    victim.signal("KILL");
    let killed_at = Instant::now();
    assert_ne!(victim.exit_code(Duration::from_secs(5)).await, 0);

    let survivor = spawn_worker(&t, "survivor", &[]);
    let events = t.events(1, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 1, "the job was not lost");
    assert_eq!(events[0].worker_id, "survivor");
    assert_eq!(events[0].attempts, 2);
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "it came back after the visibility timeout"
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);
    survivor.signal("TERM");
    assert_eq!(survivor.exit_code(Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn a_second_signal_exits_at_once_and_the_job_returns_after_its_visibility_timeout() {
    let t = stack("twice", 3).await;
    enqueue_sleeper(&t, "twice-1", 20_000).await;
    let impatient = spawn_worker(&t, "impatient", &["--shutdown-grace", "60s"]);
    impatient.wait_until_running_a_job().await;
    impatient.signal("TERM");
    // The first signal has taken hold once the worker says it is no longer ready.
    let draining = eventually(Duration::from_secs(5), || async {
        http_get(impatient.metrics, "/readyz").await.0 == 503
    })
    .await;
    assert!(draining, "the first signal started a graceful shutdown");
    impatient.signal("TERM");
    let stopped = Instant::now();
    assert_eq!(impatient.exit_code(Duration::from_secs(5)).await, 130);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "exited at once, not after the grace period"
    );

    enqueue_sleeper(&t, "twice-2", 0).await;
    let next = spawn_worker(&t, "next", &[]);
    // The 20-second job runs again in full on the next worker.
    let events = t.events(2, Duration::from_secs(60)).await;
    let redone = events
        .iter()
        .find(|e| e.job_id.as_deref() == Some("twice-1"))
        .expect("the interrupted job completed");
    assert_eq!(redone.worker_id, "next");
    assert_eq!(redone.attempts, 2);
    next.signal("TERM");
    next.exit_code(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_worker_refuses_to_start_when_its_attempt_limit_contradicts_the_redrive_policy() {
    let t = stack("mismatch", 30).await;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let output = worker_command(WORKER, &moto().endpoint, &t.stack, "confused", metrics)
        .args(["--max-attempts", "9"])
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run the worker");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("max_attempts") && stderr.contains("redrive policy"),
        "the reason is given: {stderr}"
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_passes_a_live_worker_and_fails_a_dead_one() {
    let t = stack("healthcheck", 30).await;
    let worker = spawn_worker(&t, "hc", &[]);
    let up = eventually(Duration::from_secs(30), || async {
        std::net::TcpStream::connect(worker.metrics).is_ok()
    })
    .await;
    assert!(up, "the worker's listener came up");
    let probe = |addr: String, path: &'static str| async move {
        Command::new(WORKER)
            .args(["healthcheck", "--addr", &addr, "--path", path])
            .env_remove("SHOAL_METRICS_ADDR")
            .status()
            .await
            .expect("run healthcheck")
            .code()
    };
    // An unspecified address, as in the container, is probed on loopback.
    let unspecified = format!("0.0.0.0:{}", worker.metrics.port());
    assert_eq!(probe(unspecified, "/healthz").await, Some(0));
    assert_eq!(probe(worker.metrics.to_string(), "/readyz").await, Some(0));
    assert_eq!(probe(worker.metrics.to_string(), "/nowhere").await, Some(1));
    drop(worker);
    let nobody = format!("127.0.0.1:{}", free_port());
    assert_eq!(probe(nobody, "/healthz").await, Some(1));
}

/// A finished job is one line at INFO, naming it: what an operator reading a run's log looks
/// for first.
#[tokio::test]
async fn a_finished_job_is_one_line_at_info() {
    let t = stack("logged", 30).await;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let child = worker_command(WORKER, &moto().endpoint, &t.stack, "logger", metrics)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the worker binary");
    enqueue_sleeper(&t, "logged-1", 0).await;
    assert_eq!(t.events(1, Duration::from_secs(30)).await.len(), 1);
    let pid = child.id().expect("running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the worker exits")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("job succeeded"))
        .unwrap_or_else(|| panic!("a line for the job in: {stderr}"));
    assert!(
        line.contains("logged-1") && line.contains("canary"),
        "{line}"
    );
}
