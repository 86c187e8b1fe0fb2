//! An offline Stripe for local runs and the demo: a small stateful server speaking the part
//! of Stripe's API this system uses, with Stripe's object shapes (from the official fixtures)
//! and Stripe's request validation (the official spec: an unknown parameter is a 400).
//!
//! Control endpoints under `/sim/` drive what a customer or a bank would do — complete a
//! checkout, fail or authenticate a payment, pay, end a period, cancel — and each emits the events
//! real Stripe emits, signed with the webhook secret and POSTed to the webhook URL, optionally
//! duplicated and shuffled like real at-least-once, unordered delivery. Endpoints created through
//! `/v1/webhook_endpoints` (as `billing setup` does) receive the events they enabled too, each
//! signed with its own secret.
//!
//! Usage-based billing: billing meters (`/v1/billing/meters`), meter events through v1
//! (`/v1/billing/meter_events`) and the v2 high-throughput stream
//! (`/v2/billing/meter_event_session`, then `/v2/billing/meter_event_stream` with the session's
//! token — served here on the same port, where Stripe has `meter-events.stripe.com`), event
//! summaries, metered prices (`/v1/prices`), and renewal invoices that bill each metered item's
//! usage. A meter event Stripe accepts but cannot count (unknown customer, value not a number)
//! brings the thin-only `v1.billing.meter.error_report_triggered` event.
//!
//! The controls, each a POST under `/sim/` with query parameters:
//! - `checkout/{id}/complete[?delayed=true]`, `checkout/{id}/async_payment[?outcome=failed]`;
//! - `subscriptions/{id}/end_period`, `subscriptions/{id}/cancel`,
//!   `subscriptions/{id}/fail_payment[?decline_code=…&action_required=true&final=true]`;
//! - `invoices/{id}/pay`, `charges/{id}/dispute[?status=lost]`, `promotion_codes`, `coupons`;
//! - `objects/subscriptions/{id}`: the subscription as stored;
//! - `prices?id=…&meter=…&unit_amount_decimal=…[&free_up_to=N][&currency=usd][&interval=month]`:
//!   a metered price under a chosen id (the catalog names fixed price ids), backed by `meter`
//!   (a meter's id or its `event_name`); `free_up_to` makes it graduated: the first N units
//!   free, the rest at `unit_amount_decimal` (in the minor unit, e.g. `0.5` cents);
//! - `meter_event_sessions?ttl_secs=N`: how long meter event sessions made from now on last
//!   (15 minutes unless set; 0 makes them expired at once);
//! - `meter_events/rate_limit?per_second=N`: meter event requests (v1 and the v2 stream
//!   together) allowed in any second, beyond which Stripe's 429 `rate_limit` answers; without
//!   `per_second`, no limit (the default).

pub mod spec;
mod state;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use spec::{Spec, decode_form};
use state::Sim;

/// Which of Stripe's two event shapes the destinations receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Payload {
    /// `object: "event"` with the object in `data.object`.
    #[default]
    Snapshot,
    /// `object: "v2.core.event"`, type `v1.…`, only a `related_object` reference.
    Thin,
}

/// An in-process Amazon EventBridge target: it is handed the envelope's JSON and answers
/// whether it took it.
pub type EventBridgeSink = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What a partner event source puts on the bus: Stripe's source name and the bus's account.
#[derive(Clone)]
pub struct EventBridgeTarget {
    pub source: String,
    pub account: String,
    pub sink: EventBridgeSink,
}

impl std::fmt::Debug for EventBridgeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeTarget")
            .field("source", &self.source)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// How events reach the system: a signed POST to the webhook, an EventBridge envelope, or
/// both (as when a team moves from one to the other).
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub eventbridge: Option<EventBridgeTarget>,
    pub payload: Payload,
    /// Deliver some events twice, as Stripe's at-least-once delivery does.
    pub duplicates: bool,
    /// Deliver each action's events in random order, as Stripe does not guarantee order.
    pub shuffle: bool,
}

/// Failures of Stripe's own to inject into API requests (never into `/sim/` control calls).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Share of API requests that fail, 0.0–1.0; each fault is a 500, a 429 with `Retry-After`,
    /// or a slow answer, in equal parts.
    pub rate: f64,
    /// How late a slow answer comes. The work is done before the wait, as when Stripe's answer
    /// is lost: a client that gives up and retries with its idempotency key gets the stored
    /// answer, and nothing is created twice.
    pub slow: Duration,
}

