//! One module per resource. Shared here: finding the caller's live subscription and turning
//! the stored entitlement into the view every route returns.

pub mod billing;
pub mod checkout;
pub mod portal;
pub mod subscription;

use axum::Json;
use shared::entitlement::EntitlementView;
use shared::store::{AccountId, BillingStore, SubscriptionRecord};
use shared::stripe::SubscriptionStatus;

use crate::{ApiError, AppState};

/// Statuses in which a subscription still exists for billing purposes: an account in one of them
/// must change or cancel it, not buy a second one. A status newer than this code counts as
/// live: refusing a second subscription is the safe side.
pub fn is_live(status: SubscriptionStatus) -> bool {
    !matches!(
        status,
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
    )
}

pub async fn live_subscription<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
) -> Result<Option<SubscriptionRecord>, ApiError> {
    let Some(customer) = state.syncer.store.customer_of_account(account).await? else {
        return Ok(None);
    };
    let subscriptions = state.syncer.store.subscriptions_of_customer(&customer).await?;
    // The one being billed first, then the latest period: the subscription a change applies to.
    Ok(subscriptions
        .into_iter()
        .filter(|s| is_live(s.status))
        .max_by_key(|s| (shared::sync::bills(s.status), s.current_period_end, s.watermark)))
}

/// The caller's Stripe customer; 404 before their first checkout.
pub async fn customer<S: BillingStore>(state: &AppState<S>, account: &AccountId) -> Result<String, ApiError> {
    state
        .syncer
        .store
        .customer_of_account(account)
        .await?
        .ok_or(ApiError::NotFound("no_customer"))
}

pub async fn view<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
) -> Result<Json<EntitlementView>, ApiError> {
    let entitlement = state.syncer.store.get_entitlement(account).await?;
    let now = shared::unix_now();
    Ok(Json(
        entitlement.map_or_else(EntitlementView::none, |e| EntitlementView::at(&e, now)),
    ))
}
