//! `billing replay <event-id>`: one event from Stripe, enqueued as if it had just arrived.

use serde::Serialize;
use shared::queue::EventQueue;
use shared::routing;
use shared::store::{BillingStore, LedgerState};
use shared::stripe::EventEnvelope;

use super::{Deployment, OpsError, Output};

#[derive(Debug, Serialize)]
struct ReplayReport {
    event_id: String,
    event_type: String,
    queue: Option<&'static str>,
    already_completed: bool,
    enqueued: bool,
}

pub async fn replay(deployment: &Deployment, event_id: &str, output: Output) -> Result<(), OpsError> {
    let store = deployment.store()?;
    let queue = deployment.queue()?;
    let event = deployment.stripe().await?.retrieve_event(event_id).await?;
    let body = serde_json::to_string(&event).map_err(|error| OpsError::Usage(error.to_string()))?;
    let envelope = EventEnvelope::parse(body.as_bytes())
        .map_err(|error| OpsError::NotFound(format!("Stripe answered with something that is not an event: {error}")))?;
    let mut report = ReplayReport {
        event_id: envelope.id.to_string(),
        event_type: envelope.event_type.to_string(),
        queue: None,
        already_completed: false,
        enqueued: false,
    };
    let Some((queue_name, mut message)) = routing::message_for(&envelope, &body) else {
        let human = format!(
            "{} is a {}, which this system does not handle: nothing enqueued",
            report.event_id, report.event_type
        );
        return output.emit(&human, &report);
    };
    report.queue = Some(queue_name.as_str());
    // The processors skip completed events, so enqueueing one would only look like a replay.
    if store.event_state(message.event_id).await? == Some(LedgerState::Completed) {
        report.already_completed = true;
        let human = format!(
            "{} was already processed; nothing enqueued (to re-read a customer's state from Stripe, run `billing drift`)",
            report.event_id
        );
        return output.emit(&human, &report);
    }
    // A fresh deduplication id: SQS would silently drop a copy of a delivery it saw in the
    // last five minutes, and the ledger already guards against a double effect.
    let dedup_id = format!("replay-{}-{}", message.event_id, shared::unix_now());
    message.dedup_id = &dedup_id;
    queue.send(queue_name, &message).await?;
    report.enqueued = true;
    let human = format!(
        "Enqueued {} ({}) on the {} queue",
        report.event_id,
        report.event_type,
        queue_name.as_str()
    );
    output.emit(&human, &report)
}
