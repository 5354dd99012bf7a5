//! Load under faults. SQS and SNS run on fauxqs (fast at any queue size) and EC2 on moto,
//! all behind one fault proxy that routes each service to its emulator and injects errors
//! into a share of every call, while the test watches as an observer.
//!
//! - A fifth of all SQS, SNS, EC2 and ledger (DynamoDB, on moto) calls fail with throttling
//!   or 5xx for a whole run of 2,000 canaries and 50 launches: everything completes, each
//!   launch happens once, each canary runs once.
//! - The chaos soak: three worker processes with the ledger, every job sent twice, 10% of
//!   calls failing, one worker SIGKILLed every second and restarted. `SHOAL_CHAOS_JOBS` sets
//!   its size (scripts/chaos runs 10,000); it prints its figures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_common::config::QueueTarget;
use shoal_common::event::{JobEvent, JobStatus};
use shoal_common::job::Canary;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::fault_proxy::{AwsFault, Fault, FaultProxy, Rule, Service, Trigger};
use shoal_tests::{
    eventually, fauxqs, free_port, http_get, job_filter, moto, plain_launch, sdk_config, unique,
    worker_command, TestStack,
};
use shoal_worker::handlers::{registry_with, Ec2Settings};
use shoal_worker::{JobContext, Outcome};

const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");

/// One proxy: SQS and SNS to fauxqs, EC2 to moto.
async fn proxy() -> FaultProxy {
    let routes = HashMap::from([
        (Service::Sqs, fauxqs().endpoint.clone()),
        (Service::Sns, fauxqs().endpoint.clone()),
    ]);
    FaultProxy::start_with(&moto().endpoint, routes).await
}

fn every_kind_of_failure(share: f64) -> Rule {
    Rule::new(
        None,
        &[],
        Fault::AnyError(vec![
            AwsFault::Throttling,
            AwsFault::InternalError,
            AwsFault::ServiceUnavailable,
            AwsFault::Http500,
            AwsFault::Http503,
        ]),
        Trigger::Probability(share),
    )
}

fn launch(ami: &str) -> Job {
    Job::new(plain_launch(ami))
}

/// Canary ids `<prefix>-N` and launch ids `<prefix>-launch-N`, enqueued in bulk, each as
/// `copies` messages (a producer's retry, an SQS duplicate).
async fn enqueue_jobs(
    t: &TestStack,
    prefix: &str,
    canaries: usize,
    launches: usize,
    copies: usize,
) -> (Vec<String>, Vec<String>) {
    let ami = t.stock_ami().await;
    let canary_ids: Vec<String> = (0..canaries).map(|i| format!("{prefix}-{i:05}")).collect();
    let launch_ids: Vec<String> = (0..launches)
        .map(|i| format!("{prefix}-launch-{i}"))
        .collect();
    let jobs: Vec<JobEnvelope> = canary_ids
        .iter()
        .map(|id| (Job::new(Canary::default()), id))
        .chain(launch_ids.iter().map(|id| (launch(&ami), id)))
        .map(|(job, id)| JobEnvelope::new(job).with_job_id(JobId::parse(id).expect("id")))
        .flat_map(|job| std::iter::repeat_n(job, copies))
        .collect();
    let report = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue_many(&jobs, &SendOptions::default(), &|_| {})
        .await
        .expect("valid jobs");
    assert_eq!(report.enqueued.len(), jobs.len());
    (canary_ids, launch_ids)
}

/// Events from the events queue until every id in `ids` has a succeeded one, or `timeout`.
async fn collect_events(t: &TestStack, ids: &[String], timeout: Duration) -> Vec<JobEvent> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut done: std::collections::HashSet<String> = Default::default();
    while done.len() < ids.len() && Instant::now() < deadline {
        for e in t
            .events(ids.len() - done.len(), Duration::from_secs(2))
            .await
        {
            if e.status == JobStatus::Succeeded {
                done.insert(e.job_id.clone().unwrap_or_default());
            }
            all.push(e);
        }
    }
    all
}

fn missing<'a>(ids: &'a [String], events: &[JobEvent]) -> Vec<&'a String> {
    let done: std::collections::HashSet<&str> = events
        .iter()
        .filter(|e| e.status == JobStatus::Succeeded)
        .filter_map(|e| e.job_id.as_deref())
        .collect();
    ids.iter()
        .filter(|id| !done.contains(id.as_str()))
        .collect()
}

