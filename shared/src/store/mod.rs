//! The storage port: the local "parity model" of Stripe data the app reads, and the
//! bookkeeping that makes event processing exactly-once in effect.
//!
//! Adapters: [`DynamoStore`] (one table, `pk`/`sk`, one GSI, TTL on `expires_at`) and
//! [`MemoryStore`]; one conformance suite (`tests/support/store_conformance.rs`) runs on both.

pub mod dynamodb;
pub mod memory;
mod model;

use std::future::Future;

pub use dynamodb::DynamoStore;
pub use memory::MemoryStore;
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the lease on event {0} is no longer held by this invocation")]
    LeaseLost(String),
    #[error("the storage backend failed: {0}")]
    Backend(String),
    #[error("a stored item could not be read: {0}")]
    Corrupt(String),
}

type Res<T> = Result<T, StoreError>;

pub trait BillingStore: Send + Sync {
    /// Links an account to their Stripe customer, once: a second link for the same account keeps the
    /// first and reports it, so concurrent first checkouts converge on one customer.
    /// A customer already linked to another account is refused too, so the customer → account lookup
    /// has one answer.
    fn link_customer(&self, account: &AccountId, customer_id: &str) -> impl Future<Output = Res<LinkOutcome>> + Send;
    /// Removes the link if it still points at `customer_id` (a deleted customer); false if the
    /// account is linked to another customer or to none.
    fn unlink_customer(&self, account: &AccountId, customer_id: &str) -> impl Future<Output = Res<bool>> + Send;
    fn customer_of_account(&self, account: &AccountId) -> impl Future<Output = Res<Option<String>>> + Send;
    /// A strongly consistent read of the link: right after a link, the event that follows it
    /// finds the account.
    fn account_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Option<AccountId>>> + Send;

    /// Records a checkout session this system created, for whom: only such sessions link a
    /// customer to an account. Kept until `expires_at` (past Stripe's retry window).
    fn put_checkout_session(
        &self,
        session_id: &str,
        account: &AccountId,
        expires_at: i64,
    ) -> impl Future<Output = Res<()>> + Send;
    fn checkout_session_account(&self, session_id: &str) -> impl Future<Output = Res<Option<AccountId>>> + Send;

    /// Writes a subscription only if `rule` holds against the stored watermark, so a stale
    /// event can never overwrite newer state.
    fn put_subscription(
        &self,
        record: &SubscriptionRecord,
        rule: WriteRule,
    ) -> impl Future<Output = Res<WriteOutcome>> + Send;
    fn get_subscription(
        &self,
        customer_id: &str,
        subscription_id: &str,
    ) -> impl Future<Output = Res<Option<SubscriptionRecord>>> + Send;
    fn subscriptions_of_customer(&self, customer_id: &str)
    -> impl Future<Output = Res<Vec<SubscriptionRecord>>> + Send;
    /// Up to `limit` stored subscriptions chosen at random, for the drift check, reading at
    /// most [`sample_read_budget`]`(limit)` items whatever the table's size: a run every 15
    /// minutes costs the same on a table of a thousand items and of a hundred million.
    fn sample_subscriptions(&self, limit: usize) -> impl Future<Output = Res<SubscriptionSample>> + Send;

    /// Writes the entitlement if the stored version is still `entitlement.version - 1` (none
    /// stored counts as 0); `Stale` if another writer got there first.
    fn put_entitlement(&self, entitlement: &Entitlement) -> impl Future<Output = Res<WriteOutcome>> + Send;
    fn get_entitlement(&self, account: &AccountId) -> impl Future<Output = Res<Option<Entitlement>>> + Send;
    /// Records that the app was told about `version`, if it is still the stored version (a
    /// newer one carries its own announcement).
    fn mark_announced(&self, account: &AccountId, version: u64) -> impl Future<Output = Res<()>> + Send;

    /// Takes the processing lease on an event unless it is completed or leased to someone
    /// else whose lease has not expired at `now`.
    fn claim_event(&self, event_id: &str, now: i64, lease_until: i64) -> impl Future<Output = Res<LedgerClaim>> + Send;
    /// Marks a leased event done; kept until `expires_at` (beyond Stripe's retry window).
    fn complete_event(&self, event_id: &str, token: &str, expires_at: i64) -> impl Future<Output = Res<()>> + Send;
    /// Gives a lease back after a failure so that a redelivery can process the event.
    fn release_event(&self, event_id: &str, token: &str) -> impl Future<Output = Res<()>> + Send;
    fn event_state(&self, event_id: &str) -> impl Future<Output = Res<Option<LedgerState>>> + Send;

