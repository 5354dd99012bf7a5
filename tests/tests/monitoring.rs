//! Prometheus and Grafana: the rules pass `promtool check rules` and their unit tests, every
//! dashboard query is valid PromQL over metrics a worker really exports, and a real
//! Prometheus on loopback scrapes a running worker and counts the jobs it just ran.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package, which `scripts/test`
//! installs; a test that cannot find them fails and says so.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_common::config::QueueTarget;
use shoal_common::job::Canary;
use shoal_common::{Job, JobEnvelope};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{eventually, free_port, http_get, repo_path, TestStack};
use shoal_worker::handlers::default_registry;
use shoal_worker::{JobError, Outcome, Registry};

const INSTALL: &str = "apt-get install prometheus; scripts/test installs it";

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_path("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({INSTALL}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `expr` of every panel of the dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/shoal.json")).expect("read");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The `shoal_…` metric names a PromQL expression reads (recording rules, with a `:`, aside).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("shoal_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !name.contains(':') {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_is_valid_promql_over_exported_metrics() {
    let queries = dashboard_queries();
    // promtool parses rule expressions, so each query becomes a recording rule to check.
    let dir = tempdir("dashboard");
    let rules: String = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(q).expect("a string")
            )
        })
        .collect();
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("write");
    promtool(&["check", "rules", file.to_str().expect("utf-8 path")]);

    let rules_text =
        std::fs::read_to_string(repo_path("deploy/prometheus/rules.yml")).expect("read rules");
    // A metric family shows once it has a series: run a job that succeeds and one that
    // fails, so that every counter and histogram the queries read has one.
    let t = TestStack::new("dashboard").await;
    let mut registry = Registry::new();
    registry.register_fn(|_, canary: Canary| async move {
        match canary.sleep_ms {
            0 => Ok(Outcome::Done(serde_json::json!({}))),
            _ => Err(JobError::permanent("Broken", "fails on purpose")),
        }
    });
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    for sleep_ms in [0, 1] {
        producer
            .enqueue(
                &JobEnvelope::new(Job::new(Canary { sleep_ms })),
                &SendOptions::default(),
            )
            .await
            .expect("enqueue");
    }
    // With the ledger, as a deployed worker runs: its DynamoDB series start at zero.
    let mut config = t.worker_config("dash");
    config.ledger = Some(t.ledger(&t.sdk).await);
    let worker = t.start_worker(config, registry).await;
    assert_eq!(t.events(2, Duration::from_secs(30)).await.len(), 2);
    // The queue gauges appear after the first sample.
    let sampled = eventually(Duration::from_secs(10), || async {
        worker
            .get("/metrics")
            .await
            .1
            .contains("shoal_queue_messages{")
    })
    .await;
    assert!(sampled, "the worker samples the queues");
    let exported = worker.get("/metrics").await.1;
    worker.stop().await;
    let exported_names: BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let readable = |name: &str| {
        exported_names.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|b| exported_names.contains(b))
            })
    };
    for source in queries.iter().chain(std::iter::once(&rules_text)) {
        for name in metric_names(source) {
            assert!(
                readable(&name),
                "`{name}` is not a metric the worker exports"
            );
        }
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(shoal_tests::unique(&format!("shoal-{name}")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Starts Prometheus on loopback, scraping `target` every second with Shoal's rules.
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempdir("prometheus");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: shoal\n    static_configs:\n      - targets: ['{target}']\n",
            rules = repo_path("deploy/prometheus/rules.yml").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus ({INSTALL}): {e}"));
        Prometheus { child, addr, dir }
    }

    /// The value of a PromQL query's first sample, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(5),
            http_get(self.addr, &format!("/api/v1/query?query={encoded}")),
        )
        .await
        .ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_worker_and_counts_the_jobs_it_ran() {
    let t = TestStack::new("prometheus").await;
    let worker = t
        .start_worker(t.worker_config("scraped"), default_registry())
        .await;
    let prometheus = Prometheus::start(worker.addr);
    let up = eventually(Duration::from_secs(60), || async {
        std::net::TcpStream::connect(prometheus.addr).is_ok()
            && prometheus.query(r#"up{job="shoal"}"#).await == Some(1.0)
    })
    .await;
    assert!(up, "Prometheus scrapes the worker");

    let jobs = 7;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    for _ in 0..jobs {
        producer
            .enqueue(
                &JobEnvelope::new(Job::new(Canary::default())),
                &SendOptions::default(),
            )
            .await
            .expect("enqueue");
    }
    assert_eq!(t.events(jobs, Duration::from_secs(30)).await.len(), jobs);

    let counted = eventually(Duration::from_secs(30), || async {
        prometheus
            .query(r#"sum(shoal_jobs_succeeded_total{kind="canary"})"#)
            .await
            == Some(jobs as f64)
    })
    .await;
    assert!(counted, "Prometheus counts the {jobs} canaries");
    assert_eq!(
        prometheus
            .query(r#"sum(shoal_events_published_total{kind="canary",status="succeeded"})"#)
            .await,
        Some(jobs as f64)
    );
    // The recording rules load and evaluate over the scraped series.
    let recorded = eventually(Duration::from_secs(30), || async {
        prometheus
            .query(r#"shoal:queue_messages:max{queue="jobs",state="visible"}"#)
            .await
            == Some(0.0)
    })
    .await;
    assert!(
        recorded,
        "the recording rules evaluate over the worker's series"
    );
    worker.stop().await;
}
