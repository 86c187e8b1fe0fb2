//! `POST /subscription/change|seats|cancel|resume`, `POST /subscription/addons` and
//! `DELETE /subscription/addons/{addon}`: self-service changes to the live subscription;
//! `POST /subscription/change/preview`, what a change would bill; and
//! `DELETE /subscription/change`, calling off a downgrade that waits for the period's end.
//! Each checks the stored state first (409 when the change does not apply), makes the change
//! in Stripe, stores Stripe's answer through the sync code, and returns the new view.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::config::{Catalog, Interval, Offer, Plan, Price};
use shared::entitlement::EntitlementView;
use shared::store::{AccountId, BillingStore, SubscriptionRecord, WriteRule};
use shared::stripe::Subscription;

use crate::auth::{BillingAdmin, Caller, Member};
use crate::body::{JsonBody, NoFields};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    plan: String,
    /// Another interval of the new plan (yearly, say); default: the current one.
    #[serde(default)]
    interval: Option<Interval>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatsRequest {
    seats: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonRequest {
    addon: String,
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

async fn current<S: BillingStore>(state: &AppState<S>, account: &AccountId) -> Result<SubscriptionRecord, ApiError> {
    super::live_subscription(state, account).await?.ok_or(NO_SUBSCRIPTION)
}

/// Stores what Stripe answered to our own write — the newest state there is, so it must win
/// over anything stored before it even if Stripe's clock runs ahead of ours — and recomputes
/// access.
async fn store<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
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
        .refresh_entitlement(&record.customer_id, Some(account.clone()))
        .await?;
    super::view(state, account).await
}

/// Makes one change to the subscription in Stripe and stores Stripe's answer. A fresh
/// idempotency key per request (the client keeps it across its own retries): a key derived
/// from the change could make Stripe replay an older answer after A→B→A.
async fn update<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
    record: &SubscriptionRecord,
    params: &serde_json::Value,
    change: String,
) -> Result<Json<EntitlementView>, ApiError> {
    let updated = state
        .syncer
        .stripe
        .update_subscription(&record.subscription_id, params, None)
        .await?;
    tracing::info!(subscription_id = %updated.id, change = %change, "subscription changed");
    store(state, account, record, &updated).await
}

/// The live subscription's plan item as Stripe has it now, with its catalog plan and price.
struct PlanItem<'a> {
    live: Subscription,
    item_id: String,
    quantity: u64,
    plan_key: &'a str,
    plan: &'a Plan,
    price: &'a Price,
}

async fn plan_item<'a, S: BillingStore>(
    state: &'a AppState<S>,
    record: &SubscriptionRecord,
) -> Result<PlanItem<'a>, ApiError> {
    let live = state
        .syncer
        .stripe
        .retrieve_subscription(&record.subscription_id)
        .await?;
    let catalog = &state.syncer.plans;
    let found = live.items.data.iter().find_map(|item| {
        let (key, plan) = catalog.by_price(&item.price.id)?;
        Some((
            item.id.clone(),
            item.quantity.unwrap_or(1),
            key,
            plan,
            plan.price_by_id(&item.price.id)?,
        ))
    });
    let (item_id, quantity, plan_key, plan, price) = found.ok_or(ApiError::Conflict {
        code: "not_on_a_catalog_plan",
        hint: "the subscription has no item on a price of the catalog; change it in the portal or the Stripe dashboard",
    })?;
    Ok(PlanItem {
        live,
        item_id,
        quantity,
        plan_key,
        plan,
        price,
    })
}

/// Whether the change waits for the period's end: a move to a lower tier under the
/// `period_end` policy, unless the subscription is trialing (nothing is paid for yet).
fn waits<S: BillingStore>(state: &AppState<S>, planned: &PlannedChange, plan: &str) -> bool {
    planned.record.status != shared::stripe::SubscriptionStatus::Trialing
        && state.syncer.plans.waits_for_period_end(&planned.from, plan)
}

/// Seats and add-ons change the items a waiting downgrade's schedule would replace at the
/// period's end: call the downgrade off first. A schedule whose last phase has begun waits
/// for nothing (Stripe keeps it until that phase ends): it is released, and the change goes on.
async fn no_change_waiting<S: BillingStore>(state: &AppState<S>, now: &PlanItem<'_>) -> Result<(), ApiError> {
    let Some(id) = now.live.schedule.as_ref() else {
        return Ok(());
    };
    if state.syncer.stripe.retrieve_schedule(id.as_str()).await?.waits() {
        return Err(ApiError::Conflict {
            code: "change_pending",
            hint: "a plan change waits for the period's end: call it off first (DELETE /subscription/change)",
        });
    }
    release_schedule(state, Some(id.as_str())).await
}

