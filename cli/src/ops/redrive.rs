//! `billing redrive --queue events|payment-failed`: moves the messages that exhausted their
//! retries from the dead-letter queue back to the queue they came from, once the cause is
//! fixed. The DLQ is the one named by the source queue's redrive policy, so there is nothing
//! more to configure.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use clap::ValueEnum;
use serde::Serialize;
use shared::queue::QueueName;

use super::{Deployment, OpsError, Output, counter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// SQS's own move task when the endpoint offers it, else copy.
    Auto,
    /// `StartMessageMoveTask`: SQS moves the messages server-side.
    MoveTask,
    /// Receive, send to the source queue, then delete: works on any SQS-compatible endpoint.
    Copy,
}

#[derive(Debug, Serialize)]
struct RedriveReport {
    queue: &'static str,
    source_url: String,
    dead_letter_url: String,
    /// `ApproximateNumberOfMessages` of the DLQ before the move.
    waiting: u64,
    moved: u64,
    method: Option<&'static str>,
    dry_run: bool,
}

fn sqs_error(action: &str, error: impl std::error::Error) -> OpsError {
    OpsError::Sqs(format!("{action}: {}", DisplayErrorContext(error)))
}

pub async fn redrive(
    deployment: &Deployment,
    queue: QueueName,
    method: Method,
    dry_run: bool,
    output: Output,
) -> Result<(), OpsError> {
    let sqs = deployment.sqs();
    let settings = deployment.queue_settings()?;
    let source_url = match queue {
        QueueName::Events => settings.events_url,
        QueueName::PaymentFailed => settings.payment_failed_url,
    };
    let source = attributes(
        &sqs,
        &source_url,
        &[QueueAttributeName::QueueArn, QueueAttributeName::RedrivePolicy],
    )
    .await?;
    let source_arn = source
        .first()
        .cloned()
        .flatten()
        .ok_or_else(|| OpsError::Sqs("the source queue has no ARN".into()))?;
    let dead_letter_arn = dead_letter_target(source.get(1).cloned().flatten().as_deref())?;
    let dead_letter_url = queue_url_of(&sqs, &dead_letter_arn).await?;
    let waiting = attributes(
        &sqs,
        &dead_letter_url,
        &[QueueAttributeName::ApproximateNumberOfMessages],
    )
    .await?
    .first()
    .cloned()
    .flatten()
    .and_then(|count| count.parse::<u64>().ok())
    .unwrap_or(0);
    let mut report = RedriveReport {
        queue: queue.as_str(),
        source_url,
        dead_letter_url,
        waiting,
        moved: 0,
        method: None,
        dry_run,
    };
    if !dry_run && waiting > 0 {
        let (moved, used) = match method {
            Method::MoveTask => (
                move_task(&sqs, &dead_letter_arn, &source_arn, waiting).await?,
                "move-task",
            ),
            Method::Copy => (
                copy(&sqs, &report.dead_letter_url, &report.source_url, waiting).await?,
                "copy",
            ),
            Method::Auto => match move_task(&sqs, &dead_letter_arn, &source_arn, waiting).await {
                Ok(moved) => (moved, "move-task"),
                Err(error) => {
                    eprintln!("SQS move task unavailable ({error}); copying the messages instead");
                    (
                        copy(&sqs, &report.dead_letter_url, &report.source_url, waiting).await?,
                        "copy",
                    )
                }
            },
        };
        report.method = Some(used);
        report.moved = moved;
    }
    let human = if dry_run {
        format!(
            "Dry run: about {waiting} messages wait in {} and would move to {}",
            report.dead_letter_url, report.source_url
        )
    } else {
        format!(
            "Moved {} of about {waiting} messages from {} to {}",
            report.moved, report.dead_letter_url, report.source_url
        )
    };
    output.emit(&human, &report)
}

/// The requested attributes, in order (`None` for an attribute the queue does not have).
async fn attributes(sqs: &Client, url: &str, names: &[QueueAttributeName]) -> Result<Vec<Option<String>>, OpsError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|error| sqs_error("reading queue attributes", error))?;
    let found = output.attributes.unwrap_or_default();
    Ok(names.iter().map(|name| found.get(name).cloned()).collect())
}

