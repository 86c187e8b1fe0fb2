//! What the store holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stripe::SubscriptionStatus;

/// The billable account: the JWT `sub` by default (one-person accounts), or the value of the
/// claim `BILLING_ACCOUNT_CLAIM` names (an organisation id). Validated so it is safe inside keys
/// and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an account id must be 1-128 printable characters without '#'")]
pub struct InvalidAccountId;

impl AccountId {
    pub fn parse(raw: &str) -> Result<Self, InvalidAccountId> {
        let valid = !raw.is_empty() && raw.len() <= 128 && !raw.contains('#') && raw.chars().all(|c| !c.is_control());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidAccountId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account a Stripe object's metadata names: `account_id`, as this system writes it on
    /// customers, subscriptions and sessions, else `user_id`, as releases before accounts did.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Option<Self> {
        metadata
            .get(ACCOUNT_METADATA_KEY)
            .or_else(|| metadata.get(LEGACY_METADATA_KEY))
            .and_then(|raw| Self::parse(raw).ok())
    }
}

/// The metadata key naming the account on the Stripe objects this system creates.
pub const ACCOUNT_METADATA_KEY: &str = "account_id";
const LEGACY_METADATA_KEY: &str = "user_id";

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    /// The user was already linked; the stored customer wins.
    AlreadyLinked(String),
    /// The customer already belongs to another user: one customer never serves two users.
    CustomerTaken(AccountId),
}

/// One item of a subscription: what it sells and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub price_id: String,
    pub quantity: Option<u64>,
}

/// The stored view of one Stripe subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub subscription_id: String,
    pub customer_id: String,
    pub status: SubscriptionStatus,
    /// The plan item's price and plan (the first item on a catalog plan's price, else the
    /// first item): what a plan change replaces.
    pub price_id: Option<String>,
    pub plan: Option<String>,
    pub quantity: Option<u64>,
    /// Every item, in Stripe's order: access is the union of what they sell.
    #[serde(default)]
    pub items: Vec<ItemRecord>,
    pub cancel_at_period_end: bool,
    /// A fixed end date (the portal's "cancel on date"); access ends then.
    #[serde(default)]
    pub cancel_at: Option<i64>,
    /// `pause_collection.behavior` while collection is paused.
    #[serde(default)]
    pub pause_collection: Option<String>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub ended_at: Option<i64>,
    /// The invoice the subscription is collecting now: its dunning episode decides grace.
    #[serde(default)]
    pub latest_invoice: Option<String>,
    #[serde(default)]
    pub created: i64,
    /// When this `past_due` spell began (the first write that saw it); the store keeps the
    /// earliest across writes of the same spell and drops it when the status moves on.
    #[serde(default)]
    pub past_due_since: Option<i64>,
    /// The subscription schedule that manages it (a downgrade waiting for the period end).
    #[serde(default)]
    pub schedule: Option<String>,
    /// `created` of the newest event (or Stripe read) applied; older ones are stale.
    pub watermark: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRule {
    /// Only a strictly newer watermark wins: for event payloads.
    IfNewer,
    /// An equal watermark wins too: for what Stripe says now, read after a tie.
    IfNotOlder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Active,
    Grace,
    None,
}

/// What one subscription or purchase grants, until when: the entitlement keeps every grant, so
/// a reader applies each deadline at its own clock without recomputing from subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The subscription's id, or the purchase's payment intent.
    pub subscription_id: String,
    pub plan: Option<String>,
    pub access: Access,
    pub access_until: Option<i64>,
    pub features: Vec<String>,
    /// The catalog's limits of every item, combined by the catalog's rules; `seats` is the
    /// quantity of a seat-based plan's item.
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// The add-ons among the items.
    #[serde(default)]
    pub addons: Vec<String>,
    pub current_period_end: Option<i64>,
    /// The one-time product a purchase grant is for (`None` for a subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Credits a purchase granted (units bought × the product's credits).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credits: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

/// Why a purchase no longer grants anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// The charge was refunded in full (`charge.refunded` with `refunded: true`).
    Refunded,
    /// The cardholder's bank decided a dispute against the merchant (`charge.dispute.closed`,
    /// `status: lost`).
    DisputeLost,
}

/// A one-time purchase, per payment intent, under its customer. Written by the events that
/// grant it (the session paid) and that revoke it (a full refund, a lost dispute) in any
/// order: each write only fills in what is missing, so the record converges, and a revoked
/// purchase never grants again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRecord {
    pub customer_id: String,
    pub payment_intent_id: String,
    /// Known once the paid session was processed.
    // What is unknown is not written: a DynamoDB write fills in only absent attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Units bought; 0 until the paid session was processed.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl PurchaseRecord {
    /// What a write of `new` over `stored` keeps: every field the stored one lacks.
    pub fn merged(stored: Option<&PurchaseRecord>, new: &PurchaseRecord) -> PurchaseRecord {
        let Some(stored) = stored else {
            return new.clone();
        };
        PurchaseRecord {
            customer_id: stored.customer_id.clone(),
            payment_intent_id: stored.payment_intent_id.clone(),
            session_id: stored.session_id.clone().or_else(|| new.session_id.clone()),
            product: stored.product.clone().or_else(|| new.product.clone()),
            quantity: if stored.quantity != 0 {
                stored.quantity
            } else {
                new.quantity
            },
            paid_at: stored.paid_at.or(new.paid_at),
            revoked: stored.revoked.or(new.revoked),
            revoked_at: stored.revoked_at.or(new.revoked_at),
        }
    }

    /// Paid for, not revoked, and of a known product: it grants.
    pub fn grants(&self) -> bool {
        self.paid_at.is_some() && self.revoked.is_none() && self.product.is_some()
    }
}

