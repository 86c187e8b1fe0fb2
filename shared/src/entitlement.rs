//! What an account may use, computed from everything they have: every subscription, every item.
//!
//! Each subscription grants on its own ([`grant_of`]):
//!
//! | Stripe state                                        | grant                                           |
//! |-----------------------------------------------------|-------------------------------------------------|
//! | `active`, `trialing`                                | active, until `cancel_at` / period end if set   |
//! | `past_due`                                          | grace, until the current invoice's dunning deadline, else `DUNNING_GRACE_DAYS` after the spell began |
//! | `unpaid`, `canceled`, `incomplete`, `paused`, ...    | nothing                                         |
//! | collection paused (`pause_collection` set)          | nothing while paused (policy: it is not billed) |
//! | no item with a price in the catalog                 | nothing (logged: a price the catalog lacks)     |
//!
//! A one-time purchase ([`add_purchases`]) grants its product's features and limits with no
//! deadline (a lifetime deal) and its credits, until it is refunded in full or its dispute
//! is lost.
//!
//! The features are the union over every item whose price is in the catalog. The account's
//! access is the best grant still running; each grant keeps its own deadline, and
//! [`EntitlementView::at`] applies them at the reader's clock, so access ends on time without
//! any scheduled job.

use serde::Serialize;

use std::collections::BTreeMap;

use crate::config::{Catalog, LimitRule, Offer, SEATS_LIMIT};
use crate::store::{
    Access, AccountId, DunningRecord, DunningStage, Entitlement, Grant, PurchaseRecord, SubscriptionRecord,
};
use crate::stripe::SubscriptionStatus;

/// Grace after a failed payment when no dunning record says otherwise: Stripe's recommended
/// Smart Retries policy retries up to 8 times within 2 weeks, so access lasts as long as retries.
pub const DEFAULT_GRACE_DAYS: u32 = 14;

const DAY_SECS: i64 = 86_400;

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The grace deadline of a `past_due` subscription: the open episode of the invoice it is
/// collecting now; records of other invoices (an old voided one, say) say nothing about it.
fn grace_deadline(subscription: &SubscriptionRecord, dunning: &[DunningRecord], grace_days: u32) -> Option<i64> {
    let episode = dunning.iter().find(|record| {
        record.stage != DunningStage::Closed
            && record.subscription_id.as_deref() == Some(subscription.subscription_id.as_str())
            && subscription.latest_invoice.as_deref() == Some(record.invoice_id.as_str())
    });
    match episode.and_then(|record| record.grace_until) {
        Some(deadline) => Some(deadline),
        None => {
            let since = subscription.past_due_since.unwrap_or(subscription.watermark);
            Some(since.saturating_add(i64::from(grace_days).saturating_mul(DAY_SECS)))
        }
    }
}

/// What one subscription grants, or `None` if it grants nothing.
pub fn grant_of(
    subscription: &SubscriptionRecord,
    dunning: &[DunningRecord],
    plans: &Catalog,
    grace_days: u32,
) -> Option<Grant> {
    let (access, deadline) = match subscription.status {
        SubscriptionStatus::Active | SubscriptionStatus::Trialing => {
            let period_end = subscription
                .cancel_at_period_end
                .then_some(subscription.current_period_end)
                .flatten();
            (Access::Active, period_end)
        }
        SubscriptionStatus::PastDue => (Access::Grace, grace_deadline(subscription, dunning, grace_days)),
        SubscriptionStatus::Unpaid
        | SubscriptionStatus::Canceled
        | SubscriptionStatus::Incomplete
        | SubscriptionStatus::IncompleteExpired
        | SubscriptionStatus::Paused
        | SubscriptionStatus::Unknown => return None,
    };
    if subscription.pause_collection.is_some() {
        return None;
    }
    let mut plan = None;
    let mut features: Vec<String> = Vec::new();
    let mut limits = BTreeMap::new();
    let mut addons = Vec::new();
    for item in &subscription.items {
        // A metered item bills use; what the plan includes of it is the plan's.
        if plans.is_metered(&item.price_id) {
            continue;
        }
        let Some(offer) = plans.offer(&item.price_id) else {
            tracing::warn!(subscription_id = %subscription.subscription_id, price_id = %item.price_id,
                "subscription item on a price the catalog does not list: it grants nothing");
            continue;
        };
        features.extend(offer.features().iter().cloned());
        for (name, value) in offer.limits() {
            add_limit(&mut limits, plans.limit_rule(name), name, *value);
        }
        match offer {
            Offer::Plan(key, found) => {
                plan.get_or_insert_with(|| key.to_owned());
                if found.seats.is_some() {
                    let seats = item.quantity.unwrap_or(1);
                    add_limit(&mut limits, plans.limit_rule(SEATS_LIMIT), SEATS_LIMIT, seats);
                }
            }
            Offer::Addon(key, _) => addons.push(key.to_owned()),
        }
    }
    // An add-on alone (its plan item removed in the dashboard, say) grants nothing: add-ons
    // extend a plan.
    let plan = plan?;
    features.sort_unstable();
    features.dedup();
    addons.sort_unstable();
    addons.dedup();
    Some(Grant {
        subscription_id: subscription.subscription_id.clone(),
        plan: Some(plan),
        access,
        access_until: earliest(deadline, subscription.cancel_at),
        features,
        limits,
        addons,
        current_period_end: subscription.current_period_end,
        product: None,
        credits: 0,
    })
}