/// The live subscription's add-on items: (item id, add-on key, price id).
fn addon_items<'a>(catalog: &'a Catalog, live: &Subscription) -> Vec<(String, &'a str, String)> {
    live.items
        .data
        .iter()
        .filter_map(|item| match catalog.offer(&item.price.id)? {
            Offer::Addon(key, _) => Some((item.id.clone(), key, item.price.id.clone())),
            Offer::Plan(..) => None,
        })
        .collect()
}

/// A plan change worked out against Stripe's current subscription: its new items.
struct PlannedChange {
    record: SubscriptionRecord,
    customer_id: String,
    from: String,
    /// The item changes, as `POST /v1/subscriptions/{id}` takes them.
    items: Vec<serde_json::Value>,
    /// Every item as (price, quantity; none for a metered price), now and after the change: a
    /// schedule's two phases.
    before: Vec<(String, Option<u64>)>,
    after: Vec<(String, Option<u64>)>,
    /// The schedule already managing the subscription (a downgrade waiting).
    schedule: Option<String>,
    /// The subscription's discounts: a schedule's phases must carry them, or they would end.
    discounts: Vec<String>,
}

async fn plan_change<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
    request: &ChangeRequest,
) -> Result<PlannedChange, ApiError> {
    let catalog = &state.syncer.plans;
    let target = catalog.get(&request.plan).ok_or_else(|| ApiError::BadRequest {
        code: "unknown_plan",
        message: format!("plan must be one of: {}", catalog.keys().collect::<Vec<_>>().join(", ")),
    })?;
    let record = current(state, account).await?;
    let now = plan_item(state, &record).await?;
    // A subscription has one currency for life (Stripe refuses to change it); the interval
    // stays unless the request names another.
    let price = target
        .price(request.interval.or(now.price.interval), now.price.currency.as_ref())
        .map_err(|reason| ApiError::BadRequest {
            code: "unknown_price",
            message: format!("plan {:?}: {reason}", request.plan),
        })?;
    if price.id == now.price.id {
        return Err(ApiError::Conflict {
            code: "already_on_plan",
            hint: "the subscription is already on this plan and price",
        });
    }
    // Seats carry over into the new plan's range; a plan not sold per seat has one.
    let quantity = match (target.seats, now.plan.seats) {
        (Some(range), _) => now.quantity.clamp(u64::from(range.min), u64::from(range.max)),
        (None, Some(_)) => 1,
        (None, None) => now.quantity,
    };
    let mut items = vec![json!({ "id": now.item_id, "price": price.id, "quantity": quantity })];
    for (item_id, key, addon_price) in addon_items(catalog, &now.live) {
        if !target.addons.iter().any(|allowed| allowed == key) {
            return Err(ApiError::Conflict {
                code: "addon_not_on_plan",
                hint: "the new plan does not offer an add-on the subscription has: remove it first (DELETE /subscription/addons/{addon})",
            });
        }
        let like = catalog
            .addon(key)
            .and_then(|addon| addon.price_like(price).ok())
            .ok_or(ApiError::Conflict {
                code: "addon_not_on_plan",
                hint: "an add-on of the subscription has no price for the new plan's interval",
            })?;
        if like.id != addon_price {
            items.push(json!({ "id": item_id, "price": like.id }));
        }
    }
    // Metered items follow the plan: the new plan's price of the same meter replaces the old
    // one in place (the period's use is billed at it), a meter the new plan does not bill goes,
    // and one it bills that the subscription lacks is added.
    let mut wanted = catalog.metered_prices_by_meter(target, price);
    for item in &now.live.items.data {
        let Some(meter) = catalog.meter_of_price(&item.price.id) else {
            continue;
        };
        match wanted.remove(meter) {
            Some(same) if same.id == item.price.id => {}
            Some(other) => items.push(json!({ "id": item.id, "price": other.id })),
            None => items.push(json!({ "id": item.id, "deleted": true })),
        }
    }
    for added in wanted.into_values() {
        items.push(json!({ "price": added.id }));
    }
    let metered = |price: &str| catalog.is_metered(price);
    let before: Vec<(String, Option<u64>)> = now
        .live
        .items
        .data
        .iter()
        .map(|item| {
            let quantity = (!metered(&item.price.id)).then(|| item.quantity.unwrap_or(1));
            (item.price.id.clone(), quantity)
        })
        .collect();
    let after = now
        .live
        .items
        .data
        .iter()
        .filter_map(|item| {
            let change = items.iter().find(|change| change["id"] == item.id.as_str());
            if change.is_some_and(|change| change["deleted"] == true) {
                return None;
            }
            let price = change
                .and_then(|change| change["price"].as_str())
                .unwrap_or(&item.price.id);
            let quantity = change
                .and_then(|change| change["quantity"].as_u64())
                .or(item.quantity)
                .unwrap_or(1);
            Some((price.to_owned(), (!metered(price)).then_some(quantity)))
        })
        .chain(
            items
                .iter()
                .filter(|change| change.get("id").is_none())
                .filter_map(|change| Some((change["price"].as_str()?.to_owned(), None))),
        )
        .collect();
    Ok(PlannedChange {
        customer_id: now.live.customer.0.clone(),
        from: now.plan_key.to_owned(),
        schedule: now.live.schedule.as_ref().map(|id| id.0.clone()),
        discounts: now.live.discounts.iter().map(|id| id.0.clone()).collect(),
        record,
        items,
        before,
        after,
    })
}

