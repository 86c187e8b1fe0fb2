//! `customer.updated` / `customer.deleted`. A customer created outside this system (dashboard,
//! import) can be claimed by setting `metadata.account_id` on it in Stripe: the update links it,
//! and the subscriptions already stored under it start counting for that account. A deleted
//! customer is unlinked (if it is still the account's), so the next checkout creates a new one.

use crate::notify::Publisher;
use crate::processing::{Outcome, ProcessError};
use crate::routing::EventKind;
use crate::store::{AccountId, BillingStore, LinkOutcome};
use crate::stripe::{Customer, Event};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    kind: EventKind,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let customer: Customer = object(event)?;
    let linked = syncer.store.account_of_customer(&customer.id).await?;
    if kind == EventKind::CustomerDeleted || customer.deleted {
        let Some(account) = linked else {
            return Ok(Outcome::Ignored);
        };
        // Access is cleared while the link still names the account, then the link goes: if the
        // unlink fails, the redelivery still finds the account and does both again.
        syncer.clear_entitlement(&account).await?;
        if syncer.store.unlink_customer(&account, &customer.id).await? {
            tracing::info!(event_id = %event.id, customer_id = %customer.id, "deleted customer unlinked");
        }
        return Ok(Outcome::Applied);
    }
    let claimed = AccountId::from_metadata(&customer.metadata);
    let account = match (linked, claimed) {
        (Some(account), _) => account,
        (None, Some(account)) => match syncer.store.link_customer(&account, &customer.id).await? {
            LinkOutcome::Linked => {
                tracing::info!(event_id = %event.id, customer_id = %customer.id, "customer linked from its metadata");
                account
            }
            LinkOutcome::AlreadyLinked(_) | LinkOutcome::CustomerTaken(_) => return Ok(Outcome::Ignored),
        },
        (None, None) => return Ok(Outcome::Ignored),
    };
    syncer.refresh_entitlement(&customer.id, Some(account)).await?;
    Ok(Outcome::Applied)
}
