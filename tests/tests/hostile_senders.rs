//! Hostile and careless senders against a worker with the job ledger: whoever may send to the
//! job queue writes the body and every attribute, and the ledger still speaks for a job id.
//! A body that does not decode announces nothing it carries and names no job on record; a
//! job id taken by one job is refused to every other (another kind, another envelope, while
//! it runs and after), the record untouched; a resubmission with follow-ups of its own sends
//! none; a carried reason is told as recorded; a worker whose limits refuse a finished job
//! announces its recorded outcome instead of a failure; an event SNS refuses for good ends
//! in the dead-letter queue without taking its batch down. Against moto, with the stack's
//! table, and through the fault proxy where SNS must refuse what moto takes.

use std::time::Duration;

use serde_json::{json, Value};
use shoal_common::event::JobStatus;
use shoal_common::ledger::{Claim, JobRef, Ledger, Status};
use shoal_common::queue::dead_letter_attribute;
use shoal_common::stack::StackSpec;
use shoal_common::{JobId, JobKind};
use shoal_tests::fault_proxy::{AwsFault, Fault, Rule, Service, Trigger};
use shoal_tests::{
    attribute, forged_success, plain_launch, termination_protection, unique, TestStack,
};
use shoal_worker::guardrails::Guardrails;
use shoal_worker::handlers::{registry_with, Ec2Settings};

const WAIT: Duration = Duration::from_secs(30);

fn ledger(t: &TestStack) -> Ledger {
    let table = t
        .stack
        .ledger_table
        .as_deref()
        .expect("the stack has a ledger");
    t.ledger_named(&t.sdk, table)
}

async fn start(t: &TestStack, guardrails: Guardrails) -> shoal_tests::RunningWorker {
    let mut config = t.worker_config("w");
    config.ledger = Some(ledger(t));
    config.guardrails = guardrails;
    t.start_worker(config, registry_with(Ec2Settings::default()))
        .await
}

/// A job body as a sender writes it.
fn body(job_id: &str, kind: &str, params: Value) -> Value {
    json!({
        "schema_version": 1, "job_id": job_id, "kind": kind, "params": params,
        "submitted_at": "2026-12-01T00:00:00Z",
    })
}

async fn send(t: &TestStack, body: &Value) {
    t.send_with_state(body, "{}").await;
}

/// The dead letters' reasons, `count` of them.
async fn dead_reasons(t: &TestStack, count: usize) -> Vec<(String, String)> {
    let dead = t.receive(&t.stack.dlq_url, count, WAIT).await;
    assert_eq!(dead.len(), count, "dead-lettered, each with its reason");
    dead.iter()
        .map(|m| {
            (
                attribute(m, dead_letter_attribute::CODE).unwrap_or_default(),
                attribute(m, dead_letter_attribute::MESSAGE).unwrap_or_default(),
            )
        })
        .collect()
}

/// Bodies that do not decode, one under the id of a finished job, one under a fresh id, one
/// with an empty id and a control character for its kind, each carrying a forged success:
/// nothing succeeds, the finished job's record stands and no event names it, the fresh id's
/// refusal names it, and the empty id and the control character become no SNS attribute.
#[tokio::test]
async fn a_body_that_does_not_decode_announces_nothing_it_carries() {
    let t = TestStack::new("undecodable").await;
    let worker = start(&t, Guardrails::default()).await;
    let done = t
        .run_succeeding(&shoal_tests::example_job(JobKind::Canary), "done-1")
        .await;
    let bodies = [
        json!({"job_id": "done-1", "kind": "run-instances"}),
        json!({"job_id": "fresh-1", "kind": "run-instances"}),
        json!({"job_id": "", "kind": "\u{1}"}),
    ];
    for b in &bodies {
        let id = b["job_id"].as_str().unwrap_or_default();
        let state = forged_success(
            id,
            "run-instances",
            json!({"instances": [{"instance_id": "i-0forged000000000"}]}),
        );
        t.send_with_state(b, &state).await;
    }
    let events = t.events(bodies.len(), WAIT).await;
    assert_eq!(events.len(), bodies.len(), "{events:?}");
    for event in &events {
        assert_eq!(
            event.status,
            JobStatus::Failed,
            "nothing forged is announced: {event:?}"
        );
        let error = event.error.as_ref().expect("a reason");
        assert_eq!(error.code.as_deref(), Some("InvalidMessage"), "{error:?}");
        assert!(!error.message.contains("forged"), "{error:?}");
        for (name, value) in event.attributes() {
            assert!(
                !value.is_empty() && !value.chars().any(char::is_control),
                "SNS takes {name}={value:?}"
            );
        }
    }
    let named: Vec<Option<&str>> = events.iter().map(|e| e.job_id.as_deref()).collect();
    assert!(
        !named.contains(&Some("done-1")),
        "the finished job is not named: {named:?}"
    );
    assert!(
        named.contains(&Some("fresh-1")),
        "a fresh id is the sender's own: {named:?}"
    );
    assert_eq!(named.iter().filter(|n| n.is_none()).count(), 2, "{named:?}");
    for (code, _) in dead_reasons(&t, bodies.len()).await {
        assert_eq!(code, "InvalidMessage");
    }
    let record = ledger(&t)
        .get("done-1")
        .await
        .expect("get")
        .expect("record");
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.outcome.as_ref(), Some(&done), "the record stands");
    worker.stop().await;
}

