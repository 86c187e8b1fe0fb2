//! The demo is a test too: the real `billing` binary walks the lifecycle against the simulator,
//! orderly, then with duplicated, shuffled delivery in each of Stripe's ways (snapshot and thin
//! events, by webhook and by EventBridge), then a team's purchase (seats, an add-on, credits,
//! a downgrade at the period's end), and must exit 0.

mod common;

#[tokio::test]
async fn the_demo_walks_the_whole_lifecycle_in_every_delivery_mode() {
    let run = common::run(&["demo"], &[]).await;
    let stdout = &run.stdout;
    assert!(run.ok, "demo failed:\n{stdout}\n{}", run.stderr);
    assert!(stdout.contains("Storage: in-memory"), "{stdout}");
    assert!(stdout.contains("Queues: in-process"), "{stdout}");
    assert_eq!(stdout.matches("period ends").count(), 5, "{stdout}");
    for pass in [
        "snapshot events to the webhook",
        "thin events to the webhook",
        "snapshot events through Amazon EventBridge",
        "thin events through EventBridge and the webhook at once",
    ] {
        assert!(stdout.contains(pass), "{stdout}");
    }
    assert!(stdout.contains("renewal payment fails: grace, one email"), "{stdout}");
    assert!(stdout.contains("Every pass reached the same final state"), "{stdout}");
    for step in [
        "two tabs: opening the second expires the first",
        "both tabs paid before the webhook: one kept, one refunded",
        "checking out again: no second trial",
        "customer deleted in Stripe: access ends, the next checkout makes a new one",
        "admin buys team yearly, 5 seats",
        "Bob (a member) reads it, may not change it",
        "admin adds the SSO add-on",
        "admin buys two credit packs (a one-time payment) credits=2000",
        "SSO removed; downgrade to starter waits for the period's end status=202",
        "the year ends: renewed on starter, credits kept plan=\"starter\"",
    ] {
        assert!(stdout.contains(step), "{stdout}");
    }
}

/// The same lifecycle with DynamoDB and SQS on moto, configured through a `.env` file as the
/// README shows: the demo creates the table and the queues on the local endpoint, and the
/// stored state at the end is the canceled subscriptions of both passes.
#[tokio::test]
async fn the_demo_walks_the_lifecycle_on_dynamodb_and_sqs_from_a_dotenv() {
    let endpoint = billing_tests::aws::endpoint().await;
    let (table, suffix) = (billing_tests::unique("demo-"), billing_tests::unique(""));
    let queue_url = |name: &str| format!("{endpoint}/123456789012/{name}-{suffix}.fifo");
    let dir = std::env::temp_dir().join(billing_tests::unique("billing-demo-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!(
            "BILLING_TABLE={table}\nEVENTS_QUEUE_URL={}\nPAYMENT_FAILED_QUEUE_URL={}\n",
            queue_url("events"),
            queue_url("payment-failed")
        ),
    )
    .unwrap();

    let run = common::run_in(&dir, &["demo"], &[]).await;

    assert!(run.ok, "demo failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("Storage: DynamoDB table {table}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Queues: SQS"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Every pass reached the same final state"),
        "{}",
        run.stdout
    );
    let sdk = billing_tests::aws::sdk_config().await;
    let store = shared::store::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let stored = shared::store::BillingStore::sample_subscriptions(&store, 100)
        .await
        .unwrap()
        .records;
    // Passes 1 to 5 (snapshot and thin, webhook and EventBridge) end canceled; pass 6 leaves
    // two of its customers exactly one live subscription (the second tab; the kept one of the
    // race, the other cancelled); the third customer's two (the cancelled trial, the
    // re-checkout) end canceled with its deletion; pass 7's team goes on, renewed on starter,
    // and so does pass 8's API customer, renewed with its usage billed.
    assert_eq!(stored.len(), 12, "{stored:?}");
    let active: Vec<&str> = stored
        .iter()
        .filter(|s| s.status == shared::stripe::SubscriptionStatus::Active)
        .map(|s| s.customer_id.as_str())
        .collect();
    let mut customers = active.clone();
    customers.sort_unstable();
    customers.dedup();
    assert_eq!((active.len(), customers.len()), (4, 4), "{stored:?}");
}
