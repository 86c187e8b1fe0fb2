//! The SQS adapter for the two FIFO queues.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};

use super::{EventQueue, OutboundMessage, QueueError, QueueName, ReceivedMessage};
use crate::config::QueueSettings;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    settings: QueueSettings,
}

impl SqsQueue {
    pub fn new(client: Client, settings: QueueSettings) -> Self {
        Self { client, settings }
    }

    pub fn url(&self, queue: QueueName) -> &str {
        match queue {
            QueueName::Events => &self.settings.events_url,
            QueueName::PaymentFailed => &self.settings.payment_failed_url,
        }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, aws_sdk_sqs::error::BuildError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
}

impl EventQueue for SqsQueue {
    async fn send(&self, queue: QueueName, message: &OutboundMessage<'_>) -> Result<(), QueueError> {
        let failed = |reason: String| QueueError::Send {
            queue: queue.as_str(),
            reason,
        };
        let attribute = |value: &str| string_attribute(value).map_err(|error| failed(error.to_string()));
        self.client
            .send_message()
            .queue_url(self.url(queue))
            .message_body(message.body)
            .message_group_id(message.group_id)
            .message_deduplication_id(message.dedup_id)
            .message_attributes("event_id", attribute(message.event_id)?)
            .message_attributes("event_type", attribute(message.event_type)?)
            .message_attributes("livemode", attribute(if message.livemode { "true" } else { "false" })?)
            .send()
            .await
            .map_err(|error| failed(DisplayErrorContext(error).to_string()))?;
        Ok(())
    }

    async fn receive(&self, queue: QueueName, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(self.url(queue))
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| QueueError::Receive {
                queue: queue.as_str(),
                reason: DisplayErrorContext(error).to_string(),
            })?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| {
                let attribute = |name: &str| message.message_attributes.as_ref()?.get(name)?.string_value.clone();
                ReceivedMessage {
                    event_id: attribute("event_id"),
                    event_type: attribute("event_type"),
                    group_id: message
                        .attributes
                        .as_ref()
                        .and_then(|attrs| attrs.get(&MessageSystemAttributeName::MessageGroupId).cloned()),
                    message_id: message.message_id.unwrap_or_default(),
                    receipt_handle: message.receipt_handle.unwrap_or_default(),
                    body: message.body.unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn delete(&self, queue: QueueName, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(self.url(queue))
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|error| QueueError::Delete {
                queue: queue.as_str(),
                reason: DisplayErrorContext(error).to_string(),
            })?;
        Ok(())
    }
}