    /// Writes a dunning record, except over a closed one with an open one: an episode that
    /// ended (paid, voided) is never reopened by a slower writer; `Stale` then.
    fn put_dunning(&self, record: &DunningRecord) -> impl Future<Output = Res<WriteOutcome>> + Send;
    fn get_dunning(
        &self,
        customer_id: &str,
        invoice_id: &str,
    ) -> impl Future<Output = Res<Option<DunningRecord>>> + Send;
    fn dunning_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Vec<DunningRecord>>> + Send;

    /// Writes what `record` knows of a purchase over what is stored, filling in only what the
    /// stored one lacks ([`PurchaseRecord::merged`]), atomically: grant and revocation commute.
    fn put_purchase(&self, record: &PurchaseRecord) -> impl Future<Output = Res<()>> + Send;
    fn purchases_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Vec<PurchaseRecord>>> + Send;

    /// Counts one request against `key` (a route class and an account) in the fixed window
    /// that starts at `window_start`, atomically, and returns the count with this one; the
    /// counter disappears after `expires_at`. Concurrent callers each get a distinct count, so
    /// a burst cannot slip past a limit; a later window starts again at 1.
    fn count_request(&self, key: &str, window_start: i64, expires_at: i64) -> impl Future<Output = Res<u64>> + Send;

    fn get_cursor(&self, name: &str) -> impl Future<Output = Res<Option<i64>>> + Send;
    /// Moves a cursor from `expected` (None: unset) to `value`; false if someone moved it first.
    fn set_cursor(&self, name: &str, expected: Option<i64>, value: i64) -> impl Future<Output = Res<bool>> + Send;
}

/// One store shared by several handlers (the local dev server, tests) behind an `Arc`.
impl<S: BillingStore> BillingStore for std::sync::Arc<S> {
    fn link_customer(&self, account: &AccountId, customer_id: &str) -> impl Future<Output = Res<LinkOutcome>> + Send {
        (**self).link_customer(account, customer_id)
    }
    fn unlink_customer(&self, account: &AccountId, customer_id: &str) -> impl Future<Output = Res<bool>> + Send {
        (**self).unlink_customer(account, customer_id)
    }
    fn put_checkout_session(
        &self,
        session_id: &str,
        account: &AccountId,
        expires_at: i64,
    ) -> impl Future<Output = Res<()>> + Send {
        (**self).put_checkout_session(session_id, account, expires_at)
    }
    fn checkout_session_account(&self, session_id: &str) -> impl Future<Output = Res<Option<AccountId>>> + Send {
        (**self).checkout_session_account(session_id)
    }

