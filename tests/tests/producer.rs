//! The producer against the emulator's SQS: what arrives on the queue for each kind, bulk
//! submission, FIFO ids, and refusal of invalid input with nothing sent.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use shoal_common::config::QueueTarget;
use shoal_common::job::Canary;
use shoal_common::stack::StackSpec;
use shoal_common::{Job, JobEnvelope, JobId, JobKind};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, example_job, producer_cli, system_attribute, unique, TestStack};

const WAIT: Duration = Duration::from_secs(20);

/// The CLI invocation for `kind`, with the article's parameters, and the params it must
/// yield. A built-in kind without its case fails the tests that go through every kind.
fn cli_case(kind: JobKind) -> (Vec<&'static str>, serde_json::Value) {
    match kind {
        JobKind::RunInstances => (
            vec![
                "run-instances",
                "--image-id",
                "ami-0abcdef1234567890",
                "--min-count",
                "2",
                "--max-count",
                "5",
                "--key-name",
                "ops",
                "--instance-type",
                "t2.micro",
                "--availability-zone",
                "us-east-1d",
                "--disable-api-termination",
                "--tag",
                "Name=web",
            ],
            serde_json::json!({
                "image_id": "ami-0abcdef1234567890", "min_count": 2, "max_count": 5,
                "key_name": "ops", "instance_type": "t2.micro", "availability_zone": "us-east-1d",
                "disable_api_termination": true, "tags": {"Name": "web"}, "wait": false, "dry_run": false,
            }),
        ),
        JobKind::CreateImage => (
            vec![
                "create-image",
                "--instance-id",
                "i-0123456789abcdef0",
                "--name",
                "web (2026-11-24)",
                "--no-reboot",
            ],
            serde_json::json!({
                "instance_id": "i-0123456789abcdef0", "name": "web (2026-11-24)",
                "no_reboot": true, "wait": false, "dry_run": false,
            }),
        ),
        JobKind::Snapshot => (
            vec![
                "snapshot",
                "--instance-id",
                "i-0123456789abcdef0",
                "--name",
                "web",
            ],
            serde_json::json!({
                "instance_id": "i-0123456789abcdef0", "name": "web", "wait": true, "dry_run": false,
            }),
        ),
        JobKind::SetTerminationProtection => (
            vec![
                "set-termination-protection",
                "--instance-id",
                "i-0123456789abcdef0",
                "--instance-id",
                "i-12345678",
                "--disable-api-termination",
                "false",
            ],
            serde_json::json!({
                "instance_ids": ["i-0123456789abcdef0", "i-12345678"], "disable_api_termination": false,
            }),
        ),
        JobKind::CopySnapshot => (
            vec![
                "copy-snapshot",
                "--snapshot-id",
                "snap-0123456789abcdef0",
                "--destination-region",
                "us-west-2",
                "--no-wait",
            ],
            serde_json::json!({
                "snapshot_id": "snap-0123456789abcdef0", "destination_region": "us-west-2",
                "encrypted": false, "wait": false, "dry_run": false,
            }),
        ),
        JobKind::RegisterImage => (
            vec![
                "register-image",
                "--snapshot-id",
                "snap-0123456789abcdef0",
                "--name",
                "web restored",
            ],
            serde_json::json!({
                "snapshot_id": "snap-0123456789abcdef0", "name": "web restored",
                "root_device_name": "/dev/xvda", "architecture": "x86_64",
                "virtualization_type": "hvm", "ena_support": true, "wait": false, "dry_run": false,
            }),
        ),
        JobKind::RestoreVolume => (
            vec![
                "restore-volume",
                "--volume-id",
                "vol-0123456789abcdef0",
                "--availability-zone",
                "us-east-1a",
            ],
            serde_json::json!({
                "volume_id": "vol-0123456789abcdef0", "availability_zone": "us-east-1a",
                "wait": true, "dry_run": false,
            }),
        ),
        JobKind::PruneSnapshots => (
            vec![
                "prune-snapshots",
                "--volume-name",
                "web",
                "--keep-count",
                "7",
                "--keep-for",
                "14d",
                "--tag",
                "backup=nightly",
            ],
            serde_json::json!({
                "volume_name": "web", "keep_count": 7, "keep_for": "14d",
                "tags": {"backup": "nightly"}, "dry_run": false,
            }),
        ),
        JobKind::TerminateInstances => (
            vec![
                "terminate-instances",
                "--instance-id",
                "i-0123456789abcdef0",
                "--dry-run",
            ],
            serde_json::json!({"instance_ids": ["i-0123456789abcdef0"], "dry_run": true}),
        ),
        JobKind::Canary => (
            vec!["canary", "--sleep-ms", "25"],
            serde_json::json!({"sleep_ms": 25}),
        ),
        other => panic!("`{other}` has no CLI case here"),
    }
}

