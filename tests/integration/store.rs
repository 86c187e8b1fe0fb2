use std::sync::Arc;

use billing_tests::{aws, store_conformance};
use shared::store::MemoryStore;

#[tokio::test]
async fn memory_store_meets_the_contract() {
    store_conformance::run(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn dynamodb_store_meets_the_contract_on_moto() {
    store_conformance::run(Arc::new(aws::fresh_store().await)).await;
}

/// The drift check's sample reads a bounded number of items, not the table: with 700 items
/// stored, a sample of 5 reads at most the budget (200), counted by DynamoDB's own
/// `ScannedCount`, and still finds subscriptions among them.
#[tokio::test]
async fn a_drift_sample_reads_a_bounded_part_of_a_large_table() {
    use shared::store::{BillingStore, WriteRule, sample_read_budget};
    use shared::stripe::SubscriptionStatus;
    let store = Arc::new(aws::fresh_store().await);
    let mut writes = Vec::new();
    for index in 0..700 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            if index % 7 == 0 {
                let record = store_conformance::subscription(
                    &format!("cus_big{index}"),
                    &format!("sub_big{index}"),
                    1,
                    SubscriptionStatus::Active,
                );
                store.put_subscription(&record, WriteRule::IfNewer).await.unwrap();
            } else {
                store.claim_event(&format!("evt_big{index}"), 1, 2).await.unwrap();
            }
        }));
    }
    for write in writes {
        write.await.unwrap();
    }
    assert_eq!(sample_read_budget(5), 200);
    let mut found = 0;
    for _ in 0..3 {
        let sample = store.sample_subscriptions(5).await.unwrap();
        assert!(sample.items_read <= 200, "read {} items", sample.items_read);
        assert!(sample.items_read > 0);
        assert!(sample.records.len() <= 5);
        assert!(sample.records.iter().all(|r| r.subscription_id.starts_with("sub_big")));
        found += sample.records.len();
    }
    assert!(
        found > 0,
        "three samples of 200 items found no subscription among 100 in 700"
    );
}
