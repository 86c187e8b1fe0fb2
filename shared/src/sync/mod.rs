//! The parity model: keeps the stored subscriptions and entitlements equal to Stripe's state,
//! whatever the order and number of deliveries. One file per handler of the routing catalogue
//! says what its events do; [`Syncer`] holds what they share, and `POST /billing/sync` uses it
//! too.

mod checkout_session;
mod customer;
mod invoice_settled;
mod meter_error;
mod purchase;
mod subscription;

use serde::de::DeserializeOwned;

use crate::config::{Catalog, ConfigError, Env};
use crate::entitlement;
use crate::notify::{AppEvent, EntitlementChangedEvent, NoAppEvents, Publisher};
use crate::processing::{EventHandler, Outcome, ProcessError};
use crate::routing::{EventKind, Handler};
use crate::store::{AccountId, BillingStore, Entitlement, ItemRecord, SubscriptionRecord, WriteOutcome, WriteRule};
use crate::stripe::{Event, StripeClient, Subscription};

/// How often an entitlement write that lost a race is recomputed before the message is
/// retried later: each retry means another writer made progress, so few are ever needed.
const ENTITLEMENT_ATTEMPTS: usize = 8;

/// What happens to a second live subscription of one customer (two tabs both paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// The later one is cancelled at once and its payment refunded (the default).
    Refund,
    /// Both stay: for catalogs that sell add-ons as separate subscriptions.
    Keep,
}

/// Policy knobs of the sync core (environment):
/// `BILLING_DUPLICATE_SUBSCRIPTIONS` = `refund` (default) | `keep`, and
/// `BILLING_ACCEPT_FOREIGN_SESSIONS` = `false` (default) | `true`: whether a checkout session
/// this system did not create (a Payment Link, a pricing table) may link a customer to the
/// account its `client_reference_id` names. Even then, an account already linked to another customer
/// is never re-linked nor recomputed from the foreign one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    pub duplicates: DuplicatePolicy,
    pub accept_foreign_sessions: bool,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self {
            duplicates: DuplicatePolicy::Refund,
            accept_foreign_sessions: false,
        }
    }
}

impl SyncPolicy {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut policy = Self::default();
        if let Some(value) = env.get("BILLING_DUPLICATE_SUBSCRIPTIONS") {
            policy.duplicates = match value.trim() {
                "refund" => DuplicatePolicy::Refund,
                "keep" => DuplicatePolicy::Keep,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "BILLING_DUPLICATE_SUBSCRIPTIONS",
                        reason: "expected refund or keep".into(),
                    });
                }
            };
        }
        if let Some(value) = env.get("BILLING_ACCEPT_FOREIGN_SESSIONS") {
            policy.accept_foreign_sessions = match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "BILLING_ACCEPT_FOREIGN_SESSIONS",
                        reason: "expected true or false".into(),
                    });
                }
            };
        }
        Ok(policy)
    }
}

pub struct Syncer<S, P = NoAppEvents> {
    pub store: S,
    pub stripe: StripeClient,
    pub plans: Catalog,
    pub grace_days: u32,
    pub policy: SyncPolicy,
    /// Where the events processor tells the app about a refunded duplicate subscription.
    pub app_events: P,
}

pub(crate) fn object<T: DeserializeOwned>(event: &Event) -> Result<T, ProcessError> {
    T::deserialize(&event.data.object)
        .map_err(|error| ProcessError::InvalidMessage(format!("{} payload: {error}", event.event_type)))
}

impl<S: BillingStore, P: Publisher> EventHandler for Syncer<S, P> {
    type Store = S;

    fn store(&self) -> &S {
        &self.store
    }

    fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    fn handles(&self, handler: Handler) -> bool {
        handler.queue() == crate::queue::QueueName::Events
    }

    async fn apply(&self, kind: EventKind, event: &Event) -> Result<Outcome, ProcessError> {
        match kind.handler() {
            Handler::CheckoutSession => checkout_session::apply(self, event).await,
            Handler::CheckoutSessionExpired => {
                tracing::info!(event_id = %event.id, "checkout session expired unpaid; nothing to link");
                Ok(Outcome::Applied)
            }
            Handler::Subscription => subscription::apply(self, event).await,
            Handler::Customer => customer::apply(self, kind, event).await,
            Handler::InvoiceSettled => invoice_settled::apply(self, kind, event).await,
            // Routed to the payment-failed queue; `handles` keeps them from reaching here.
            Handler::Dunning => Ok(Outcome::Ignored),
            Handler::ChargeRefunded => purchase::refunded(self, event).await,
            Handler::DisputeClosed => purchase::dispute_closed(self, event).await,
            Handler::MeterErrorReport => meter_error::reported(self, event).await,
        }
    }
}