    fn customer_of_account(&self, account: &AccountId) -> impl Future<Output = Res<Option<String>>> + Send {
        (**self).customer_of_account(account)
    }
    fn account_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Option<AccountId>>> + Send {
        (**self).account_of_customer(customer_id)
    }
    fn put_subscription(
        &self,
        record: &SubscriptionRecord,
        rule: WriteRule,
    ) -> impl Future<Output = Res<WriteOutcome>> + Send {
        (**self).put_subscription(record, rule)
    }
    fn get_subscription(
        &self,
        customer_id: &str,
        subscription_id: &str,
    ) -> impl Future<Output = Res<Option<SubscriptionRecord>>> + Send {
        (**self).get_subscription(customer_id, subscription_id)
    }
    fn subscriptions_of_customer(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Res<Vec<SubscriptionRecord>>> + Send {
        (**self).subscriptions_of_customer(customer_id)
    }
    fn sample_subscriptions(&self, limit: usize) -> impl Future<Output = Res<SubscriptionSample>> + Send {
        (**self).sample_subscriptions(limit)
    }
    fn put_entitlement(&self, entitlement: &Entitlement) -> impl Future<Output = Res<WriteOutcome>> + Send {
        (**self).put_entitlement(entitlement)
    }
    fn get_entitlement(&self, account: &AccountId) -> impl Future<Output = Res<Option<Entitlement>>> + Send {
        (**self).get_entitlement(account)
    }
    fn mark_announced(&self, account: &AccountId, version: u64) -> impl Future<Output = Res<()>> + Send {
        (**self).mark_announced(account, version)
    }
    fn claim_event(&self, event_id: &str, now: i64, lease_until: i64) -> impl Future<Output = Res<LedgerClaim>> + Send {
        (**self).claim_event(event_id, now, lease_until)
    }
    fn complete_event(&self, event_id: &str, token: &str, expires_at: i64) -> impl Future<Output = Res<()>> + Send {
        (**self).complete_event(event_id, token, expires_at)
    }
    fn release_event(&self, event_id: &str, token: &str) -> impl Future<Output = Res<()>> + Send {
        (**self).release_event(event_id, token)
    }
    fn event_state(&self, event_id: &str) -> impl Future<Output = Res<Option<LedgerState>>> + Send {
        (**self).event_state(event_id)
    }
    fn put_dunning(&self, record: &DunningRecord) -> impl Future<Output = Res<WriteOutcome>> + Send {
        (**self).put_dunning(record)
    }
    fn get_dunning(
        &self,
        customer_id: &str,
        invoice_id: &str,
    ) -> impl Future<Output = Res<Option<DunningRecord>>> + Send {
        (**self).get_dunning(customer_id, invoice_id)
    }
    fn dunning_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Vec<DunningRecord>>> + Send {
        (**self).dunning_of_customer(customer_id)
    }
    fn put_purchase(&self, record: &PurchaseRecord) -> impl Future<Output = Res<()>> + Send {
        (**self).put_purchase(record)
    }
    fn purchases_of_customer(&self, customer_id: &str) -> impl Future<Output = Res<Vec<PurchaseRecord>>> + Send {
        (**self).purchases_of_customer(customer_id)
    }
    fn count_request(&self, key: &str, window_start: i64, expires_at: i64) -> impl Future<Output = Res<u64>> + Send {
        (**self).count_request(key, window_start, expires_at)
    }
    fn get_cursor(&self, name: &str) -> impl Future<Output = Res<Option<i64>>> + Send {
        (**self).get_cursor(name)
    }
    fn set_cursor(&self, name: &str, expected: Option<i64>, value: i64) -> impl Future<Output = Res<bool>> + Send {
        (**self).set_cursor(name, expected, value)
    }
}

/// What a write of `new` over `stored` keeps as the start of the `past_due` spell: the earliest
/// write that saw it, or none once the subscription is out of `past_due`. Both adapters apply
/// it (DynamoDB as `if_not_exists`), so grace counts from the failure, not from later events.
pub(crate) fn past_due_since(stored: Option<&SubscriptionRecord>, new: &SubscriptionRecord) -> Option<i64> {
    if new.status != crate::stripe::SubscriptionStatus::PastDue {
        return None;
    }
    let seen = new.past_due_since.unwrap_or(new.watermark);
    let earlier = stored
        .filter(|s| s.status == crate::stripe::SubscriptionStatus::PastDue)
        .and_then(|s| s.past_due_since);
    Some(earlier.map_or(seen, |earlier| earlier.min(seen)))
}

/// What a drift-check sample drew, and how many items it read to draw it.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSample {
    pub records: Vec<SubscriptionRecord>,
    pub items_read: usize,
}

/// The most items a sample of `limit` may read: twenty per subscription wanted (subscriptions
/// are a minority beside ledger and link items), within 200 and 2,000 items, about 250
/// read units at most with eventually consistent reads of 1 KB items.
pub fn sample_read_budget(limit: usize) -> usize {
    limit.saturating_mul(20).clamp(200, 2_000)
}

/// Reservoir sampling: a uniform sample of `limit` items from a stream of unknown length, in
/// memory proportional to the sample, not the stream.
pub(crate) struct Reservoir<T> {
    limit: usize,
    seen: usize,
    items: Vec<T>,
}

impl<T> Reservoir<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: 0,
            items: Vec::with_capacity(limit.min(1024)),
        }
    }

    pub(crate) fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.limit {
            self.items.push(item);
        } else {
            let slot = fastrand::usize(..self.seen);
            if let Some(kept) = self.items.get_mut(slot) {
                *kept = item;
            }
        }
    }

    pub(crate) fn into_items(self) -> Vec<T> {
        self.items
    }
}