/// One per account: what the app asks before letting a member use a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Read under its old name too: items written before accounts existed say `user_id`.
    #[serde(alias = "user_id")]
    pub account_id: AccountId,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub plan: Option<String>,
    pub status: Option<SubscriptionStatus>,
    pub access: Access,
    /// Access ends then without any job running: readers compare it with their clock.
    pub access_until: Option<i64>,
    pub features: Vec<String>,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<i64>,
    /// The start of the governing subscription's period: usage counts per billing period.
    #[serde(default)]
    pub current_period_start: Option<i64>,
    /// Every subscription that grants something (active or grace, with a catalog price).
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// The user has had a free trial (on any customer): later checkouts offer none. Kept
    /// when the customer is deleted, so a new customer does not bring a new trial.
    #[serde(default)]
    pub trial_used: bool,
    /// The limits the catalog sums across grants (the rest take the largest): kept with the
    /// grants so a reader combines the running ones without the catalog.
    #[serde(default)]
    pub summed_limits: Vec<String>,
    /// Bumped by every write; a write is conditional on the version it read, so two writers
    /// racing on one user never lose an update (the loser recomputes).
    #[serde(default)]
    pub version: u64,
    /// The version at which what the entitlement grants last changed.
    #[serde(default)]
    pub changed_version: u64,
    /// The last version the app was told about (`billing.entitlement_changed`); behind
    /// `changed_version` until a writer that can publish has published it, so a failed publish
    /// is retried by the next writer instead of lost.
    #[serde(default)]
    pub announced_version: u64,
}

impl Entitlement {
    /// Whether `other` grants the same as this one, whatever the bookkeeping versions.
    pub fn grants_same_as(&self, other: &Entitlement) -> bool {
        let bare = |e: &Entitlement| Entitlement {
            version: 0,
            changed_version: 0,
            announced_version: 0,
            ..e.clone()
        };
        bare(self) == bare(other)
    }

    /// A change the app has not been told about yet.
    pub fn unannounced(&self) -> bool {
        self.changed_version > self.announced_version
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerClaim {
    /// This invocation holds the lease; `token` proves it when completing or releasing.
    Acquired { token: String },
    /// Already processed: acknowledge without effects.
    Completed,
    /// Another invocation holds a live lease: retry later.
    Busy { lease_until: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerState {
    InProgress { lease_until: i64 },
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DunningStage {
    /// Stripe will retry the payment.
    Retrying,
    /// The customer must authenticate (3-D Secure) on the hosted invoice page.
    ActionRequired,
    /// Paid, voided or written off (an event, or a settled re-read): the episode is over.
    Closed,
}

/// One failed-payment episode, per invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningRecord {
    pub invoice_id: String,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub stage: DunningStage,
    pub attempt_count: u32,
    pub next_payment_attempt: Option<i64>,
    pub failure_code: Option<String>,
    pub decline_code: Option<String>,
    pub hosted_invoice_url: Option<String>,
    pub grace_until: Option<i64>,
    pub watermark: i64,
    /// The last attempt the customer was emailed about, and the last one published as an app
    /// event: a retry after a partial failure sends only what is still missing.
    #[serde(default)]
    pub emailed_attempt: u32,
    #[serde(default)]
    pub published_attempt: u32,
    /// The same two for the 3-D Secure "confirm your payment" notice, counted apart: Stripe
    /// sends `invoice.payment_failed` and `invoice.payment_action_required` for one attempt,
    /// in either order, and the customer must get the confirmation link either way.
    #[serde(default)]
    pub emailed_action_attempt: u32,
    #[serde(default)]
    pub published_action_attempt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entitlement_written_before_accounts_is_read() {
        let old = serde_json::json!({
            "user_id": "user-1", "customer_id": "cus_1", "subscription_id": null, "plan": null,
            "status": null, "access": "none", "access_until": null, "features": [],
            "cancel_at_period_end": false, "current_period_end": null,
        });
        let read: Entitlement = serde_json::from_value(old).unwrap();
        assert_eq!(read.account_id.as_str(), "user-1");
        assert!(read.grants.is_empty() && read.summed_limits.is_empty());
    }

    #[test]
    fn account_ids_are_validated() {
        assert!(AccountId::parse("auth0|5f7c8ec7c33c6c004bbafe82").is_ok());
        for bad in ["", "a#b", "line\nbreak", &"x".repeat(129)] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