/// A change to a lower tier waits for the period's end.
#[derive(Debug, Serialize)]
pub struct ScheduledChange {
    plan: String,
    /// When it takes effect (Unix seconds): the end of the period already paid for.
    at: i64,
}

#[derive(Debug, Serialize)]
pub struct ScheduledAnswer {
    scheduled: ScheduledChange,
    /// Unchanged until then.
    entitlement: EntitlementView,
}

/// What `POST /subscription/change` did: the change now (200), or a downgrade scheduled for
/// the period's end (202).
pub enum ChangeAnswer {
    Now(Json<EntitlementView>),
    Scheduled(Json<ScheduledAnswer>),
}

impl axum::response::IntoResponse for ChangeAnswer {
    fn into_response(self) -> axum::response::Response {
        match self {
            ChangeAnswer::Now(view) => view.into_response(),
            ChangeAnswer::Scheduled(answer) => (axum::http::StatusCode::ACCEPTED, answer).into_response(),
        }
    }
}

fn phase_items(items: &[(String, Option<u64>)]) -> Vec<serde_json::Value> {
    items
        .iter()
        .map(|(price, quantity)| match quantity {
            Some(quantity) => json!({ "price": price, "quantity": quantity }),
            None => json!({ "price": price }),
        })
        .collect()
}

/// The downgrade as a subscription schedule: this period as it is, then the new items from
/// its end, without prorations (nothing paid for is taken back), then the schedule lets go.
/// A waiting downgrade's schedule is reused, so the latest request is the one that happens.
async fn schedule_downgrade<S: BillingStore>(
    state: &AppState<S>,
    account: &AccountId,
    planned: &PlannedChange,
    plan: &str,
) -> Result<ChangeAnswer, ApiError> {
    if planned.record.cancel_at_period_end || planned.record.cancel_at.is_some() {
        return Err(ApiError::Conflict {
            code: "already_cancelling",
            hint: "the subscription ends at its period's end: resume it first (POST /subscription/resume)",
        });
    }
    let stripe = &state.syncer.stripe;
    let subscription_id = &planned.record.subscription_id;
    let schedule = match &planned.schedule {
        Some(id) => stripe.retrieve_schedule(id).await?,
        None => stripe.create_schedule_from(subscription_id).await?,
    };
    let phase = schedule.current_phase.ok_or(ApiError::Conflict {
        code: "schedule_not_active",
        hint: "the subscription's schedule has no current phase; change it in the Stripe dashboard",
    })?;
    // Phases replace what the schedule holds: the discounts go into both, or they would end.
    let discounts: Vec<serde_json::Value> = planned.discounts.iter().map(|id| json!({ "discount": id })).collect();
    let params = json!({
        "end_behavior": "release",
        "phases": [
            { "items": phase_items(&planned.before), "start_date": phase.start_date, "end_date": phase.end_date,
              "discounts": discounts },
            { "items": phase_items(&planned.after), "proration_behavior": "none", "metadata": { "plan": plan },
              "discounts": discounts },
        ],
    });
    stripe.update_schedule(&schedule.id, &params).await?;
    tracing::info!(subscription_id = %subscription_id, schedule_id = %schedule.id, from = %planned.from, plan,
        at = phase.end_date, "downgrade scheduled for the period's end");
    let live = stripe.retrieve_subscription(subscription_id).await?;
    let entitlement = store(state, account, &planned.record, &live).await?.0;
    Ok(ChangeAnswer::Scheduled(Json(ScheduledAnswer {
        scheduled: ScheduledChange {
            plan: plan.to_owned(),
            at: phase.end_date,
        },
        entitlement,
    })))
}

