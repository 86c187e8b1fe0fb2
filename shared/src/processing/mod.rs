//! Exactly-once effects from at-least-once delivery: every queue consumer runs each message
//! through the event ledger ([`ledger`]) inside a FIFO-aware partial-batch runner ([`batch`]).
//! Before a handler runs, the event's object is made one the pinned models read ([`current`]).

pub mod batch;
mod current;
pub mod ledger;

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::routing::{EventKind, Handler};
use crate::store::{BillingStore, StoreError};
use crate::stripe::{Event, StripeClient, StripeError};
use crate::telemetry;
use batch::UnnamedFailure;

/// Why one message was not processed; every variant leaves the message to be retried.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A Stripe event whose object, even as read from Stripe, the handler cannot use.
    #[error("the event cannot be applied: {0}")]
    InvalidMessage(String),
    #[error("another invocation is processing event {0}")]
    Busy(String),
    #[error("Stripe call failed")]
    Stripe(#[from] StripeError),
    #[error("store call failed")]
    Store(#[from] StoreError),
    #[error("notification failed: {0}")]
    Notify(String),
    #[error("the entitlement of {0} kept changing under concurrent writers")]
    Contended(String),
}

/// What became of a message that was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already completed earlier: a duplicate delivery, acknowledged without effects.
    Duplicate,
    /// Not a type this consumer handles, or an event from the other mode (live/test) than the
    /// API key's: acknowledged, not failed.
    Ignored,
    /// Not a Stripe event at all: no retry can make it one, so it is acknowledged as final,
    /// logged and counted (`RejectedMessages`, alarmed) instead of cycling to the DLQ.
    Rejected,
}

/// A queue consumer: which event types it applies and how. Parsing, the ledger and the
/// partial-batch rules are the same for every consumer, so they live in the provided methods.
pub trait EventHandler: Sync {
    type Store: BillingStore;

    fn store(&self) -> &Self::Store;

    /// The client objects are read with; its key also says which mode's events are ours.
    fn stripe(&self) -> &StripeClient;

    /// The handlers of the routing catalogue this consumer owns.
    fn handles(&self, handler: Handler) -> bool;

    fn apply(&self, kind: EventKind, event: &Event) -> impl Future<Output = Result<Outcome, ProcessError>> + Send;

    /// Parses, deduplicates through the ledger and applies one queued event.
    fn handle_message(
        &self,
        body: &str,
        now: i64,
        lease_until: i64,
    ) -> impl Future<Output = Result<Outcome, ProcessError>> + Send {
        async move {
            let event = match Event::parse(body) {
                Ok(event) => event,
                Err(reason) => {
                    telemetry::count("RejectedMessages");
                    tracing::error!(%reason, bytes = body.len(), "message is not a Stripe event; dropped as final");
                    return Ok(Outcome::Rejected);
                }
            };
            let Some(kind) = EventKind::parse(&event.event_type).filter(|kind| self.handles(kind.handler())) else {
                return Ok(Outcome::Ignored);
            };
            if let Some(live) = self.stripe().livemode().filter(|live| *live != event.livemode) {
                telemetry::count("LivemodeMismatch");
                tracing::warn!(event_id = %event.id, key_livemode = live, event_livemode = event.livemode,
                    "event from the other mode than the API key; not processed");
                return Ok(Outcome::Ignored);
            }
            let (event_id, event_type) = (event.id.clone(), event.event_type.clone());
            let outcome = ledger::once(self.store(), &event_id, now, lease_until, || async move {
                let event = current::at_pinned_version(self.stripe(), kind, event).await?;
                self.apply(kind, &event).await
            })
            .await?;
            tracing::info!(event_id = %event_id, event_type = %event_type, outcome = ?outcome, "event processed");
            Ok(outcome)
        }
    }

    fn handle_batch(
        &self,
        event: SqsEvent,
        now: i64,
        lease_until: i64,
    ) -> impl Future<Output = Result<SqsBatchResponse, UnnamedFailure>> + Send {
        async move {
            let (response, counts) = batch::run(event, |message| async move {
                self.handle_message(message.body.as_deref().unwrap_or_default(), now, lease_until)
                    .await
            })
            .await?;
            tracing::info!(
                applied = counts.applied,
                duplicates = counts.duplicates,
                ignored = counts.ignored,
                rejected = counts.rejected,
                failed = counts.failed,
                held_back = counts.held_back,
                deferred = counts.deferred,
                "batch done"
            );
            Ok(response)
        }
    }
}