/// Adds what the account's standing purchases grant: the product's features and limits for
/// good (access, when it has any), and its credits times the units bought. A purchase of a
/// product the catalog no longer lists grants nothing (logged).
pub fn add_purchases(entitlement: &mut Entitlement, purchases: &[PurchaseRecord], plans: &Catalog) {
    for purchase in purchases.iter().filter(|p| p.grants()) {
        let Some(key) = purchase.product.as_deref() else {
            continue;
        };
        let Some(product) = plans.product(key) else {
            tracing::warn!(payment_intent = %purchase.payment_intent_id, product = key,
                "purchase of a product the catalog does not list: it grants nothing");
            continue;
        };
        let units = u64::from(purchase.quantity.max(1));
        let grants_access = !product.features.is_empty() || !product.limits.is_empty();
        let access = if grants_access { Access::Active } else { Access::None };
        let mut limits = BTreeMap::new();
        for (name, value) in &product.limits {
            add_limit(&mut limits, plans.limit_rule(name), name, *value);
            if plans.limit_rule(name) == LimitRule::Sum && !entitlement.summed_limits.contains(name) {
                entitlement.summed_limits.push(name.clone());
                entitlement.summed_limits.sort_unstable();
            }
        }
        if grants_access {
            entitlement.features.extend(product.features.iter().cloned());
            entitlement.features.sort_unstable();
            entitlement.features.dedup();
            if level(access) > level(entitlement.access) {
                entitlement.access = access;
                entitlement.access_until = None;
            }
        }
        entitlement.grants.push(Grant {
            subscription_id: purchase.payment_intent_id.clone(),
            plan: None,
            access,
            access_until: None,
            features: product.features.clone(),
            limits,
            addons: Vec::new(),
            current_period_end: None,
            product: Some(key.to_owned()),
            credits: product.credits.unwrap_or(0).saturating_mul(units),
        });
    }
}

fn add_limit(limits: &mut BTreeMap<String, u64>, rule: LimitRule, name: &str, value: u64) {
    let entry = limits.entry(name.to_owned()).or_insert(match rule {
        LimitRule::Sum => 0,
        LimitRule::Max => value,
    });
    *entry = match rule {
        LimitRule::Sum => entry.saturating_add(value),
        LimitRule::Max => (*entry).max(value),
    };
}

/// The limits of several grants: summed where `summed` names them, else the largest.
fn combined_limits<'a>(grants: impl Iterator<Item = &'a Grant>, summed: &[String]) -> BTreeMap<String, u64> {
    let mut limits = BTreeMap::new();
    for grant in grants {
        for (name, value) in &grant.limits {
            let rule = if summed.contains(name) {
                LimitRule::Sum
            } else {
                LimitRule::Max
            };
            add_limit(&mut limits, rule, name, *value);
        }
    }
    limits
}

fn level(access: Access) -> u8 {
    match access {
        Access::Active => 2,
        Access::Grace => 1,
        Access::None => 0,
    }
}

