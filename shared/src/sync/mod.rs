//! The parity model: keeps the stored subscriptions and entitlements equal to Stripe's state,
//! whatever the order and number of deliveries. One file per event family says what that
//! event does; [`Syncer`] holds what they share, and `POST /billing/sync` uses it too.

mod checkout_session_completed;
mod customer;
mod invoice_paid;
mod subscription;

use serde::de::DeserializeOwned;

use crate::config::PlanCatalog;
use crate::entitlement;
use crate::processing::{EventHandler, Outcome, ProcessError};
use crate::store::{BillingStore, Entitlement, SubscriptionRecord, UserId, WriteOutcome, WriteRule};
use crate::stripe::{Event, StripeClient, Subscription};

/// The event types the events processor applies; others are acknowledged untouched.
pub const HANDLED: &[&str] = &[
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "customer.updated",
    "customer.deleted",
];

pub struct Syncer<S> {
    pub store: S,
    pub stripe: StripeClient,
    pub plans: PlanCatalog,
    pub grace_days: u32,
}

pub(crate) fn object<T: DeserializeOwned>(event: &Event) -> Result<T, ProcessError> {
    T::deserialize(&event.data.object)
        .map_err(|error| ProcessError::InvalidMessage(format!("{} payload: {error}", event.event_type)))
}

impl<S: BillingStore> EventHandler for Syncer<S> {
    type Store = S;

    fn store(&self) -> &S {
        &self.store
    }

    fn handles(&self, event_type: &str) -> bool {
        HANDLED.contains(&event_type)
    }

    async fn apply(&self, event: &Event) -> Result<Outcome, ProcessError> {
        match event.event_type.as_str() {
            "checkout.session.completed" => checkout_session_completed::apply(self, event).await,
            "invoice.paid" | "invoice.payment_succeeded" => invoice_paid::apply(self, event).await,
            "customer.updated" | "customer.deleted" => customer::apply(self, event).await,
            _ => subscription::apply(self, event).await,
        }
    }
}

impl<S: BillingStore> Syncer<S> {
    pub fn record_of(&self, subscription: &Subscription, watermark: i64) -> SubscriptionRecord {
        let item = subscription.primary_item();
        let price_id = item.map(|item| item.price.id.clone());
        SubscriptionRecord {
            subscription_id: subscription.id.clone(),
            customer_id: subscription.customer.0.clone(),
            status: subscription.status,
            plan: price_id
                .as_deref()
                .and_then(|price| self.plans.by_price(price))
                .map(|(key, _)| key.to_owned()),
            price_id,
            quantity: item.and_then(|item| item.quantity),
            cancel_at_period_end: subscription.cancel_at_period_end,
            current_period_end: subscription.period_end(),
            trial_end: subscription.trial_end,
            ended_at: subscription.ended_at,
            watermark,
        }
    }

    /// Reads a subscription from Stripe and stores what Stripe says now. Used when order is
    /// unknowable (a tie) or the event does not carry the subscription.
    pub async fn refetch_subscription(&self, subscription_id: &str, watermark: i64) -> Result<String, ProcessError> {
        let fresh = self.stripe.retrieve_subscription(subscription_id).await?;
        let record = self.record_of(&fresh, watermark);
        if self.store.put_subscription(&record, WriteRule::IfNotOlder).await? == WriteOutcome::Stale {
            tracing::debug!(subscription_id, "a newer event already stored this subscription");
        }
        Ok(record.customer_id)
    }

    /// Recomputes the user's entitlement from what is stored. A customer no user is linked to
    /// yet keeps its subscriptions stored by customer; the link recomputes it later.
    pub async fn refresh_entitlement(
        &self,
        customer_id: &str,
        user: Option<UserId>,
    ) -> Result<Option<Entitlement>, ProcessError> {
        let user = match user {
            Some(user) => user,
            None => match self.store.user_of_customer(customer_id).await? {
                Some(user) => user,
                None => {
                    tracing::info!(customer_id, "customer is not linked to a user yet; stored by customer");
                    return Ok(None);
                }
            },
        };
        let subscriptions = self.store.subscriptions_of_customer(customer_id).await?;
        let dunning = self.store.dunning_of_customer(customer_id).await?;
        let entitlement = entitlement::compute(
            &user,
            customer_id,
            &subscriptions,
            &dunning,
            &self.plans,
            self.grace_days,
        );
        self.store.put_entitlement(&entitlement).await?;
        Ok(Some(entitlement))
    }

    /// Re-reads all of a customer's subscriptions from Stripe (`POST /billing/sync`, drift
    /// repair): what Stripe says now wins over anything stored before the read.
    pub async fn sync_customer(
        &self,
        user: &UserId,
        customer_id: &str,
        now: i64,
    ) -> Result<Option<Entitlement>, ProcessError> {
        let subscriptions = self.stripe.list_subscriptions(customer_id).await?;
        for subscription in &subscriptions.data {
            self.store
                .put_subscription(&self.record_of(subscription, now), WriteRule::IfNotOlder)
                .await?;
        }
        self.refresh_entitlement(customer_id, Some(user.clone())).await
    }
}
