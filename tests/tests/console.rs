//! The web console in a real browser (Debian's Chromium over WebDriver) against moto, a worker
//! with the ledger and the console: the demo's chain appears with its steps; a failed job whose
//! tag and failure reason hold `<script>` shows them as text, and is retried from its page once
//! its cause is fixed and turns succeeded; a kind is paused and resumed; a queued job is
//! cancelled. A screenshot of each page is written under the target directory
//! (`tmp/console-screenshots/`) for a person to look at.
//!
//! The console's guards (host, origin, form token, read-only, token and cookie) are tested
//! over plain HTTP below: a browser would refuse to send most of what they refuse.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::ledger::Status;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobKind};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::console::{Browser, RunningConsole};
use shoal_tests::{eventually, unique, RunningWorker, TestStack};
use shoal_worker::handlers::{registry_with, Ec2Settings};

const WAIT: Duration = Duration::from_secs(90);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

fn producer(t: &TestStack) -> Producer {
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
        .with_ledger(t.ledger_named(&t.sdk, table))
}

async fn worker(t: &TestStack) -> RunningWorker {
    let config = t.worker_config_with_ledger("console-worker");
    t.start_worker(config, registry_with(Ec2Settings::default()))
        .await
}

async fn status_of(t: &TestStack, id: &str) -> Option<Status> {
    let table = t.stack.ledger_table.as_deref().expect("a ledger");
    t.ledger_named(&t.sdk, table)
        .get(id)
        .await
        .expect("read the ledger")
        .map(|r| r.status)
}

/// The article's chain (the demo's) for this stack: an image of its own, a key pair of its own.
async fn demo_chain(t: &TestStack, job_id: &str) -> JobEnvelope {
    let text = std::fs::read_to_string(shoal_tests::repo_path(
        "producer/examples/article-flow.json",
    ))
    .expect("the example chain");
    let mut request: serde_json::Value = serde_json::from_str(&text).expect("json");
    let key = unique("console-key");
    t.clients
        .ec2
        .create_key_pair()
        .key_name(&key)
        .send()
        .await
        .expect("key pair");
    request["params"]["image_id"] = json!(t.stock_ami().await);
    request["params"]["key_name"] = json!(key);
    request["job_id"] = json!(job_id);
    JobEnvelope::from_request(request).expect("the example is a valid chain")
}

