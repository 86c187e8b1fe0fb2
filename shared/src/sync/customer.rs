//! `customer.updated` / `customer.deleted`. A customer created outside this system (dashboard,
//! import) can be claimed by setting `metadata.user_id` on it in Stripe: the update links it,
//! and the subscriptions already stored under it start counting for that user.

use crate::processing::{Outcome, ProcessError};
use crate::store::{BillingStore, UserId};
use crate::stripe::{Customer, Event};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore>(syncer: &Syncer<S>, event: &Event) -> Result<Outcome, ProcessError> {
    let customer: Customer = object(event)?;
    let linked = syncer.store.user_of_customer(&customer.id).await?;
    let claimed = customer.metadata.get("user_id").and_then(|raw| UserId::parse(raw).ok());
    let user = match (linked, claimed) {
        (Some(user), _) => user,
        (None, Some(user)) if !customer.deleted && event.event_type == "customer.updated" => {
            syncer.store.link_customer(&user, &customer.id).await?;
            tracing::info!(event_id = %event.id, customer_id = %customer.id, "customer linked from its metadata");
            user
        }
        _ => return Ok(Outcome::Ignored),
    };
    syncer.refresh_entitlement(&customer.id, Some(user)).await?;
    Ok(Outcome::Applied)
}