fn dead_letter_target(policy: Option<&str>) -> Result<String, OpsError> {
    let policy = policy
        .ok_or_else(|| OpsError::Sqs("the source queue has no redrive policy, so no dead-letter queue".into()))?;
    let policy: serde_json::Value =
        serde_json::from_str(policy).map_err(|error| OpsError::Sqs(format!("unreadable redrive policy: {error}")))?;
    policy
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| OpsError::Sqs("the redrive policy names no deadLetterTargetArn".into()))
}

/// `arn:aws:sqs:<region>:<account>:<name>` → the queue's URL.
async fn queue_url_of(sqs: &Client, arn: &str) -> Result<String, OpsError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [_, _, "sqs", _, account, name] = parts.as_slice() else {
        return Err(OpsError::Sqs(format!("{arn} is not an SQS queue ARN")));
    };
    sqs.get_queue_url()
        .queue_name(*name)
        .queue_owner_aws_account_id(*account)
        .send()
        .await
        .map_err(|error| sqs_error("looking up the dead-letter queue", error))?
        .queue_url
        .ok_or_else(|| OpsError::Sqs(format!("no URL for {arn}")))
}

/// SQS moves the messages itself; this waits for the task to finish and reports its count.
async fn move_task(sqs: &Client, from_arn: &str, to_arn: &str, waiting: u64) -> Result<u64, OpsError> {
    sqs.start_message_move_task()
        .source_arn(from_arn)
        .destination_arn(to_arn)
        .send()
        .await
        .map_err(|error| sqs_error("starting the move task", error))?;
    let progress = counter(waiting, "moving");
    // SQS moves hundreds of messages a second; a task still running well past that is
    // reported rather than waited on forever (it goes on in SQS either way).
    let patience = Duration::from_secs(300 + waiting / 10);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if tokio::time::Instant::now() >= deadline {
            progress.abandon();
            return Err(OpsError::Sqs(format!(
                "the move task has not completed after {} s; it goes on in SQS: follow it with `aws sqs list-message-move-tasks --source-arn {from_arn}`",
                patience.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tasks = sqs
            .list_message_move_tasks()
            .source_arn(from_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|error| sqs_error("following the move task", error))?;
        let Some(task) = tasks.results.unwrap_or_default().into_iter().next() else {
            continue;
        };
        let moved = u64::try_from(task.approximate_number_of_messages_moved).unwrap_or(0);
        progress.set_position(moved);
        match task.status.as_deref() {
            Some("COMPLETED") => {
                progress.finish_and_clear();
                return Ok(moved);
            }
            Some(status @ ("FAILED" | "CANCELLED")) => {
                progress.abandon();
                return Err(OpsError::Sqs(format!(
                    "the move task ended {status} after {moved} messages: {}",
                    task.failure_reason.unwrap_or_default()
                )));
            }
            _ => {}
        }
    }
}

/// Receive, send, delete — in that order, so a crash can duplicate a message but never lose
/// one. The copy's deduplication id is derived from the DLQ message id: a rerun after a crash
/// is dropped by SQS, and the original event id cannot be reused because SQS would silently
/// drop it as a repeat of the first delivery if that was under five minutes ago.
async fn copy(sqs: &Client, from_url: &str, to_url: &str, waiting: u64) -> Result<u64, OpsError> {
    let fifo = to_url.ends_with(".fifo");
    let progress = counter(waiting, "copying");
    let mut moved = 0;
    let mut empty_receives = 0;
    // In-flight messages of a FIFO group hide the rest of it, so one empty answer is not
    // proof of an empty queue; two in a row (each waiting a second) are.
    while empty_receives < 2 {
        let messages = sqs
            .receive_message()
            .queue_url(from_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(300)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| sqs_error("receiving from the dead-letter queue", error))?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            empty_receives += 1;
            continue;
        }
        empty_receives = 0;
        for message in messages {
            let (Some(receipt), Some(message_id)) = (message.receipt_handle.as_deref(), message.message_id.as_deref())
            else {
                continue;
            };
            let group = message
                .attributes
                .as_ref()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            let mut send = sqs
                .send_message()
                .queue_url(to_url)
                .set_message_body(message.body.clone())
                .set_message_attributes(message.message_attributes.clone());
            if fifo {
                send = send
                    .set_message_group_id(group)
                    .message_deduplication_id(format!("redrive-{message_id}"));
            }
            send.send()
                .await
                .map_err(|error| sqs_error("sending to the source queue", error))?;
            sqs.delete_message()
                .queue_url(from_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|error| sqs_error("deleting from the dead-letter queue", error))?;
            moved += 1;
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    Ok(moved)
}
