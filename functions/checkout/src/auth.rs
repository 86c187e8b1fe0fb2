//! Who is calling. In Lambda it is only ever the `sub` claim that API Gateway's JWT
//! authorizer verified and put in the request context — never anything in the body.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;
use shared::store::{BillingStore, UserId};

use crate::{ApiError, AppState};

/// Where the user id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// `requestContext.authorizer.jwt.claims.sub` (API Gateway HTTP API JWT authorizer).
    ApiGatewayJwt,
    /// The `X-Billing-User` header: only for `billing dev` on 127.0.0.1, never in Lambda.
    DevHeader,
}

pub struct CurrentUser(pub UserId);

impl<S: BillingStore> FromRequestParts<Arc<AppState<S>>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState<S>>) -> Result<Self, Self::Rejection> {
        let raw = match state.identity {
            IdentitySource::ApiGatewayJwt => jwt_subject(parts),
            IdentitySource::DevHeader => parts
                .headers
                .get("x-billing-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let raw = raw.ok_or(ApiError::Unauthorized)?;
        UserId::parse(&raw).map(CurrentUser).map_err(|_| ApiError::Unauthorized)
    }
}

fn jwt_subject(parts: &Parts) -> Option<String> {
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref()?.jwt.as_ref()?.claims.get("sub").cloned(),
        _ => None,
    }
}