/// A schedule managing the subscription is released before a change made at once: a waiting
/// downgrade is superseded by what the account asks for now.
async fn release_schedule<S: BillingStore>(state: &AppState<S>, schedule: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = schedule {
        state.syncer.stripe.release_schedule(id).await?;
        tracing::info!(schedule_id = %id, "waiting change released");
    }
    Ok(())
}

pub async fn change<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(request): JsonBody<ChangeRequest>,
) -> Result<ChangeAnswer, ApiError> {
    let planned = plan_change(&state, &account, &request).await?;
    if waits(&state, &planned, &request.plan) {
        return schedule_downgrade(&state, &account, &planned, &request.plan).await;
    }
    release_schedule(&state, planned.schedule.as_deref()).await?;
    let params = json!({
        "items": planned.items,
        "proration_behavior": "create_prorations",
        "metadata": { "plan": request.plan },
    });
    let change = format!("plan {} → {}", planned.from, request.plan);
    update(&state, &account, &planned.record, &params, change)
        .await
        .map(ChangeAnswer::Now)
}

/// `DELETE /subscription/change`: the downgrade waiting for the period's end is called off;
/// the subscription goes on as it is.
pub async fn undo_change<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &account).await?;
    let stripe = &state.syncer.stripe;
    let live = stripe.retrieve_subscription(&record.subscription_id).await?;
    let waiting = match live.schedule.as_ref() {
        Some(id) => stripe.retrieve_schedule(id.as_str()).await?.waits().then_some(id),
        None => None,
    };
    let Some(schedule) = waiting else {
        return Err(ApiError::Conflict {
            code: "no_pending_change",
            hint: "no change is waiting for the period's end",
        });
    };
    release_schedule(&state, Some(schedule.as_str())).await?;
    let released = stripe.retrieve_subscription(&record.subscription_id).await?;
    store(&state, &account, &record, &released).await
}

/// What `POST /subscription/change` would bill, from Stripe's own preview.
#[derive(Debug, Serialize)]
pub struct ChangePreview {
    /// `now` (prorated), or `period_end` (a downgrade the schedule makes then, unprorated).
    effective: &'static str,
    /// Due on the invoice the change brings: the prorations now, then the next period.
    amount_due: i64,
    /// The prorations alone: what the change itself costs (negative: a credit).
    proration_total: i64,
    currency: Option<String>,
    lines: Vec<PreviewLine>,
}

#[derive(Debug, Serialize)]
pub struct PreviewLine {
    description: Option<String>,
    amount: i64,
    proration: bool,
}

/// `POST /subscription/change/preview`: the same body as `POST /subscription/change`, checked
/// the same way; answers Stripe's invoice preview (`POST /v1/invoices/create_preview`) of the
/// change and changes nothing. Any member may preview: it only reads.
pub async fn preview<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
    JsonBody(request): JsonBody<ChangeRequest>,
) -> Result<Json<ChangePreview>, ApiError> {
    let planned = plan_change(&state, &account, &request).await?;
    // As the change would be made: a waiting downgrade bills the new items from the next
    // period, with nothing prorated.
    let (effective, proration) = match waits(&state, &planned, &request.plan) {
        true => ("period_end", "none"),
        false => ("now", "create_prorations"),
    };
    let details = json!({ "items": planned.items, "proration_behavior": proration });
    let invoice = state
        .syncer
        .stripe
        .preview_subscription_change(&planned.customer_id, &planned.record.subscription_id, &details)
        .await?;
    let lines: Vec<PreviewLine> = invoice
        .lines
        .into_iter()
        .flat_map(|list| list.data)
        .map(|line| PreviewLine {
            proration: line
                .parent
                .and_then(|parent| parent.subscription_item_details)
                .is_some_and(|details| details.proration),
            description: line.description,
            amount: line.amount,
        })
        .collect();
    Ok(Json(ChangePreview {
        effective,
        amount_due: invoice.amount_due,
        proration_total: lines.iter().filter(|line| line.proration).map(|line| line.amount).sum(),
        currency: invoice.currency,
        lines,
    }))
}

