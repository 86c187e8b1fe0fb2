//! `POST /portal/sessions`: Stripe's billing portal, returning to the app.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::store::BillingStore;

use crate::auth::{BillingAdmin, Caller};
use crate::body::JsonBody;
use crate::redirect::SafePath;
use crate::{ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    #[serde(default)]
    return_path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PortalResponse {
    url: String,
}

pub async fn create<S: BillingStore>(
    State(state): State<Arc<AppState<S>>>,
    BillingAdmin(Caller { account, .. }): BillingAdmin,
    JsonBody(request): JsonBody<PortalRequest>,
) -> Result<Json<PortalResponse>, ApiError> {
    let invalid = |reason: &str| ApiError::BadRequest {
        code: "invalid_redirect_path",
        message: format!("return_path: {reason}"),
    };
    let path = SafePath::parse(request.return_path.as_deref().unwrap_or("/billing")).map_err(invalid)?;
    let return_url = path.on(&state.app_base_url).map_err(invalid)?;
    let customer = super::customer(&state, &account).await?;
    let session = state
        .syncer
        .stripe
        .create_portal_session(&customer, return_url.as_str())
        .await?;
    Ok(Json(PortalResponse { url: session.url }))
}
