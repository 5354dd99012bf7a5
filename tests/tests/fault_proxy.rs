//! The fault proxy itself: each fault it injects reaches the real AWS SDK the way AWS's own
//! would, so the tests built on it prove what they claim.

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use shoal_common::aws::AwsClients;
use shoal_common::stack::StackSpec;
use shoal_tests::fault_proxy::{AwsFault, Fault, FaultProxy, Rule, Service, Trigger};
use shoal_tests::{new_snapshot, new_volume, sdk_config, snapshots_where, unique, TestStack};

async fn worker_clients(proxy: &FaultProxy) -> AwsClients {
    AwsClients::new(&sdk_config(&proxy.endpoint).await)
}

fn code<E: aws_sdk_sqs::error::ProvideErrorMetadata>(e: &E) -> Option<String> {
    e.code().map(str::to_owned)
}

#[tokio::test]
async fn each_service_answers_throttling_in_its_own_protocol_and_the_sdk_retries_it() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("proxy-codes"))).await;
    let clients = worker_clients(&proxy).await;
    proxy.add(Rule::new(
        None,
        &[],
        Fault::Error(AwsFault::Throttling),
        Trigger::Always,
    ));

    let sqs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&t.stack.queue_url)
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(code(&sqs).as_deref(), Some("ThrottlingException"));
    let sns = clients
        .sns
        .list_topics()
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(code(&sns).as_deref(), Some("Throttling"));
    let ec2 = clients
        .ec2
        .describe_instances()
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(code(&ec2).as_deref(), Some("RequestLimitExceeded"));

    // The SDK's standard retry mode tried each three times before giving up.
    for (service, op) in [
        (Service::Sqs, "GetQueueAttributes"),
        (Service::Sns, "ListTopics"),
        (Service::Ec2, "DescribeInstances"),
    ] {
        let count = proxy.count(service, op);
        assert_eq!((count.arrived, count.forwarded), (3, 0), "{op}");
    }

    proxy.heal();
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(&t.stack.queue_url)
        .send()
        .await
        .expect("healed");
}

#[tokio::test]
async fn a_partial_batch_failure_sends_only_some_entries_and_reports_the_rest() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("proxy-batch"))).await;
    let clients = worker_clients(&proxy).await;
    proxy.add(Rule::new(
        None,
        &["SendMessageBatch", "DeleteMessageBatch", "PublishBatch"],
        Fault::FailOddEntries,
        Trigger::Always,
    ));

    let entries: Vec<SendMessageBatchRequestEntry> = (0..4)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("e{i}"))
                .message_body(format!("m{i}"))
                .build()
                .expect("entry")
        })
        .collect();
    let out = clients
        .sqs
        .send_message_batch()
        .queue_url(&t.stack.queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("batch call");
    let mut failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
    failed.sort();
    assert_eq!(failed, ["e1", "e3"]);
    assert!(out.failed().iter().all(|f| !f.sender_fault()));
    assert_eq!(out.successful().len(), 2);
    let received = t
        .receive(&t.stack.queue_url, 2, Duration::from_secs(5))
        .await;
    let mut bodies: Vec<&str> = received.iter().filter_map(|m| m.body()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["m0", "m2"],
        "only the even entries reached the queue"
    );

    let deletes: Vec<DeleteMessageBatchRequestEntry> = received
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("d{i}"))
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .expect("entry")
        })
        .collect();
    let out = clients
        .sqs
        .delete_message_batch()
        .queue_url(&t.stack.queue_url)
        .set_entries(Some(deletes))
        .send()
        .await
        .expect("batch call");
    assert_eq!(out.failed().len(), 1);
    assert_eq!(out.failed()[0].id(), "d1");

    let publishes: Vec<aws_sdk_sns::types::PublishBatchRequestEntry> = (0..4)
        .map(|i| {
            aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                .id(format!("p{i}"))
                .message(format!("event {i}"))
                .build()
                .expect("entry")
        })
        .collect();
    let out = clients
        .sns
        .publish_batch()
        .topic_arn(&t.stack.topic_arn)
        .set_publish_batch_request_entries(Some(publishes))
        .send()
        .await
        .expect("batch call");
    let mut failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
    failed.sort();
    assert_eq!(failed, ["p1", "p3"]);
    assert_eq!(out.successful().len(), 2);
    let events = t
        .receive(&t.stack.events_queue_url, 4, Duration::from_secs(3))
        .await;
    assert_eq!(events.len(), 2, "only two events were published");
}

