//! `POST /checkout/sessions`: a Stripe Checkout session for a plan from the catalog (a
//! subscription, at the price its interval and currency choose, with its seats, add-ons and
//! discount), or for a one-time product (`mode=payment`: a lifetime deal, a credit pack).
//!
//! The Stripe customer is created first, with an idempotency key derived from the account id, and
//! linked with a conditional write, so concurrent first checkouts end with one customer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::config::{Currency, Interval, Plan, Product, valid_code};
use shared::store::{ACCOUNT_METADATA_KEY, AccountId, BillingStore, LinkOutcome};
use shared::stripe::CheckoutSession;

use crate::auth::{BillingAdmin, Caller};
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
    /// A plan: a subscription. Exactly one of `plan` and `product`.
    #[serde(default)]
    plan: Option<String>,
    /// A one-time product: a payment.
    #[serde(default)]
    product: Option<String>,
    /// `month`, `year`...: with `currency`, which of the plan's prices; the first listed
    /// price matching what is named.
    #[serde(default)]
    interval: Option<Interval>,
    #[serde(default)]
    currency: Option<Currency>,
    /// A seat-based plan's seat count (default: its minimum).
    #[serde(default)]
    seats: Option<u32>,
    #[serde(default)]
    quantity: Option<u32>,
    /// Add-ons the plan allows, billed at the plan price's interval and currency.
    #[serde(default)]
    addons: Vec<String>,
    /// A promotion code the plan allows, by its code (`LAUNCH20`) or id (`promo_...`).
    #[serde(default)]
    promotion_code: Option<String>,
    /// A coupon id the plan lists in `coupons`.
    #[serde(default)]
    coupon: Option<String>,
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

/// The plan item's quantity: the seats of a seat-based plan (within its range), else
/// `quantity` (1 unless given).
fn quantity_of(plan: &Plan, request: &CheckoutRequest) -> Result<u32, ApiError> {
    match (plan.seats, request.seats, request.quantity) {
        (Some(_), _, Some(_)) => Err(bad(
            "invalid_quantity",
            "this plan is sold per seat: give seats, not quantity",
        )),
        (Some(range), seats, None) => {
            let seats = seats.unwrap_or(range.min);
            if (range.min..=range.max).contains(&seats) {
                Ok(seats)
            } else {
                Err(bad(
                    "invalid_seats",
                    format!("seats must be between {} and {}", range.min, range.max),
                ))
            }
        }
        (None, Some(_), _) => Err(bad("not_seat_based", "this plan is not sold per seat")),
        (None, None, quantity) => {
            let quantity = quantity.unwrap_or(1);
            if (1..=MAX_QUANTITY).contains(&quantity) {
                Ok(quantity)
            } else {
                Err(bad(
                    "invalid_quantity",
                    format!("quantity must be between 1 and {MAX_QUANTITY}"),
                ))
            }
        }
    }
}

/// A one-time product's units: 1 unless given, at most its `max_quantity`.
fn units_of(product: &Product, request: &CheckoutRequest) -> Result<u32, ApiError> {
    if request.seats.is_some() || request.interval.is_some() || !request.addons.is_empty() {
        return Err(bad(
            "invalid_for_product",
            "a one-time product takes quantity and currency only (no seats, interval or addons)",
        ));
    }
    if request.promotion_code.is_some() || request.coupon.is_some() {
        return Err(bad(
            "promotion_codes_not_allowed",
            "one-time products take no promotion code or coupon",
        ));
    }
    let units = request.quantity.unwrap_or(1);
    if (1..=product.max_quantity).contains(&units) {
        Ok(units)
    } else {
        Err(bad(
            "invalid_quantity",
            format!("quantity must be between 1 and {}", product.max_quantity),
        ))
    }
}