/// The grant that names the plan: best access, then the longest running (no deadline is
/// longest), then the latest period, then the smallest id — a total order, so every writer
/// picks the same one.
fn governing<'a>(grants: impl Iterator<Item = &'a Grant>) -> Option<&'a Grant> {
    grants.max_by(|a, b| {
        let key = |g: &Grant| {
            (
                level(g.access),
                g.access_until.is_none(),
                g.access_until,
                g.current_period_end,
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| b.subscription_id.cmp(&a.subscription_id))
    })
}

fn running(grant: &Grant, now: i64) -> bool {
    grant.access != Access::None && grant.access_until.is_none_or(|until| now < until)
}

pub fn compute(
    account: &AccountId,
    customer_id: &str,
    subscriptions: &[SubscriptionRecord],
    dunning: &[DunningRecord],
    plans: &Catalog,
    grace_days: u32,
) -> Entitlement {
    let grants: Vec<Grant> = subscriptions
        .iter()
        .filter_map(|subscription| grant_of(subscription, dunning, plans, grace_days))
        .collect();
    let governing_grant = governing(grants.iter());
    let subscription = governing_grant
        .and_then(|grant| {
            subscriptions
                .iter()
                .find(|s| s.subscription_id == grant.subscription_id)
        })
        .or_else(|| subscriptions.iter().max_by_key(|s| (s.current_period_end, s.watermark)));
    let mut features: Vec<String> = grants.iter().flat_map(|g| g.features.iter().cloned()).collect();
    features.sort_unstable();
    features.dedup();
    let mut summed_limits: Vec<String> = grants
        .iter()
        .flat_map(|g| g.limits.keys())
        .filter(|name| plans.limit_rule(name) == LimitRule::Sum)
        .cloned()
        .collect();
    summed_limits.sort_unstable();
    summed_limits.dedup();
    Entitlement {
        account_id: account.clone(),
        customer_id: Some(customer_id.to_owned()),
        subscription_id: subscription.map(|s| s.subscription_id.clone()),
        plan: governing_grant
            .and_then(|g| g.plan.clone())
            .or_else(|| subscription.and_then(|s| s.plan.clone())),
        status: subscription.map(|s| s.status),
        access: governing_grant.map_or(Access::None, |g| g.access),
        access_until: governing_grant.and_then(|g| g.access_until),
        features,
        cancel_at_period_end: subscription.is_some_and(|s| s.cancel_at_period_end),
        current_period_end: subscription.and_then(|s| s.current_period_end),
        current_period_start: subscription.and_then(|s| s.current_period_start),
        trial_used: subscriptions.iter().any(|s| s.trial_end.is_some()),
        grants,
        summed_limits,
        version: 0,
        changed_version: 0,
        announced_version: 0,
    }
}

/// The entitlement of an account without a customer (never bought, or the customer was deleted).
pub fn nothing(account: &AccountId) -> Entitlement {
    Entitlement {
        account_id: account.clone(),
        customer_id: None,
        subscription_id: None,
        plan: None,
        status: None,
        access: Access::None,
        access_until: None,
        features: Vec::new(),
        cancel_at_period_end: false,
        current_period_end: None,
        current_period_start: None,
        grants: Vec::new(),
        trial_used: false,
        summed_limits: Vec::new(),
        version: 0,
        changed_version: 0,
        announced_version: 0,
    }
}

/// The entitlement as the app sees it at one moment (`GET /billing/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntitlementView {
    pub plan: Option<String>,
    pub status: Option<SubscriptionStatus>,
    pub access: Access,
    pub access_until: Option<i64>,
    pub features: Vec<String>,
    /// Numeric limits of every running grant (`seats` for a seat-based plan), combined as
    /// the catalog declares: summed, or the largest.
    pub limits: BTreeMap<String, u64>,
    /// The add-ons of every running grant.
    pub addons: Vec<String>,
    /// Credits bought and not taken back (the app counts what is spent).
    pub credits: u64,
    /// The one-time products bought and standing.
    pub products: Vec<String>,
    /// What grants what: every subscription and purchase still running.
    pub sources: Vec<Source>,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<i64>,
}

