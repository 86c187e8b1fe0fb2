//! Drives the billing API exactly as Lambda does: an API Gateway HTTP API (v2) event, with the
//! JWT authorizer's claims, converted by `lambda_http` and answered by the real router.

use std::sync::Arc;

use axum::Router;
use axum::body::to_bytes;
use checkout::{AppState, router};
use serde_json::{Value, json};
use shared::config::PlanCatalog;
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
pub fn spawn_api<S: BillingStore + 'static>(store: Arc<S>, stripe: &StripeStandIn) -> TestApi<S> {
    spawn_api_with_limits(store, stripe, shared::config::RateLimits::UNLIMITED)
}

pub fn spawn_api_with_limits<S: BillingStore + 'static>(
    store: Arc<S>,
    stripe: &StripeStandIn,
    limits: shared::config::RateLimits,
) -> TestApi<S> {
    let state = AppState {
        syncer: Syncer {
            store: store.clone(),
            stripe: stripe.client(),
            plans: PlanCatalog::parse(PLANS).unwrap(),
            grace_days: 14,
            policy: Default::default(),
            app_events: shared::notify::NoAppEvents,
        },
        app_base_url: url::Url::parse(APP_BASE_URL).unwrap(),
        limits,
    };
    TestApi {
        router: router(state),
        store,
    }
}

pub fn apigw_event(method: &str, path: &str, user: Option<&str>, headers: Value, body: &str) -> String {
    let authorizer = match user {
        Some(sub) => json!({"jwt": {"claims": {"sub": sub, "iss": "https://auth.example.com/"}, "scopes": null}}),
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
        let request =
            lambda_http::request::from_str(&apigw_event(method, path, user, headers, body)).expect("API Gateway event");
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
