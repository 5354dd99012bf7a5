//! A first run without AWS set up, as a new user makes it: the producer and the worker, run
//! as processes with nothing but what each case sets, say what is wrong in one line that
//! names what to set or check, and exit non-zero at once. The SDK's own warnings stay out of
//! the way (no `RUST_LOG`).
//!
//! Every process gets an empty home (no `~/.aws`) and instance metadata turned off, so the
//! machine running the tests lends no credentials or region of its own.

use std::process::Output;
use std::time::{Duration, Instant};

use shoal_common::stack::StackSpec;
use shoal_tests::fault_proxy::{AwsFault, Rule, Service};
use shoal_tests::{free_port, moto, unique, TestStack};

const PRODUCER: &str = env!("CARGO_BIN_EXE_shoal-producer-for-tests");
const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");

/// What a case sets: `(name, value)` pairs.
type Env<'a> = &'a [(&'a str, &'a str)];

async fn run(binary: &str, args: &[&str], env: Env<'_>) -> (Output, Duration) {
    let home = std::env::temp_dir().join(unique("home"));
    std::fs::create_dir_all(&home).expect("home");
    let started = Instant::now();
    let output = tokio::process::Command::new(binary)
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the binary");
    let _ = std::fs::remove_dir_all(&home);
    (output, started.elapsed())
}

/// The one line the process wrote to standard error, checked to hold every one of `words`.
fn one_line(output: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{stderr}");
    for word in words {
        assert!(lines[0].contains(word), "`{word}` in: {}", lines[0]);
    }
    assert!(!output.status.success(), "a non-zero exit: {stderr}");
    lines[0].to_owned()
}

/// The worker, told a queue by name and a topic that need not exist.
async fn run_worker(queue_name: &str, env: Env<'_>) -> (Output, Duration) {
    let topic = "arn:aws:sns:us-east-1:000000000000:x";
    run(
        WORKER,
        &[
            "--queue-name",
            queue_name,
            "--topic-arn",
            topic,
            "--ledger-table",
            "shoal-ledger",
        ],
        env,
    )
    .await
}