#[tokio::test]
async fn each_kind_enqueued_by_the_cli_arrives_with_its_attributes() {
    let t = TestStack::new("cli-kinds").await;
    for kind in JobKind::builtin() {
        let (args, params) = cli_case(kind);
        let mut argv = vec!["--queue-url", t.stack.queue_url.as_str(), "--json"];
        argv.extend(args);
        let run = producer_cli(&t.sdk, &argv).await;
        assert_eq!(run.code, 0, "{kind}: {}", run.stderr);
        let printed: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).expect("--json output");
        assert_eq!(printed["kind"], kind.as_str());

        let msgs = t.receive(&t.stack.queue_url, 1, WAIT).await;
        assert_eq!(msgs.len(), 1, "{kind}");
        let msg = &msgs[0];
        assert_eq!(attribute(msg, "kind").as_deref(), Some(kind.as_str()));
        assert_eq!(attribute(msg, "schema").as_deref(), Some("1"));
        let body: serde_json::Value =
            serde_json::from_str(msg.body().unwrap_or_default()).expect("json body");
        assert_eq!(body["job_id"], printed["job_id"]);
        assert_eq!(body["kind"], kind.as_str());
        assert_eq!(body["schema_version"], 1);
        assert_eq!(body["params"], params, "{kind}");
        let envelope = JobEnvelope::from_json(msg.body().unwrap_or_default()).expect("valid job");
        assert_eq!(envelope.kind(), kind);
    }
}

#[tokio::test]
async fn each_kind_enqueued_by_the_library_arrives_intact() {
    let t = TestStack::new("lib-kinds").await;
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    for kind in JobKind::builtin() {
        let envelope = JobEnvelope::new(example_job(kind));
        let enqueued = producer
            .enqueue(&envelope, &SendOptions::default())
            .await
            .expect("enqueue");
        assert_eq!(enqueued.job_id, envelope.job_id);

        let msgs = t.receive(&t.stack.queue_url, 1, WAIT).await;
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            attribute(&msgs[0], "kind").as_deref(),
            Some(envelope.kind().as_str())
        );
        assert_eq!(attribute(&msgs[0], "schema").as_deref(), Some("1"));
        assert_eq!(
            msgs[0].message_id.as_deref(),
            Some(enqueued.message_id.as_str())
        );
        let decoded =
            JobEnvelope::from_json(msgs[0].body().unwrap_or_default()).expect("valid job");
        assert_eq!(decoded, envelope, "what arrives is what was sent");
    }
}