/// `POST /subscription/seats`: a seat-based plan's seat count, prorated.
pub async fn seats<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(request): JsonBody<SeatsRequest>,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &account).await?;
    let now = plan_item(&state, &record).await?;
    no_change_waiting(&state, &now).await?;
    let range = now.plan.seats.ok_or(ApiError::Conflict {
        code: "not_seat_based",
        hint: "the subscription's plan is not sold per seat",
    })?;
    if !(range.min..=range.max).contains(&request.seats) {
        return Err(ApiError::BadRequest {
            code: "invalid_seats",
            message: format!("seats must be between {} and {}", range.min, range.max),
        });
    }
    if u64::from(request.seats) == now.quantity {
        return Err(ApiError::Conflict {
            code: "already_at_seats",
            hint: "the subscription already has this many seats",
        });
    }
    let params = json!({
        "items": [{ "id": now.item_id, "quantity": request.seats }],
        "proration_behavior": "create_prorations",
    });
    update(
        &state,
        &account,
        &record,
        &params,
        format!("seats {} → {}", now.quantity, request.seats),
    )
    .await
}

/// `POST /subscription/addons`: one more item, the add-on at the plan price's interval and
/// currency, prorated.
pub async fn add_addon<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(request): JsonBody<AddonRequest>,
) -> Result<Json<EntitlementView>, ApiError> {
    let catalog = &state.syncer.plans;
    let addon = catalog.addon(&request.addon).ok_or_else(|| ApiError::BadRequest {
        code: "unknown_addon",
        message: format!(
            "addon must be one of: {}",
            catalog.addon_keys().collect::<Vec<_>>().join(", ")
        ),
    })?;
    let record = current(&state, &account).await?;
    let now = plan_item(&state, &record).await?;
    no_change_waiting(&state, &now).await?;
    if !now.plan.addons.contains(&request.addon) {
        return Err(ApiError::BadRequest {
            code: "addon_not_allowed",
            message: format!("plan {:?} allows: {}", now.plan_key, now.plan.addons.join(", ")),
        });
    }
    if addon_items(catalog, &now.live)
        .iter()
        .any(|(_, key, _)| *key == request.addon)
    {
        return Err(ApiError::Conflict {
            code: "addon_exists",
            hint: "the subscription already has this add-on",
        });
    }
    let price = addon.price_like(now.price).map_err(|reason| ApiError::BadRequest {
        code: "addon_not_allowed",
        message: reason,
    })?;
    let params = json!({
        "items": [{ "price": price.id, "quantity": 1 }],
        "proration_behavior": "create_prorations",
    });
    update(
        &state,
        &account,
        &record,
        &params,
        format!("add-on {} added", request.addon),
    )
    .await
}

/// `DELETE /subscription/addons/{addon}`: the add-on's item removed, prorated.
pub async fn remove_addon<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    Path(addon): Path<String>,
) -> Result<Json<EntitlementView>, ApiError> {
    let catalog = &state.syncer.plans;
    if catalog.addon(&addon).is_none() {
        return Err(ApiError::NotFound("unknown_addon"));
    }
    let record = current(&state, &account).await?;
    let now = plan_item(&state, &record).await?;
    no_change_waiting(&state, &now).await?;
    let Some((item_id, _, _)) = addon_items(catalog, &now.live)
        .into_iter()
        .find(|(_, key, _)| *key == addon)
    else {
        return Err(ApiError::Conflict {
            code: "addon_absent",
            hint: "the subscription does not have this add-on",
        });
    };
    let params = json!({
        "items": [{ "id": item_id, "deleted": true }],
        "proration_behavior": "create_prorations",
    });
    update(&state, &account, &record, &params, format!("add-on {addon} removed")).await
}

pub async fn cancel<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(request): JsonBody<CancelRequest>,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &account).await?;
    if request.at_period_end {
        if record.cancel_at_period_end || record.cancel_at.is_some() {
            return Err(ApiError::Conflict {
                code: "already_cancelling",
                hint: "use POST /subscription/resume to undo",
            });
        }
        // Stripe refuses a cancellation on a subscription a schedule manages: a downgrade
        // waiting for the same period's end is moot anyway.
        release_schedule(&state, record.schedule.as_deref()).await?;
        let params = json!({ "cancel_at_period_end": true });
        return update(&state, &account, &record, &params, "cancel at period end".to_owned()).await;
    }
    let path = format!("/v1/subscriptions/{}", record.subscription_id);
    let ended: Subscription = state.syncer.stripe.delete(&path, None).await?;
    tracing::info!(subscription_id = %ended.id, "subscription cancelled now");
    store(&state, &account, &record, &ended).await
}

pub async fn resume<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> Result<Json<EntitlementView>, ApiError> {
    let record = current(&state, &account).await?;
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
    update(
        &state,
        &account,
        &record,
        &params,
        "pending cancellation undone".to_owned(),
    )
    .await
}