#[tokio::test]
async fn new_ec2_resources_stay_hidden_for_the_window_then_appear() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("proxy-ec"))).await;
    let clients = worker_clients(&proxy).await;
    proxy.eventual_consistency(Duration::from_secs(3), Duration::from_secs(3));
    let ami = t.stock_ami().await;
    let tag = unique("hidden");
    let out = clients
        .ec2
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("probe")
                        .value(&tag)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("launch");
    let id = out.instances()[0].instance_id().expect("id").to_owned();

    let by_id = clients
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect_err("not yet visible");
    assert_eq!(code(&by_id).as_deref(), Some("InvalidInstanceID.NotFound"));
    let by_tag = clients
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:probe").values(&tag).build())
        .send()
        .await
        .expect("a filtered lookup answers");
    assert!(
        by_tag.reservations().is_empty(),
        "an empty list, as AWS answers"
    );
    let observed = t
        .clients
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("the observer sees the truth");
    assert_eq!(observed.reservations().len(), 1);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_tag = clients
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:probe").values(&tag).build())
        .send()
        .await
        .expect("lookup");
    assert_eq!(by_tag.reservations().len(), 1, "visible after the window");
    assert_eq!(proxy.creates_with("RunInstances", &tag), 1);
}

#[tokio::test]
async fn a_truncated_answer_hides_an_effect_that_happened() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("proxy-cut"))).await;
    let clients = worker_clients(&proxy).await;
    proxy.add(Rule::new(
        Some(Service::Sqs),
        &["SendMessage"],
        Fault::Truncate,
        Trigger::Always,
    ));
    let result = clients
        .sqs
        .send_message()
        .queue_url(&t.stack.queue_url)
        .message_body("sent")
        .send()
        .await;
    assert!(result.is_err(), "the caller never learns it worked");
    let on_queue = t
        .receive(&t.stack.queue_url, 3, Duration::from_secs(3))
        .await;
    assert!(
        !on_queue.is_empty(),
        "yet the message was sent (once per SDK attempt: {})",
        on_queue.len()
    );
    assert_eq!(
        proxy.count(Service::Sqs, "SendMessage").forwarded,
        on_queue.len() as u64
    );
}

#[tokio::test]
async fn a_deleted_snapshot_stays_listed_for_the_window_but_is_gone_to_ec2() {
    let (proxy, t) = TestStack::behind_proxy(StackSpec::new(unique("proxy-del"))).await;
    let clients = worker_clients(&proxy).await;
    proxy.lingering_deletes(Duration::from_secs(3));
    let volume = new_volume(&t.clients.ec2, "us-east-1a").await;
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        snapshots.push(new_snapshot(&t.clients.ec2, &volume, &[]).await);
    }
    let of_volume = || Filter::builder().name("volume-id").values(&volume).build();
    let listed = || async {
        let mut ids: Vec<String> = snapshots_where(&clients.ec2, of_volume())
            .await
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let mut both = snapshots.clone();
    both.sort();
    assert_eq!(listed().await, both);
    clients
        .ec2
        .delete_snapshot()
        .snapshot_id(&snapshots[0])
        .send()
        .await
        .expect("delete");

    assert_eq!(listed().await, both, "the deleted one is still listed");
    let again = clients
        .ec2
        .delete_snapshot()
        .snapshot_id(&snapshots[0])
        .send()
        .await
        .expect_err("EC2 has it gone");
    assert_eq!(code(&again).as_deref(), Some("InvalidSnapshot.NotFound"));
    let observed = snapshots_where(&t.clients.ec2, of_volume()).await;
    assert_eq!(observed.len(), 1, "the observer sees the truth");

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        listed().await,
        [snapshots[1].clone()],
        "gone after the window"
    );
}
