//! The operator's commands against the emulator: `status` reads both queues, `dlq list` shows why each job failed and consumes nothing, `dlq redrive`
//! moves jobs back by id, by kind or all, and an interrupted redrive loses nothing.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use shoal_common::config::QueueTarget;
use shoal_common::job::Canary;
use shoal_common::queue::{name_from_url, QueueAttributes};
use shoal_common::{Job, JobEnvelope, JobId};
use shoal_producer::operate::{self, RedriveFilter};
use shoal_producer::{Producer, SendOptions};
use shoal_tests::{attribute, eventually, producer_cli, TestStack};
use shoal_worker::{JobError, Registry};

const WAIT: Duration = Duration::from_secs(30);

fn canary(job_id: &str) -> JobEnvelope {
    JobEnvelope::new(Job::new(Canary::default())).with_job_id(JobId::parse(job_id).expect("id"))
}

async fn enqueue(t: &TestStack, jobs: &[JobEnvelope]) {
    let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url));
    for job in jobs {
        producer
            .enqueue(job, &SendOptions::default())
            .await
            .expect("enqueue");
    }
}

async fn visible(t: &TestStack, url: &str) -> u64 {
    QueueAttributes::fetch(&t.clients.sqs, url)
        .await
        .expect("attributes")
        .visible
}

/// Runs a worker whose canaries all fail permanently until each of `jobs` is dead-lettered,
/// then stops it: the dead-letter queue as a broken handler leaves it.
async fn dead_letter(t: &TestStack, jobs: &[JobEnvelope], malformed: &[&str]) {
    enqueue(t, jobs).await;
    for body in malformed {
        t.clients
            .sqs
            .send_message()
            .queue_url(&t.stack.queue_url)
            .message_body(*body)
            .send()
            .await
            .expect("send");
    }
    let mut registry = Registry::new();
    registry.register_fn(|_, _: Canary| async {
        Err(JobError::permanent("Boom", "the canary handler is broken"))
    });
    let worker = t.start_worker(t.worker_config("breaker"), registry).await;
    let events = t.events(jobs.len() + malformed.len(), WAIT).await;
    assert_eq!(events.len(), jobs.len() + malformed.len());
    worker.stop().await;
}

#[tokio::test]
async fn status_reports_both_queues_and_the_dead_letter_queues_oldest_message() {
    let t = TestStack::new("status").await;
    enqueue(&t, &[canary("s-1"), canary("s-2"), canary("s-3")]).await;
    for n in 0..2 {
        t.clients
            .sqs
            .send_message()
            .queue_url(&t.stack.dlq_url)
            .message_body(format!("dead {n}"))
            .send()
            .await
            .expect("send to the DLQ");
    }
    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "--json", "status"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(visible(&t, &t.stack.dlq_url).await, 2, "status hid nothing");
    let status: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(status["jobs"]["visible"], 3);
    assert_eq!(status["jobs"]["in_flight"], 0);
    assert!(
        status["jobs"]["oldest_message_age_secs"].is_null(),
        "the job queue is never peeked"
    );
    assert_eq!(status["dead_letter"]["url"], t.stack.dlq_url.as_str());
    assert_eq!(status["dead_letter"]["visible"], 2);
    let age = status["dead_letter"]["oldest_message_age_secs"]
        .as_f64()
        .expect("the DLQ's oldest message is sampled");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(status["max_receive_count"], 5);

    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "status",
            "--watch",
            "10ms",
            "--count",
            "2",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let jobs_line = format!("{} ", name_from_url(&t.stack.queue_url));
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(&jobs_line))
        .collect();
    assert_eq!(rows.len(), 2, "two refreshes:\n{}", run.stdout);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        [name_from_url(&t.stack.queue_url), "3", "0", "0", "-"]
    );
}

