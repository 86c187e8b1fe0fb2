//! `customer.updated` / `customer.deleted`. A customer created outside this system (dashboard,
//! import) can be claimed by setting `metadata.user_id` on it in Stripe: the update links it,
//! and the subscriptions already stored under it start counting for that user. A deleted
//! customer is unlinked (if it is still the user's), so the next checkout creates a new one.

use crate::notify::Publisher;
use crate::processing::{Outcome, ProcessError};
use crate::routing::EventKind;
use crate::store::{BillingStore, LinkOutcome, UserId};
use crate::stripe::{Customer, Event};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    kind: EventKind,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let customer: Customer = object(event)?;
    let linked = syncer.store.user_of_customer(&customer.id).await?;
    if kind == EventKind::CustomerDeleted || customer.deleted {
        let Some(user) = linked else {
            return Ok(Outcome::Ignored);
        };
        // Access is cleared while the link still names the user, then the link goes: if the
        // unlink fails, the redelivery still finds the user and does both again.
        syncer.clear_entitlement(&user).await?;
        if syncer.store.unlink_customer(&user, &customer.id).await? {
            tracing::info!(event_id = %event.id, customer_id = %customer.id, "deleted customer unlinked");
        }
        return Ok(Outcome::Applied);
    }
    let claimed = customer.metadata.get("user_id").and_then(|raw| UserId::parse(raw).ok());
    let user = match (linked, claimed) {
        (Some(user), _) => user,
        (None, Some(user)) => match syncer.store.link_customer(&user, &customer.id).await? {
            LinkOutcome::Linked => {
                tracing::info!(event_id = %event.id, customer_id = %customer.id, "customer linked from its metadata");
                user
            }
            LinkOutcome::AlreadyLinked(_) | LinkOutcome::CustomerTaken(_) => return Ok(Outcome::Ignored),
        },
        (None, None) => return Ok(Outcome::Ignored),
    };
    syncer.refresh_entitlement(&customer.id, Some(user)).await?;
    Ok(Outcome::Applied)
}
