//! The Stripe API client: form-encoded requests, the pinned `Stripe-Version`, an
//! `Idempotency-Key` on every POST (the same one on every retry of it), and retries with
//! jittered exponential backoff on the failures Stripe documents as safe to retry.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use url::Url;

use super::form;
use super::objects::{
    BillingPortalSession, Charge, CheckoutSession, Customer, Invoice, List, PromotionCode, Refund, Subscription,
    SubscriptionSchedule,
};
use super::resource::Resource;
use crate::config::Rotating;
use crate::deadline::Deadline;

/// The one API version this system is written against; sent on every request so the shapes
/// Stripe returns never change under us when the account's default version moves.
pub const API_VERSION: &str = "2026-10-28.endive";

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The whole call, all attempts and waits included, ends by then.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
        }
    }
}

/// Stripe's error object (`{"error":{"type":...}}`) with the HTTP status and request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub error_type: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub param: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe answered {} ({}, code {:?}, request {:?})", .0.status, .0.error_type, .0.code, .0.request_id)]
    Api(Box<ApiError>),
    #[error("could not reach Stripe")]
    Transport(#[source] reqwest::Error),
    #[error("Stripe did not answer within the {0:?} deadline")]
    DeadlineExceeded(Duration),
    #[error("Stripe's response could not be read as the expected object")]
    Decode(#[source] serde_json::Error),
    #[error("refusing to put {0:?} in a Stripe URL path")]
    InvalidId(String),
}

impl StripeError {
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            StripeError::Api(error) => Some(error.as_ref()),
            _ => None,
        }
    }

    /// A 404 from Stripe: the object does not exist (or not in this mode).
    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(|error| error.status == 404)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type", default)]
    error_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone)]
pub struct StripeClient {
    /// Built on the first call when the client is [`StripeClient::lazy`]: building it loads and
    /// parses the system's root certificates, milliseconds that a cold start on a path without
    /// a Stripe call (`GET /billing/me`, most events) should not pay.
    http: Arc<OnceCell<reqwest::Client>>,
    base: Url,
    /// Read again from Secrets Manager within 300 s, and at once (rate-limited) when Stripe
    /// answers 401, so a rolled key is picked up without a redeploy.
    secret_key: Rotating<SecretString>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A request body: v1 takes forms, v2 JSON.
enum Body {
    Form(String),
    Json(String),
}

enum Attempt<T> {
    Done(T),
    Retry {
        error: StripeError,
        retry_after: Option<Duration>,
    },
    Fail(StripeError),
}

impl StripeClient {
    pub fn new(
        http: reqwest::Client,
        base: Url,
        secret_key: impl Into<Rotating<SecretString>>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http: Arc::new(OnceCell::new_with(Some(http))),
            base,
            secret_key: secret_key.into(),
            retry,
        }
    }

    /// A client whose HTTP client is built by [`StripeClient::http_client`] on the first call.
    pub fn lazy(base: Url, secret_key: impl Into<Rotating<SecretString>>, retry: RetryPolicy) -> Self {
        Self {
            http: Arc::new(OnceCell::new()),
            base,
            secret_key: secret_key.into(),
            retry,
        }
    }