#[tokio::test]
async fn bulk_submit_of_1000_jobs_arrives_complete_with_no_duplicates() {
    let t = TestStack::new("bulk").await;
    let mut file = tempfile();
    let kinds: Vec<Job> = JobKind::builtin().into_iter().map(example_job).collect();
    let mut expected = HashSet::new();
    for i in 0..1000 {
        let job_id = format!("bulk-{i:04}");
        let job =
            serde_json::to_value(JobEnvelope::new(kinds[i % kinds.len()].clone())).expect("json");
        // Lines as another language would write them: kind and params, our own id.
        let line =
            serde_json::json!({"job_id": job_id, "kind": job["kind"], "params": job["params"]});
        writeln!(file.1, "{line}").expect("write");
        expected.insert(job_id);
    }
    let path = file.0.to_string_lossy().into_owned();
    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "--json", "submit", &path],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json summary");
    assert_eq!(summary["sent"], 1000);
    assert_eq!(summary["failed"].as_array().map(Vec::len), Some(0));
    assert!(
        summary["calls"].as_u64().unwrap_or(0) >= 100,
        "at most 10 entries a call"
    );
    assert!(
        run.stderr.contains("sent 1000 of 1000 jobs"),
        "{}",
        run.stderr
    );

    let msgs = t
        .receive(&t.stack.queue_url, 1000, Duration::from_secs(240))
        .await;
    let ids: Vec<String> = msgs
        .iter()
        .map(|m| {
            JobEnvelope::from_json(m.body().unwrap_or_default())
                .expect("valid")
                .job_id
                .to_string()
        })
        .collect();
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 1000, "every job arrives once");
    assert_eq!(
        distinct, expected,
        "the jobs that arrive are the jobs submitted"
    );
    std::fs::remove_file(&file.0).ok();
}

