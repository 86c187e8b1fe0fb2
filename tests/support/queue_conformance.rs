//! The one queue contract, for `MemoryQueue` and `SqsQueue` (on moto).

use std::collections::HashMap;

use shared::queue::{EventQueue, OutboundMessage, QueueName, ReceivedMessage};

use crate::unique;

pub async fn run<Q: EventQueue>(queue: &Q) {
    delivers_bodies_and_attributes_unchanged(queue).await;
    deduplicates_by_id(queue).await;
    keeps_order_within_a_group(queue).await;
}

pub async fn drain<Q: EventQueue>(queue: &Q, name: QueueName) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let batch = queue.receive(name, 10).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        for message in &batch {
            queue.delete(name, &message.receipt_handle).await.unwrap();
        }
        all.extend(batch);
    }
}

fn message<'a>(body: &'a str, group: &'a str, id: &'a str) -> OutboundMessage<'a> {
    OutboundMessage {
        body,
        group_id: group,
        dedup_id: id,
        event_id: id,
        event_type: "invoice.paid",
        livemode: false,
    }
}

async fn delivers_bodies_and_attributes_unchanged<Q: EventQueue>(queue: &Q) {
    let id = unique("evt_");
    let body = r#"{"id":"x", "spaces" : [1, 2],"unicode":"é✓"}"#;
    queue
        .send(QueueName::PaymentFailed, &message(body, "cus_1", &id))
        .await
        .unwrap();
    let received = drain(queue, QueueName::PaymentFailed).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);
    assert_eq!(received[0].group_id.as_deref(), Some("cus_1"));
    assert_eq!(received[0].event_id.as_deref(), Some(id.as_str()));
    assert_eq!(received[0].event_type.as_deref(), Some("invoice.paid"));
    assert!(drain(queue, QueueName::Events).await.is_empty(), "queues are separate");
}

async fn deduplicates_by_id<Q: EventQueue>(queue: &Q) {
    let id = unique("evt_");
    for _ in 0..3 {
        queue
            .send(QueueName::Events, &message("{}", "cus_2", &id))
            .await
            .unwrap();
    }
    assert_eq!(drain(queue, QueueName::Events).await.len(), 1);
}

async fn keeps_order_within_a_group<Q: EventQueue>(queue: &Q) {
    let ids: Vec<String> = (0..6).map(|_| unique("evt_")).collect();
    for (index, id) in ids.iter().enumerate() {
        let group = if index % 2 == 0 { "cus_a" } else { "cus_b" };
        queue.send(QueueName::Events, &message(id, group, id)).await.unwrap();
    }
    let first = queue.receive(QueueName::Events, 10).await.unwrap();
    assert!(!first.is_empty());
    let second = queue.receive(QueueName::Events, 10).await.unwrap();
    assert!(
        second.iter().all(|m| first.iter().all(|f| f.group_id != m.group_id)),
        "a group with messages in flight delivers nothing more"
    );
    let mut all = first;
    all.extend(second);
    for message in &all {
        queue.delete(QueueName::Events, &message.receipt_handle).await.unwrap();
    }
    all.extend(drain(queue, QueueName::Events).await);
    let mut by_group: HashMap<String, Vec<String>> = HashMap::new();
    for message in all {
        by_group
            .entry(message.group_id.unwrap_or_default())
            .or_default()
            .push(message.body);
    }
    assert_eq!(by_group["cus_a"], [ids[0].clone(), ids[2].clone(), ids[4].clone()]);
    assert_eq!(by_group["cus_b"], [ids[1].clone(), ids[3].clone(), ids[5].clone()]);
}
