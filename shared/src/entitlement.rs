//! What a user may use, computed from their subscriptions and the plan catalog.
//!
//! | Stripe status                                   | access                                   |
//! |-------------------------------------------------|------------------------------------------|
//! | `active`, `trialing`                            | active (until period end if cancelling)  |
//! | `past_due`                                      | grace, until the dunning grace deadline   |
//! | `unpaid`, `canceled`, `incomplete_expired`, ... | none                                     |
//!
//! `access_until` is stored, and [`EntitlementView::at`] compares it with the reader's clock,
//! so access ends on time without any scheduled job.

use serde::Serialize;

use crate::config::PlanCatalog;
use crate::store::{Access, DunningRecord, DunningStage, Entitlement, SubscriptionRecord, UserId};
use crate::stripe::SubscriptionStatus;

/// Grace after a failed payment when no dunning record says otherwise: Stripe's recommended
/// Smart Retries policy retries up to 8 times within 2 weeks, so access lasts as long as retries.
pub const DEFAULT_GRACE_DAYS: u32 = 14;

fn rank(status: SubscriptionStatus) -> u8 {
    match status {
        SubscriptionStatus::Active | SubscriptionStatus::Trialing => 3,
        SubscriptionStatus::PastDue => 2,
        SubscriptionStatus::Unpaid | SubscriptionStatus::Paused | SubscriptionStatus::Incomplete => 1,
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired | SubscriptionStatus::Unknown => 0,
    }
}

/// The subscription that decides access: the most entitling status, then the latest period.
pub fn governing(subscriptions: &[SubscriptionRecord]) -> Option<&SubscriptionRecord> {
    subscriptions
        .iter()
        .max_by_key(|s| (rank(s.status), s.current_period_end.unwrap_or(0), s.watermark))
}

