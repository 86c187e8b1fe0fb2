//! Drives the billing API exactly as Lambda does: an API Gateway HTTP API (v2) event, with the
//! JWT authorizer's claims, converted by `lambda_http` and answered by the real router.

use std::sync::Arc;

use axum::Router;
use axum::body::to_bytes;
use checkout::{AppState, router};
use serde_json::{Value, json};
use shared::config::{AccountSettings, Catalog};
use shared::store::BillingStore;
use shared::sync::Syncer;
use tower::ServiceExt;

use crate::lifecycle::PLANS;
use crate::stripe_standin::StripeStandIn;

pub const APP_BASE_URL: &str = "https://app.example.com";

pub struct TestApi<S> {
    pub router: Router,
    pub store: Arc<S>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `Retry-After` header, when there is one.
    pub retry_after: Option<String>,
}

/// The API over `store` (shared with the test through an `Arc`) and the Stripe stand-in, with
/// no rate limits: the tests of everything else call one route many times a minute.
pub fn spawn_api<S: BillingStore + shared::usage::UsageLedger + 'static>(
    store: Arc<S>,
    stripe: &StripeStandIn,
) -> TestApi<S> {
    spawn_api_with_limits(store, stripe, shared::config::RateLimits::UNLIMITED)
}

pub fn spawn_api_with_limits<S: BillingStore + shared::usage::UsageLedger + 'static>(
    store: Arc<S>,
    stripe: &StripeStandIn,
    limits: shared::config::RateLimits,
) -> TestApi<S> {
    spawn_api_with(
        store,
        stripe.client(),
        limits,
        AccountSettings::default(),
        Catalog::parse(PLANS).unwrap(),
    )
}

/// The API with an account policy (which claim names the account, which roles manage it) and
/// a catalog, against any Stripe: the stand-in's client or the simulator's.
pub fn spawn_api_with<S: BillingStore + shared::usage::UsageLedger + 'static>(
    store: Arc<S>,
    stripe: shared::stripe::StripeClient,
    limits: shared::config::RateLimits,
    accounts: AccountSettings,
    catalog: Catalog,
) -> TestApi<S> {
    let state = AppState {
        syncer: Syncer {
            store: store.clone(),
            stripe,
            plans: catalog,
            grace_days: 14,
            policy: Default::default(),
            app_events: shared::notify::NoAppEvents,
        },
        app_base_url: url::Url::parse(APP_BASE_URL).unwrap(),
        accounts,
        limits,
    };
    TestApi {
        router: router(state),
        store,
    }
}

pub fn apigw_event(method: &str, path: &str, user: Option<&str>, headers: Value, body: &str) -> String {
    let claims = user.map(|sub| json!({"sub": sub, "iss": "https://auth.example.com/"}));
    apigw_event_with_claims(method, path, claims, headers, body)
}

/// The event for a token with these claims (strings, as the HTTP API's authorizer passes them).
pub fn apigw_event_with_claims(method: &str, path: &str, claims: Option<Value>, headers: Value, body: &str) -> String {
    let authorizer = match claims {
        Some(claims) => json!({"jwt": {"claims": claims, "scopes": null}}),
        None => Value::Null,
    };
    let mut headers = headers;
    headers["content-type"] = json!("application/json");
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "test"},
            "requestId": "req", "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "23/Nov/2026:16:00:00 +0000", "timeEpoch": 1_763_900_000_000_i64,
            "authorizer": authorizer
        },
        "body": body,
        "isBase64Encoded": false,
    })
    .to_string()
}

impl<S> TestApi<S> {
    pub async fn call(&self, method: &str, path: &str, user: Option<&str>, body: &str) -> Answer {
        self.call_with(method, path, user, json!({}), body).await
    }

    pub async fn call_with(&self, method: &str, path: &str, user: Option<&str>, headers: Value, body: &str) -> Answer {
        self.send(apigw_event(method, path, user, headers, body)).await
    }

    /// A call with a token carrying `claims` (an organisation, a role, an email...).
    pub async fn call_as(&self, method: &str, path: &str, claims: Value, body: &str) -> Answer {
        self.send(apigw_event_with_claims(method, path, Some(claims), json!({}), body))
            .await
    }

    async fn send(&self, event: String) -> Answer {
        let request = lambda_http::request::from_str(&event).expect("API Gateway event");
        let response = self.router.clone().oneshot(request).await.expect("router never fails");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        Answer {
            status,
            body,
            retry_after,
        }
    }
}