#[tokio::test]
async fn the_demo_chain_appears_and_a_failed_job_is_retried_from_its_page() {
    let t = TestStack::new("console").await;
    let _worker = worker(&t).await;
    let producer = producer(&t);
    let console = RunningConsole::start(&t).await;

    // The demo's chain, run to its end.
    let root = "console-demo";
    producer
        .enqueue(&demo_chain(&t, root).await, &SendOptions::default())
        .await
        .expect("enqueue the chain");
    // A snapshot of a volume that does not exist yet, named (and tagged) by a hostile hand.
    let hostile = "<script>alert('name')</script>";
    let failing = "console-fails-first";
    let job = Job::decode(
        JobKind::Snapshot,
        json!({ "volume_name": hostile, "tags": { "note": "<script>alert('tag')</script>" } }),
    )
    .expect("a valid snapshot");
    producer
        .enqueue(
            &JobEnvelope::new(job).with_job_id(shoal_common::JobId::parse(failing).expect("id")),
            &SendOptions::default(),
        )
        .await
        .expect("enqueue the failing job");
    assert!(
        eventually(WAIT, || async {
            status_of(&t, failing).await == Some(Status::Failed)
        })
        .await,
        "the snapshot fails: no volume has that name"
    );

    let browser = Browser::start(&shots()).await;

    // The chain: every step under the one whose success sent it, each succeeded.
    let page = console.url(&format!("/jobs/{root}"));
    assert!(
        browser
            .reload_until(&page, "terminate-instances", WAIT)
            .await,
        "the chain's last step appears: {}",
        browser.text().await
    );
    let steps = browser
        .client
        .find_all(fantoccini::Locator::Css("ul.tree li"))
        .await
        .expect("the chain tree");
    assert_eq!(steps.len(), 5, "{}", browser.text().await);
    assert!(
        browser
            .reload_until(&page, "Nothing: it succeeded", WAIT)
            .await
    );
    let nested = browser
        .client
        .find_all(fantoccini::Locator::Css(
            "ul.tree > li > ul > li > ul > li > ul > li",
        ))
        .await
        .expect("the tree's depth");
    assert_eq!(nested.len(), 1, "terminate-instances is four levels down");
    for kind in [
        "run-instances",
        "create-image",
        "snapshot",
        "set-termination-protection",
        "terminate-instances",
    ] {
        assert!(browser.text().await.contains(kind), "{kind} in the tree");
    }
    assert!(
        eventually(WAIT, || async {
            let table = t.stack.ledger_table.as_deref().expect("a ledger");
            let chain = t
                .ledger_named(&t.sdk, table)
                .chain(root)
                .await
                .expect("the chain");
            chain.len() == 5 && chain.iter().all(|s| s.status == Status::Succeeded)
        })
        .await
    );
    assert!(
        browser.reload_until(&page, "Result", WAIT).await,
        "the launch's result"
    );
    browser.screenshot("job-chain").await;

    // The overview, after the chain and the failure.
    browser.goto(&console.url("/")).await;
    let overview = browser.text().await;
    assert!(overview.contains("Queues"), "{overview}");
    assert!(
        overview.contains("Finished in the last hour: 6"),
        "{overview}"
    );
    let bars = browser
        .client
        .find_all(fantoccini::Locator::Css("svg.chart rect.bar"))
        .await
        .expect("the chart");
    assert!(!bars.is_empty(), "the chart has bars");
    browser.screenshot("overview").await;

    // The jobs, by status: the failed one alone.
    browser
        .goto(&console.url("/jobs?status=failed&since=1h"))
        .await;
    let listed = browser.text().await;
    assert!(
        listed.contains(failing) && !listed.contains(root),
        "{listed}"
    );
    browser.goto(&console.url("/jobs")).await;
    let listed = browser.text().await;
    assert!(
        listed.contains(failing) && listed.contains(root),
        "{listed}"
    );
    assert!(
        listed.contains("6 job(s)"),
        "the chain's five, the failed one: {listed}"
    );
    browser.screenshot("jobs").await;

    // The failed job: what the sender wrote is shown as text, never run as script.
    let failed_page = console.url(&format!("/jobs/{failing}"));
    browser.goto(&failed_page).await;
    let text = browser.text().await;
    assert!(
        text.contains(&format!("no volume has the Name tag `{hostile}`")),
        "{text}"
    );
    assert!(text.contains("<script>alert('tag')</script>"), "{text}");
    let scripts = browser
        .client
        .find_all(fantoccini::Locator::Css("script"))
        .await
        .expect("look for scripts");
    assert!(scripts.is_empty(), "no script element on the page");
    browser.screenshot("job-failed").await;

    // The dead letters: the failed job is there, with its reason.
    browser.goto(&console.url("/dead-letters")).await;
    assert!(
        browser
            .reload_until(&console.url("/dead-letters"), failing, WAIT)
            .await
    );
    assert!(browser.text().await.contains("no volume has the Name tag"));
    browser.screenshot("dead-letters").await;

    // Fixed: the volume exists now. Retried from the job's page, it runs again and succeeds.
    shoal_tests::new_volume_tagged(&t.clients.ec2, "us-east-1a", &[("Name", hostile)]).await;
    browser.goto(&failed_page).await;
    browser.click_button("div.verbs", "Retry").await;
    let said = browser.text().await;
    assert!(said.contains(&format!("{failing} run 2 queued")), "{said}");
    assert!(
        browser
            .reload_until(&failed_page, "Nothing: it succeeded", WAIT)
            .await,
        "the rerun succeeds: {}",
        browser.text().await
    );
    let text = browser.text().await;
    assert!(text.contains("run 2"), "{text}");
    let runs = browser
        .client
        .find_all(fantoccini::Locator::Css("section.runs tbody tr"))
        .await
        .expect("the runs");
    assert_eq!(
        runs.len(),
        2,
        "the failed run is kept beside the second: {text}"
    );
    browser.screenshot("job-retried").await;

    // Its dead letter is left over (a retry runs the job from its record): deleted from the
    // dead letters' page, after a confirmation.
    browser.goto(&console.url("/dead-letters")).await;
    browser.click_button("table.letters", "Delete").await;
    assert!(browser
        .text()
        .await
        .contains("Delete 1 dead letter(s) for good?"));
    assert_eq!(
        t.depth(&t.stack.dlq_url).await,
        1,
        "not before it is confirmed"
    );
    browser.click_button("form.confirm", "Yes, do it").await;
    let said = browser.text().await;
    assert!(said.contains("Deleted") && said.contains(failing), "{said}");
    assert!(
        eventually(WAIT, || async { t.depth(&t.stack.dlq_url).await == 0 }).await,
        "the dead letter is gone"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_kind_is_paused_and_resumed_and_a_queued_job_cancelled_from_the_page() {
    let t = TestStack::with_spec(StackSpec::new(unique("console-verbs"))).await;
    let worker = worker(&t).await;
    let producer = producer(&t);
    let console = RunningConsole::start(&t).await;
    let browser = Browser::start(&shots()).await;

    browser.goto(&console.url("/")).await;
    browser.click_button("tr#kind-canary", "Pause").await;
    assert!(
        browser.text().await.contains("Paused canary"),
        "{}",
        browser.text().await
    );
    let ledger = producer.ledger().expect("a ledger").clone();
    assert!(ledger
        .paused()
        .await
        .expect("read")
        .kinds
        .contains("canary"));

    // A canary sent once the worker has seen the pause waits: workers hold paused kinds.
    assert!(
        eventually(WAIT, || async {
            worker
                .metrics
                .kind_paused
                .with_label_values(&["canary"])
                .get()
                == 1
        })
        .await,
        "the worker sees the pause"
    );
    let held = "console-held-canary";
    let canary = JobEnvelope::new(Job::new(shoal_common::job::Canary { sleep_ms: 1 }))
        .with_job_id(shoal_common::JobId::parse(held).expect("id"));
    producer
        .enqueue(&canary, &SendOptions::default())
        .await
        .expect("enqueue");
    browser.goto(&console.url("/")).await;
    let row = browser
        .client
        .find(fantoccini::Locator::Css("tr#kind-canary"))
        .await
        .expect("the canary row")
        .text()
        .await
        .expect("its text");
    assert!(row.contains("paused"), "{row}");
    browser.screenshot("overview-paused").await;

    // The queued job, cancelled from its page.
    let job_page = console.url(&format!("/jobs/{held}"));
    browser.goto(&job_page).await;
    assert!(
        browser.text().await.contains("Waiting on the queue"),
        "{}",
        browser.text().await
    );
    browser.click_button("div.verbs", "Cancel").await;
    assert!(
        browser
            .text()
            .await
            .contains(&format!("{held} cancelled: it will not run")),
        "{}",
        browser.text().await
    );
    assert_eq!(status_of(&t, held).await, Some(Status::Cancelled));

    // Resumed: the worker receives the canary and announces it cancelled, never running it.
    browser.goto(&console.url("/")).await;
    browser.click_button("tr#kind-canary", "Resume").await;
    assert!(
        browser.text().await.contains("Resumed canary"),
        "{}",
        browser.text().await
    );
    assert!(ledger.paused().await.expect("read").is_empty());
    let event = t.one_event(WAIT).await;
    assert_eq!(event.job_id.as_deref(), Some(held));
    assert_eq!(event.status, JobStatus::Cancelled, "{event:?}");
    browser.goto(&job_page).await;
    assert!(browser.text().await.contains("Nothing: it was cancelled"));
    browser.screenshot("job-cancelled").await;

    // Many at once asks first: pausing every kind shows a confirmation, and nothing changes
    // until it is confirmed.
    browser.goto(&console.url("/")).await;
    browser.click_button("div.bulk", "Pause all kinds").await;
    assert!(browser.text().await.contains("Pause every kind?"));
    assert!(
        !ledger.paused().await.expect("read").all,
        "not before it is confirmed"
    );
    browser.screenshot("confirm").await;
    browser.click_button("form.confirm", "Yes, do it").await;
    assert!(ledger.paused().await.expect("read").all);
    browser.close().await;
}

/// One HTTP/1.1 exchange with the console: status, head (header names lower-cased) and body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// POSTs `body` to `path` as the console's own page would: from its origin.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String, String) {
    let origin = format!("http://{addr}");
    http(addr, "POST", path, &[("Origin", origin.as_str())], body).await
}

/// The form token a page carries.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form token") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("its value")
        .to_owned()
}

