//! The load + chaos run at a size CI affords (the full 10,000 events for 500 customers is
//! `cargo run --release -p bench -- chaos`): nothing lost, nothing doubled, every customer as
//! Stripe has them, with every dependency failing a share of its calls.

use std::time::Duration;

use billing_tests::chaos::{Arrival, ChaosConfig, run};

fn config(customers: usize, events: usize, fault_rate: f64) -> ChaosConfig {
    ChaosConfig {
        customers,
        events,
        duplicate_rate: 0.1,
        fault_rate,
        max_receives: 5,
        time_limit: Duration::from_secs(240),
        arrival: Arrival::Webhook,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_events_under_one_percent_faults_end_in_stripes_state() {
    let report = run(&config(40, 1_000, 0.01)).await.unwrap();
    println!("{}", report.summary());

    assert_eq!(report.mismatches(), 0, "{:#?}", report.examples);
    assert_eq!(report.accepted, report.events, "every event was accepted in the end");
    assert!(
        report.duplicates_absorbed > 0,
        "duplicates were delivered: {}",
        report.summary()
    );
    let faults = &report.faults;
    assert!(
        faults.store > 0 && faults.queue > 0,
        "faults were injected into the store and the queue: {faults:?}"
    );
}

/// Snapshot and thin events, by webhook and by EventBridge, mixed in one run: the same
/// guarantees, and every customer as Stripe has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_thin_events_by_webhook_and_eventbridge_end_in_stripes_state() {
    let report = run(&ChaosConfig {
        arrival: Arrival::Mixed,
        ..config(20, 400, 0.01)
    })
    .await
    .unwrap();
    println!("{}", report.summary());

    assert_eq!(report.mismatches(), 0, "{:#?}", report.examples);
    assert_eq!(report.accepted, report.events, "every event was accepted in the end");
    assert_eq!(report.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_exhaust_their_retries_wait_in_the_dead_letters_and_the_redrive_completes_them() {
    // At 5% per call a message, which makes several calls, fails often enough that with two
    // receives allowed some are dead-lettered; none may be lost in between.
    let mut config = config(15, 300, 0.05);
    config.max_receives = 2;
    let report = run(&config).await.unwrap();
    println!("{}", report.summary());

    assert!(
        report.dead_lettered > 0,
        "some messages exhausted their receives: {}",
        report.summary()
    );
    assert!(report.faults.stripe > 0, "Stripe failed too: {:?}", report.faults);
    assert_eq!(report.redriven, report.dead_lettered);
    assert_eq!(report.mismatches(), 0, "{:#?}", report.examples);
}
