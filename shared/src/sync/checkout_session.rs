//! `checkout.session.completed` and `checkout.session.async_payment_succeeded|failed`: the
//! moment an account and a Stripe customer are tied together, and a one-time purchase is
//! granted (`purchase`).
//!
//! Only a session this system created links: its id was stored with the account at creation, so
//! neither `client_reference_id` (which Payment Links and pricing tables let the browser set)
//! nor metadata can name someone else. Other sessions are counted and ignored unless
//! `BILLING_ACCEPT_FOREIGN_SESSIONS` is on; even then an account already linked to another
//! customer is never re-linked nor recomputed from the foreign one.
//!
//! A customer who paid two open sessions (two tabs) ends with one live subscription: the
//! later one is cancelled at once and its payment refunded (`BILLING_DUPLICATE_SUBSCRIPTIONS`).

use crate::notify::{AppEvent, DuplicateSubscriptionEvent, Publisher};
use crate::processing::{Outcome, ProcessError};
use crate::store::{AccountId, BillingStore, LinkOutcome};
use crate::stripe::{CheckoutSession, Event, Expandable, Subscription};
use crate::telemetry;

use super::{DuplicatePolicy, Syncer, bills, object};

pub(super) async fn apply<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let session: CheckoutSession = object(event)?;
    let Some(customer) = session.customer.as_ref() else {
        tracing::info!(event_id = %event.id, session_id = %session.id, "checkout session without a customer; nothing to link");
        return Ok(Outcome::Ignored);
    };
    let customer_id = customer.as_str();
    let account = match syncer.store.checkout_session_account(&session.id).await? {
        Some(account) => account,
        None if syncer.policy.accept_foreign_sessions => match claimed_account(&session) {
            Some(account) => account,
            None => {
                tracing::info!(event_id = %event.id, session_id = %session.id, "foreign checkout session names no valid account");
                return Ok(Outcome::Ignored);
            }
        },
        None => {
            telemetry::count("ForeignCheckoutSession");
            tracing::warn!(event_id = %event.id, session_id = %session.id, customer_id,
                "checkout session not created by this system; it links nothing (BILLING_ACCEPT_FOREIGN_SESSIONS)");
            return Ok(Outcome::Ignored);
        }
    };
    match syncer.store.link_customer(&account, customer_id).await? {
        LinkOutcome::Linked => tracing::info!(event_id = %event.id, customer_id, "customer linked"),
        LinkOutcome::AlreadyLinked(existing) if existing == customer_id => {}
        LinkOutcome::AlreadyLinked(existing) => {
            telemetry::count("CustomerLinkRefused");
            tracing::warn!(event_id = %event.id, customer_id, existing_customer = %existing,
                "account already linked to another customer; the session's customer is not theirs");
            return Ok(Outcome::Ignored);
        }
        LinkOutcome::CustomerTaken(owner) => {
            telemetry::count("CustomerLinkRefused");
            tracing::warn!(event_id = %event.id, customer_id, owner = %owner,
                "the session's customer belongs to another account");
            return Ok(Outcome::Ignored);
        }
    }
    if session.mode.as_deref() == Some("payment") {
        super::purchase::record_paid(syncer, event, &session, &account, customer_id).await?;
        return Ok(Outcome::Applied);
    }
    if let Some(subscription) = &session.subscription {
        syncer
            .refetch_subscription(subscription.as_str(), event.created)
            .await?;
        if syncer.policy.duplicates == DuplicatePolicy::Refund {
            undo_duplicate(syncer, event, &account, customer_id, subscription.as_str()).await?;
        }
    }
    syncer.refresh_entitlement(customer_id, Some(account)).await?;
    Ok(Outcome::Applied)
}

fn claimed_account(session: &CheckoutSession) -> Option<AccountId> {
    match session.client_reference_id.as_deref() {
        Some(raw) => AccountId::parse(raw).ok(),
        None => AccountId::from_metadata(&session.metadata),
    }
}

/// If the customer already had a billing subscription when this one started, this one is the
/// duplicate: cancel it and refund what it charged. "Earlier" is Stripe's `created`, then the
/// id, a total order, so whichever completion is processed first or last, the same one stays.
/// The duplicate's own status does not matter: a retry after the cancel went through (and the
/// refund did not) still refunds, and each refund's key makes a repeat free.
async fn undo_duplicate<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
    account: &AccountId,
    customer_id: &str,
    subscription_id: &str,
) -> Result<(), ProcessError> {
    let all = syncer.stripe.list_subscriptions(customer_id).await?;
    let Some(new) = all.iter().find(|s| s.id == subscription_id) else {
        return Ok(());
    };
    let earlier = |s: &&Subscription| (s.created, &s.id) < (new.created, &new.id);
    let Some(keeper) = all.iter().filter(|s| bills(s.status)).find(earlier) else {
        return Ok(());
    };
    if bills(new.status) {
        let cancelled = syncer.stripe.cancel_subscription(&new.id).await?;
        syncer.store_read(&cancelled, event.created).await?;
    }
    let mut refunded = Vec::new();
    if let Some(invoice_id) = new.latest_invoice.as_ref() {
        let invoice = syncer
            .stripe
            .retrieve_invoice_with_payments(invoice_id.as_str())
            .await?;
        let intents = invoice
            .payments
            .iter()
            .flat_map(|list| list.data.iter())
            .filter_map(|payment| payment.payment.as_ref()?.payment_intent.as_ref())
            .map(|intent| match intent {
                Expandable::Id(id) => id.clone(),
                Expandable::Object(intent) => intent.id.clone(),
            });
        for intent in intents.filter(|id| !id.is_empty()) {
            syncer.stripe.refund_payment_intent(&intent, "duplicate").await?;
            refunded.push(intent);
        }
    }
    telemetry::count("DuplicateSubscriptionRefunded");
    tracing::warn!(event_id = %event.id, customer_id, kept = %keeper.id, cancelled = %new.id, refunds = refunded.len(),
        "a second live subscription was cancelled and refunded (BILLING_DUPLICATE_SUBSCRIPTIONS=refund)");
    let told = DuplicateSubscriptionEvent {
        event_type: DuplicateSubscriptionEvent::TYPE,
        stripe_event_id: event.id.clone(),
        account_id: Some(account.to_string()),
        customer_id: customer_id.to_owned(),
        kept_subscription_id: keeper.id.clone(),
        cancelled_subscription_id: new.id.clone(),
        refunded_payment_intents: refunded,
    };
    syncer
        .app_events
        .publish(&told)
        .await
        .map_err(|error| ProcessError::Notify(error.to_string()))
}
