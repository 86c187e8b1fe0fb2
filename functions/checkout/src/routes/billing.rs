//! `GET /billing/me` (the stored entitlement, no Stripe call) and `POST /billing/sync`
//! (re-read from Stripe through the event processor's sync code, for the account who is back
//! from Checkout before the webhook).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use shared::entitlement::EntitlementView;
use shared::store::BillingStore;

use crate::auth::{Caller, Member};
use crate::body::{JsonBody, NoFields};
use crate::{ApiError, AppState};

pub async fn me<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    Member(Caller { account, .. }): Member,
) -> Result<Json<EntitlementView>, ApiError> {
    super::view(&state, &account).await
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