#[tokio::test]
async fn dlq_list_shows_each_failure_and_redrive_moves_by_job_id_by_kind_and_all() {
    let t = TestStack::new("dlq").await;
    let jobs = [canary("d-1"), canary("d-2"), canary("d-3")];
    dead_letter(&t, &jobs, &["{not json"]).await;

    let run = producer_cli(
        &t.sdk,
        &["--queue-url", &t.stack.queue_url, "--json", "dlq", "list"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let letters: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(letters.len(), 4);
    for id in ["d-1", "d-2", "d-3"] {
        let letter = letters
            .iter()
            .find(|l| l["job_id"] == id)
            .unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(letter["kind"], "canary");
        assert_eq!(letter["error_class"], "permanent");
        assert_eq!(letter["error_code"], "Boom");
        assert_eq!(letter["error"], "the canary handler is broken");
        assert_eq!(letter["attempts"], 1);
    }
    let bad = letters
        .iter()
        .find(|l| l["body"] == "{not json")
        .expect("the malformed message is listed");
    assert!(bad["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        visible(&t, &t.stack.dlq_url).await,
        4,
        "listing consumed nothing and left nothing hidden"
    );

    // By job id: exactly that job, back with its body and the sender's attributes only.
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "dlq",
            "redrive",
            "--job",
            "d-2",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "canary d-2");
    let back = t.receive(&t.stack.queue_url, 1, WAIT).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some(jobs[1].to_json().as_str()));
    assert_eq!(attribute(&back[0], "kind").as_deref(), Some("canary"));
    assert_eq!(attribute(&back[0], "shoal-error-class"), None);
    assert_eq!(attribute(&back[0], "shoal-error"), None);
    t.delete(&t.stack.queue_url, &back).await;
    assert_eq!(visible(&t, &t.stack.dlq_url).await, 3);

    // By kind, at most one: one of the two canaries left.
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "dlq",
            "redrive",
            "--kind",
            "canary",
            "--limit",
            "1",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert_eq!(visible(&t, &t.stack.dlq_url).await, 3 - 1);

    // A kind that is not one is refused, naming it.
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "dlq",
            "redrive",
            "--kind",
            "reboot",
        ],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`reboot` is not a job kind"),
        "{}",
        run.stderr
    );

    // All the rest, the malformed message included.
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "--json",
            "dlq",
            "redrive",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(report["moved"].as_array().map(Vec::len), Some(2));
    assert_eq!(visible(&t, &t.stack.dlq_url).await, 0);
    assert_eq!(visible(&t, &t.stack.queue_url).await, 3);
}

