//! The self-service billing API, one axum `Router` served by Lambda (through `lambda_http`)
//! and locally alike. The caller is the account named by the claims API Gateway's authorizer
//! verified (the `auth` module).

mod auth;
mod body;
mod error;
mod redirect;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use shared::config::{AccountSettings, RateLimits};
use shared::deadline::Deadline;
use shared::store::BillingStore;
use shared::sync::Syncer;
use shared::usage::UsageLedger;
use url::Url;

pub use error::ApiError;
pub use redirect::SafePath;

/// Larger bodies are refused before they are parsed: every request here is a few fields.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct AppState<S> {
    pub syncer: Syncer<S>,
    pub app_base_url: Url,
    /// Which claim names the account, and which roles may change its billing.
    pub accounts: AccountSettings,
    /// Requests per account and minute, by route class.
    pub limits: RateLimits,
}

/// API Gateway answers 504 after 29 s whatever the function does; the Stripe calls a request
/// makes end by this deadline together, so the caller gets this API's own error instead.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);

async fn within_request_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    Deadline::after(REQUEST_DEADLINE).scope(next.run(request)).await
}

pub fn router<S: BillingStore + UsageLedger + 'static>(state: AppState<S>) -> Router {
    Router::new()
        .route("/checkout/sessions", post(routes::checkout::create::<S>))
        .route("/portal/sessions", post(routes::portal::create::<S>))
        .route(
            "/subscription/change",
            post(routes::subscription::change::<S>).delete(routes::subscription::undo_change::<S>),
        )
        .route("/subscription/change/preview", post(routes::subscription::preview::<S>))
        .route("/subscription/seats", post(routes::subscription::seats::<S>))
        .route("/subscription/addons", post(routes::subscription::add_addon::<S>))
        .route(
            "/subscription/addons/{addon}",
            axum::routing::delete(routes::subscription::remove_addon::<S>),
        )
        .route("/subscription/cancel", post(routes::subscription::cancel::<S>))
        .route("/subscription/resume", post(routes::subscription::resume::<S>))
        .route("/billing/me", get(routes::billing::me::<S>))
        .route("/billing/quota/{meter}", get(routes::billing::quota::<S>))
        .route("/billing/sync", post(routes::billing::sync::<S>))
        .route("/billing/invoices", get(routes::billing::invoices::<S>))
        .fallback(|| async { ApiError::NotFound("route_not_found") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(within_request_deadline))
        .with_state(Arc::new(state))
}