/// How many meter event requests arrived and what became of their events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterRequests {
    /// `POST /v1/billing/meter_events` requests that arrived, refused ones included.
    pub v1: u64,
    /// `POST /v2/billing/meter_event_stream` requests that arrived, refused ones included.
    pub v2: u64,
    /// Of those, how many the meter rate limit answered with a 429.
    pub rate_limited: u64,
    /// Meter events accepted (answered 200), duplicates and ones Stripe would report invalid
    /// included.
    pub events_accepted: u64,
    /// Meter events counted towards a meter: unique and valid.
    pub events_recorded: u64,
}

/// The meter event rate limit: at most `per_second` requests in any second.
#[derive(Default)]
struct MeterLimit {
    per_second: Option<u32>,
    admitted: VecDeque<Instant>,
}

impl MeterLimit {
    fn admit(&mut self) -> bool {
        let Some(limit) = self.per_second else {
            return true;
        };
        let now = Instant::now();
        while self
            .admitted
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= limit as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// Which meter event endpoint a request is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Metering {
    V1,
    Stream,
}

const METER_EVENTS: &str = "/v1/billing/meter_events";
const METER_EVENT_STREAM: &str = "/v2/billing/meter_event_stream";

struct Shared {
    sim: Mutex<Sim>,
    spec: Spec,
    delivery: Mutex<Delivery>,
    faults: Mutex<Faults>,
    /// When set, the only API keys accepted; any other gets Stripe's 401.
    api_keys: Mutex<Option<Vec<String>>>,
    injected: AtomicU64,
    http: reqwest::Client,
    meter_limit: Mutex<MeterLimit>,
    meter_v1: AtomicU64,
    meter_v2: AtomicU64,
    meter_limited: AtomicU64,
}

enum Fault {
    ServerError,
    RateLimited,
    Slow(Duration),
}

impl Shared {
    fn draw_fault(&self) -> Option<Fault> {
        let faults = *lock(&self.faults);
        if faults.rate <= 0.0 || fastrand::f64() >= faults.rate {
            return None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(match fastrand::u8(0..3) {
            0 => Fault::ServerError,
            1 => Fault::RateLimited,
            _ => Fault::Slow(faults.slow),
        })
    }
}

#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    pub base_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("could not bind the simulator on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

impl Simulator {
    /// Starts on 127.0.0.1 (port 0: any free port).
    pub async fn start(port: u16, delivery: Delivery) -> Result<Self, SimulatorError> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            sim: Mutex::new(Sim::new(base_url.clone())),
            spec: Spec::load(),
            delivery: Mutex::new(delivery),
            faults: Mutex::new(Faults::default()),
            api_keys: Mutex::new(None),
            injected: AtomicU64::new(0),
            http: reqwest::Client::new(),
            meter_limit: Mutex::new(MeterLimit::default()),
            meter_v1: AtomicU64::new(0),
            meter_v2: AtomicU64::new(0),
            meter_limited: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "Stripe simulator stopped");
            }
        });
        Ok(Self { shared, base_url })
    }

    pub fn set_delivery(&self, delivery: Delivery) {
        *lock(&self.shared.delivery) = delivery;
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Accept only these API keys from now on (as after rolling a key in the dashboard), or
    /// any key with `None`, the default.
    pub fn set_api_keys(&self, keys: Option<Vec<String>>) {
        *lock(&self.shared.api_keys) = keys;
    }

    /// Each action one second after the previous one from now on, instead of the real second:
    /// events then have distinct `created` values except within one action.
    pub fn step_clock(&self) {
        lock(&self.shared.sim).step_clock();
    }

    /// How many events the simulator has emitted so far.
    pub fn events_emitted(&self) -> usize {
        lock(&self.shared.sim).events_emitted()
    }

    /// How many API requests got an injected fault so far.
    pub fn faults_injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// At most this many meter event requests (v1 and the v2 stream together) in any second
    /// from now on, as Stripe limits them; beyond, a 429 `rate_limit` with `Retry-After: 1`,
    /// and nothing recorded. `None`, the default: no limit.
    pub fn set_meter_rate_limit(&self, per_second: Option<u32>) {
        *lock(&self.shared.meter_limit) = MeterLimit {
            per_second,
            admitted: VecDeque::new(),
        };
    }

    /// How long meter event sessions made from now on last (Stripe's 15 minutes unless set).
    pub fn set_meter_event_session_ttl(&self, ttl: Duration) {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        lock(&self.shared.sim).set_meter_session_secs(secs);
    }

    /// How many meter event requests arrived, per endpoint, and what became of their events.
    pub fn meter_requests(&self) -> MeterRequests {
        let counts = lock(&self.shared.sim).meter_counts();
        MeterRequests {
            v1: self.shared.meter_v1.load(Ordering::Relaxed),
            v2: self.shared.meter_v2.load(Ordering::Relaxed),
            rate_limited: self.shared.meter_limited.load(Ordering::Relaxed),
            events_accepted: counts.accepted,
            events_recorded: counts.recorded,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stripe's error shape.
pub fn stripe_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

/// A call the simulator refuses, with Stripe's `code` and `param` where it has them.
fn api_error(error: &state::ApiError) -> Response {
    let mut body = json!({"type": error.kind, "message": error.message});
    if let Some(code) = error.code {
        body["code"] = json!(code);
    }
    if let Some(param) = &error.param {
        body["param"] = json!(param);
    }
    (error.status, axum::Json(json!({ "error": body }))).into_response()
}

/// A request the spec refuses, with the `code` and `param` Stripe gives for its first problem.
fn invalid_request(problems: &[String]) -> Response {
    let first = problems.first().map(String::as_str).unwrap_or_default();
    let unknown = first
        .strip_prefix("unknown parameter ")
        .or_else(|| first.strip_prefix("unknown query parameter "));
    let (code, param) = match unknown {
        Some(param) => ("parameter_unknown", Some(param)),
        None if first.contains("missing required parameter ") => ("parameter_missing", first.rsplit(' ').next()),
        None => ("parameter_invalid", None),
    };
    let error = json!({"error": {
        "type": "invalid_request_error",
        "code": code,
        "param": param,
        "message": problems.join("; "),
    }});
    (StatusCode::BAD_REQUEST, axum::Json(error)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if let Some(control) = path.strip_prefix("/sim/") {
        let query = decode_form(uri.query().unwrap_or_default().as_bytes());
        if control == "meter_events/rate_limit" {
            return match query["per_second"].as_str().map(str::parse::<u32>) {
                Some(Err(_)) => stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "per_second is a whole number of requests",
                ),
                limit => {
                    let per_second = limit.and_then(Result::ok);
                    *lock(&shared.meter_limit) = MeterLimit {
                        per_second,
                        admitted: VecDeque::new(),
                    };
                    axum::Json(json!({"result": {"per_second": per_second}, "delivered": 0})).into_response()
                }
            };
        }
        let outcome = lock(&shared.sim).control(control, &query);
        return match outcome {
            Ok((answer, events)) => {
                let delivered = deliver(&shared, events).await;
                axum::Json(json!({"result": answer, "delivered": delivered})).into_response()
            }
            Err(message) => stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
        };
    }
    let metering = match (method == Method::POST, path.as_str()) {
        (true, METER_EVENTS) => Some(Metering::V1),
        (true, METER_EVENT_STREAM) => Some(Metering::Stream),
        _ => None,
    };
    // The stream authenticates with a meter event session's token, which the simulator checks
    // itself; every other call with an API key.
    let api_keys = lock(&shared.api_keys)
        .clone()
        .filter(|_| metering != Some(Metering::Stream));
    if let Some(keys) = api_keys.as_ref() {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !presented.is_some_and(|key| keys.iter().any(|accepted| accepted == key)) {
            // Stripe's answer to an unknown or expired key.
            return stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Invalid API Key provided",
            );
        }
    }
    if let Some(endpoint) = metering {
        let counter = match endpoint {
            Metering::V1 => &shared.meter_v1,
            Metering::Stream => &shared.meter_v2,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !lock(&shared.meter_limit).admit() {
            shared.meter_limited.fetch_add(1, Ordering::Relaxed);
            return meter_rate_limited(endpoint);
        }
    }
    let fault = shared.draw_fault();
    match fault {
        Some(Fault::ServerError) => {
            return stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "An unknown error occurred (simulated)",
            );
        }
        Some(Fault::RateLimited) => {
            let mut answer = stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Too many requests (simulated)",
            );
            answer
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return answer;
        }
        Some(Fault::Slow(_)) | None => {}
    }
    // The 2023 spec has no v2 API; the v2 routes check their own parameters.
    let checked = if path.starts_with("/v2/") {
        Ok(())
    } else {
        shared.spec.validate(method.as_str(), &path, uri.query(), &body)
    };
    if let Err(problems) = checked {
        return invalid_request(&problems);
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // v1 takes a form body, v2 a JSON one.
    let params = if path.starts_with("/v2/") && !body.is_empty() {
        match serde_json::from_slice(&body) {
            Ok(params) => params,
            Err(_) => {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "The request body is not JSON",
                );
            }
        }
    } else {
        decode_form(&body)
    };
    let query = decode_form(uri.query().unwrap_or_default().as_bytes());
    let outcome = if metering == Some(Metering::Stream) {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        lock(&shared.sim).meter_event_stream(token, &params)
    } else {
        lock(&shared.sim).api(method.as_str(), &path, &params, &query, key.as_deref())
    };
    let answer = match outcome {
        Ok((object, events)) => {
            deliver(&shared, events).await;
            axum::Json(object).into_response()
        }
        Err(error) => api_error(&error),
    };
    if let Some(Fault::Slow(delay)) = fault {
        tokio::time::sleep(delay).await;
    }
    answer
}

/// Stripe's answer beyond the meter event rate limit: a 429 with code `rate_limit` (in v2's
/// shape, type `rate_limit`, for the stream) and `Retry-After`.
fn meter_rate_limited(endpoint: Metering) -> Response {
    let kind = match endpoint {
        Metering::V1 => "invalid_request_error",
        Metering::Stream => "rate_limit",
    };
    let body = json!({"error": {
        "type": kind,
        "code": "rate_limit",
        "message": "Request rate limit exceeded for meter events (simulated). Retry after a moment.",
    }});
    let mut answer = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    answer
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    answer
}

/// Delivers events to the configured destinations — signed POSTs to the webhook, envelopes to
/// the EventBridge target — in the configured shape, and to the registered webhook endpoints;
/// returns how many deliveries were taken.
async fn deliver(shared: &Shared, mut events: Vec<Value>) -> usize {
    let delivery = lock(&shared.delivery).clone();
    if delivery.duplicates {
        let copies: Vec<Value> = events.iter().filter(|_| fastrand::bool()).cloned().collect();
        events.extend(copies);
    }
    if delivery.shuffle {
        fastrand::shuffle(&mut events);
    }
    let mut accepted = 0;
    for event in events {
        // A thin-only event (Stripe has no snapshot of it) reaches only thin destinations.
        let thin_only = state::thin::thin_only(&event);
        if !thin_only {
            accepted += deliver_to_endpoints(shared, &event).await;
        }
        let event = match delivery.payload {
            Payload::Snapshot if thin_only => continue,
            Payload::Snapshot => event,
            Payload::Thin => state::thin::notification(&event),
        };
        if let Some(url) = &delivery.webhook_url {
            accepted += usize::from(post_signed(shared, url, &delivery.webhook_secret, &event).await);
        }
        if let Some(target) = &delivery.eventbridge {
            accepted += usize::from((target.sink)(envelope(target, &event).to_string()).await);
        }
    }
    accepted
}

/// The event, as a snapshot, to every enabled endpoint registered through
/// `/v1/webhook_endpoints` that takes its type, signed with that endpoint's secret and marked
/// with its API version.
async fn deliver_to_endpoints(shared: &Shared, event: &Value) -> usize {
    let event_type = event["type"].as_str().unwrap_or_default();
    let endpoints = lock(&shared.sim).endpoints_for(event_type);
    let mut accepted = 0;
    for endpoint in endpoints {
        let mut rendered = event.clone();
        rendered["api_version"] = json!(endpoint.api_version);
        accepted += usize::from(post_signed(shared, &endpoint.url, &endpoint.secret, &rendered).await);
    }
    accepted
}

async fn post_signed(shared: &Shared, url: &str, secret: &str, event: &Value) -> bool {
    let body = event.to_string();
    let header = shared::stripe::signature::sign(secret, shared::unix_now(), body.as_bytes());
    let sent = shared
        .http
        .post(url)
        .header("Stripe-Signature", header)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(status = response.status().as_u16(), "webhook refused a simulated event");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "webhook unreachable");
            false
        }
    }
}

/// The envelope EventBridge hands a rule's Lambda target for a partner event.
fn envelope(target: &EventBridgeTarget, event: &Value) -> Value {
    let created = event["created"].clone();
    json!({
        "version": "0",
        "id": uuid_like(),
        "detail-type": event["type"],
        "source": target.source,
        "account": target.account,
        "time": created,
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1::event-source/{}", target.source)],
        "detail": event,
    })
}

fn uuid_like() -> String {
    let hex: String = std::iter::repeat_with(|| fastrand::char('a'..='f')).take(32).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