/// The discount the request names, if the plan allows it: a coupon the plan lists, or a
/// promotion code (by code or id) the plan accepts. A code is looked up in Stripe (active
/// ones only), so the allowlist may name either form.
async fn discount_of<S: BillingStore>(
    state: &AppState<S>,
    plan: &Plan,
    request: &CheckoutRequest,
) -> Result<Option<serde_json::Value>, ApiError> {
    match (&request.promotion_code, &request.coupon) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("one_discount_only", "give promotion_code or coupon, not both")),
        (None, Some(coupon)) => {
            if !valid_code(coupon) {
                return Err(bad("invalid_coupon", "coupon must be 1-255 of [A-Za-z0-9_-]"));
            }
            if !plan.coupons.contains(coupon) {
                return Err(bad("coupon_not_allowed", "this plan does not accept this coupon"));
            }
            Ok(Some(json!({ "coupon": coupon })))
        }
        (Some(code), None) => {
            if !plan.allow_promotion_codes {
                return Err(bad(
                    "promotion_codes_not_allowed",
                    "this plan does not accept promotion codes",
                ));
            }
            if !valid_code(code) || code == "promo_" {
                return Err(bad(
                    "invalid_promotion_code",
                    "promotion_code must be a code (1-255 of [A-Za-z0-9_-]) or a promo_ id",
                ));
            }
            let is_id = code.starts_with("promo_");
            if is_id && plan.promotion_codes.is_empty() {
                // Any code the plan's Stripe account has: Stripe itself refuses an unknown one.
                return Ok(Some(json!({ "promotion_code": code })));
            }
            let stripe = &state.syncer.stripe;
            let found = if is_id {
                match stripe.retrieve_promotion_code(code).await {
                    Ok(found) => Some(found),
                    Err(error) if error.is_not_found() => None,
                    Err(error) => return Err(error.into()),
                }
            } else {
                stripe.find_promotion_code(code).await?
            };
            let found = found
                .filter(|found| found.active)
                .ok_or_else(|| bad("unknown_promotion_code", "no active promotion code by that code or id"))?;
            let listed = plan.promotion_codes.is_empty()
                || plan
                    .promotion_codes
                    .iter()
                    .any(|allowed| *allowed == found.id || allowed.eq_ignore_ascii_case(&found.code));
            if !listed {
                return Err(bad(
                    "promotion_code_not_allowed",
                    "this plan does not accept this promotion code",
                ));
            }
            Ok(Some(json!({ "promotion_code": found.id })))
        }
    }
}

/// Stripe Tax at checkout: tax from the address Checkout collects, saved on the customer,
/// with the buyer's tax id (which needs the customer's name updatable too).
fn add_automatic_tax(params: &mut serde_json::Value) {
    params["automatic_tax"] = json!({ "enabled": true });
    params["tax_id_collection"] = json!({ "enabled": true });
    params["billing_address_collection"] = json!("required");
    params["customer_update"] = json!({ "address": "auto", "name": "auto" });
}

/// A client-chosen `Idempotency-Key`, scoped to the account so keys of two accounts never collide.
fn client_key(headers: &HeaderMap, account: &AccountId) -> Result<Option<String>, ApiError> {
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
    // Hashed: an account id and a key may each be 128 characters (Stripe allows 255 in all), and
    // a digest over both, separated by a NUL, cannot make two (account, key) pairs collide.
    let mut digest = Sha256::new();
    digest.update(account.as_str().as_bytes());
    digest.update([0]);
    digest.update(key.as_bytes());
    Ok(Some(format!("checkout-{}", hex::encode(digest.finalize()))))
}

