//! The app's side of the contract: usage reports onto the `usage` queue (`USAGE_QUEUE_URL`,
//! the stack's `UsageQueueUrl` output), ten a request. The app's request path waits for SQS
//! only, never for Stripe; a report SQS did not take is returned, to be sent again (repeats
//! are free: the identifier).

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::report::UsageEvent;

/// SQS takes at most 10 messages a batch.
const SQS_BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("a usage report could not be encoded: {0}")]
    Encode(String),
    #[error("SQS did not take {} usage report(s): {reason}", .unsent.len())]
    Unsent { unsent: Vec<UsageEvent>, reason: String },
}

#[derive(Debug, Clone)]
pub struct UsageReporter {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl UsageReporter {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends every report, retrying the entries SQS refused once; what is still refused comes
    /// back in [`ReportError::Unsent`].
    pub async fn report(&self, reports: &[UsageEvent]) -> Result<(), ReportError> {
        let mut unsent = Vec::new();
        let mut reason = String::new();
        for chunk in reports.chunks(SQS_BATCH) {
            let mut pending: Vec<&UsageEvent> = chunk.iter().collect();
            for _attempt in 0..2 {
                if pending.is_empty() {
                    break;
                }
                let mut entries = Vec::with_capacity(pending.len());
                for (index, report) in pending.iter().enumerate() {
                    let body = serde_json::to_string(report).map_err(|error| ReportError::Encode(error.to_string()))?;
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|error| ReportError::Encode(error.to_string()))?;
                    entries.push(entry);
                }
                match self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(output) => {
                        let failed: Vec<usize> = output.failed().iter().filter_map(|f| f.id().parse().ok()).collect();
                        if let Some(first) = output.failed().first() {
                            reason = first.message().unwrap_or(first.code()).to_owned();
                        }
                        pending = failed
                            .into_iter()
                            .filter_map(|index| pending.get(index).copied())
                            .collect();
                    }
                    Err(error) => reason = DisplayErrorContext(error).to_string(),
                }
            }
            unsent.extend(pending.into_iter().cloned());
        }
        if unsent.is_empty() {
            Ok(())
        } else {
            Err(ReportError::Unsent { unsent, reason })
        }
    }
}