fn creds(region: &str) -> Vec<(&str, &str)> {
    vec![
        ("AWS_REGION", region),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn no_region_is_one_line_naming_aws_region() {
    let (out, _) = run(PRODUCER, &["--queue-name", "shoal-jobs", "canary"], &[]).await;
    one_line(&out, &["AWS_REGION"]);
    let (out, _) = run_worker(
        "shoal-jobs",
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .await;
    one_line(&out, &["AWS_REGION"]);
    assert_eq!(out.status.code(), Some(2));
}

/// An invalid job is refused for what is wrong with it, before AWS's setup is looked at:
/// a user fixing their command learns of its flaw first, not of a region they have not set.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_job_is_named_before_any_missing_aws_setup() {
    let (out, _) = run(
        PRODUCER,
        &[
            "--queue-name",
            "shoal-jobs",
            "run-instances",
            "--image-id",
            "ami-zz",
            "--instance-type",
            "t3.micro",
        ],
        &[],
    )
    .await;
    let line = one_line(&out, &["params.image_id"]);
    assert!(!line.contains("AWS_REGION"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_is_one_line_naming_what_to_set() {
    let env = [("AWS_REGION", "us-east-1")];
    let (out, _) = run(PRODUCER, &["--queue-name", "shoal-jobs", "canary"], &env).await;
    one_line(
        &out,
        &["no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"],
    );
    let (out, _) = run_worker("shoal-jobs", &env).await;
    one_line(&out, &["no AWS credentials"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_one_line_and_no_retry_loop() {
    // A loopback port nobody listens on.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut env = creds("us-east-1");
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let (out, took) = run(PRODUCER, &["--queue-name", "shoal-jobs", "canary"], &env).await;
    one_line(&out, &["cannot reach", "AWS_ENDPOINT_URL"]);
    let (out, took_worker) = run_worker("shoal-jobs", &env).await;
    one_line(&out, &["cannot reach"]);
    // Only the SDK's own three attempts: not a loop that waits for the endpoint to appear.
    assert!(took < Duration::from_secs(30) && took_worker < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_does_not_exist_is_one_line_saying_how_to_make_it() {
    let endpoint = moto().endpoint.clone();
    let mut env = creds("us-east-1");
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let (out, _) = run(PRODUCER, &["--queue-name", "no-such-queue", "canary"], &env).await;
    one_line(&out, &["no-such-queue", "stack create"]);
    let url = format!("{endpoint}/000000000000/no-such-queue");
    let (out, _) = run(PRODUCER, &["--queue-url", &url, "canary"], &env).await;
    one_line(&out, &["does not exist", "SHOAL_QUEUE_URL"]);
    let (out, _) = run_worker("no-such-queue", &env).await;
    one_line(&out, &["no-such-queue"]);

    // The worker checks its topic too, rather than failing at the first announcement.
    let t = TestStack::new("firstrun").await;
    let (out, _) = run(
        WORKER,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--topic-arn",
            "arn:aws:sns:us-east-1:123456789012:no-such-topic",
            "--ledger-table",
            "shoal-ledger",
        ],
        &env,
    )
    .await;
    one_line(&out, &["topic_arn", "no-such-topic"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_is_one_line_saying_a_permission_is_missing() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("denied"))).await;
    proxy.add(Rule::outage(
        Service::Sqs,
        &[],
        AwsFault::AccessDenied,
        Duration::from_secs(600),
    ));
    let mut env = creds("us-east-1");
    env.push(("AWS_ENDPOINT_URL", &proxy.endpoint));
    let (out, _) = run(
        PRODUCER,
        &["--queue-url", &t.stack.queue_url, "canary"],
        &env,
    )
    .await;
    one_line(&out, &["SendMessage", "lack this permission"]);
    let (out, _) = run(
        WORKER,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--topic-arn",
            &t.stack.topic_arn,
            "--ledger-table",
            "shoal-ledger",
        ],
        &env,
    )
    .await;
    one_line(&out, &["lack this permission"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A second worker on one host finds the metrics port taken: one line saying which flag picks
/// another. Written to a pipe (a log file, a collector), it carries no terminal colours.
#[tokio::test(flavor = "multi_thread")]
async fn a_taken_metrics_port_is_one_line_naming_the_flag_without_colours() {
    let t = TestStack::new("taken-port").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let endpoint = moto().endpoint.clone();
    let mut env = creds("us-east-1");
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let (out, _) = run(
        WORKER,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--topic-arn",
            &t.stack.topic_arn,
            "--ledger-table",
            &table,
            "--metrics-addr",
            &addr,
        ],
        &env,
    )
    .await;
    let line = one_line(&out, &["in use", "--metrics-addr"]);
    assert!(!line.contains('\u{1b}'), "no colours in a pipe: {line:?}");
    assert_eq!(out.status.code(), Some(2));
}

/// `shoal-worker --help` names the commands beside running (`healthcheck`, `schema`), and a
/// duration the producer cannot read says what one looks like.
#[tokio::test]
async fn help_names_every_command_and_a_bad_duration_says_what_one_is() {
    let (out, _) = run(WORKER, &["--help"], &[]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("shoal-worker healthcheck"), "{help}");
    assert!(help.contains("shoal-worker schema"), "{help}");
    let (out, _) = run(PRODUCER, &["jobs", "--since", "yesterday"], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`yesterday` is not a duration") && stderr.contains("30m"),
        "{stderr}"
    );
}

/// A ledger table or a dead-letter queue that does not exist is one line naming the setting
/// that names it, not the job queue's.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_or_dead_letter_queue_names_its_own_setting() {
    let t = TestStack::new("missing").await;
    let endpoint = moto().endpoint.clone();
    let mut env = creds("us-east-1");
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let queue = t.stack.queue_url.as_str();
    let (out, _) = run(
        PRODUCER,
        &[
            "--queue-url",
            queue,
            "--ledger-table",
            "no-such-table",
            "jobs",
        ],
        &env,
    )
    .await;
    one_line(&out, &["no such job ledger table", "SHOAL_LEDGER_TABLE"]);
    let missing = queue.replace("-jobs", "-no-such-dlq");
    let (out, _) = run(
        PRODUCER,
        &["--queue-url", queue, "dlq", "list", "--dlq-url", &missing],
        &env,
    )
    .await;
    let line = one_line(&out, &["dlq_url", "--dlq-url", "does not exist"]);
    assert!(!line.contains("SHOAL_QUEUE_URL"), "{line}");
    assert_eq!(out.status.code(), Some(2));
}