    /// The HTTP client every function builds once at start: rustls, bounded connect time.
    pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("stripe-billing-lambda/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// The mode the key works in: `sk_live_`/`rk_live_` → live, `sk_test_`/`rk_test_` → test;
    /// `None` for a key of another form (a local stand-in's), which checks nothing.
    pub fn livemode(&self) -> Option<bool> {
        let key = self.secret_key.cached();
        let key = key.expose_secret();
        let mode = key.strip_prefix("sk_").or_else(|| key.strip_prefix("rk_"))?;
        if mode.starts_with("live_") {
            Some(true)
        } else if mode.starts_with("test_") {
            Some(false)
        } else {
            None
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, StripeError> {
        let mut url = self.url(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.send(Method::GET, url, None, None, None).await
    }

    /// POSTs `params` form-encoded. Without a caller-chosen `idempotency_key`, a fresh one is
    /// generated, so retries of this call can never create a second object.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = idempotency_key.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        self.send(
            Method::POST,
            self.url(path),
            Some(Body::Form(form::encode(params))),
            Some(key),
            None,
        )
        .await
    }

    /// POSTs `params` as JSON, as the v2 API takes them, with an idempotency key as [`Self::post`].
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = idempotency_key.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        self.send(
            Method::POST,
            self.url(path),
            Some(Body::Json(params.to_string())),
            Some(key),
            None,
        )
        .await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = idempotency_key.map(str::to_owned);
        self.send(Method::DELETE, self.url(path), None, key, None).await
    }

    pub async fn create_customer(&self, params: &Value, idempotency_key: &str) -> Result<Customer, StripeError> {
        self.post("/v1/customers", params, Some(idempotency_key)).await
    }

    pub async fn retrieve_customer(&self, id: &str) -> Result<Customer, StripeError> {
        self.get(&format!("/v1/customers/{}", path_id(id)?), &[]).await
    }

    pub async fn create_checkout_session(
        &self,
        params: &Value,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, StripeError> {
        self.post("/v1/checkout/sessions", params, Some(idempotency_key)).await
    }

    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<BillingPortalSession, StripeError> {
        let params = json!({ "customer": customer, "return_url": return_url });
        self.post("/v1/billing_portal/sessions", &params, None).await
    }

    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        self.get(&format!("/v1/subscriptions/{}", path_id(id)?), &[]).await
    }

    pub async fn update_subscription(
        &self,
        id: &str,
        params: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Subscription, StripeError> {
        self.post(&format!("/v1/subscriptions/{}", path_id(id)?), params, idempotency_key)
            .await
    }

    /// Every subscription of the customer, canceled ones included, all pages.
    pub async fn list_subscriptions(&self, customer: &str) -> Result<Vec<Subscription>, StripeError> {
        self.list_all(
            "/v1/subscriptions",
            &[("customer", customer), ("status", "all")],
            |s: &Subscription| s.id.clone(),
        )
        .await
    }

    /// The customer's checkout sessions that can still be paid, all pages.
    pub async fn list_open_checkout_sessions(&self, customer: &str) -> Result<Vec<CheckoutSession>, StripeError> {
        self.list_all(
            "/v1/checkout/sessions",
            &[("customer", customer), ("status", "open")],
            |s: &CheckoutSession| s.id.clone(),
        )
        .await
    }

    pub async fn expire_checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        let path = format!("/v1/checkout/sessions/{}/expire", path_id(id)?);
        self.post(&path, &json!({}), Some(&format!("expire-{id}"))).await
    }

    pub async fn cancel_subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        self.delete(&format!("/v1/subscriptions/{}", path_id(id)?), None).await
    }

    /// Refunds a payment in full, once: the key is derived from the payment, so a retried
    /// event refunds nothing more.
    pub async fn refund_payment_intent(&self, payment_intent: &str, reason: &str) -> Result<Refund, StripeError> {
        let params = json!({ "payment_intent": payment_intent, "reason": reason });
        self.post("/v1/refunds", &params, Some(&format!("refund-{payment_intent}")))
            .await
    }

