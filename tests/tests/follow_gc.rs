//! `stack gc`: what a killed follower leaves behind (its queue, its subscription) is removed.
//! A binary of its own, with its own emulator: collecting every stale follower queue would
//! take those of tests running beside it.

use std::time::Duration;

use shoal_common::JobId;
use shoal_producer::follow::Follower;
use shoal_producer::operate::collect_followers;
use shoal_tests::TestStack;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_followers_queue_and_subscription_are_collected() {
    let t = TestStack::new("followgc").await;
    let follower = Follower::start(
        &t.clients,
        &t.stack.topic_arn,
        &[JobId::parse("x").expect("id")],
        Duration::from_secs(60),
    )
    .await
    .expect("follow");
    // As if the process were killed: nothing runs the follower's cleanup.
    std::mem::forget(follower);
    let subscribed = |n: usize| {
        let t = &t;
        async move {
            t.clients
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(&t.stack.topic_arn)
                .send()
                .await
                .expect("subscriptions")
                .subscriptions()
                .len()
                == n
        }
    };
    assert!(subscribed(2).await);
    let collected = collect_followers(&t.clients, Some(&t.stack.topic_arn), Duration::ZERO)
        .await
        .expect("gc");
    assert!(!collected.queues.is_empty(), "{collected:?}");
    assert_eq!(collected.subscriptions.len(), 1, "{collected:?}");
    assert!(
        subscribed(1).await,
        "only the events queue is left subscribed"
    );
}
