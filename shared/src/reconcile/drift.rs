//! The drift check: events repair what they announce, but a bug, a manual edit in the
//! dashboard with its event lost for good, or a restore from backup can leave a stored
//! subscription different from Stripe's with no event left to fix it. This compares a random
//! sample of stored subscriptions with what Stripe says now and stores Stripe's version of
//! the ones that differ. The sample reads a bounded number of items, never the whole table.

use serde::Serialize;

use crate::notify::Publisher;
use crate::processing::ProcessError;
use crate::store::{BillingStore, WriteOutcome, WriteRule};
use crate::sync::Syncer;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    pub checked: usize,
    /// Subscriptions whose stored record differed from Stripe and was replaced.
    pub repaired: Vec<String>,
    /// Subscriptions Stripe could not be asked about; the next run samples again.
    pub unreadable: usize,
    /// Store items read to draw the sample (bounded, whatever the table's size).
    pub items_read: usize,
}

/// Checks up to `sample` stored subscriptions against Stripe at `now`.
/// A repair that changes an entitlement is announced through the syncer's publisher (no event
/// follows a drift to do it).
pub async fn check<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    sample: usize,
    now: i64,
) -> Result<DriftReport, ProcessError> {
    let mut report = DriftReport::default();
    let drawn = syncer.store.sample_subscriptions(sample).await?;
    report.items_read = drawn.items_read;
    for stored in drawn.records {
        report.checked += 1;
        let fresh = match syncer.stripe.retrieve_subscription(&stored.subscription_id).await {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(subscription_id = %stored.subscription_id, %error, "drift check could not read the subscription");
                report.unreadable += 1;
                continue;
            }
        };
        if syncer.record_of(&fresh, stored.watermark) == stored {
            continue;
        }
        // Stripe's answer includes every event created before the read. It is stamped with the
        // time the check started, which is no later than the read: an event created after that
        // still wins, and one from before it is stale because the read already includes it.
        let repaired = syncer.record_of(&fresh, now);
        if syncer.store.put_subscription(&repaired, WriteRule::IfNotOlder).await? == WriteOutcome::Stale {
            continue;
        }
        tracing::warn!(
            subscription_id = %stored.subscription_id,
            stored_status = ?stored.status,
            stripe_status = ?repaired.status,
            "stored subscription had drifted from Stripe; replaced with Stripe's state"
        );
        syncer.refresh_entitlement(&repaired.customer_id, None).await?;
        report.repaired.push(stored.subscription_id);
    }
    Ok(report)
}