#[tracing::instrument(name = "create_checkout_session", skip_all, fields(account = %caller.account))]
pub async fn create<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(caller): BillingAdmin,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CheckoutRequest>,
) -> Result<(StatusCode, Json<CheckoutResponse>), ApiError> {
    let account = &caller.account;
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
    let idempotency_key = client_key(&headers, account)?;
    // Stripe fills in {CHECKOUT_SESSION_ID}, so the app can call /billing/sync with it.
    let separator = if success_url.contains('?') { "&" } else { "?" };
    let success_url = format!("{success_url}{separator}session_id={{CHECKOUT_SESSION_ID}}");
    let (marker, marked) = CheckoutSession::MARKER;
    let (mut params, sells) = match (&request.plan, &request.product) {
        (Some(key), None) => {
            let (line_items, plan) = subscription_items(&state, key, &request)?;
            let discount = discount_of(&state, plan, &request).await?;
            if super::live_subscription(&state, account).await?.is_some() {
                return Err(ApiError::Conflict {
                    code: "subscription_exists",
                    hint: "this account already has a subscription: use POST /subscription/change or POST /portal/sessions",
                });
            }
            let customer = ensure_customer(&state, &caller).await?;
            let mut subscription_data = json!({ "metadata": { ACCOUNT_METADATA_KEY: account.as_str(), "plan": key } });
            if let Some(days) = plan.trial_days {
                if trial_allowed(&state, account, &customer).await? {
                    subscription_data["trial_period_days"] = json!(days);
                } else {
                    tracing::info!("trial already used; checkout without one");
                }
            }
            let mut params = json!({
                "mode": "subscription",
                "customer": customer,
                "line_items": line_items,
                "metadata": { ACCOUNT_METADATA_KEY: account.as_str(), "plan": key, marker: marked },
                "subscription_data": subscription_data,
            });
            match discount {
                Some(discount) => params["discounts"] = json!([discount]),
                None if plan.allow_promotion_codes => params["allow_promotion_codes"] = json!(true),
                None => {}
            }
            (params, format!("plan {key}"))
        }
        (None, Some(key)) => {
            let products = &state.syncer.plans;
            let product = products.product(key).ok_or_else(|| {
                bad(
                    "unknown_product",
                    format!(
                        "product must be one of: {}",
                        products.product_keys().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            let price = product
                .price(request.currency.as_ref())
                .map_err(|reason| bad("unknown_price", format!("product {key:?}: {reason}")))?;
            let units = units_of(product, &request)?;
            let customer = ensure_customer(&state, &caller).await?;
            // The purchase is granted from the session we stored and its metadata (written
            // here, never by the browser); the payment's metadata lets a refund or dispute
            // of it be traced back in the dashboard.
            let purchase =
                json!({ ACCOUNT_METADATA_KEY: account.as_str(), "product": key, "quantity": units.to_string() });
            let mut metadata = purchase.clone();
            metadata[marker] = json!(marked);
            let params = json!({
                "mode": "payment",
                "customer": customer,
                "line_items": [{ "price": price.id, "quantity": units }],
                "metadata": metadata,
                "payment_intent_data": { "metadata": purchase },
            });
            (params, format!("product {key} x{units}"))
        }
        _ => {
            return Err(bad(
                "plan_or_product",
                "give plan (a subscription) or product (a one-time purchase), exactly one",
            ));
        }
    };
    params["client_reference_id"] = json!(account.as_str());
    params["success_url"] = json!(success_url);
    params["cancel_url"] = json!(cancel_url);
    if state.syncer.plans.automatic_tax() {
        add_automatic_tax(&mut params);
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
            account,
            shared::unix_now().saturating_add(SESSION_RECORD_SECS),
        )
        .await?;
    if let Some(customer) = params["customer"].as_str() {
        expire_older_sessions(&state, customer, &session).await;
    }
    tracing::info!(session_id = %session.id, sells = %sells, "checkout session created");
    Ok((
        StatusCode::CREATED,
        Json(CheckoutResponse {
            id: session.id,
            url: session.url,
        }),
    ))
}

/// A plan's line items: the plan price the interval and currency choose, at its quantity, and
/// each add-on at the same interval and currency.
fn subscription_items<'a, S: BillingStore>(
    state: &'a AppState<S>,
    key: &str,
    request: &CheckoutRequest,
) -> Result<(Vec<serde_json::Value>, &'a Plan), ApiError> {
    let plans = &state.syncer.plans;
    let plan = plans.get(key).ok_or_else(|| {
        bad(
            "unknown_plan",
            format!("plan must be one of: {}", plans.keys().collect::<Vec<_>>().join(", ")),
        )
    })?;
    let price = plan
        .price(request.interval, request.currency.as_ref())
        .map_err(|reason| bad("unknown_price", format!("plan {key:?}: {reason}")))?;
    let quantity = quantity_of(plan, request)?;
    let mut line_items = vec![json!({ "price": price.id, "quantity": quantity })];
    for (at, addon_key) in request.addons.iter().enumerate() {
        if !plan.addons.contains(addon_key) {
            return Err(bad(
                "addon_not_allowed",
                format!("addons[{at}]: plan {key:?} allows: {}", plan.addons.join(", ")),
            ));
        }
        if request.addons[..at].contains(addon_key) {
            return Err(bad(
                "duplicate_addon",
                format!("addons[{at}]: {addon_key:?} is listed twice"),
            ));
        }
        let addon = plans
            .addon(addon_key)
            .ok_or_else(|| bad("addon_not_allowed", addon_key.clone()))?;
        let addon_price = addon
            .price_like(price)
            .map_err(|reason| bad("addon_not_allowed", format!("addons[{at}]: {reason}")))?;
        line_items.push(json!({ "price": addon_price.id, "quantity": 1 }));
    }
    // Metered prices bill use, not units: Stripe refuses a quantity on them.
    for metered in plans.metered_prices(plan, price) {
        line_items.push(json!({ "price": metered.id }));
    }
    Ok((line_items, plan))
}

fn customer_key(account: &AccountId, generation: u64, caller: &Caller) -> String {
    if caller.email.is_none() && caller.name.is_none() {
        return format!("customer-{account}-{generation}");
    }
    let mut digest = Sha256::new();
    for part in [caller.email.as_deref(), caller.name.as_deref()] {
        digest.update(part.unwrap_or_default().as_bytes());
        digest.update([0]);
    }
    let contact = hex::encode(&digest.finalize()[..8]);
    format!("customer-{account}-{generation}-{contact}")
}

/// A trial is offered once per account: not after any trial stored for them (on any customer,
/// deleted ones included), nor if Stripe shows the customer ever had a subscription.
async fn trial_allowed<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
    customer: &str,
) -> Result<bool, ApiError> {
    let stored = state.syncer.store.get_entitlement(account).await?;
    if stored.is_some_and(|entitlement| entitlement.trial_used) {
        return Ok(false);
    }
    Ok(state.syncer.stripe.list_subscriptions(customer).await?.is_empty())
}

/// Every older open session of the customer in the same mode is expired, so a second tab (or a retry without
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
    // Only sessions of the same mode: a credit pack bought while a plan's checkout is open in
    // another tab is not a second subscription.
    let older = |s: &&CheckoutSession| s.id != new.id && s.created < new.created && s.mode == new.mode;
    for session in open.iter().filter(older) {
        match stripe.expire_checkout_session(&session.id).await {
            Ok(_) => tracing::info!(session_id = %session.id, "older open checkout session expired"),
            Err(error) => {
                tracing::warn!(session_id = %session.id, error = %error, "could not expire an open checkout session")
            }
        }
    }
}

/// The account's Stripe customer, created and linked on first use: metadata names the account,
/// and the email and name of the admin who bought go on it, so invoices reach a person.
async fn ensure_customer<S: BillingStore>(state: &AppState<S>, caller: &Caller) -> Result<String, ApiError> {
    let account = &caller.account;
    if let Some(customer) = state.syncer.store.customer_of_account(account).await? {
        return Ok(customer);
    }
    // The key is the same for concurrent first checkouts (one customer for both) but changes
    // once a deleted customer was unlinked (the entitlement's version moved), or Stripe would
    // answer with the deleted customer for 24 hours. The contact is part of it: two admins of
    // one account buying at once send different parameters, which Stripe refuses under one
    // key; with two keys the slower link loses and its customer is left unused.
    let generation = state
        .syncer
        .store
        .get_entitlement(account)
        .await?
        .map_or(0, |entitlement| entitlement.version);
    let mut params = json!({ "metadata": { ACCOUNT_METADATA_KEY: account.as_str() } });
    if let Some(email) = &caller.email {
        params["email"] = json!(email);
    }
    if let Some(name) = &caller.name {
        params["name"] = json!(name);
    }
    let created = state
        .syncer
        .stripe
        .create_customer(&params, &customer_key(account, generation, caller))
        .await?;
    match state.syncer.store.link_customer(account, &created.id).await? {
        LinkOutcome::Linked => {
            tracing::info!(customer_id = %created.id, "customer created and linked");
            Ok(created.id)
        }
        LinkOutcome::AlreadyLinked(existing) => Ok(existing),
        LinkOutcome::CustomerTaken(_) => Err(ApiError::Store(shared::store::StoreError::Corrupt(format!(
            "the customer just created for {account} belongs to another account"
        )))),
    }
}
