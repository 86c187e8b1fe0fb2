//! One-time purchases (Checkout `mode=payment`): granted when their session is paid — at once,
//! or on `checkout.session.async_payment_succeeded` for a delayed method — and taken back on
//! a full refund (`charge.refunded`) or a lost dispute (`charge.dispute.closed`). The events
//! arrive in any order: each writes what it knows into the purchase's record, which only
//! fills in what is missing, so a refund processed before the payment still wins.

use crate::notify::Publisher;
use crate::processing::{Outcome, ProcessError};
use crate::store::{AccountId, BillingStore, PurchaseRecord, Revocation};
use crate::stripe::{Charge, CheckoutSession, Dispute, Event};

use super::{Syncer, object};

/// Metadata the checkout API writes on a payment-mode session.
const PRODUCT_KEY: &str = "product";
const QUANTITY_KEY: &str = "quantity";

/// The session of a purchase was processed (the account is linked): records it as paid when
/// the payment has gone through, and recomputes the account's entitlement.
pub(super) async fn record_paid<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
    session: &CheckoutSession,
    account: &AccountId,
    customer_id: &str,
) -> Result<(), ProcessError> {
    if session.payment_status.as_deref() != Some("paid") {
        tracing::info!(event_id = %event.id, session_id = %session.id,
            "purchase not paid yet (a delayed method); granted when the payment succeeds");
        return Ok(());
    }
    let Some(intent) = session.payment_intent.as_ref() else {
        tracing::warn!(event_id = %event.id, session_id = %session.id, "paid payment-mode session without a payment intent");
        return Ok(());
    };
    let product = session.metadata.get(PRODUCT_KEY).cloned();
    if product.as_deref().is_none_or(|key| syncer.plans.product(key).is_none()) {
        tracing::warn!(event_id = %event.id, session_id = %session.id,
            "paid session names no product of the catalog; it grants nothing");
    }
    let quantity = session
        .metadata
        .get(QUANTITY_KEY)
        .and_then(|units| units.parse().ok())
        .unwrap_or(1);
    let record = PurchaseRecord {
        customer_id: customer_id.to_owned(),
        payment_intent_id: intent.as_str().to_owned(),
        session_id: Some(session.id.clone()),
        product,
        quantity,
        paid_at: Some(event.created),
        revoked: None,
        revoked_at: None,
    };
    syncer.store.put_purchase(&record).await?;
    tracing::info!(event_id = %event.id, session_id = %session.id, payment_intent = %intent.as_str(), "purchase recorded");
    syncer.refresh_entitlement(customer_id, Some(account.clone())).await?;
    Ok(())
}

async fn revoke<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
    customer_id: &str,
    payment_intent: &str,
    why: Revocation,
) -> Result<Outcome, ProcessError> {
    let record = PurchaseRecord {
        customer_id: customer_id.to_owned(),
        payment_intent_id: payment_intent.to_owned(),
        session_id: None,
        product: None,
        quantity: 0,
        paid_at: None,
        revoked: Some(why),
        revoked_at: Some(event.created),
    };
    syncer.store.put_purchase(&record).await?;
    tracing::info!(event_id = %event.id, payment_intent, reason = ?why, "payment taken back; a purchase of it grants no more");
    syncer.refresh_entitlement(customer_id, None).await?;
    Ok(Outcome::Applied)
}

/// `charge.refunded`: only a refund in full takes a purchase back.
pub(super) async fn refunded<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let charge: Charge = object(event)?;
    if !charge.refunded {
        tracing::info!(event_id = %event.id, charge_id = %charge.id, "partial refund; what was bought stays");
        return Ok(Outcome::Ignored);
    }
    let (Some(customer), Some(intent)) = (charge.customer.as_ref(), charge.payment_intent.as_ref()) else {
        tracing::info!(event_id = %event.id, charge_id = %charge.id, "refunded charge of no customer's payment intent");
        return Ok(Outcome::Ignored);
    };
    revoke(syncer, event, customer.as_str(), intent.as_str(), Revocation::Refunded).await
}

/// `charge.dispute.closed`: a lost dispute takes the purchase back (a won one changes
/// nothing). A dispute names no customer, so its charge is read.
pub(super) async fn dispute_closed<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let dispute: Dispute = object(event)?;
    if dispute.status != "lost" {
        tracing::info!(event_id = %event.id, dispute_id = %dispute.id, status = %dispute.status, "dispute closed in the merchant's favour");
        return Ok(Outcome::Ignored);
    }
    let charge = syncer.stripe.retrieve_charge(dispute.charge.as_str()).await?;
    let intent = dispute.payment_intent.as_ref().or(charge.payment_intent.as_ref());
    let (Some(customer), Some(intent)) = (charge.customer.as_ref(), intent) else {
        tracing::info!(event_id = %event.id, dispute_id = %dispute.id, "lost dispute of no customer's payment intent");
        return Ok(Outcome::Ignored);
    };
    revoke(
        syncer,
        event,
        customer.as_str(),
        intent.as_str(),
        Revocation::DisputeLost,
    )
    .await
}