/// One thing the account has that grants access, features or credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `subscription` or `purchase`.
    pub kind: &'static str,
    /// The subscription's id, or the purchase's payment intent.
    pub id: String,
    /// The plan or product key.
    pub name: Option<String>,
    pub access: Access,
    /// When it stops granting (`null`: it does not end on its own).
    pub until: Option<i64>,
    pub features: Vec<String>,
    pub credits: u64,
}

impl Source {
    fn of(grant: &Grant) -> Self {
        Self {
            kind: if grant.product.is_some() {
                "purchase"
            } else {
                "subscription"
            },
            id: grant.subscription_id.clone(),
            name: grant.plan.clone().or_else(|| grant.product.clone()),
            access: grant.access,
            until: grant.access_until,
            features: grant.features.clone(),
            credits: grant.credits,
        }
    }
}

impl EntitlementView {
    pub fn none() -> Self {
        Self {
            plan: None,
            status: None,
            access: Access::None,
            access_until: None,
            features: Vec::new(),
            limits: BTreeMap::new(),
            addons: Vec::new(),
            credits: 0,
            products: Vec::new(),
            sources: Vec::new(),
            cancel_at_period_end: false,
            current_period_end: None,
        }
    }

    /// Applies every grant's deadline at `now`: the best grant still running decides access
    /// and plan, and the features, limits and add-ons are those of every grant still running.
    pub fn at(entitlement: &Entitlement, now: i64) -> Self {
        if entitlement.version == 0 && entitlement.grants.is_empty() {
            return Self::legacy_at(entitlement, now);
        }
        let live = || entitlement.grants.iter().filter(|g| running(g, now));
        // Purchases carry no deadline, so credits (even of a pack that grants no access) and
        // products count whatever the subscriptions do.
        let purchases = || entitlement.grants.iter().filter(|g| g.product.is_some());
        let credits = purchases().map(|g| g.credits).fold(0u64, u64::saturating_add);
        let mut products: Vec<String> = purchases().filter_map(|g| g.product.clone()).collect();
        products.sort_unstable();
        products.dedup();
        let mut sources: Vec<Source> = live().map(Source::of).collect();
        sources.extend(purchases().filter(|g| g.access == Access::None).map(Source::of));
        let Some(governing_grant) = governing(live()) else {
            return Self {
                status: entitlement.status,
                credits,
                products,
                sources,
                cancel_at_period_end: entitlement.cancel_at_period_end,
                current_period_end: entitlement.current_period_end,
                ..Self::none()
            };
        };
        // The plan is the best running subscription's, even when a lifetime purchase is what
        // gives access.
        let plan = governing(live().filter(|g| g.plan.is_some())).and_then(|g| g.plan.clone());
        let mut features: Vec<String> = live().flat_map(|g| g.features.iter().cloned()).collect();
        features.sort_unstable();
        features.dedup();
        let mut addons: Vec<String> = live().flat_map(|g| g.addons.iter().cloned()).collect();
        addons.sort_unstable();
        addons.dedup();
        Self {
            plan,
            status: entitlement.status,
            access: governing_grant.access,
            access_until: governing_grant.access_until,
            features,
            limits: combined_limits(live(), &entitlement.summed_limits),
            addons,
            credits,
            products,
            sources,
            cancel_at_period_end: entitlement.cancel_at_period_end,
            current_period_end: entitlement.current_period_end,
        }
    }