#[tokio::test]
async fn the_console_acts_only_for_its_own_pages_and_shows_no_verb_when_read_only() {
    let t = TestStack::new("console-guard").await;
    let console = RunningConsole::start(&t).await;
    let ledger = producer(&t).ledger().expect("a ledger").clone();
    let origin = format!("http://{}", console.addr);

    // Another name for this host (a site that rebinds its own name to 127.0.0.1) is refused.
    let (code, _, _) = http(console.addr, "GET", "/", &[("Host", "evil.example")], "").await;
    assert_eq!(code, 421);

    let (code, head, page) = http(console.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");
    let token = csrf_of(&page);
    let pause = format!("kind=canary&csrf={token}");

    // No Origin, another site's Origin, no form token, a stale one: each refused, nothing paused.
    for (headers, body) in [
        (vec![], pause.clone()),
        (vec![("Origin", "http://evil.example")], pause.clone()),
        (vec![("Origin", origin.as_str())], "kind=canary".to_owned()),
        (
            vec![("Origin", origin.as_str())],
            "kind=canary&csrf=0000".to_owned(),
        ),
    ] {
        let (code, _, said) = http(console.addr, "POST", "/actions/pause", &headers, &body).await;
        assert_eq!(code, 403, "{headers:?} {body}: {said}");
    }
    assert!(ledger.paused().await.expect("read").is_empty());
    let (code, _, said) = post(console.addr, "/actions/pause", &pause).await;
    assert_eq!(code, 200, "{said}");
    assert!(ledger
        .paused()
        .await
        .expect("read")
        .kinds
        .contains("canary"));
    // A kind the console does not know is refused by name.
    let (code, _, said) = post(
        console.addr,
        "/actions/pause",
        &format!("kind=%3Cb%3E&csrf={token}"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(said.contains("kind: `&lt;b&gt;` is not a kind"), "{said}");

    // Read-only: the same pages, not one form to act with, and every verb refused.
    let read_only = RunningConsole::with(&t, |c| c.read_only = true).await;
    let (code, _, page) = http(read_only.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("read-only") && !page.contains("/actions/"),
        "{page}"
    );
    let (code, _, _) = post(read_only.addr, "/actions/resume", "kind=canary&csrf=x").await;
    assert_eq!(code, 403);
    assert!(ledger
        .paused()
        .await
        .expect("read")
        .kinds
        .contains("canary"));

    // With a token: the pages ask for it; the right one sets a strict, script-proof cookie.
    let secret = "a-token-of-sixteen-or-more";
    let guarded = RunningConsole::with(&t, |c| c.auth_token = Some(secret.into())).await;
    let (code, head, _) = http(guarded.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 303);
    assert!(head.contains("location: /login"), "{head}");
    let (code, _, _) = post(guarded.addr, "/login", "token=wrong").await;
    assert_eq!(code, 401);
    let (code, head, _) = post(guarded.addr, "/login", &format!("token={secret}")).await;
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .to_owned();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(secret),
        "the cookie is a session, not the token"
    );
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let (code, _, _) = http(guarded.addr, "GET", "/", &[("Cookie", &session)], "").await;
    assert_eq!(code, 200);
    let bearer = format!("Bearer {secret}");
    let (code, _, _) = http(
        guarded.addr,
        "GET",
        "/jobs",
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(code, 200);

    // Beyond loopback only with a token: refused before anything listens (exit 2).
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let refused = shoal_tests::producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--ledger-table",
            &table,
            "console",
            "--listen",
            "0.0.0.0:0",
        ],
    )
    .await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("--auth-token"), "{refused:?}");
}