/// Invalid inputs: each must be refused with an error naming the field, and send nothing.
#[tokio::test]
async fn each_invalid_input_is_refused_naming_the_field_and_nothing_is_sent() {
    let t = TestStack::new("invalid").await;
    let long = "x".repeat(300);
    let long_key = format!("{}=v", "k".repeat(129));
    let too_many_tags: Vec<String> = (0..50).map(|i| format!("k{i}=v")).collect();
    let long_tag = format!("Name={long}");
    let big_user_data = "x".repeat(16 * 1024 + 1);
    let run_instances = |extra: &[&'static str]| {
        let mut a = vec![
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--instance-type",
            "t2.micro",
        ];
        a.extend_from_slice(extra);
        a
    };
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "run-instances",
                "--image-id",
                "ami-xyz",
                "--instance-type",
                "t2.micro",
            ],
            "params.image_id",
        ),
        (run_instances(&["--min-count", "0"]), "params.min_count"),
        (
            run_instances(&["--min-count", "3", "--max-count", "2"]),
            "params.max_count",
        ),
        (
            vec![
                "run-instances",
                "--image-id",
                "ami-12345678",
                "--instance-type",
                "t2micro",
            ],
            "params.instance_type",
        ),
        (
            run_instances(&["--availability-zone", "us-east-1"]),
            "params.availability_zone",
        ),
        (
            run_instances(&["--tag", "aws:owner=me"]),
            "params.tags.aws:owner",
        ),
        (
            run_instances(&["--tag", "shoal:job-id=x"]),
            "params.tags.shoal:job-id",
        ),
        (
            run_instances(&["--subnet-id", "subnet-nothex!"]),
            "params.subnet_id",
        ),
        (
            run_instances(&["--security-group-id", "sg-1"]),
            "params.security_group_ids[0]",
        ),
        (run_instances(&["--key-name", ""]), "params.key_name"),
        (
            run_instances(&["--tag", "Name=a", "--tag", "Name=b"]),
            "params.tags.Name",
        ),
        (
            vec![
                "create-image",
                "--instance-id",
                "i-12345678",
                "--name",
                "ab",
            ],
            "params.name",
        ),
        (
            vec![
                "create-image",
                "--instance-id",
                "i-12345678",
                "--name",
                "bad*name",
            ],
            "params.name",
        ),
        (
            vec![
                "create-image",
                "--instance-id",
                "i-zz",
                "--name",
                "good name",
            ],
            "params.instance_id",
        ),
        (vec!["snapshot"], "params.volume_id"),
        (vec!["snapshot", "--volume-id", "vol-1"], "params.volume_id"),
        (
            vec!["snapshot", "--volume-name", "db", "--name", "web"],
            "params.name",
        ),
        (
            vec![
                "snapshot",
                "--volume-id",
                "vol-12345678",
                "--instance-id",
                "i-12345678",
            ],
            "params.volume_id",
        ),
        (
            vec![
                "set-termination-protection",
                "--instance-id",
                "web-1",
                "--disable-api-termination",
                "false",
            ],
            "params.instance_ids[0]",
        ),
        (vec!["canary", "--sleep-ms", "43200001"], "params.sleep_ms"),
        (vec!["canary", "--job-id", "has space"], "job_id"),
        // Beyond SQS's 900 s a delay is a schedule, at most a year ahead.
        (vec!["canary", "--delay", "40000000"], "not_before"),
    ];
    let mut tags_case = run_instances(&[]);
    for tag in &too_many_tags {
        tags_case.extend(["--tag", tag.as_str()]);
    }
    cases.push((tags_case, "params.tags"));
    let mut a = run_instances(&[]);
    a.extend(["--tag", long_key.as_str()]);
    cases.push((a, "params.tags.kkkk"));
    let mut a = run_instances(&[]);
    a.extend(["--tag", long_tag.as_str()]);
    cases.push((a, "params.tags.Name"));
    let mut a = run_instances(&[]);
    a.extend(["--user-data", big_user_data.as_str()]);
    cases.push((a, "params.user_data"));
    assert!(cases.len() >= 15);

    for (args, field) in &cases {
        let mut argv = vec!["--queue-url", t.stack.queue_url.as_str()];
        argv.extend(args.iter().copied());
        let run = producer_cli(&t.sdk, &argv).await;
        assert_eq!(run.code, 2, "{args:?} must be refused: {}", run.stderr);
        assert!(
            run.stdout.is_empty(),
            "{args:?} printed a job id: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains(field),
            "{args:?}: error must name `{field}`: {}",
            run.stderr
        );
    }

    // The same refusals in bulk: one bad line stops the whole file, each reported by line.
    let mut file = tempfile();
    let lines = [
        (r#"{"kind":"canary","params":{}}"#, None),
        (
            r#"{"kind":"run-instances","params":{"image_id":"ami-12345678","instance_type":"t2.micro","disable_api_terminaton":true}}"#,
            Some("line 2: params.disable_api_terminaton"),
        ),
        (r#"{"kind":"launch","params":{}}"#, Some("line 3: kind")),
        (
            r#"{"schema_version":2,"kind":"canary"}"#,
            Some("line 4: schema_version"),
        ),
        (
            r#"{"kind":"canary","params":{"sleep_ms":"soon"}}"#,
            Some("line 5: params.sleep_ms"),
        ),
        (r#"{"kind":"canary""#, Some("line 6: body")),
        (
            r#"{"kind":"create-image","params":{"instance_id":"i-12345678"}}"#,
            Some("line 7: params.name"),
        ),
        (
            r#"{"kind":"canary","priority":1}"#,
            Some("line 8: priority"),
        ),
    ];
    for (line, _) in &lines {
        writeln!(file.1, "{line}").expect("write");
    }
    let path = file.0.to_string_lossy().into_owned();
    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "submit", &path],
    )
    .await;
    assert_eq!(run.code, 2);
    for expected in lines.iter().filter_map(|(_, e)| *e) {
        assert!(
            run.stderr.contains(expected),
            "missing `{expected}` in: {}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("nothing was sent"), "{}", run.stderr);
    // `--check` says the same without a queue (and never sends).
    let checked = producer_cli(&t.sdk, &["submit", "--check", &path]).await;
    assert_eq!(checked.code, 2, "{}", checked.stderr);
    for expected in lines.iter().filter_map(|(_, e)| *e) {
        assert!(checked.stderr.contains(expected), "{}", checked.stderr);
    }
    std::fs::remove_file(&file.0).ok();

    // A message over SQS's size limit is refused by the library before any call.
    let padded = format!(
        r#"{{"schema_version":1,"job_id":"big","submitted_at":"2026-11-24T00:00:00Z","kind":"canary","params":{{}}{}}}"#,
        " ".repeat(256 * 1024)
    );
    let err = JobEnvelope::from_json(&padded).expect_err("too large");
    assert!(err.to_string().starts_with("message:"), "{err}");

    assert_eq!(
        t.depth(&t.stack.queue_url).await,
        0,
        "no invalid input was sent"
    );
    assert!(t
        .receive(&t.stack.queue_url, 1, Duration::from_secs(2))
        .await
        .is_empty());
}

#[tokio::test]
async fn fifo_jobs_carry_group_and_deduplication_ids() {
    let mut spec = StackSpec::new(unique("fifo"));
    spec.fifo = true;
    let t = TestStack::with_spec(spec).await;
    assert!(t.stack.queue_url.ends_with(".fifo"));
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));

    let by_kind = JobEnvelope::new(Job::new(Canary::default()));
    producer
        .enqueue(&by_kind, &SendOptions::default())
        .await
        .expect("enqueue");
    let grouped = JobEnvelope::new(Job::new(Canary::default()))
        .with_job_id(JobId::parse("tenant-7:job-1").expect("id"));
    let options = SendOptions {
        message_group_id: Some("tenant-7".into()),
        ..SendOptions::default()
    };
    producer.enqueue(&grouped, &options).await.expect("enqueue");
    // The same job id again: SQS's deduplication drops it.
    producer
        .enqueue(&grouped, &options)
        .await
        .expect("enqueue duplicate");

    let delayed = producer
        .enqueue(
            &JobEnvelope::new(Job::new(Canary::default())),
            &SendOptions {
                delay_seconds: Some(5),
                ..SendOptions::default()
            },
        )
        .await
        .expect_err("FIFO refuses a per-message delay");
    assert!(delayed.to_string().starts_with("delay:"), "{delayed}");

    let msgs = t
        .receive(&t.stack.queue_url, 3, Duration::from_secs(5))
        .await;
    assert_eq!(msgs.len(), 2, "the duplicate was deduplicated");
    let group = |m| system_attribute(m, MessageSystemAttributeName::MessageGroupId);
    let dedup = |m| system_attribute(m, MessageSystemAttributeName::MessageDeduplicationId);
    assert_eq!(
        group(&msgs[0]).as_deref(),
        Some("canary"),
        "default group is the kind"
    );
    assert_eq!(dedup(&msgs[0]).as_deref(), Some(by_kind.job_id.as_str()));
    assert_eq!(group(&msgs[1]).as_deref(), Some("tenant-7"));
    assert_eq!(dedup(&msgs[1]).as_deref(), Some("tenant-7:job-1"));
    // A FIFO group delivers its next message only once the one in flight is gone.
    t.delete(&t.stack.queue_url, &msgs).await;

    // Through the CLI too, with a bulk file: every entry gets its kind as group.
    let mut file = tempfile();
    writeln!(file.1, r#"{{"kind":"canary","job_id":"bulk-fifo-1"}}"#).expect("write");
    let path = file.0.to_string_lossy().into_owned();
    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "submit", &path],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "bulk-fifo-1\n", "each sent job's id");
    let msgs = t
        .receive(&t.stack.queue_url, 1, Duration::from_secs(5))
        .await;
    assert_eq!(group(&msgs[0]).as_deref(), Some("canary"));
    assert_eq!(dedup(&msgs[0]).as_deref(), Some("bulk-fifo-1"));
    std::fs::remove_file(&file.0).ok();
}

