//! Exactly-once effects from at-least-once delivery: every queue consumer runs each message
//! through the event ledger ([`ledger`]) inside a FIFO-aware partial-batch runner ([`batch`]).

pub mod batch;
pub mod ledger;

use crate::store::StoreError;
use crate::stripe::StripeError;

/// Why one message was not processed; every variant leaves the message to be retried.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the message is not a Stripe event: {0}")]
    InvalidMessage(String),
    #[error("another invocation is processing event {0}")]
    Busy(String),
    #[error("Stripe call failed")]
    Stripe(#[from] StripeError),
    #[error("store call failed")]
    Store(#[from] StoreError),
    #[error("notification failed: {0}")]
    Notify(String),
}

/// What became of a message that was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already completed earlier: a duplicate delivery, acknowledged without effects.
    Duplicate,
    /// Not a type this consumer handles: acknowledged, not failed.
    Ignored,
}