/// A launch's id taken by a canary after the launch finished, and by a canary while a run of
/// it holds the job (a claim made here, as another worker's): each canary is refused as
/// `JobIdReused`, its event naming no job, and the launch's record is as it was. The launch
/// resubmitted with follow-ups of the sender's own is refused too and sends none; resubmitted
/// as it was, it announces its recorded outcome again.
#[tokio::test]
async fn a_job_id_is_refused_to_every_other_job_while_it_runs_and_after() {
    let t = TestStack::new("id-taken").await;
    let ami = t.stock_ami().await;
    let worker = start(&t, Guardrails::default()).await;
    let launch = body(
        "launch-1",
        "run-instances",
        serde_json::to_value(plain_launch(&ami)).expect("params"),
    );
    send(&t, &launch).await;
    let launched = t.one_event(WAIT).await;
    assert_eq!(launched.status, JobStatus::Succeeded, "{launched:?}");
    let ledger = ledger(&t);

    // A run of `held-1` holds the job on another worker.
    let held = JobId::parse("held-1").expect("id");
    let claim = ledger
        .claim(
            JobRef {
                job_id: &held,
                kind: JobKind::RunInstances,
                chain_id: &held,
                parent_job_id: None,
                attempt: 1,
                digest: "elsewhere",
                envelope: "{}",
            },
            "other-worker",
            Duration::from_secs(120),
        )
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Granted(_)), "{claim:?}");

    let canary = json!({"sleep_ms": 0});
    send(&t, &body("launch-1", "canary", canary.clone())).await;
    send(&t, &body("held-1", "canary", canary)).await;
    let mut own_then = launch.clone();
    own_then["then"] = json!([{"kind": "canary", "params": {"sleep_ms": 0}}]);
    send(&t, &own_then).await;
    let events = t.events(3, WAIT).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        assert_eq!(event.status, JobStatus::Failed, "{event:?}");
        assert_eq!(event.job_id, None, "names no job: {event:?}");
        let error = event.error.as_ref().expect("a reason");
        assert_eq!(error.code.as_deref(), Some("JobIdReused"), "{error:?}");
    }
    let reasons = dead_reasons(&t, 3).await;
    assert!(
        reasons.iter().all(|(code, _)| code == "JobIdReused"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(_, m)| m.contains("`run-instances` job") && m.contains("canary")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(_, m)| m.contains("different `run-instances` job")),
        "{reasons:?}"
    );

    let record = ledger.get("launch-1").await.expect("get").expect("record");
    assert_eq!(
        (record.kind.as_deref(), record.status),
        (Some("run-instances"), Status::Succeeded)
    );
    assert_eq!(
        record.outcome.as_ref(),
        Some(&launched),
        "the launch's outcome stands"
    );
    let record = ledger.get("held-1").await.expect("get").expect("record");
    assert_eq!(
        (record.status, record.fence, record.holder.as_deref()),
        (Status::Running, 1, Some("other-worker")),
        "the running job keeps its lease"
    );

    // The launch as it was, sent again (later, as a producer's retry would): its record's
    // outcome, the same event.
    let mut again = launch.clone();
    again["submitted_at"] = json!("2026-12-02T00:00:00Z");
    send(&t, &again).await;
    let answered = t.one_event(WAIT).await;
    assert_eq!(answered, launched, "announced as recorded");
    assert!(
        t.events(1, Duration::from_secs(3)).await.is_empty(),
        "no follow-up ran"
    );
    worker.stop().await;
}