#[tokio::test]
async fn a_queue_can_be_named_instead_of_given_by_url_and_a_delay_holds_the_message() {
    let t = TestStack::new("by-name").await;
    let name = t
        .stack
        .queue_url
        .rsplit('/')
        .next()
        .expect("queue name")
        .to_owned();
    let run = producer_cli(&t.sdk, &["--queue-name", &name, "canary", "--delay", "30"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        JobId::parse(run.stdout.trim()).is_ok(),
        "prints the job id: {}",
        run.stdout
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 1);
    assert!(
        t.receive(&t.stack.queue_url, 1, Duration::from_secs(2))
            .await
            .is_empty(),
        "a delayed message is not visible yet"
    );

    let run = producer_cli(&t.sdk, &["--queue-name", "no-such-queue", "canary"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("queue_name"), "{}", run.stderr);
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique("shoal-test")));
    let file = std::fs::File::create(&path).expect("create temp file");
    (path, file)
}

/// `submit -` spools standard input to a file, checks every line, and sends only when all
/// are good: a process fed through a pipe, as a backfill would be.
#[tokio::test]
async fn submit_from_standard_input_checks_every_line_before_sending_any() {
    use tokio::io::AsyncWriteExt;
    const PRODUCER: &str = env!("CARGO_BIN_EXE_shoal-producer-for-tests");
    let t = TestStack::new("stdin").await;
    let run = |input: String| {
        let t = &t;
        async move {
            let mut child = tokio::process::Command::new(PRODUCER)
                .args(["--queue-url", &t.stack.queue_url, "--json", "submit", "-"])
                .envs(shoal_tests::aws_env(&shoal_tests::moto().endpoint))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run the producer");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).await.expect("write");
            drop(stdin);
            child.wait_with_output().await.expect("output")
        }
    };
    let good = |n: usize| format!("{{\"kind\":\"canary\",\"params\":{{\"sleep_ms\":{n}}}}}\n");
    let mut input: String = (0..25).map(good).collect();
    input.push_str("{\"kind\":\"canary\",\"params\":{\"sleep_ms\":\"x\"}}\n");
    input.push_str(&good(0));
    input.push_str("{\"kind\":\"nope\"}\n");
    let out = run(input).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 26: params.sleep_ms") && stderr.contains("line 28: kind"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 invalid job(s); nothing was sent"),
        "{stderr}"
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 0, "nothing was sent");

    let out = run((0..25).map(good).collect()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    assert_eq!(summary["sent"], 25);
    assert_eq!(summary["jobs"].as_array().map(Vec::len), Some(25));
    assert_eq!(
        summary["jobs"][0]["at"]
            .as_str()
            .map(|a| a.starts_with("line ")),
        Some(true)
    );
    assert_eq!(t.depth(&t.stack.queue_url).await, 25);
}

