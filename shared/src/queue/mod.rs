//! The queue port. Both queues are FIFO: the group is the Stripe customer, so one customer's
//! events are applied one at a time and in order, while different customers run in parallel;
//! the deduplication id is the Stripe event id, so a retried delivery within SQS's five-minute
//! window is dropped before it costs a Lambda invocation (the ledger catches later ones).

pub mod memory;
pub mod sqs;

use std::future::Future;

pub use memory::MemoryQueue;
pub use sqs::SqsQueue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    Events,
    PaymentFailed,
}

impl QueueName {
    pub const ALL: [QueueName; 2] = [QueueName::Events, QueueName::PaymentFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Events => "events",
            QueueName::PaymentFailed => "payment-failed",
        }
    }
}

/// A message to enqueue; borrowed so the webhook sends the body it received without a copy.
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    pub body: &'a str,
    pub group_id: &'a str,
    pub dedup_id: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub livemode: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sending to the {queue} queue failed: {reason}")]
    Send { queue: &'static str, reason: String },
    #[error("receiving from the {queue} queue failed: {reason}")]
    Receive { queue: &'static str, reason: String },
    #[error("deleting from the {queue} queue failed: {reason}")]
    Delete { queue: &'static str, reason: String },
}

pub trait EventQueue: Send + Sync {
    fn send(
        &self,
        queue: QueueName,
        message: &OutboundMessage<'_>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Up to `max` (1..=10) messages; they stay invisible to other receivers until deleted.
    fn receive(
        &self,
        queue: QueueName,
        max: usize,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send;

    fn delete(&self, queue: QueueName, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// One queue shared by the webhook and the consumers of a local run.
impl<Q: EventQueue> EventQueue for std::sync::Arc<Q> {
    fn send(
        &self,
        queue: QueueName,
        message: &OutboundMessage<'_>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).send(queue, message)
    }

    fn receive(
        &self,
        queue: QueueName,
        max: usize,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send {
        (**self).receive(queue, max)
    }

    fn delete(&self, queue: QueueName, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).delete(queue, receipt_handle)
    }
}
