//! Who is calling: only ever the `sub` claim that API Gateway's JWT authorizer verified and put
//! in the request context — never a header or anything in the body. `billing dev`'s
//! `X-Billing-User` header is turned into such a context by the CLI, in front of this router;
//! no code of it is in this crate, so none is in the Lambda binary.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;
use shared::config::{RATE_WINDOW_SECS, RouteClass};
use shared::store::{BillingStore, UserId};
use shared::telemetry;

use crate::{ApiError, AppState};

pub struct CurrentUser(pub UserId);

impl<S: BillingStore> FromRequestParts<Arc<AppState<S>>> for CurrentUser {
    type Rejection = ApiError;

    /// The caller, once counted against its account's limit for the route's class: identity
    /// first (401), then the limit (429), both before the body is read.
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState<S>>) -> Result<Self, Self::Rejection> {
        // `requestContext.authorizer.jwt.claims.sub` (API Gateway HTTP API JWT authorizer).
        let raw = jwt_subject(parts).ok_or(ApiError::Unauthorized)?;
        let user = UserId::parse(&raw).map_err(|_| ApiError::Unauthorized)?;
        let class = route_class(parts.uri.path());
        if let Some(limit) = state.limits.limit(class) {
            let now = shared::unix_now();
            let window_start = now - now.rem_euclid(RATE_WINDOW_SECS);
            let window_end = window_start.saturating_add(RATE_WINDOW_SECS);
            let key = format!("{}#{user}", class.name());
            let count = state
                .syncer
                .store
                .count_request(&key, window_start, window_end.saturating_add(RATE_WINDOW_SECS))
                .await?;
            if count > limit {
                telemetry::count("RateLimited");
                tracing::warn!(limit = class.name(), "request over the account's rate limit");
                return Err(ApiError::RateLimited {
                    class: class.name(),
                    retry_after: u64::try_from(window_end - now).unwrap_or(1).max(1),
                });
            }
        }
        Ok(CurrentUser(user))
    }
}

fn route_class(path: &str) -> RouteClass {
    match path {
        "/checkout/sessions"
        | "/portal/sessions"
        | "/subscription/change"
        | "/subscription/cancel"
        | "/subscription/resume" => RouteClass::Writes,
        "/billing/sync" => RouteClass::Sync,
        _ => RouteClass::Other,
    }
}

fn jwt_subject(parts: &Parts) -> Option<String> {
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref()?.jwt.as_ref()?.claims.get("sub").cloned(),
        _ => None,
    }
}