pub fn compute(
    user: &UserId,
    customer_id: &str,
    subscriptions: &[SubscriptionRecord],
    dunning: &[DunningRecord],
    plans: &PlanCatalog,
    grace_days: u32,
) -> Entitlement {
    let Some(subscription) = governing(subscriptions) else {
        return Entitlement {
            user_id: user.clone(),
            customer_id: Some(customer_id.to_owned()),
            subscription_id: None,
            plan: None,
            status: None,
            access: Access::None,
            access_until: None,
            features: Vec::new(),
            cancel_at_period_end: false,
            current_period_end: None,
        };
    };
    let plan = subscription.price_id.as_deref().and_then(|price| plans.by_price(price));
    let (access, access_until) = match subscription.status {
        SubscriptionStatus::Active | SubscriptionStatus::Trialing => {
            let until = if subscription.cancel_at_period_end {
                subscription.current_period_end
            } else {
                None
            };
            (Access::Active, until)
        }
        SubscriptionStatus::PastDue => {
            let open_deadline = dunning
                .iter()
                .filter(|d| {
                    d.stage != DunningStage::Closed
                        && d.subscription_id.as_deref() == Some(&subscription.subscription_id)
                })
                .filter_map(|d| d.grace_until)
                .min();
            let fallback = subscription
                .current_period_end
                .map(|end| end + i64::from(grace_days) * 86_400);
            (Access::Grace, open_deadline.or(fallback))
        }
        _ => (Access::None, None),
    };
    let features = match (access, plan) {
        (Access::None, _) | (_, None) => Vec::new(),
        (_, Some((_, plan))) => plan.features.clone(),
    };
    Entitlement {
        user_id: user.clone(),
        customer_id: Some(customer_id.to_owned()),
        subscription_id: Some(subscription.subscription_id.clone()),
        plan: plan
            .map(|(key, _)| key.to_owned())
            .or_else(|| subscription.plan.clone()),
        status: Some(subscription.status),
        access,
        access_until,
        features,
        cancel_at_period_end: subscription.cancel_at_period_end,
        current_period_end: subscription.current_period_end,
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
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<i64>,
}

impl EntitlementView {
    pub fn none() -> Self {
        Self {
            plan: None,
            status: None,
            access: Access::None,
            access_until: None,
            features: Vec::new(),
            cancel_at_period_end: false,
            current_period_end: None,
        }
    }

    /// Applies the stored deadline at `now`: past `access_until`, access is none.
    pub fn at(entitlement: &Entitlement, now: i64) -> Self {
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
            cancel_at_period_end: entitlement.cancel_at_period_end,
            current_period_end: entitlement.current_period_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> PlanCatalog {
        PlanCatalog::parse(r#"{"pro":{"price_id":"price_pro","features":["reports","api"]},"basic":{"price_id":"price_basic","features":["reports"]}}"#).unwrap()
    }

    fn sub(status: SubscriptionStatus, cancel_at_period_end: bool) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription_id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status,
            price_id: Some("price_pro".into()),
            plan: None,
            quantity: Some(1),
            cancel_at_period_end,
            current_period_end: Some(1_000_000),
            trial_end: None,
            ended_at: None,
            watermark: 1,
        }
    }

    fn user() -> UserId {
        UserId::parse("user-1").unwrap()
    }

    #[test]
    fn status_decides_access() {
        use SubscriptionStatus::*;
        for (status, access) in [
            (Active, Access::Active),
            (Trialing, Access::Active),
            (PastDue, Access::Grace),
            (Unpaid, Access::None),
            (Canceled, Access::None),
            (IncompleteExpired, Access::None),
            (Incomplete, Access::None),
            (Paused, Access::None),
            (Unknown, Access::None),
        ] {
            let entitlement = compute(&user(), "cus_1", &[sub(status, false)], &[], &plans(), 14);
            assert_eq!(entitlement.access, access, "{status:?}");
            assert_eq!(entitlement.features.is_empty(), access == Access::None, "{status:?}");
        }
    }

    #[test]
    fn cancelling_keeps_access_until_period_end() {
        let entitlement = compute(
            &user(),
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
    fn grace_ends_at_the_dunning_deadline_or_after_grace_days() {
        let past_due = [sub(SubscriptionStatus::PastDue, false)];
        let fallback = compute(&user(), "cus_1", &past_due, &[], &plans(), 7);
        assert_eq!(fallback.access_until, Some(1_000_000 + 7 * 86_400));
        let dunning = DunningRecord {
            invoice_id: "in_1".into(),
            customer_id: "cus_1".into(),
            subscription_id: Some("sub_1".into()),
            stage: DunningStage::Retrying,
            attempt_count: 1,
            next_payment_attempt: None,
            failure_code: None,
            decline_code: None,
            hosted_invoice_url: None,
            grace_until: Some(1_200_000),
            watermark: 1,
            emailed_attempt: 0,
            published_attempt: 0,
            emailed_action_attempt: 0,
            published_action_attempt: 0,
        };
        let entitlement = compute(&user(), "cus_1", &past_due, &[dunning], &plans(), 7);
        assert_eq!(entitlement.access_until, Some(1_200_000));
        assert_eq!(EntitlementView::at(&entitlement, 1_199_999).access, Access::Grace);
        assert_eq!(EntitlementView::at(&entitlement, 1_200_000).access, Access::None);
    }

    #[test]
    fn the_most_entitling_subscription_governs_and_maps_to_its_plan() {
        let mut old = sub(SubscriptionStatus::Canceled, false);
        old.subscription_id = "sub_0".into();
        old.price_id = Some("price_basic".into());
        let entitlement = compute(
            &user(),
            "cus_1",
            &[old, sub(SubscriptionStatus::Active, false)],
            &[],
            &plans(),
            14,
        );
        assert_eq!(entitlement.subscription_id.as_deref(), Some("sub_1"));
        assert_eq!(entitlement.plan.as_deref(), Some("pro"));
        assert_eq!(entitlement.features, ["reports", "api"]);
        assert_eq!(entitlement.access_until, None);
    }

    #[test]
    fn no_subscription_means_no_access() {
        let entitlement = compute(&user(), "cus_1", &[], &[], &plans(), 14);
        assert_eq!(entitlement.access, Access::None);
        assert_eq!(entitlement.subscription_id, None);
    }
}