/// AWS's bad days reach the console as pages that say what failed, and no verb claims more
/// than it did: with the ledger's queries down the overview answers 502 naming the call, and
/// recovers when they do; a retry whose send fails says the job was opened but not sent, and
/// the same button pressed again once SQS is back sends it, and it runs once, as run 2.
#[tokio::test]
async fn on_a_bad_day_the_console_says_what_failed_and_a_retry_not_sent_is_sent_again() {
    use shoal_tests::fault_proxy::{AwsFault, Rule, Service};

    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("console-bad-day"))).await;
    // The worker, watching as an observer, meets no fault; its snapshot (a kind that takes a
    // lease) fails for good once.
    let (registry, _) = shoal_tests::failing_once::<shoal_common::job::Snapshot>();
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let config = t.worker_config_with_ledger("bad-day-worker");
    let _worker = t.start_worker(config, registry).await;
    let job = "console-bad-day-snapshot";
    producer(&t)
        .enqueue(
            &JobEnvelope::new(Job::new(shoal_tests::snapshot_of_volume_named("any")))
                .with_job_id(shoal_common::JobId::parse(job).expect("id")),
            &SendOptions::default(),
        )
        .await
        .expect("enqueue");
    let failed = t.one_event(WAIT).await;
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    assert!(
        eventually(WAIT, || async {
            status_of(&t, job).await == Some(Status::Failed)
        })
        .await
    );

    // The console reaches AWS through the proxy, and meets its faults.
    let sdk = proxy.sdk().await;
    let clients = shoal_common::aws::AwsClients::new(&sdk);
    let console = RunningConsole::with(&t, |c| {
        c.producer = Producer::new(clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
            .with_ledger(t.ledger_named(&sdk, &table));
        c.clients = clients.clone();
    })
    .await;
    proxy.add(Rule::outage(
        Service::DynamoDb,
        &["Query"],
        AwsFault::ServiceUnavailable,
        Duration::from_secs(3600),
    ));
    let (code, _, page) = http(console.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 502, "{page}");
    assert!(page.contains("Query"), "the page names the call: {page}");
    proxy.heal();
    let (code, _, page) = http(console.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 200, "{page}");

    let (_, _, job_page) = http(console.addr, "GET", &format!("/jobs/{job}"), &[], "").await;
    let retry = format!("job={job}&csrf={}", csrf_of(&job_page));
    proxy.add(Rule::outage(
        Service::Sqs,
        &["SendMessageBatch"],
        AwsFault::ServiceUnavailable,
        Duration::from_secs(3600),
    ));
    let (code, _, said) = post(console.addr, "/actions/retry", &retry).await;
    assert_eq!(code, 200, "{said}");
    assert!(
        said.contains("opened for its next run, but not sent"),
        "{said}"
    );
    assert!(
        !said.contains("queued"),
        "nothing claims it was sent: {said}"
    );
    proxy.heal();
    let (_, _, said) = post(console.addr, "/actions/retry", &retry).await;
    assert!(said.contains(&format!("{job}</a> run 2 queued")), "{said}");
    let event = t.one_event(WAIT).await;
    assert_eq!(event.job_id.as_deref(), Some(job));
    assert_eq!(event.status, JobStatus::Succeeded, "{event:?}");
    let record = t.ledger_named(&t.sdk, &table).get(job).await.expect("read");
    assert_eq!(event.run, 2, "{event:?} {record:?}");
}

