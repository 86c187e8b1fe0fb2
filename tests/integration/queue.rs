use billing_tests::{aws, queue_conformance};
use shared::queue::MemoryQueue;

#[tokio::test]
async fn memory_queue_meets_the_contract() {
    queue_conformance::run(&MemoryQueue::new()).await;
}

#[tokio::test]
async fn sqs_queue_meets_the_contract_on_moto() {
    let (_, _, queue) = aws::fresh_queues().await;
    queue_conformance::run(&queue).await;
}
