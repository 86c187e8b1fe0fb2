//! `POST /checkout/sessions`: a Stripe Checkout session for a plan from the catalog.
//!
//! The Stripe customer is created first, with an idempotency key derived from the user id, and
//! linked with a conditional write, so concurrent first checkouts end with one customer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::store::{BillingStore, LinkOutcome, UserId};
use shared::stripe::CheckoutSession;

use crate::auth::CurrentUser;
use crate::body::JsonBody;
use crate::redirect::SafePath;
use crate::{ApiError, AppState};

const DEFAULT_SUCCESS_PATH: &str = "/billing/success";
const DEFAULT_CANCEL_PATH: &str = "/billing";
const MAX_QUANTITY: u32 = 1000;
/// How long the record of a session we created is kept: a session lives at most 24 h, and its
/// completion may arrive late — Stripe retries for 3 days, the reconciler looks back 30.
const SESSION_RECORD_SECS: i64 = 35 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    plan: String,
    #[serde(default)]
    quantity: Option<u32>,
    #[serde(default)]
    promotion_code: Option<String>,
    #[serde(default)]
    success_path: Option<String>,
    #[serde(default)]
    cancel_path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CheckoutResponse {
    id: String,
    url: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code,
        message: message.into(),
    }
}

fn redirect(state_base: &url::Url, raw: Option<&str>, default: &str, field: &str) -> Result<String, ApiError> {
    let path = SafePath::parse(raw.unwrap_or(default))
        .map_err(|reason| bad("invalid_redirect_path", format!("{field}: {reason}")))?;
    let url = path
        .on(state_base)
        .map_err(|reason| bad("invalid_redirect_path", format!("{field}: {reason}")))?;
    Ok(url.into())
}

/// A client-chosen `Idempotency-Key`, scoped to the user so keys of two users never collide.
fn client_key(headers: &HeaderMap, user: &UserId) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()));
    let key = key.ok_or_else(|| {
        bad(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-128 visible ASCII characters",
        )
    })?;
    // Hashed: a user id and a key may each be 128 characters (Stripe allows 255 in all), and
    // a digest over both, separated by a NUL, cannot make two (user, key) pairs collide.
    let mut digest = Sha256::new();
    digest.update(user.as_str().as_bytes());
    digest.update([0]);
    digest.update(key.as_bytes());
    Ok(Some(format!("checkout-{}", hex::encode(digest.finalize()))))
}

#[tracing::instrument(name = "create_checkout_session", skip_all, fields(user = %user))]
pub async fn create<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CheckoutRequest>,
) -> Result<(StatusCode, Json<CheckoutResponse>), ApiError> {
    let plans = &state.syncer.plans;
    let plan = plans.get(&request.plan).ok_or_else(|| {
        bad(
            "unknown_plan",
            format!("plan must be one of: {}", plans.keys().collect::<Vec<_>>().join(", ")),
        )
    })?;
    let quantity = request.quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(bad(
            "invalid_quantity",
            format!("quantity must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    if let Some(code) = &request.promotion_code {
        if !plan.allow_promotion_codes {
            return Err(bad(
                "promotion_codes_not_allowed",
                "this plan does not accept promotion codes",
            ));
        }
        if !code.starts_with("promo_")
            || code.len() <= "promo_".len()
            || code.len() > 255
            || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(
                "invalid_promotion_code",
                "promotion_code must be a Stripe promotion code id (promo_...)",
            ));
        }
    }
    let success_url = redirect(
        &state.app_base_url,
        request.success_path.as_deref(),
        DEFAULT_SUCCESS_PATH,
        "success_path",
    )?;
    let cancel_url = redirect(
        &state.app_base_url,
        request.cancel_path.as_deref(),
        DEFAULT_CANCEL_PATH,
        "cancel_path",
    )?;
    let idempotency_key = client_key(&headers, &user)?;

    if super::live_subscription(&state, &user).await?.is_some() {
        return Err(ApiError::Conflict {
            code: "subscription_exists",
            hint: "this user already has a subscription: use POST /subscription/change or POST /portal/sessions",
        });
    }
    let customer = ensure_customer(&state, &user).await?;

    let mut subscription_data = json!({ "metadata": { "user_id": user.as_str(), "plan": request.plan } });
    if let Some(days) = plan.trial_days {
        if trial_allowed(&state, &user, &customer).await? {
            subscription_data["trial_period_days"] = json!(days);
        } else {
            tracing::info!("trial already used; checkout without one");
        }
    }
    let (marker, marked) = CheckoutSession::MARKER;
    let mut params = json!({
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": user.as_str(),
        "line_items": [{ "price": plan.price_id, "quantity": quantity }],
        // Stripe fills in {CHECKOUT_SESSION_ID}, so the app can call /billing/sync with it.
        "success_url": format!("{success_url}{}session_id={{CHECKOUT_SESSION_ID}}", if success_url.contains('?') { "&" } else { "?" }),
        "cancel_url": cancel_url,
        "metadata": { "user_id": user.as_str(), "plan": request.plan, marker: marked },
        "subscription_data": subscription_data,
    });
    match &request.promotion_code {
        Some(code) => params["discounts"] = json!([{ "promotion_code": code }]),
        None if plan.allow_promotion_codes => params["allow_promotion_codes"] = json!(true),
        None => {}
    }
    let session = match &idempotency_key {
        Some(key) => state.syncer.stripe.create_checkout_session(&params, key).await?,
        None => state.syncer.stripe.post("/v1/checkout/sessions", &params, None).await?,
    };
    // Stored before the URL is handed out: the session can only be paid after this, so its
    // completion always finds whom it was made for.
    state
        .syncer
        .store
        .put_checkout_session(
            &session.id,
            &user,
            shared::unix_now().saturating_add(SESSION_RECORD_SECS),
        )
        .await?;
    expire_older_sessions(&state, &customer, &session).await;
    tracing::info!(session_id = %session.id, plan = %request.plan, "checkout session created");
    Ok((
        StatusCode::CREATED,
        Json(CheckoutResponse {
            id: session.id,
            url: session.url,
        }),
    ))
}

