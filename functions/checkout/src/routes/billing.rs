//! `GET /billing/me` (the stored entitlement and this period's usage, no Stripe call),
//! `GET /billing/quota/{meter}` (one meter's use against the plan's allowance), `POST /billing/sync`
//! (re-read from Stripe through the event processor's sync code, for the account who is back
//! from Checkout before the webhook) and `GET /billing/invoices` (the account's invoices, a
//! page at a time, for the app's billing page).

use std::sync::Arc;

use axum::Json;
use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use shared::entitlement::EntitlementView;
use shared::store::BillingStore;
use shared::stripe::{Invoice, InvoiceStatus};
use shared::usage::quota::{meter_usage, usage_view};
use shared::usage::{MeterUsage, Quota, UsageLedger};

use crate::auth::{Caller, Member};
use crate::body::{JsonBody, NoFields};
use crate::{ApiError, AppState};

/// The entitlement, with `usage` when the catalog has meters.
#[derive(Debug, Serialize)]
pub struct MeView {
    #[serde(flatten)]
    entitlement: EntitlementView,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<BTreeMap<String, MeterUsage>>,
}

pub async fn me<S: BillingStore + UsageLedger>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
) -> Result<Json<MeView>, ApiError> {
    let catalog = &state.syncer.plans;
    let now = shared::unix_now();
    if catalog.meters().next().is_none() {
        let Json(entitlement) = super::view(&state, &account).await?;
        return Ok(Json(MeView {
            entitlement,
            usage: None,
        }));
    }
    // The entitlement and the counters share the account's partition: one query reads both.
    let usage = state.syncer.store.account_usage(&account).await?;
    let entitlement = usage
        .entitlement
        .as_ref()
        .map_or_else(EntitlementView::none, |e| EntitlementView::at(e, now));
    Ok(Json(MeView {
        entitlement,
        usage: Some(usage_view(catalog, &usage, now)),
    }))
}

/// Whether the caller may use more of `meter` now, from one read.
pub async fn quota<S: BillingStore + UsageLedger>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
    Path(meter): Path<String>,
) -> Result<Json<Quota>, ApiError> {
    let catalog = &state.syncer.plans;
    if catalog.meter(&meter).is_none() {
        return Err(ApiError::NotFound("unknown_meter"));
    }
    let usage = state.syncer.store.account_usage(&account).await?;
    let now = shared::unix_now();
    Ok(Json(Quota {
        usage: meter_usage(catalog, &usage, &meter, now),
        meter,
    }))
}

pub async fn sync<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> Result<Json<EntitlementView>, ApiError> {
    let customer = super::customer(&state, &account).await?;
    state
        .syncer
        .sync_customer(&account, &customer, shared::unix_now())
        .await?;
    super::view(&state, &account).await
}

const DEFAULT_PAGE: u8 = 10;
const MAX_PAGE: u8 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoicesQuery {
    /// 1-100 (default 10), as Stripe pages.
    #[serde(default)]
    limit: Option<u8>,
    /// The `next` of the previous page: an invoice id.
    #[serde(default)]
    starting_after: Option<String>,
}

/// An invoice as the app's billing page shows it: no customer details, only what the buyer
/// sees on Stripe's own page.
#[derive(Debug, Serialize)]
pub struct InvoiceLine {
    id: String,
    number: Option<String>,
    status: Option<InvoiceStatus>,
    total: i64,
    amount_due: i64,
    amount_paid: i64,
    currency: Option<String>,
    created: i64,
    hosted_invoice_url: Option<String>,
    invoice_pdf: Option<String>,
}

impl From<Invoice> for InvoiceLine {
    fn from(invoice: Invoice) -> Self {
        Self {
            id: invoice.id,
            number: invoice.number,
            status: invoice.status,
            total: invoice.total,
            amount_due: invoice.amount_due,
            amount_paid: invoice.amount_paid,
            currency: invoice.currency,
            created: invoice.created,
            hosted_invoice_url: invoice.hosted_invoice_url,
            invoice_pdf: invoice.invoice_pdf,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InvoicePage {
    data: Vec<InvoiceLine>,
    has_more: bool,
    /// Pass as `starting_after` for the next page; `null` on the last one.
    next: Option<String>,
}

/// `GET /billing/invoices?limit=&starting_after=`: the account's invoices, newest first.
/// An account that never bought has none (an empty page, not an error).
pub async fn invoices<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
    query: Result<Query<InvoicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InvoicePage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest {
        code: "invalid_query",
        message: format!(
            "{} (limit: 1-{MAX_PAGE}; starting_after: an invoice id)",
            rejection.body_text()
        ),
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_PAGE}"),
        });
    }
    let after = query.starting_after.as_deref();
    if after.is_some_and(|id| {
        !id.starts_with("in_") || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "starting_after must be an invoice id (in_...)".into(),
        });
    }
    let Some(customer) = state.syncer.store.customer_of_account(&account).await? else {
        return Ok(Json(InvoicePage {
            data: Vec::new(),
            has_more: false,
            next: None,
        }));
    };
    let page = state.syncer.stripe.list_invoices(&customer, limit, after).await?;
    let data: Vec<InvoiceLine> = page.data.into_iter().map(InvoiceLine::from).collect();
    let next = page.has_more.then(|| data.last().map(|line| line.id.clone())).flatten();
    Ok(Json(InvoicePage {
        data,
        has_more: page.has_more,
        next,
    }))
}
