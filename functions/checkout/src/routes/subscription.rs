//! `POST /subscription/change|cancel|resume`: self-service changes to the live subscription.
//! Each checks the stored state first (409 when the change does not apply), makes the change
//! in Stripe, stores Stripe's answer through the sync code, and returns the new view.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use shared::entitlement::EntitlementView;
use shared::store::{BillingStore, SubscriptionRecord, UserId, WriteRule};
use shared::stripe::Subscription;

use crate::auth::CurrentUser;
use crate::body::{JsonBody, NoFields};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    plan: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    at_period_end: bool,
}

const NO_SUBSCRIPTION: ApiError = ApiError::Conflict {
    code: "no_subscription",
    hint: "start one with POST /checkout/sessions",
};

async fn current<S: BillingStore>(state: &AppState<S>, user: &UserId) -> Result<SubscriptionRecord, ApiError> {
    super::live_subscription(state, user).await?.ok_or(NO_SUBSCRIPTION)
}

/// Stores what Stripe answered to our own write — the newest state there is, so it must win
/// over anything stored before it even if Stripe's clock runs ahead of ours — and recomputes
/// access.
async fn store<S: BillingStore>(
    state: &AppState<S>,
    user: &UserId,
    before: &SubscriptionRecord,
    subscription: &Subscription,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = state
        .syncer
        .record_of(subscription, shared::unix_now().max(before.watermark));
    state
        .syncer
        .store
        .put_subscription(&record, WriteRule::IfNotOlder)
        .await?;
    state
        .syncer
        .refresh_entitlement(&record.customer_id, Some(user.clone()))
        .await?;
    super::view(state, user).await
}

pub async fn change<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    CurrentUser(user): CurrentUser,
    JsonBody(request): JsonBody<ChangeRequest>,
) -> Result<Json<EntitlementView>, ApiError> {
    let plan = state
        .syncer
        .plans
        .get(&request.plan)
        .ok_or_else(|| ApiError::BadRequest {
            code: "unknown_plan",
            message: format!(
                "plan must be one of: {}",
                state.syncer.plans.keys().collect::<Vec<_>>().join(", ")
            ),
        })?;
    let record = current(&state, &user).await?;
    if record.price_id.as_deref() == Some(plan.price_id.as_str()) {
        return Err(ApiError::Conflict {
            code: "already_on_plan",
            hint: "the subscription is already on this plan",
        });
    }
    let stripe = &state.syncer.stripe;
    let live = stripe.retrieve_subscription(&record.subscription_id).await?;
    let item = live.primary_item().ok_or(NO_SUBSCRIPTION)?;
    let params = json!({
        "items": [{ "id": item.id, "price": plan.price_id }],
        "proration_behavior": "create_prorations",
        "metadata": { "plan": request.plan },
    });
    // A fresh idempotency key per request (the client keeps it across its own retries): a key
    // derived from the plans could make Stripe replay an older change's answer after A→B→A.
    let updated = stripe
        .update_subscription(&record.subscription_id, &params, None)
        .await?;
    tracing::info!(subscription_id = %updated.id, plan = %request.plan, "plan changed");
    store(&state, &user, &record, &updated).await
}

pub async fn cancel<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    CurrentUser(user): CurrentUser,
    JsonBody(request): JsonBody<CancelRequest>,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &user).await?;
    let stripe = &state.syncer.stripe;
    let path = format!("/v1/subscriptions/{}", record.subscription_id);
    let updated: Subscription = if request.at_period_end {
        if record.cancel_at_period_end || record.cancel_at.is_some() {
            return Err(ApiError::Conflict {
                code: "already_cancelling",
                hint: "use POST /subscription/resume to undo",
            });
        }
        stripe
            .update_subscription(&record.subscription_id, &json!({ "cancel_at_period_end": true }), None)
            .await?
    } else {
        stripe.delete(&path, None).await?
    };
    tracing::info!(subscription_id = %updated.id, at_period_end = request.at_period_end, "subscription cancelled");
    store(&state, &user, &record, &updated).await
}

pub async fn resume<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    CurrentUser(user): CurrentUser,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &user).await?;
    if !record.cancel_at_period_end && record.cancel_at.is_none() {
        return Err(ApiError::Conflict {
            code: "not_cancelling",
            hint: "the subscription has no pending cancellation",
        });
    }
    // Both kinds of end: at period end, and on a date (the portal's "cancel on date"); Stripe
    // clears `cancel_at` with an empty value.
    let mut params = json!({ "cancel_at_period_end": false });
    if record.cancel_at.is_some() {
        params["cancel_at"] = json!("");
    }
    let updated = state
        .syncer
        .stripe
        .update_subscription(&record.subscription_id, &params, None)
        .await?;
    tracing::info!(subscription_id = %updated.id, "pending cancellation undone");
    store(&state, &user, &record, &updated).await
}
