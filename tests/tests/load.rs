//! Load-shaped: two workers share one queue and 2,000 jobs. Runs SQS and SNS on fauxqs,
//! whose speed does not fall as a queue fills (moto's does).

use std::collections::HashMap;
use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::Canary;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{eventually, fauxqs, metric, unique, TestStack};
use shoal_worker::handlers::default_registry;

const JOBS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_complete_2000_jobs_each_exactly_once() {
    // fauxqs serves SQS and SNS alone: no ledger table (the workers here run without one).
    let spec = StackSpec {
        ledger: false,
        ..StackSpec::new(unique("load"))
    };
    let t = TestStack::on(&fauxqs().endpoint, spec).await;
    let jobs: Vec<JobEnvelope> = (0..JOBS)
        .map(|i| {
            JobEnvelope::new(Job::new(Canary::default()))
                .with_job_id(JobId::parse(&format!("load-{i:05}")).expect("id"))
        })
        .collect();
    let report = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .enqueue_many(&jobs, &SendOptions::default(), &|_| {})
        .await
        .expect("valid jobs");
    assert_eq!(report.enqueued.len(), JOBS);

    let mut config = t.worker_config("a");
    config.concurrency = 32;
    config.visibility_timeout = Duration::from_secs(30);
    let a = t.start_worker(config.clone(), default_registry()).await;
    config.worker_id = "b".into();
    let b = t.start_worker(config, default_registry()).await;

    let events = t.events(JOBS, Duration::from_secs(240)).await;
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for e in &events {
        assert_eq!(e.status, JobStatus::Succeeded);
        *per_job
            .entry(e.job_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per_job.len(), JOBS, "every job completed");
    let repeated: Vec<_> = per_job.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "each job completed once: {repeated:?}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.depth(&t.stack.queue_url).await == 0
        })
        .await
    );
    assert_eq!(t.depth(&t.stack.dlq_url).await, 0);

    let done_a = metric(
        &a.get("/metrics").await.1,
        r#"shoal_jobs_succeeded_total{kind="canary"}"#,
    );
    let done_b = metric(
        &b.get("/metrics").await.1,
        r#"shoal_jobs_succeeded_total{kind="canary"}"#,
    );
    assert_eq!(
        done_a + done_b,
        JOBS as f64,
        "the workers' counters add up to the jobs"
    );
    assert!(
        done_a > 0.0 && done_b > 0.0,
        "both workers took a share ({done_a} and {done_b})"
    );
    a.stop().await;
    b.stop().await;
}