/// Every job of `ids` has a success event and no job a failure one, and each launch of
/// `launches` happened exactly once: one reservation carries its id, as the observer sees
/// EC2, and one `RunInstances` with its id reached EC2.
async fn assert_all_succeeded_and_launched_once(
    t: &TestStack,
    proxy: &FaultProxy,
    ids: &[String],
    launches: &[String],
    events: &[JobEvent],
) {
    let missing = missing(ids, events);
    assert!(
        missing.is_empty(),
        "{} jobs without a success event: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        events.iter().all(|e| e.status == JobStatus::Succeeded),
        "no failure events"
    );
    for id in launches {
        let reservations = t
            .clients
            .ec2
            .describe_instances()
            .filters(job_filter(id))
            .send()
            .await
            .expect("describe instances")
            .reservations()
            .len();
        assert_eq!(reservations, 1, "{id}: one launch on EC2");
        assert_eq!(
            proxy.creates_with("RunInstances", id),
            1,
            "{id}: one RunInstances reached EC2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_all_calls_failing_is_absorbed_and_each_launch_happens_once() {
    let proxy = proxy().await;
    let mut spec = StackSpec::new(unique("fifth"));
    spec.visibility_timeout_secs = 30;
    let t = TestStack::observing(&proxy.endpoint, spec).await;
    let (canaries, launches) = enqueue_jobs(&t, "fifth", 2000, 50, 1).await;
    proxy.add(every_kind_of_failure(0.2));

    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let log = runs.clone();
    let mut registry = registry_with(Ec2Settings {
        consistency_window: Duration::from_secs(3),
        ..Ec2Settings::default()
    });
    registry.register_fn(move |ctx: JobContext, _: Canary| {
        *log.lock()
            .expect("lock")
            .entry(ctx.job_id.to_string())
            .or_default() += 1;
        async { Ok(Outcome::Done(serde_json::Value::Null)) }
    });
    let mut config = t.worker_config("fifth");
    config.concurrency = 32;
    config.visibility_timeout = Duration::from_secs(30);
    let sdk = sdk_config(&proxy.endpoint).await;
    // The ledger fails a fifth of its calls too: claims, progress and outcomes are retried,
    // and a launch still happens once.
    config.ledger = Some(t.ledger(&sdk).await);
    let worker = TestStack::start_worker_with(&sdk, config, registry).await;

    let ids: Vec<String> = canaries.iter().chain(&launches).cloned().collect();
    let events = collect_events(&t, &ids, Duration::from_secs(300)).await;
    assert_all_succeeded_and_launched_once(&t, &proxy, &ids, &launches, &events).await;
    let runs = runs.lock().expect("lock").clone();
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "each canary ran once: {repeated:?}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "nothing dead-lettered");
    let m = &worker.metrics;
    let sum = |v: &prometheus::IntCounterVec| -> u64 {
        use prometheus::core::Collector;
        v.collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    println!(
        "faults injected: {}; AWS calls: {} executions, {} HTTP attempts, {} executions failed after the SDK's retries",
        proxy.faults_injected(),
        sum(&m.api_calls),
        sum(&m.api_attempts),
        sum(&m.api_errors)
    );
    worker.stop().await;
}

/// The size of the chaos soak: canaries (launches are a fiftieth of them, at least two).
fn chaos_jobs() -> usize {
    std::env::var("SHOAL_CHAOS_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

struct Fleet {
    proxy_endpoint: String,
    stack: shoal_common::stack::Stack,
    workers: Vec<tokio::process::Child>,
    started: usize,
    /// The metrics address of the worker started last.
    last_metrics: Option<std::net::SocketAddr>,
}

impl Fleet {
    fn spawn(&mut self) -> tokio::process::Child {
        self.started += 1;
        let metrics: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        self.last_metrics = Some(metrics);
        worker_command(
            WORKER,
            &self.proxy_endpoint,
            &self.stack,
            &format!("chaos-{}", self.started),
            metrics,
        )
        .args([
            "--concurrency",
            "16",
            "--retry-base",
            "1s",
            "--retry-max",
            "5s",
        ])
        .args(["--announce-hold", "5s", "--ec2-consistency-window", "3s"])
        .args(["--queue-stats-interval", "0s"])
        .spawn()
        .expect("start a worker")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_killed_workers_and_failing_calls_lose_nothing_and_repeat_no_launch() {
    let proxy = proxy().await;
    let mut spec = StackSpec::new(unique("chaos"));
    spec.visibility_timeout_secs = 5;
    // A worker dies every ~3 s here, and a launch takes 1 to 3 s (more after a death: the
    // next delivery waits out the consistency window before it trusts an empty lookup). A
    // job whose worker dies on every one of maxReceiveCount deliveries is SQS's to
    // dead-letter, by design; with 10, 3% of the launches of a 10,000-job soak met ten
    // deaths in a row. 30 keeps that from the soak without hiding anything else.
    spec.max_receive_count = 30;
    let t = TestStack::observing(&proxy.endpoint, spec).await;
    let total = chaos_jobs();
    // Every job twice: the ledger keeps the second copy of a launch from running while the
    // first holds it, and answers it with the first's outcome after.
    let (canaries, launches) = enqueue_jobs(&t, "chaos", total, (total / 50).max(2), 2).await;
    proxy.add(every_kind_of_failure(0.1));
    let ids: Vec<String> = canaries.iter().chain(&launches).cloned().collect();

    let mut fleet = Fleet {
        proxy_endpoint: proxy.endpoint.clone(),
        stack: t.stack.clone(),
        workers: Vec::new(),
        started: 0,
        last_metrics: None,
    };
    for _ in 0..3 {
        let w = fleet.spawn();
        fleet.workers.push(w);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(if total > 1000 { 1800 } else { 240 });
    let mut events: Vec<JobEvent> = Vec::new();
    let mut kills = 0usize;
    let mut rng = started.elapsed().subsec_nanos() as usize | 1;
    while !missing(&ids, &events).is_empty() && Instant::now() < deadline {
        // A random worker dies without warning, and a new one takes its place.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (rng >> 33) % fleet.workers.len();
        let _ = fleet.workers[victim].start_kill();
        let _ = fleet.workers[victim].wait().await;
        kills += 1;
        fleet.workers[victim] = fleet.spawn();
        events.extend(t.events(ids.len(), Duration::from_secs(1)).await);
    }
    let soak = started.elapsed();
    // The faults stop with the killing; the survivors finish what is left.
    proxy.heal();
    let still_missing: Vec<String> = missing(&ids, &events).into_iter().cloned().collect();
    events.extend(collect_events(&t, &still_missing, Duration::from_secs(60)).await);
    assert_all_succeeded_and_launched_once(&t, &proxy, &ids, &launches, &events).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await,
        "the queue drained"
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "nothing dead-lettered");

    // Each message of a job is announced (a launch's second copy re-announces the recorded
    // outcome). A worker killed between announcing a job and deleting it leaves that
    // message to be delivered again: its event comes once more (subscribers de-duplicate on
    // job_id). Launches find their claim or record and do not launch again; canaries have no
    // effect to repeat.
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *per_job
            .entry(e.job_id.as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    let repeated = per_job.values().filter(|n| **n > 2).count();
    assert!(
        repeated <= kills * 16,
        "at most a killed worker's jobs in flight come twice ({repeated} for {kills} kills)"
    );
    println!(
        "chaos soak: {} jobs ({} launches) in {:.0} s, {kills} workers killed, {} faults injected, \
         every job sent twice, {repeated} announced more than twice, 0 lost, 0 launched twice, DLQ empty",
        ids.len(),
        launches.len(),
        soak.as_secs_f64(),
        proxy.faults_injected(),
    );
    for mut w in fleet.workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
}

/// A fleet in a crash loop makes progress: two workers with the ledger, one of them SIGKILLed
/// every second (each lives about two), SQS's default five receives. A worker killed while it
/// holds a launch leaves the next run a claim with a higher fence; before creates were noted
/// in the ledger, that run had to wait a consistency window before it trusted an empty
/// lookup, died in the wait, and the deaths spent the job's receives: 38 of 40 finished and
/// two reached the dead-letter queue without a reason. Now a run that finds no noted create
/// launches at once, and one that finds a note counts the window from it (long past by the
/// time the message is visible again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_every_second_costs_no_job_its_receives() {
    let proxy = proxy().await;
    let mut spec = StackSpec::new(unique("crash"));
    spec.visibility_timeout_secs = 5;
    spec.max_receive_count = 5;
    let t = TestStack::observing(&proxy.endpoint, spec).await;
    let (_, launches) = enqueue_jobs(&t, "crash", 0, 40, 1).await;
    let mut fleet = Fleet {
        proxy_endpoint: proxy.endpoint.clone(),
        stack: t.stack.clone(),
        workers: Vec::new(),
        started: 0,
        last_metrics: None,
    };
    let mut ready_at = Vec::new();
    for _ in 0..2 {
        let w = fleet.spawn();
        fleet.workers.push(w);
        ready_at.push(fleet.last_metrics.expect("an address"));
    }
    let started = Instant::now();
    let mut events: Vec<JobEvent> = Vec::new();
    let mut kills = 0usize;
    // A liveness bound, not a speed target: a stalled fleet never gets there.
    while !missing(&launches, &events).is_empty() && started.elapsed() < Duration::from_secs(120) {
        let victim = kills % 2;
        // A second of working life, counted from when the worker is ready: on a loaded
        // machine a debug build takes a second or more to start, and a kill counted from
        // the spawn would often kill a worker that never received anything.
        let addr = ready_at[victim];
        eventually(Duration::from_secs(30), || async move {
            // Not listening yet is not ready; once it listens, `/readyz` says.
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && http_get(addr, "/readyz").await.0 == 200
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = fleet.workers[victim].start_kill();
        let _ = fleet.workers[victim].wait().await;
        kills += 1;
        fleet.workers[victim] = fleet.spawn();
        ready_at[victim] = fleet.last_metrics.expect("an address");
        events.extend(t.events(launches.len(), Duration::from_millis(200)).await);
    }
    let took = started.elapsed();
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0, "no job dead-lettered");
    assert_all_succeeded_and_launched_once(&t, &proxy, &launches, &launches, &events).await;
    let sdk = sdk_config(&proxy.endpoint).await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let ledger = t.ledger_named(&sdk, &table);
    let mut reclaimed = 0;
    for id in &launches {
        let record = ledger.get(id).await.expect("ledger").expect("a record");
        reclaimed += usize::from(record.fence > 1);
    }
    assert!(
        reclaimed > 0,
        "workers died holding launches (else this proves nothing)"
    );
    println!(
        "crash loop: {} launches in {:.0} s, {kills} kills, {reclaimed} claimed again after a death",
        launches.len(),
        took.as_secs_f64()
    );
    for mut w in fleet.workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
}
