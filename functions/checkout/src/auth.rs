//! Who is calling: only ever the claims that API Gateway's JWT authorizer verified and put in
//! the request context — never a header or anything in the body. `billing dev`'s
//! `X-Billing-User` header is turned into such a context by the CLI, in front of this router;
//! no code of it is in this crate, so none is in the Lambda binary.
//!
//! The account is the claim [`AccountSettings::account_claim`] names (`sub` unless configured);
//! [`Member`] is anyone in it, [`BillingAdmin`] a member whose role may change billing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;
use shared::config::{RATE_WINDOW_SECS, RouteClass};
use shared::store::{AccountId, BillingStore};
use shared::telemetry;

use crate::{ApiError, AppState};

/// Stripe's limits on a customer's `email` and `name`.
const MAX_EMAIL_LEN: usize = 512;
const MAX_NAME_LEN: usize = 256;

/// A verified caller: the account, and what the token says about the person, for the Stripe
/// customer's invoices (never logged).
pub struct Caller {
    pub account: AccountId,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// Any member of the account: may read its billing.
pub struct Member(pub Caller);

/// A member whose role may change billing (every member when no role policy is configured).
pub struct BillingAdmin(pub Caller);

impl<S: BillingStore> FromRequestParts<Arc<AppState<S>>> for Member {
    type Rejection = ApiError;

    /// Identity first (401, then 403 without the account claim), then the account's limit
    /// for the route's class (429), all before the body is read.
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState<S>>) -> Result<Self, Self::Rejection> {
        let claims = jwt_claims(parts).ok_or(ApiError::Unauthorized)?;
        let caller = caller(claims, state)?;
        count_against_limit(parts, state, &caller.account).await?;
        Ok(Member(caller))
    }
}

impl<S: BillingStore> FromRequestParts<Arc<AppState<S>>> for BillingAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState<S>>) -> Result<Self, Self::Rejection> {
        let claims = jwt_claims(parts).ok_or(ApiError::Unauthorized)?;
        let caller = caller(claims, state)?;
        if let Some(admins) = &state.accounts.admins {
            let role = claims.get(&admins.claim).map(String::as_str);
            if !state.accounts.may_manage(role) {
                tracing::info!(account = %caller.account, "billing change refused: the caller's role may not manage billing");
                return Err(ApiError::Forbidden {
                    code: "billing_admin_required",
                    message: format!(
                        "changing billing needs the {:?} claim to hold one of: {}",
                        admins.claim,
                        admins.roles.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        count_against_limit(parts, state, &caller.account).await?;
        Ok(BillingAdmin(caller))
    }
}

fn caller<S>(claims: &HashMap<String, String>, state: &AppState<S>) -> Result<Caller, ApiError> {
    let settings = &state.accounts;
    let account = if settings.account_claim == shared::config::DEFAULT_ACCOUNT_CLAIM {
        // A verified token always has a subject: without one the context is not the
        // authorizer's, so the caller is unauthenticated.
        let sub = claims.get("sub").ok_or(ApiError::Unauthorized)?;
        AccountId::parse(sub).map_err(|_| ApiError::Unauthorized)?
    } else {
        claims
            .get(&settings.account_claim)
            .filter(|value| !value.trim().is_empty())
            .and_then(|value| AccountId::parse(value).ok())
            .ok_or_else(|| ApiError::Forbidden {
                code: "account_claim_missing",
                message: format!(
                    "the token has no valid {:?} claim: billing belongs to an account, so sign in to one (select an organisation) first",
                    settings.account_claim
                ),
            })?
    };
    let text = |name: &str, max: usize| {
        claims
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control))
            .map(str::to_owned)
    };
    Ok(Caller {
        account,
        email: text("email", MAX_EMAIL_LEN).filter(|email| email.contains('@')),
        name: text("name", MAX_NAME_LEN),
    })
}

/// Counts the request against its account's limit for the route's class.
async fn count_against_limit<S: BillingStore>(
    parts: &Parts,
    state: &AppState<S>,
    account: &AccountId,
) -> Result<(), ApiError> {
    let class = route_class(parts.uri.path());
    let Some(limit) = state.limits.limit(class) else {
        return Ok(());
    };
    let now = shared::unix_now();
    let window_start = now - now.rem_euclid(RATE_WINDOW_SECS);
    let window_end = window_start.saturating_add(RATE_WINDOW_SECS);
    let key = format!("{}#{account}", class.name());
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
    Ok(())
}

fn route_class(path: &str) -> RouteClass {
    match path {
        "/checkout/sessions"
        | "/portal/sessions"
        | "/subscription/change"
        | "/subscription/seats"
        | "/subscription/addons"
        | "/subscription/cancel"
        | "/subscription/resume" => RouteClass::Writes,
        _ if path.starts_with("/subscription/addons/") => RouteClass::Writes,
        "/billing/sync" | "/billing/invoices" | "/subscription/change/preview" => RouteClass::Sync,
        _ => RouteClass::Other,
    }
}

/// `requestContext.authorizer.jwt.claims` (API Gateway HTTP API JWT authorizer).
fn jwt_claims(parts: &Parts) -> Option<&HashMap<String, String>> {
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => Some(&context.authorizer.as_ref()?.jwt.as_ref()?.claims),
        _ => None,
    }
}