/// `submit` run again with the `--id-seed` the first run printed sends the same job ids (the
/// ledger then runs each job once), a job whose line changed gets a new one, another seed
/// gives other ids; and a line that cannot be read (not UTF-8) is reported by number, the
/// run failing, where it used to end the submission silently.
#[tokio::test]
async fn submit_sent_again_with_its_seed_sends_the_same_ids_and_reports_an_unreadable_line() {
    let t = TestStack::new("submit-seed").await;
    let write = |lines: &[&[u8]]| {
        let mut file = tempfile();
        for line in lines {
            file.1.write_all(line).expect("write");
            file.1.write_all(b"\n").expect("write");
        }
        file
    };
    let canary = |ms: u32| format!(r#"{{"kind":"canary","params":{{"sleep_ms":{ms}}}}}"#);
    let (a, b, c) = (canary(1), canary(2), canary(3));
    let file = write(&[a.as_bytes(), b.as_bytes(), c.as_bytes()]);
    let path = file.0.to_string_lossy().into_owned();
    let ids = |seed: &str, path: &str| {
        let args = [
            "--queue-url".to_owned(),
            t.stack.queue_url.clone(),
            "--json".into(),
            "submit".into(),
            path.to_owned(),
            "--id-seed".into(),
            seed.to_owned(),
        ];
        let sdk = t.sdk.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = producer_cli(&sdk, &args).await;
            assert_eq!(run.code, 0, "{}", run.stderr);
            let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
            summary["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .map(|j| j["job_id"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let first = ids("nightly-7", &path).await;
    assert_eq!(first.len(), 3);
    assert_eq!(ids("nightly-7", &path).await, first, "the same jobs again");
    let other = ids("nightly-8", &path).await;
    assert!(other.iter().all(|id| !first.contains(id)), "{other:?}");
    let edited = write(&[a.as_bytes(), canary(9).as_bytes(), c.as_bytes()]);
    let again = ids("nightly-7", &edited.0.to_string_lossy()).await;
    assert_eq!((&again[0], &again[2]), (&first[0], &first[2]));
    assert_ne!(again[1], first[1], "a changed line is a new job");

    // Valid UTF-8 when checked, then not: the check reads the file as the send does, so
    // an unreadable line is refused before anything is sent.
    let broken = write(&[a.as_bytes(), b"{\"kind\":\"canary\xff\"}", c.as_bytes()]);
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "submit",
            &broken.0.to_string_lossy(),
        ],
    )
    .await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    for f in [file, edited, broken] {
        std::fs::remove_file(&f.0).ok();
    }
}

/// Each subcommand shows and takes only the options it uses: sending options on the commands
/// that send (a job id only where there is one job), none elsewhere, where they are refused
/// as unknown (exit 2) rather than ignored.
#[test]
fn each_subcommand_takes_only_its_own_options() {
    let command = shoal_producer::cli::command();
    let longs = |path: &[&str]| -> Vec<String> {
        let mut sub = &command;
        for name in path {
            sub = sub
                .get_subcommands()
                .find(|s| s.get_name() == *name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        sub.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    };
    let has = |path: &[&str], flag: &str| longs(path).iter().any(|l| l == flag);
    for flag in [
        "job-id",
        "delay",
        "at",
        "group-id",
        "tag-rules",
        "follow",
        "timeout",
    ] {
        assert!(has(&["canary"], flag), "canary --{flag}");
        assert!(has(&["send"], flag), "send --{flag}");
        assert!(!has(&["jobs"], flag), "jobs --{flag}");
        assert!(!has(&["stack", "create"], flag), "stack create --{flag}");
        assert!(!has(&["dlq", "list"], flag), "dlq list --{flag}");
    }
    assert!(has(&["submit"], "delay") && has(&["submit"], "follow"));
    assert!(
        !has(&["submit"], "job-id"),
        "each line names its own job id"
    );
    assert!(has(&["follow"], "timeout") && !has(&["follow"], "delay"));

    for argv in [
        vec![
            "stack", "create", "--follow", "--delay", "5", "--job-id", "z",
        ],
        vec!["jobs", "--timeout", "1m"],
        vec!["submit", "jobs.jsonl", "--job-id", "z"],
        vec!["status", "--at", "2026-12-06T18:00:00Z"],
    ] {
        let err = shoal_producer::cli::parse(std::iter::once("shoal-producer").chain(argv.clone()))
            .expect_err(&format!("{argv:?} is refused"));
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::UnknownArgument,
            "{argv:?}: {err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
    let cli = shoal_producer::cli::parse([
        "shoal-producer",
        "canary",
        "--job-id",
        "j-1",
        "--delay",
        "5",
        "--follow",
        "--timeout",
        "2m",
    ])
    .expect("a sending command takes them");
    assert_eq!(cli.job_id.job_id.as_deref(), Some("j-1"));
    assert_eq!(cli.send.delay, Some(5));
    assert!(cli.follow.follow);
    assert_eq!(cli.follow.timeout, Duration::from_secs(120));
}