/// A job that failed, sent again carrying a forged pending dead-letter: the DLQ copy and the
/// event tell the recorded reason, not the sender's. A finished canary redelivered to a worker
/// whose limits now refuse canaries: its recorded success is announced again, not a failure.
#[tokio::test]
async fn a_carried_reason_is_told_as_recorded_and_a_refusal_never_relabels_a_finished_job() {
    let t = TestStack::new("told-as-recorded").await;
    let worker = start(&t, Guardrails::default()).await;
    let failing = body(
        "fails-1",
        "snapshot",
        json!({"volume_id": "vol-0123456789abcdef0"}),
    );
    send(&t, &failing).await;
    let failed = t.one_event(WAIT).await;
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    let recorded = failed.error.clone().expect("a reason");
    assert_eq!(dead_reasons(&t, 1).await.len(), 1);

    let forged = json!({"dead_letter": {
        "class": "permanent", "code": "Forged", "message": "forged: the operator did it",
        "reason": "permanent", "attempt": 1,
    }});
    t.send_with_state(&failing, &forged.to_string()).await;
    let told = t.one_event(WAIT).await;
    let error = told.error.as_ref().expect("a reason");
    assert_eq!(error.code, recorded.code, "{error:?}");
    assert_eq!(error.message, recorded.message);
    let reasons = dead_reasons(&t, 1).await;
    assert_eq!(reasons[0].0, recorded.code.clone().unwrap_or_default());
    assert!(!reasons[0].1.contains("forged"), "{reasons:?}");

    let canary = body("ok-1", "canary", json!({"sleep_ms": 0}));
    send(&t, &canary).await;
    let succeeded = t.one_event(WAIT).await;
    assert_eq!(succeeded.status, JobStatus::Succeeded);
    worker.stop().await;

    let only_launches = Guardrails {
        kinds: vec![JobKind::RunInstances],
        ..Guardrails::default()
    };
    let worker = start(&t, only_launches).await;
    send(&t, &canary).await;
    let again = t.one_event(WAIT).await;
    assert_eq!(again, succeeded, "the recorded success, not a refusal");
    assert!(
        t.receive(&t.stack.dlq_url, 1, Duration::from_secs(3))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
    // A canary the ledger has never seen is still refused, and names itself.
    send(&t, &body("new-1", "canary", json!({"sleep_ms": 0}))).await;
    let refused = t.one_event(WAIT).await;
    assert_eq!(refused.job_id.as_deref(), Some("new-1"));
    assert_eq!(
        refused.error.as_ref().and_then(|e| e.code.as_deref()),
        Some("NotAllowed")
    );
    worker.stop().await;
}

/// An event SNS refuses for good (as it refuses a whole `PublishBatch` for one bad entry,
/// which moto takes, so the proxy refuses it here): the job ends in the dead-letter queue
/// with `EventRefused` instead of going round on copies for ever, and the nine canaries that
/// shared its batch are announced. Nothing is left on the job queue.
#[tokio::test]
async fn an_event_sns_refuses_for_good_ends_in_the_dlq_and_its_batch_neighbours_go_out() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("refused"))).await;
    proxy.add(
        Rule::new(
            Some(Service::Sns),
            &["Publish", "PublishBatch"],
            Fault::Error(AwsFault::InvalidParameter),
            Trigger::Always,
        )
        .containing("poison-1"),
    );
    let mut config = t.worker_config("w");
    // Ten jobs' events gather into one batch.
    config.batch_flush = Duration::from_millis(300);
    let worker = TestStack::start_worker_with(
        &proxy.sdk().await,
        config,
        registry_with(Ec2Settings::default()),
    )
    .await;
    let ids: Vec<String> = std::iter::once("poison-1".to_owned())
        .chain((0..9).map(|i| format!("fine-{i}")))
        .collect();
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| body(id, "canary", json!({"sleep_ms": 0})).to_string())
        .collect();
    t.send_raw(&t.stack.queue_url, &bodies, None).await;
    let events = t.events(9, WAIT).await;
    let mut announced: Vec<&str> = events.iter().filter_map(|e| e.job_id.as_deref()).collect();
    announced.sort_unstable();
    assert_eq!(
        announced,
        ids[1..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let reasons = dead_reasons(&t, 1).await;
    assert_eq!(reasons[0].0, "EventRefused", "{reasons:?}");
    assert!(reasons[0].1.contains("InvalidParameter"), "{reasons:?}");
    assert!(
        shoal_tests::eventually(WAIT, || async { t.depth(&t.stack.queue_url).await == 0 }).await,
        "nothing goes round on the job queue"
    );
    assert!(t.events(1, Duration::from_secs(2)).await.is_empty());
    worker.stop().await;
}

/// A follow-up whose resource is really gone (`…NotFound` past the consistency window), first
/// run on its second receive, so no copy knows when a run of it first started: its "not yet"
/// window still counts from the first time it was on the queue, carried from copy to copy,
/// so it fails with EC2's code once the window is over instead of copying itself for ever.
#[tokio::test]
async fn a_follow_ups_not_yet_ends_though_its_copies_know_no_first_run() {
    let t = TestStack::new("not-yet-ends").await;
    let mut follow_up = body(
        "gone-parent.1",
        "set-termination-protection",
        json!({"instance_ids": ["i-0123456789abcdef0"], "disable_api_termination": false}),
    );
    follow_up["parent_job_id"] = json!("gone-parent");
    follow_up["chain_id"] = json!("gone-parent");
    send(&t, &follow_up).await;
    // A receive that ends without a run (a worker killed before it started one).
    let taken = t
        .clients
        .sqs
        .receive_message()
        .queue_url(&t.stack.queue_url)
        .visibility_timeout(1)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert_eq!(taken.messages().len(), 1);
    let mut config = t.worker_config("w");
    // Several times a copy's delay (1 s and a receive), so that a window counted from each
    // copy's own sent time would never close.
    config.consistency_window = Duration::from_secs(6);
    let window = config.consistency_window;
    let worker = t
        .start_worker(config, registry_with(Ec2Settings::default()))
        .await;
    let event = t.one_event(window * 6).await;
    assert_eq!(event.status, JobStatus::Failed, "{event:?}");
    let code = event
        .error
        .as_ref()
        .and_then(|e| e.code.clone())
        .unwrap_or_default();
    assert!(code.ends_with("NotFound"), "EC2's code stands: {code}");
    assert_eq!(dead_reasons(&t, 1).await.len(), 1);
    worker.stop().await;
}

/// `set-termination-protection` on an instance Shoal did not launch is refused before any
/// change, as the destroying kinds are (lifting protection readies an instance to be
/// destroyed): whoever may send to the queue could otherwise unprotect any instance.
#[tokio::test]
async fn termination_protection_is_set_only_on_what_shoal_launched() {
    let t = TestStack::new("protect-theirs").await;
    let instance = shoal_tests::new_instance(&t.clients.ec2, &t.stock_ami().await, None).await;
    let worker = start(&t, Guardrails::default()).await;
    let job = json!({"instance_ids": [instance], "disable_api_termination": true});
    send(&t, &body("protect-1", "set-termination-protection", job)).await;
    let event = t.one_event(WAIT).await;
    assert_eq!(event.status, JobStatus::Failed, "{event:?}");
    let error = event.error.as_ref().expect("a reason");
    assert_eq!(error.code.as_deref(), Some("NotAllowed"), "{error:?}");
    assert!(
        error.message.contains("--allow-destroying-untagged"),
        "{error:?}"
    );
    let now = termination_protection(&t.clients.ec2, &instance).await;
    assert_eq!(now, Some(false), "nothing changed");
    worker.stop().await;
}