    /// An item written before grants existed: one deadline for the whole entitlement. The
    /// next event for the account rewrites it with grants.
    fn legacy_at(entitlement: &Entitlement, now: i64) -> Self {
        let expired = entitlement.access_until.is_some_and(|until| now >= until);
        let access = if expired { Access::None } else { entitlement.access };
        Self {
            plan: entitlement.plan.clone(),
            status: entitlement.status,
            access,
            access_until: entitlement.access_until,
            features: if access == Access::None {
                Vec::new()
            } else {
                entitlement.features.clone()
            },
            limits: BTreeMap::new(),
            addons: Vec::new(),
            credits: 0,
            products: Vec::new(),
            sources: Vec::new(),
            cancel_at_period_end: entitlement.cancel_at_period_end,
            current_period_end: entitlement.current_period_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ItemRecord, Revocation};

    fn plans() -> Catalog {
        Catalog::parse(r#"{"pro":{"price_id":"price_pro","features":["reports","api"]},"basic":{"price_id":"price_basic","features":["reports"]}}"#).unwrap()
    }

    fn sub(status: SubscriptionStatus, cancel_at_period_end: bool) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription_id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status,
            price_id: Some("price_pro".into()),
            plan: None,
            quantity: Some(1),
            items: vec![ItemRecord {
                price_id: "price_pro".into(),
                quantity: Some(1),
            }],
            cancel_at_period_end,
            cancel_at: None,
            pause_collection: None,
            current_period_start: Some(1_000_000 - 2_592_000),
            current_period_end: Some(1_000_000),
            trial_end: None,
            ended_at: None,
            latest_invoice: None,
            created: 1,
            past_due_since: None,
            schedule: None,
            watermark: 1,
        }
    }

    fn account() -> AccountId {
        AccountId::parse("account-1").unwrap()
    }

    #[test]
    fn cancelling_keeps_access_until_period_end() {
        let entitlement = compute(
            &account(),
            "cus_1",
            &[sub(SubscriptionStatus::Active, true)],
            &[],
            &plans(),
            14,
        );
        assert_eq!(
            (entitlement.access, entitlement.access_until),
            (Access::Active, Some(1_000_000))
        );
        assert_eq!(EntitlementView::at(&entitlement, 999_999).access, Access::Active);
        let after = EntitlementView::at(&entitlement, 1_000_000);
        assert_eq!(after.access, Access::None);
        assert!(after.features.is_empty());
    }

    #[test]
    fn a_lifetime_deal_outlasts_a_cancelled_plan_and_a_credit_pack_grants_only_credits() {
        let catalog = Catalog::parse(include_str!("../../infra/catalog.example.json")).unwrap();
        let mut subscription = sub(SubscriptionStatus::Active, true);
        subscription.items[0].price_id = "price_starter_month_usd".into();
        let purchase = |intent: &str, product: &str, quantity: u32, revoked: Option<Revocation>| PurchaseRecord {
            customer_id: "cus_1".into(),
            payment_intent_id: intent.into(),
            session_id: None,
            product: Some(product.into()),
            quantity,
            paid_at: Some(1),
            revoked,
            revoked_at: revoked.map(|_| 2),
        };
        let mut entitlement = compute(&account(), "cus_1", &[subscription], &[], &catalog, 14);
        add_purchases(
            &mut entitlement,
            &[
                purchase("pi_life", "lifetime", 1, None),
                purchase("pi_pack", "credits_1000", 2, None),
                purchase("pi_gone", "credits_1000", 5, Some(Revocation::Refunded)),
            ],
            &catalog,
        );
        // While the plan runs: its name, both grants' features, projects summed (5 + 20).
        let now = EntitlementView::at(&entitlement, 999_999);
        assert_eq!(
            (now.plan.as_deref(), now.access, now.access_until),
            (Some("starter"), Access::Active, None)
        );
        assert_eq!(now.features, ["api", "reports"]);
        assert_eq!(now.limits.get("projects"), Some(&25));
        assert_eq!(
            (now.credits, now.products.clone()),
            (2000, vec!["credits_1000".to_owned(), "lifetime".to_owned()])
        );
        // The plan ended: the deal alone, no plan, still active; the credits stay.
        let later = EntitlementView::at(&entitlement, 1_000_000);
        assert_eq!(
            (later.plan, later.access, later.access_until),
            (None, Access::Active, None)
        );
        assert_eq!(later.limits.get("projects"), Some(&20));
        assert_eq!(later.credits, 2000);
        assert_eq!(later.sources.len(), 2, "the deal and the pack: {:?}", later.sources);
    }

    #[test]
    fn no_subscription_means_no_access() {
        let entitlement = compute(&account(), "cus_1", &[], &[], &plans(), 14);
        assert_eq!(entitlement.access, Access::None);
        assert_eq!(entitlement.subscription_id, None);
        assert_eq!(EntitlementView::at(&entitlement, 0), EntitlementView::none());
    }
}
