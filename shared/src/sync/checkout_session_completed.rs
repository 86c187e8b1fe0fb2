//! `checkout.session.completed`: the moment a user and a Stripe customer are tied together.
//! The user comes from `client_reference_id` (set by the checkout API), or the session's
//! `metadata.user_id`; the session does not carry the subscription, so it is read from Stripe.

use crate::processing::{Outcome, ProcessError};
use crate::store::{BillingStore, LinkOutcome, UserId};
use crate::stripe::{CheckoutSession, Event};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore>(syncer: &Syncer<S>, event: &Event) -> Result<Outcome, ProcessError> {
    let session: CheckoutSession = object(event)?;
    let raw_user = session
        .client_reference_id
        .as_deref()
        .or(session.metadata.get("user_id").map(String::as_str));
    let (Some(raw_user), Some(customer)) = (raw_user, session.customer.as_ref()) else {
        tracing::info!(event_id = %event.id, session_id = %session.id, "checkout session without a user or customer; nothing to link");
        return Ok(Outcome::Ignored);
    };
    let Ok(user) = UserId::parse(raw_user) else {
        tracing::warn!(event_id = %event.id, session_id = %session.id, "checkout session carries an invalid user id");
        return Ok(Outcome::Ignored);
    };
    let customer_id = customer.as_str();
    if let LinkOutcome::AlreadyLinked(existing) = syncer.store.link_customer(&user, customer_id).await? {
        if existing != customer_id {
            tracing::warn!(event_id = %event.id, customer_id, existing_customer = %existing, "user already linked to another customer");
        }
    }
    if let Some(subscription) = &session.subscription {
        syncer
            .refetch_subscription(subscription.as_str(), event.created)
            .await?;
    }
    syncer.refresh_entitlement(customer_id, Some(user)).await?;
    Ok(Outcome::Applied)
}
