//! `customer.subscription.created|updated|deleted|paused|resumed|trial_will_end`: the event
//! carries the whole subscription. A strictly newer event overwrites; an older one is stale
//! and dropped; a tie (same `created` second, so the order is unknowable) asks Stripe. A thin
//! event, or one in another version's shape, arrives with the subscription already read from
//! Stripe, which is stored as a refetch is.

use crate::notify::Publisher;
use crate::processing::{Outcome, ProcessError};
use crate::store::{BillingStore, WriteOutcome, WriteRule};
use crate::stripe::{Event, Subscription};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let subscription: Subscription = object(event)?;
    if event.read_now {
        // Stripe's state now, at least as new as the event: stored unless a newer event has
        // been, like a refetch on a tie.
        syncer.store_read(&subscription, event.created).await?;
        syncer.refresh_entitlement(&subscription.customer.0, None).await?;
        return Ok(Outcome::Applied);
    }
    let record = syncer.record_of(&subscription, event.created);
    let customer_id = record.customer_id.clone();
    if syncer.store.put_subscription(&record, WriteRule::IfNewer).await? == WriteOutcome::Stale {
        let stored = syncer.store.get_subscription(&customer_id, &subscription.id).await?;
        if stored.is_some_and(|stored| stored.watermark == event.created) {
            syncer.refetch_subscription(&subscription.id, event.created).await?;
        } else {
            // Nothing changed, so the entitlement computed from it has not either. But the
            // newer state may have been stored by a writer without a topic (the API storing
            // Stripe's answer to its own change): what it left unannounced is announced now.
            tracing::info!(event_id = %event.id, subscription_id = %subscription.id, "stale subscription event dropped");
            syncer.announce_pending(&customer_id).await?;
            return Ok(Outcome::Applied);
        }
    }
    syncer.refresh_entitlement(&customer_id, None).await?;
    Ok(Outcome::Applied)
}