/// A trial is offered once per user: not after any trial stored for them (on any customer,
/// deleted ones included), nor if Stripe shows the customer ever had a subscription.
async fn trial_allowed<S: BillingStore>(state: &AppState<S>, user: &UserId, customer: &str) -> Result<bool, ApiError> {
    let stored = state.syncer.store.get_entitlement(user).await?;
    if stored.is_some_and(|entitlement| entitlement.trial_used) {
        return Ok(false);
    }
    Ok(state.syncer.stripe.list_subscriptions(customer).await?.is_empty())
}

/// Every older open session of the customer is expired, so a second tab (or a retry without
/// an `Idempotency-Key`) cannot be paid as well. Only older ones: two requests at once must
/// not expire each other's sessions. Best effort: if Stripe refuses, or both were made in the
/// same second, the events processor still cancels and refunds a second subscription.
async fn expire_older_sessions<S: BillingStore>(state: &AppState<S>, customer: &str, new: &CheckoutSession) {
    let stripe = &state.syncer.stripe;
    let open = match stripe.list_open_checkout_sessions(customer).await {
        Ok(open) => open,
        Err(error) => {
            tracing::warn!(error = %error, "could not list open checkout sessions to expire them");
            return;
        }
    };
    for session in open.iter().filter(|s| s.id != new.id && s.created < new.created) {
        match stripe.expire_checkout_session(&session.id).await {
            Ok(_) => tracing::info!(session_id = %session.id, "older open checkout session expired"),
            Err(error) => {
                tracing::warn!(session_id = %session.id, error = %error, "could not expire an open checkout session")
            }
        }
    }
}

/// The user's Stripe customer, created and linked on first use.
async fn ensure_customer<S: BillingStore>(state: &AppState<S>, user: &UserId) -> Result<String, ApiError> {
    if let Some(customer) = state.syncer.store.customer_of_user(user).await? {
        return Ok(customer);
    }
    // The key is the same for concurrent first checkouts (one customer for both) but changes
    // once a deleted customer was unlinked (the entitlement's version moved), or Stripe would
    // answer with the deleted customer for 24 hours.
    let generation = state
        .syncer
        .store
        .get_entitlement(user)
        .await?
        .map_or(0, |entitlement| entitlement.version);
    let params = json!({ "metadata": { "user_id": user.as_str() } });
    let created = state
        .syncer
        .stripe
        .create_customer(&params, &format!("customer-{user}-{generation}"))
        .await?;
    match state.syncer.store.link_customer(user, &created.id).await? {
        LinkOutcome::Linked => {
            tracing::info!(customer_id = %created.id, "customer created and linked");
            Ok(created.id)
        }
        LinkOutcome::AlreadyLinked(existing) => Ok(existing),
        LinkOutcome::CustomerTaken(_) => Err(ApiError::Store(shared::store::StoreError::Corrupt(format!(
            "the customer just created for {user} belongs to another user"
        )))),
    }
}
