//! The event ledger: a lease per Stripe event id, taken with a conditional write.
//!
//! Why a lease and not just a "done" marker: two invocations can hold the same event (SQS
//! redelivers after the visibility timeout; reconcile re-enqueues), and only one may apply it.
//! Why the lease is *released* on failure: a failed event recorded as done would be lost;
//! released, the next delivery applies it. Why it expires: an invocation killed mid-event
//! cannot release it, so the lease runs out with the invocation's own deadline.

use std::future::Future;

use super::{Outcome, ProcessError};
use crate::store::{BillingStore, LedgerClaim};

/// Completed entries outlive Stripe's 3-day retry window and the 30 days of events the
/// reconciler can replay, so every late copy of an event is recognised.
pub const COMPLETED_RETENTION_SECS: i64 = 35 * 24 * 3600;

/// Runs `apply` at most once per event id, however often and concurrently it is delivered.
pub async fn once<S, F, Fut>(
    store: &S,
    event_id: &str,
    now: i64,
    lease_until: i64,
    apply: F,
) -> Result<Outcome, ProcessError>
where
    S: BillingStore,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Outcome, ProcessError>>,
{
    let token = match store.claim_event(event_id, now, lease_until).await? {
        LedgerClaim::Completed => return Ok(Outcome::Duplicate),
        LedgerClaim::Busy { .. } => return Err(ProcessError::Busy(event_id.to_owned())),
        LedgerClaim::Acquired { token } => token,
    };
    match apply().await {
        Ok(outcome) => {
            store
                .complete_event(event_id, &token, now.saturating_add(COMPLETED_RETENTION_SECS))
                .await?;
            Ok(outcome)
        }
        Err(error) => {
            if let Err(release) = store.release_event(event_id, &token).await {
                // The lease still expires on its own; the redelivery then takes it over.
                tracing::warn!(event_id, error = %release, "could not release the lease after a failure");
            }
            Err(error)
        }
    }
}
