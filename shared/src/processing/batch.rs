//! SQS batches with partial failures. The trigger must enable `ReportBatchItemFailures`;
//! then only the message ids returned here are retried, the rest are deleted.
//!
//! With FIFO queues, once a message of a group fails, the later messages of that group in the
//! batch are reported failed too without being tried, so one customer's events are never
//! applied out of order; other customers' messages are unaffected.
//!
//! When the invocation's [`Deadline`] leaves less than [`MIN_TIME_PER_MESSAGE`], the messages
//! not yet started are returned as failures without being tried: no lease is taken on them, so
//! their next receive (after the visibility timeout) processes them without waiting out a
//! lease, instead of a slow Stripe timing out the whole invocation and every message in it. SQS still counts the receive; the queues'
//! `maxReceiveCount` (10) leaves room for several such returns besides real failures.

use std::collections::HashSet;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};

use super::{Outcome, ProcessError};
use crate::deadline::Deadline;
use crate::queue::ReceivedMessage;
use crate::routing::EventKind;
use crate::telemetry;

/// Received messages as the SQS trigger hands them to a function: for local runs, which drain
/// a queue themselves and must feed the processors exactly what Lambda would.
pub fn sqs_event(messages: &[ReceivedMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for message in messages {
        let mut record = SqsMessage::default();
        record.message_id = Some(message.message_id.clone());
        record.body = Some(message.body.clone());
        if let Some(group) = &message.group_id {
            record.attributes.insert("MessageGroupId".into(), group.clone());
        }
        event.records.push(record);
    }
    event
}

/// The least time left for which a message is still started: one Stripe read and a few store
/// writes on a healthy day take well under a second; past this, the rest go back unstarted.
pub const MIN_TIME_PER_MESSAGE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub applied: usize,
    pub duplicates: usize,
    pub ignored: usize,
    pub rejected: usize,
    pub failed: usize,
    pub held_back: usize,
    /// Returned unstarted because the invocation's deadline was near.
    pub deferred: usize,
}

/// Raised when a failed message cannot be named (no message id): failing the whole
/// invocation makes SQS retry the whole batch, which the ledger makes harmless.
#[derive(Debug, thiserror::Error)]
#[error("a failed SQS message has no message id; retrying the whole batch")]
pub struct UnnamedFailure;

pub async fn run<F, Fut>(event: SqsEvent, mut handle: F) -> Result<(SqsBatchResponse, BatchCounts), UnnamedFailure>
where
    F: FnMut(SqsMessage) -> Fut,
    Fut: Future<Output = Result<Outcome, ProcessError>>,
{
    let mut counts = BatchCounts::default();
    let mut failed_groups: HashSet<String> = HashSet::new();
    let mut failures = Vec::new();
    for message in event.records {
        let message_id = message.message_id.clone().filter(|id| !id.is_empty());
        let group = message.attributes.get("MessageGroupId").cloned();
        if Deadline::current().is_some_and(|deadline| deadline.remaining() < MIN_TIME_PER_MESSAGE) {
            counts.deferred += 1;
            failures.push(message_id.ok_or(UnnamedFailure)?);
            continue;
        }
        let held_back = group.as_ref().is_some_and(|g| failed_groups.contains(g));
        // The type from the closed catalogue only, so the metric's dimension stays bounded.
        let kind = message
            .message_attributes
            .get("event_type")
            .and_then(|attribute| attribute.string_value.as_deref())
            .and_then(EventKind::parse)
            .map_or("other", EventKind::name);
        let result = if held_back { None } else { Some(handle(message).await) };
        match &result {
            Some(Ok(Outcome::Rejected)) | None => {}
            Some(Ok(_)) => telemetry::count_by("EventsProcessed", "EventType", kind),
            Some(Err(_)) => telemetry::count_by("EventsFailed", "EventType", kind),
        }
        match result {
            Some(Ok(Outcome::Applied)) => counts.applied += 1,
            Some(Ok(Outcome::Duplicate)) => counts.duplicates += 1,
            Some(Ok(Outcome::Ignored)) => counts.ignored += 1,
            Some(Ok(Outcome::Rejected)) => counts.rejected += 1,
            Some(Err(error)) => {
                counts.failed += 1;
                tracing::warn!(message_id = message_id.as_deref().unwrap_or(""), error = %error, cause = ?std::error::Error::source(&error).map(ToString::to_string), "message failed; it will be retried");
                failures.push(message_id.ok_or(UnnamedFailure)?);
                if let Some(group) = group {
                    failed_groups.insert(group);
                }
            }
            None => {
                counts.held_back += 1;
                failures.push(message_id.ok_or(UnnamedFailure)?);
            }
        }
    }
    let batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = batch_item_failures;
    Ok((response, counts))
}