/// The `console` command as an operator starts it: the binary prints its address (port 0:
/// any free one) and serves the overview there; a second console on that address is refused
/// with exit 2, naming `--listen`; without a ledger it says which setting is missing.
#[tokio::test]
async fn the_console_command_prints_its_address_and_a_taken_port_is_refused() {
    use tokio::io::AsyncBufReadExt;

    const PRODUCER: &str = env!("CARGO_BIN_EXE_shoal-producer-for-tests");
    let t = TestStack::new("console-cli").await;
    let table = t.stack.ledger_table.clone().expect("a ledger");
    let env = shoal_tests::aws_env(&shoal_tests::moto().endpoint);
    let mut console = tokio::process::Command::new(PRODUCER)
        .args(["--queue-url", &t.stack.queue_url, "--ledger-table", &table])
        .args(["console", "--listen", "127.0.0.1:0"])
        .envs(env.clone())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the console");
    let stdout = console.stdout.take().expect("its output");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line within the wait")
        .expect("read")
        .expect("the address line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("an address in {line:?}"));
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    let (code, _, page) = http(addr, "GET", "/", &[], "").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Overview"), "{page}");

    let taken = tokio::process::Command::new(PRODUCER)
        .args(["--queue-url", &t.stack.queue_url, "--ledger-table", &table])
        .args(["console", "--listen", &addr.to_string()])
        .envs(env.clone())
        .output()
        .await
        .expect("run a second console");
    let said = String::from_utf8_lossy(&taken.stderr);
    assert_eq!(taken.status.code(), Some(2), "{said}");
    assert!(
        said.contains("is in use") && said.contains("--listen"),
        "{said}"
    );

    let no_ledger = tokio::process::Command::new(PRODUCER)
        .args([
            "--queue-url",
            &t.stack.queue_url,
            "console",
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env)
        .env_remove("SHOAL_LEDGER_TABLE")
        .output()
        .await
        .expect("run a console without a ledger");
    let said = String::from_utf8_lossy(&no_ledger.stderr);
    assert_eq!(no_ledger.status.code(), Some(2), "{said}");
    assert!(said.contains("SHOAL_LEDGER_TABLE"), "{said}");
    console.kill().await.expect("stop the console");
}
