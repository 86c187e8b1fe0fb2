//! The in-process queue: FIFO per group with SQS's rules that matter here — a group with a
//! message in flight delivers nothing more until it is deleted, and a repeated dedup id within
//! five minutes is accepted but not enqueued again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{EventQueue, OutboundMessage, QueueError, QueueName, ReceivedMessage};

const DEDUP_WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Lane {
    ready: VecDeque<ReceivedMessage>,
    in_flight: HashMap<String, ReceivedMessage>,
    dedup: HashMap<String, Instant>,
    next_id: u64,
}

#[derive(Default)]
pub struct MemoryQueue {
    lanes: Mutex<HashMap<QueueName, Lane>>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages enqueued and not yet deleted, in flight or not.
    pub fn depth(&self, queue: QueueName) -> usize {
        self.with_lane(queue, |lane| lane.ready.len() + lane.in_flight.len())
    }

    /// Makes an in-flight message visible again at the head of its group, as SQS does when
    /// its visibility timeout runs out after a failed attempt.
    pub fn release(&self, queue: QueueName, receipt_handle: &str) {
        self.with_lane(queue, |lane| {
            if let Some(message) = lane.in_flight.remove(receipt_handle) {
                lane.ready.push_front(message);
            }
        });
    }

    fn with_lane<T>(&self, queue: QueueName, f: impl FnOnce(&mut Lane) -> T) -> T {
        // A poisoned lock means a panic mid-update in a test; the data is still consistent
        // enough for a queue of independent messages, so keep serving.
        let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(lanes.entry(queue).or_default())
    }
}

impl EventQueue for MemoryQueue {
    async fn send(&self, queue: QueueName, message: &OutboundMessage<'_>) -> Result<(), QueueError> {
        self.with_lane(queue, |lane| {
            let now = Instant::now();
            lane.dedup.retain(|_, sent| now.duration_since(*sent) < DEDUP_WINDOW);
            if lane.dedup.contains_key(message.dedup_id) {
                return;
            }
            lane.dedup.insert(message.dedup_id.to_owned(), now);
            lane.next_id += 1;
            lane.ready.push_back(ReceivedMessage {
                message_id: format!("mem-{}-{}", queue.as_str(), lane.next_id),
                receipt_handle: String::new(),
                body: message.body.to_owned(),
                group_id: Some(message.group_id.to_owned()),
                event_id: Some(message.event_id.to_owned()),
                event_type: Some(message.event_type.to_owned()),
            });
        });
        Ok(())
    }

    async fn receive(&self, queue: QueueName, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(self.with_lane(queue, |lane| {
            let mut blocked: HashSet<String> = lane.in_flight.values().filter_map(|m| m.group_id.clone()).collect();
            let mut taken = Vec::new();
            let mut index = 0;
            while index < lane.ready.len() && taken.len() < max {
                let group = lane.ready[index].group_id.clone().unwrap_or_default();
                if blocked.contains(&group)
                    && !taken
                        .iter()
                        .any(|m: &ReceivedMessage| m.group_id.as_deref() == Some(&group))
                {
                    index += 1;
                    continue;
                }
                let Some(mut message) = lane.ready.remove(index) else {
                    break;
                };
                blocked.insert(group);
                message.receipt_handle = format!("{}-receipt", message.message_id);
                taken.push(message);
            }
            for message in &taken {
                lane.in_flight.insert(message.receipt_handle.clone(), message.clone());
            }
            taken
        }))
    }

    async fn delete(&self, queue: QueueName, receipt_handle: &str) -> Result<(), QueueError> {
        self.with_lane(queue, |lane| {
            lane.in_flight.remove(receipt_handle);
        });
        Ok(())
    }
}