/// Whether a subscription is being billed: the states a second subscription would double.
pub fn bills(status: crate::stripe::SubscriptionStatus) -> bool {
    use crate::stripe::SubscriptionStatus::*;
    match status {
        Active | Trialing | PastDue => true,
        Incomplete | IncompleteExpired | Canceled | Unpaid | Paused | Unknown => false,
    }
}

impl<S: BillingStore, P: Publisher> Syncer<S, P> {
    pub fn record_of(&self, subscription: &Subscription, watermark: i64) -> SubscriptionRecord {
        // The plan's item, wherever add-ons put it; a subscription of prices the catalog
        // does not list keeps its first item, as Stripe orders them.
        let item = subscription
            .items
            .data
            .iter()
            .find(|item| self.plans.by_price(&item.price.id).is_some())
            .or_else(|| subscription.primary_item());
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
            items: subscription
                .items
                .data
                .iter()
                .map(|item| ItemRecord {
                    price_id: item.price.id.clone(),
                    quantity: item.quantity,
                })
                .collect(),
            cancel_at_period_end: subscription.cancel_at_period_end,
            cancel_at: subscription.cancel_at,
            pause_collection: subscription.pause_collection.as_ref().map(|p| p.behavior.clone()),
            current_period_start: subscription.period_start(),
            current_period_end: subscription.period_end(),
            trial_end: subscription.trial_end,
            ended_at: subscription.ended_at,
            latest_invoice: subscription.latest_invoice.as_ref().map(|id| id.0.clone()),
            created: subscription.created,
            past_due_since: None,
            schedule: subscription.schedule.as_ref().map(|id| id.0.clone()),
            watermark,
        }
    }

    /// Reads a subscription from Stripe and stores what Stripe says now. Used when order is
    /// unknowable (a tie) or the event does not carry the subscription.
    pub async fn refetch_subscription(&self, subscription_id: &str, watermark: i64) -> Result<String, ProcessError> {
        let fresh = self.stripe.retrieve_subscription(subscription_id).await?;
        self.store_read(&fresh, watermark).await?;
        Ok(fresh.customer.0)
    }

    /// Stores a subscription as Stripe answered it just now.
    pub async fn store_read(&self, subscription: &Subscription, watermark: i64) -> Result<(), ProcessError> {
        let record = self.record_of(subscription, watermark);
        if self.store.put_subscription(&record, WriteRule::IfNotOlder).await? == WriteOutcome::Stale {
            tracing::debug!(subscription_id = %subscription.id, "a newer event already stored this subscription");
        }
        Ok(())
    }

    /// Recomputes the account's entitlement from what is stored. A customer no account is linked to
    /// yet keeps its subscriptions stored by customer; the link recomputes it later.
    pub async fn refresh_entitlement(
        &self,
        customer_id: &str,
        account: Option<AccountId>,
    ) -> Result<Option<Entitlement>, ProcessError> {
        let account = match account {
            Some(account) => account,
            None => match self.store.account_of_customer(customer_id).await? {
                Some(account) => account,
                None => {
                    tracing::info!(
                        customer_id,
                        "customer is not linked to an account yet; stored by customer"
                    );
                    return Ok(None);
                }
            },
        };
        self.write_entitlement(&account, Some(customer_id)).await.map(Some)
    }

    /// The account has no customer any more (it was deleted): no access, the trial stays used.
    pub async fn clear_entitlement(&self, account: &AccountId) -> Result<Entitlement, ProcessError> {
        self.write_entitlement(account, None).await
    }

    /// Read the version, then the inputs, compute, and write only over the version read: a
    /// writer whose inputs went stale meanwhile loses the condition and starts over, so the
    /// stored entitlement always reflects the latest inputs of the last writer to succeed.
    async fn write_entitlement(
        &self,
        account: &AccountId,
        customer_id: Option<&str>,
    ) -> Result<Entitlement, ProcessError> {
        for _ in 0..ENTITLEMENT_ATTEMPTS {
            let previous = self.store.get_entitlement(account).await?;
            // The entitlement was last computed from another customer (or none): write over it
            // only if the account is linked to this one now, so a deleted customer's late events
            // never overwrite what the account's new customer grants. One read, on changes only.
            if let (Some(stored), Some(customer_id)) = (previous.as_ref(), customer_id) {
                if stored.customer_id.as_deref() != Some(customer_id)
                    && self.store.customer_of_account(account).await?.as_deref() != Some(customer_id)
                {
                    tracing::info!(account = %account, "the account is not linked to this customer; entitlement left alone");
                    return Ok(stored.clone());
                }
            }
            let mut entitlement = match customer_id {
                Some(customer_id) => {
                    let subscriptions = self.store.subscriptions_of_customer(customer_id).await?;
                    let dunning = self.store.dunning_of_customer(customer_id).await?;
                    let purchases = self.store.purchases_of_customer(customer_id).await?;
                    let mut computed = entitlement::compute(
                        account,
                        customer_id,
                        &subscriptions,
                        &dunning,
                        &self.plans,
                        self.grace_days,
                    );
                    entitlement::add_purchases(&mut computed, &purchases, &self.plans);
                    computed
                }
                None => entitlement::nothing(account),
            };
            entitlement.trial_used |= previous.as_ref().is_some_and(|p| p.trial_used);
            entitlement.version = previous.as_ref().map_or(0, |p| p.version).saturating_add(1);
            let changed = previous.as_ref().is_none_or(|p| !p.grants_same_as(&entitlement));
            entitlement.changed_version = match &previous {
                Some(previous) if !changed => previous.changed_version,
                _ => entitlement.version,
            };
            entitlement.announced_version = previous.as_ref().map_or(0, |p| p.announced_version);
            if self.store.put_entitlement(&entitlement).await? == WriteOutcome::Written {
                self.announce(&entitlement, &self.app_events).await?;
                return Ok(entitlement);
            }
            tracing::debug!(account = %account, "entitlement changed while computing; recomputing");
        }
        Err(ProcessError::Contended(account.to_string()))
    }

    /// Tells the app (`billing.entitlement_changed`) about a change written but not announced
    /// yet — by this write, or by an earlier one whose publish failed or whose writer had no
    /// topic — then records it. A failed publish fails the message, which is retried.
    pub async fn announce<Q: Publisher>(&self, entitlement: &Entitlement, publisher: &Q) -> Result<(), ProcessError> {
        if !entitlement.unannounced() || !publisher.enabled() {
            return Ok(());
        }
        let now = crate::unix_now();
        let told = EntitlementChangedEvent {
            event_type: EntitlementChangedEvent::TYPE,
            account_id: entitlement.account_id.to_string(),
            customer_id: entitlement.customer_id.clone(),
            version: entitlement.version,
            previous_version: entitlement.announced_version,
            at: now,
            entitlement: entitlement::EntitlementView::at(entitlement, now),
        };
        publisher
            .publish(&told)
            .await
            .map_err(|error| ProcessError::Notify(error.to_string()))?;
        self.store
            .mark_announced(&entitlement.account_id, entitlement.version)
            .await?;
        Ok(())
    }

    /// Announces the entitlement of the customer's account if a writer without a topic left a
    /// change unannounced. Two reads, on the paths that write no entitlement themselves.
    pub async fn announce_pending(&self, customer_id: &str) -> Result<(), ProcessError> {
        if !self.app_events.enabled() {
            return Ok(());
        }
        let Some(account) = self.store.account_of_customer(customer_id).await? else {
            return Ok(());
        };
        match self.store.get_entitlement(&account).await? {
            Some(entitlement) => self.announce(&entitlement, &self.app_events).await,
            None => Ok(()),
        }
    }

    /// Re-reads all of a customer's subscriptions from Stripe (`POST /billing/sync`, drift
    /// repair): what Stripe says now wins over anything stored before the read.
    pub async fn sync_customer(
        &self,
        account: &AccountId,
        customer_id: &str,
        now: i64,
    ) -> Result<Option<Entitlement>, ProcessError> {
        for subscription in &self.stripe.list_subscriptions(customer_id).await? {
            self.store_read(subscription, now).await?;
        }
        self.refresh_entitlement(customer_id, Some(account.clone())).await
    }
}
