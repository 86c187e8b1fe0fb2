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