#[tokio::test]
async fn an_interrupted_redrive_loses_no_job_and_a_second_run_finishes_it() {
    let t = TestStack::new("redrive-cut").await;
    let total = 200;
    let ids: Vec<String> = (0..total).map(|n| format!("cut-{n}")).collect();
    fill_dlq(&t, &ids).await;

    let hold = Duration::from_secs(2);
    let all = RedriveFilter::default();
    // Cut short at an arbitrary point, as a killed process would be.
    let cut = tokio::time::timeout(
        Duration::from_millis(250),
        operate::redrive(redrive_at(&t), &all, hold, None, std::future::pending()),
    )
    .await;
    assert!(cut.is_err(), "the first redrive was interrupted mid-way");

    // What the interrupted run held comes back once its hold lapses.
    let released = eventually(WAIT, || async {
        QueueAttributes::fetch(&t.clients.sqs, &t.stack.dlq_url)
            .await
            .expect("attributes")
            .in_flight
            == 0
    })
    .await;
    assert!(released, "the interrupted run's hold lapsed");
    let report = operate::redrive(redrive_at(&t), &all, hold, None, std::future::pending())
        .await
        .expect("second redrive");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(visible(&t, &t.stack.dlq_url).await, 0);

    // An interrupted move may have sent a job without deleting it: it is on the job queue
    // twice, harmless since the job id makes the second run a no-op.
    let on_queue = t.depth(&t.stack.queue_url).await as usize;
    assert!(on_queue >= total, "{on_queue} of {total}");
    let arrived = t.receive(&t.stack.queue_url, on_queue, WAIT).await;
    let found: HashSet<String> = arrived
        .iter()
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(m.body()?).ok()?;
            v["job_id"].as_str().map(str::to_owned)
        })
        .collect();
    let missing: Vec<_> = ids.iter().filter(|id| !found.contains(*id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
}

/// Puts a canary under each of `ids` straight on the dead-letter queue, ten to a call.
async fn fill_dlq(t: &TestStack, ids: &[String]) {
    let bodies: Vec<String> = ids.iter().map(|id| canary(id).to_json()).collect();
    t.send_raw(&t.stack.dlq_url, &bodies, Some("canary")).await;
}

/// A redrive stopped (Ctrl-C) once it has hidden its first page: it says it was
/// interrupted, and nothing stays hidden behind it: the jobs it passed over and those it had
/// not reached are all visible again at once, not a minute later.
#[tokio::test]
async fn a_stopped_redrive_says_so_and_leaves_nothing_hidden() {
    let t = TestStack::new("redrive-stop").await;
    let total = 200;
    let ids: Vec<String> = (0..total).map(|n| format!("stop-{n}")).collect();
    fill_dlq(&t, &ids).await;
    let dlq = t.stack.dlq_url.clone();
    let sqs = t.clients.sqs.clone();
    let first_page_hidden = async move {
        while QueueAttributes::fetch(&sqs, &dlq)
            .await
            .map_or(0, |a| a.in_flight)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // One job chosen: the rest of each page is passed over, hidden for a minute while it
    // pages on.
    let only = RedriveFilter {
        job_ids: vec![ids[total - 1].clone()],
        kinds: vec![],
    };
    let report = operate::redrive(
        redrive_at(&t),
        &only,
        Duration::from_secs(60),
        None,
        first_page_hidden,
    )
    .await
    .expect("redrive");
    assert!(report.interrupted, "{report:?}");
    let attributes = QueueAttributes::fetch(&t.clients.sqs, &t.stack.dlq_url)
        .await
        .expect("attributes");
    assert_eq!(attributes.in_flight, 0, "nothing left hidden");
    assert_eq!(
        attributes.visible as usize + report.moved.len(),
        total,
        "every job not moved is there for the next redrive"
    );
}

/// A redrive from the test stack's dead-letter queue to its job queue, without a ledger.
fn redrive_at(t: &TestStack) -> operate::Redrive<'_> {
    operate::Redrive {
        sqs: &t.clients.sqs,
        dlq_url: &t.stack.dlq_url,
        queue_url: &t.stack.queue_url,
        ledger: None,
    }
}

/// `events --count 3` prints three events and takes no more than those three off the
/// shared events queue: the other seven are still there for the next reader.
#[tokio::test]
async fn events_count_consumes_exactly_what_it_prints() {
    let t = TestStack::new("events-count").await;
    for i in 0..10 {
        let event = json!({"job_id": format!("e-{i}"), "kind": "canary", "status": "succeeded", "attempts": 1});
        t.clients
            .sqs
            .send_message()
            .queue_url(&t.stack.events_queue_url)
            .message_body(event.to_string())
            .send()
            .await
            .expect("send");
    }
    let run = producer_cli(
        &t.sdk,
        &[
            "--queue-url",
            &t.stack.queue_url,
            "events",
            "--events-queue-url",
            &t.stack.events_queue_url,
            "--count",
            "3",
            "--idle",
            "3s",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    assert_eq!(
        visible(&t, &t.stack.events_queue_url).await,
        7,
        "the seven not printed stay on the queue, visible"
    );
}

/// What can never run leaves the dead-letter queue by `dlq delete` or `dlq purge`: a body with
/// no job id by its message id, a job by its id; an id on no letter is said (exit 1) and the
/// letters not named stay. Purge is refused without `--yes` (exit 2), then empties the queue.
#[tokio::test]
async fn dead_letters_are_deleted_by_message_or_job_id_and_purged_with_yes() {
    let t = TestStack::new("dlq-delete").await;
    dead_letter(
        &t,
        &[canary("doomed-1"), canary("doomed-2")],
        &["not a job at all"],
    )
    .await;
    let queue = ["--queue-url", t.stack.queue_url.as_str()];
    let listed = producer_cli(&t.sdk, &[&queue[..], &["--json", "dlq", "list"]].concat()).await;
    let letters: Vec<serde_json::Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(letters.len(), 3, "{listed:?}");
    let nameless = letters
        .iter()
        .find(|l| l["job_id"].is_null())
        .and_then(|l| l["message_id"].as_str())
        .expect("the body without a job id")
        .to_owned();

    let deleted = producer_cli(
        &t.sdk,
        &[
            &queue[..],
            &["dlq", "delete", &nameless, "doomed-1", "never-there"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(deleted.code, 1, "one id was on no letter: {deleted:?}");
    assert_eq!(deleted.stdout.lines().count(), 2, "{deleted:?}");
    assert!(deleted.stdout.contains(&nameless), "{deleted:?}");
    assert!(deleted.stdout.contains("doomed-1"), "{deleted:?}");
    assert!(
        deleted
            .stderr
            .contains("not on the dead-letter queue: never-there"),
        "{deleted:?}"
    );
    assert!(
        eventually(WAIT, || async { visible(&t, &t.stack.dlq_url).await == 1 }).await,
        "the one not named is back, visible"
    );

    let refused = producer_cli(&t.sdk, &[&queue[..], &["dlq", "purge"]].concat()).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("--yes") && refused.stderr.contains("about 1"),
        "{refused:?}"
    );
    assert_eq!(
        visible(&t, &t.stack.dlq_url).await,
        1,
        "nothing purged without --yes"
    );
    let purged = producer_cli(&t.sdk, &[&queue[..], &["dlq", "purge", "--yes"]].concat()).await;
    assert_eq!(purged.code, 0, "{purged:?}");
    assert!(purged.stdout.contains("about 1 message"), "{purged:?}");
    assert!(
        eventually(WAIT, || async {
            let a = QueueAttributes::fetch(&t.clients.sqs, &t.stack.dlq_url)
                .await
                .expect("attributes");
            a.visible + a.in_flight == 0
        })
        .await
    );
}