    /// Follows `has_more` / `starting_after` to the end of a Stripe list, 100 items a page.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        filters: &[(&str, &str)],
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, StripeError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query: Vec<(&str, &str)> = filters.to_vec();
            query.push(("limit", "100"));
            if let Some(after) = after.as_deref() {
                query.push(("starting_after", after));
            }
            let page: List<T> = self.get(path, &query).await?;
            let last = page.data.last().map(&id_of);
            let has_more = page.has_more;
            all.extend(page.data);
            match last {
                Some(last) if has_more => after = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// A schedule made from the subscription (its one phase: the subscription as it is, to
    /// the end of the period); Stripe refuses a second schedule for one subscription.
    pub async fn create_schedule_from(&self, subscription: &str) -> Result<SubscriptionSchedule, StripeError> {
        let params = json!({ "from_subscription": subscription });
        self.post("/v1/subscription_schedules", &params, None).await
    }

    pub async fn retrieve_schedule(&self, id: &str) -> Result<SubscriptionSchedule, StripeError> {
        self.get(&format!("/v1/subscription_schedules/{}", path_id(id)?), &[])
            .await
    }

    pub async fn update_schedule(&self, id: &str, params: &Value) -> Result<SubscriptionSchedule, StripeError> {
        self.post(&format!("/v1/subscription_schedules/{}", path_id(id)?), params, None)
            .await
    }

    /// The subscription goes on as it is now, without the schedule's later phases.
    pub async fn release_schedule(&self, id: &str) -> Result<SubscriptionSchedule, StripeError> {
        let path = format!("/v1/subscription_schedules/{}/release", path_id(id)?);
        self.post(&path, &json!({}), None).await
    }

    pub async fn retrieve_charge(&self, id: &str) -> Result<Charge, StripeError> {
        self.get(&format!("/v1/charges/{}", path_id(id)?), &[]).await
    }

    pub async fn retrieve_promotion_code(&self, id: &str) -> Result<PromotionCode, StripeError> {
        self.get(&format!("/v1/promotion_codes/{}", path_id(id)?), &[]).await
    }

    /// The active promotion code a buyer typed, if any: Stripe matches `code`
    /// case-insensitively, and an active code is unique.
    pub async fn find_promotion_code(&self, code: &str) -> Result<Option<PromotionCode>, StripeError> {
        let page: List<PromotionCode> = self
            .get(
                "/v1/promotion_codes",
                &[("code", code), ("active", "true"), ("limit", "1")],
            )
            .await?;
        Ok(page.data.into_iter().next())
    }

    /// One page of the customer's invoices, newest first.
    pub async fn list_invoices(
        &self,
        customer: &str,
        limit: u8,
        starting_after: Option<&str>,
    ) -> Result<List<Invoice>, StripeError> {
        let limit = limit.to_string();
        let mut query = vec![("customer", customer), ("limit", limit.as_str())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        self.get("/v1/invoices", &query).await
    }

    /// The invoice a change of the subscription's items would bring (`create_preview`):
    /// nothing changes in Stripe.
    pub async fn preview_subscription_change(
        &self,
        customer: &str,
        subscription: &str,
        details: &Value,
    ) -> Result<Invoice, StripeError> {
        let params = json!({ "customer": customer, "subscription": subscription, "subscription_details": details });
        self.post("/v1/invoices/create_preview", &params, None).await
    }

    pub async fn retrieve_invoice(&self, id: &str) -> Result<Invoice, StripeError> {
        self.get(&format!("/v1/invoices/{}", path_id(id)?), &[]).await
    }

    /// The invoice with its payment attempts expanded, for the decline code of the last one.
    pub async fn retrieve_invoice_with_payments(&self, id: &str) -> Result<Invoice, StripeError> {
        let path = format!("/v1/invoices/{}", path_id(id)?);
        self.get(&path, &[("expand[]", "payments.data.payment.payment_intent")])
            .await
    }

    /// An object an event is about, as Stripe shows it now at the pinned version, raw.
    pub async fn retrieve_resource(&self, resource: Resource, id: &str) -> Result<serde_json::Value, StripeError> {
        self.get(&format!("{}/{}", resource.path(), path_id(id)?), &[]).await
    }

    /// A page of `GET /v2/core/events` (thin events): the first with `query`, the next ones by
    /// the `next_page_url` the previous page returned, which must stay on that path.
    pub async fn list_thin_events(&self, page: ThinEventsPage<'_>) -> Result<V2List, StripeError> {
        match page {
            ThinEventsPage::First(query) => self.get(THIN_EVENTS_PATH, query).await,
            ThinEventsPage::Next(next) => {
                let url = self
                    .base
                    .join(next)
                    .ok()
                    .filter(|url| url.origin() == self.base.origin() && url.path() == THIN_EVENTS_PATH)
                    .ok_or_else(|| StripeError::InvalidId(next.chars().take(64).collect()))?;
                self.send(Method::GET, url, None, None, None).await
            }
        }
    }

    /// One event as Stripe keeps it (30 days), raw: `billing replay` enqueues it as delivered.
    pub async fn retrieve_event(&self, id: &str) -> Result<serde_json::Value, StripeError> {
        self.get(&format!("/v1/events/{}", path_id(id)?), &[]).await
    }

    /// POSTs `params` as JSON to `base` + `path` authenticated with a meter event session's
    /// token instead of the API key: the v2 meter event stream lives on its own host.
    pub async fn post_json_with_session<T: DeserializeOwned>(
        &self,
        base: &Url,
        path: &str,
        params: &Value,
        token: &SecretString,
    ) -> Result<T, StripeError> {
        let mut url = base.clone();
        url.set_path(path);
        let key = uuid::Uuid::new_v4().to_string();
        self.send(
            Method::POST,
            url,
            Some(Body::Json(params.to_string())),
            Some(key),
            Some(token),
        )
        .await
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        idempotency_key: Option<String>,
        session_token: Option<&SecretString>,
    ) -> Result<T, StripeError> {
        // The call's own limit, or the invocation's deadline when that comes first.
        let started = Instant::now();
        // A configured deadline too far out for the clock (`STRIPE_DEADLINE_SECS` = 10^18)
        // means "no limit of its own", never a panic.
        let own = started
            .checked_add(self.retry.deadline)
            .unwrap_or(started + Duration::from_secs(86_400));
        let deadline = Deadline::current().map_or(own, |invocation| own.min(invocation.instant()));
        let budget = deadline.saturating_duration_since(Instant::now());
        let http = self
            .http
            .get_or_try_init(|| async { Self::http_client() })
            .await
            .map_err(StripeError::Transport)?;
        let mut retries = 0;
        // A meter event session's token stands in for the API key on the stream; a 401 there
        // is the session's to renew, not the key's.
        let mut key = match session_token {
            Some(token) => std::sync::Arc::new(token.clone()),
            None => self.secret_key.current().await,
        };
        let mut key_reread = session_token.is_some();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StripeError::DeadlineExceeded(budget));
            }
            let mut request = http
                .request(method.clone(), url.clone())
                .bearer_auth(key.expose_secret())
                .header("Stripe-Version", API_VERSION)
                .timeout(remaining);
            if let Some(key) = &idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = &body {
                let (content_type, text) = match body {
                    Body::Form(text) => ("application/x-www-form-urlencoded", text),
                    Body::Json(text) => ("application/json", text),
                };
                request = request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(text.clone());
            }
            let (error, retry_after) = match self.attempt(request, budget).await {
                Attempt::Done(value) => return Ok(value),
                // A 401 after the key was rolled: read the secret again and, when it changed,
                // try once more with the new key.
                Attempt::Fail(error) if !key_reread && error.api().is_some_and(|api| api.status == 401) => {
                    key_reread = true;
                    match self.secret_key.reread_if_changed(&key).await {
                        Some(new_key) => {
                            tracing::warn!("Stripe refused the API key; retrying with the key now in Secrets Manager");
                            key = new_key;
                            continue;
                        }
                        None => return Err(error),
                    }
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            if retries >= self.retry.max_retries {
                return Err(error);
            }
            let wait = self.backoff(retries).max(retry_after.unwrap_or_default());
            if Instant::now().checked_add(wait).is_none_or(|ready| ready >= deadline) {
                return Err(error);
            }
            tracing::warn!(retry = retries + 1, wait_ms = wait.as_millis() as u64, error = %error, "retrying Stripe request");
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    async fn attempt<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, budget: Duration) -> Attempt<T> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Attempt::Retry {
                    error: StripeError::DeadlineExceeded(budget),
                    retry_after: None,
                };
            }
            Err(error) => {
                return Attempt::Retry {
                    error: StripeError::Transport(error),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let headers = response.headers();
        let should_retry = headers
            .get("stripe-should-retry")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.eq_ignore_ascii_case("true"));
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| parse_retry_after(value.to_str().ok()?));
        let request_id = headers
            .get("request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Attempt::Retry {
                    error: StripeError::Transport(error),
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Attempt::Done(value),
                Err(error) => Attempt::Fail(StripeError::Decode(error)),
            };
        }
        // Stripe's rate limit is shared with the whole account: the dashboard shows who is
        // close to it.
        if status == StatusCode::TOO_MANY_REQUESTS {
            crate::telemetry::count("StripeRateLimited");
        } else {
            crate::telemetry::count("StripeErrors");
        }
        let error = StripeError::Api(Box::new(api_error(status, &bytes, request_id)));
        let retryable = should_retry.unwrap_or(
            status == StatusCode::CONFLICT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
        );
        if retryable {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }

    /// Exponential backoff with jitter in [50%, 100%] of the step, so that many clients
    /// throttled together do not come back together.
    fn backoff(&self, retries: u32) -> Duration {
        let step = self
            .retry
            .initial_backoff
            .saturating_mul(1 << retries.min(16))
            .min(self.retry.max_backoff);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

fn api_error(status: StatusCode, body: &[u8], request_id: Option<String>) -> ApiError {
    let object = serde_json::from_slice::<ErrorBody>(body).ok().map(|body| body.error);
    let (error_type, code, decline_code, param, message) = match object {
        Some(o) => (
            o.error_type.unwrap_or_else(|| "api_error".into()),
            o.code,
            o.decline_code,
            o.param,
            o.message,
        ),
        None => ("api_error".into(), None, None, None, None),
    };
    ApiError {
        status: status.as_u16(),
        error_type,
        code,
        decline_code,
        param,
        message,
        request_id,
    }
}

/// The longest `Retry-After` honoured: a longer one cannot fit any call's deadline anyway, and
/// an absurd value must not reach time arithmetic.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    let wait = match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            when.duration_since(std::time::SystemTime::now()).unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Ids go into URL paths; anything but Stripe's id alphabet is refused rather than escaped.
const THIN_EVENTS_PATH: &str = "/v2/core/events";

/// Which page of thin events to read.
#[derive(Debug, Clone, Copy)]
pub enum ThinEventsPage<'a> {
    First(&'a [(&'a str, &'a str)]),
    Next(&'a str),
}

/// A v2 list: its items and, when there are more, the URL of the next page.
#[derive(Debug, Clone, Deserialize)]
pub struct V2List {
    pub data: Vec<serde_json::Value>,
    #[serde(default)]
    pub next_page_url: Option<String>,
}

pub fn path_id(id: &str) -> Result<&str, StripeError> {
    let valid = !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(id)
    } else {
        Err(StripeError::InvalidId(id.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(300)),
            "capped"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn path_ids_are_restricted() {
        assert!(path_id("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw").is_ok());
        for bad in ["", "../v1/charges", "sub_1?expand=x", "sub 1", "in_1/pay"] {
            assert!(path_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_keep_type_code_and_message() {
        let body = br#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card was declined."}}"#;
        let error = api_error(StatusCode::PAYMENT_REQUIRED, body, Some("req_1".into()));
        assert_eq!(error.error_type, "card_error");
        assert_eq!(error.code.as_deref(), Some("card_declined"));
        assert_eq!(error.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(error.request_id.as_deref(), Some("req_1"));
        assert_eq!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>", None).error_type,
            "api_error"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let client = StripeClient::new(
            reqwest::Client::new(),
            Url::parse(DEFAULT_API_BASE).unwrap(),
            SecretString::from("sk_test_x".to_string()),
            RetryPolicy::default(),
        );
        for retries in 0..20 {
            let wait = client.backoff(retries);
            assert!(
                wait <= Duration::from_secs(5) && wait >= Duration::from_millis(250),
                "{wait:?}"
            );
        }
    }
}
