//! Meter events to Stripe. The v2 stream takes up to 100 events a request and up to 10,000
//! requests a second, authenticated by a meter event session's short-lived token (cached here
//! and renewed a minute before it expires, or at once when Stripe says it expired); the v1
//! endpoint takes one event a request (about 1,000 a second in live mode) and serves where the
//! stream is not available. Both deduplicate by `identifier` (for at least 24 hours), and
//! validate asynchronously: a bad event is reported later by
//! `v1.billing.meter.error_report_triggered`.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{StripeClient, StripeError};

/// The stream's host (stripe-python's `DEFAULT_METER_EVENTS_API_BASE`).
pub const DEFAULT_METER_EVENTS_BASE: &str = "https://meter-events.stripe.com";
pub const SESSION_PATH: &str = "/v2/billing/meter_event_session";
pub const STREAM_PATH: &str = "/v2/billing/meter_event_stream";
pub const V1_PATH: &str = "/v1/billing/meter_events";
/// The most events one stream request takes.
pub const STREAM_BATCH: usize = 100;
/// A session is renewed this long before Stripe says it expires.
const RENEW_MARGIN_SECS: i64 = 60;

/// Which API meter events go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterApi {
    V2,
    V1,
}

/// One meter event as Stripe takes it, with the meters' default payload keys
/// (`stripe_customer_id`, `value`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterEvent {
    pub identifier: String,
    pub event_name: String,
    pub customer_id: String,
    pub value: f64,
    pub timestamp: i64,
}

impl MeterEvent {
    /// The value as Stripe's payload carries it: a decimal string, without a fraction when whole.
    pub fn payload_value(&self) -> String {
        if self.value.fract() == 0.0 && self.value.abs() < 1e15 {
            format!("{}", self.value as i64)
        } else {
            format!("{}", self.value)
        }
    }

    fn v2(&self) -> Value {
        json!({
            "event_name": self.event_name,
            "identifier": self.identifier,
            "payload": {"stripe_customer_id": self.customer_id, "value": self.payload_value()},
            "timestamp": rfc3339(self.timestamp),
        })
    }

    fn v1(&self) -> Value {
        json!({
            "event_name": self.event_name,
            "identifier": self.identifier,
            "payload": {"stripe_customer_id": self.customer_id, "value": self.payload_value()},
            "timestamp": self.timestamp,
        })
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Where meter events go: Stripe, or the in-memory twin of tests and benchmarks.
pub trait MeterEventSink: Send + Sync {
    /// Sends up to [`STREAM_BATCH`] events; `Ok` once Stripe accepted every one of them.
    fn send(&self, events: &[MeterEvent]) -> impl Future<Output = Result<(), StripeError>> + Send;
}

#[derive(Deserialize)]
struct SessionObject {
    authentication_token: String,
    expires_at: String,
}

struct Session {
    token: SecretString,
    renew_at: i64,
}

/// Meter events through the Stripe API.
pub struct StripeMeterEvents {
    stripe: StripeClient,
    stream_base: Url,
    /// Set once the v2 endpoints answered 404 (not available to this account): v1 from then on.
    v1_only: AtomicBool,
    session: tokio::sync::Mutex<Option<Session>>,
    /// Requests made, by API: for the benchmark's and the chaos run's counts.
    requests: Mutex<(u64, u64)>,
}

impl StripeMeterEvents {
    pub fn new(stripe: StripeClient, stream_base: Url, api: MeterApi) -> Self {
        Self {
            stripe,
            stream_base,
            v1_only: AtomicBool::new(api == MeterApi::V1),
            session: tokio::sync::Mutex::new(None),
            requests: Mutex::new((0, 0)),
        }
    }

    pub fn api(&self) -> MeterApi {
        if self.v1_only.load(Ordering::Relaxed) {
            MeterApi::V1
        } else {
            MeterApi::V2
        }
    }

    /// Requests sent so far: (v2 stream and session, v1).
    pub fn requests(&self) -> (u64, u64) {
        *self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn counted(&self, v2: u64, v1: u64) {
        let mut requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        requests.0 += v2;
        requests.1 += v1;
    }

    async fn token(&self, renew: bool) -> Result<SecretString, StripeError> {
        let mut session = self.session.lock().await;
        let now = crate::unix_now();
        if !renew && let Some(current) = session.as_ref().filter(|s| now < s.renew_at) {
            return Ok(current.token.clone());
        }
        self.counted(1, 0);
        let created: SessionObject = self.stripe.post_json(SESSION_PATH, &json!({}), None).await?;
        let expires_at =
            time::OffsetDateTime::parse(&created.expires_at, &time::format_description::well_known::Rfc3339)
                .map(|at| at.unix_timestamp())
                .unwrap_or(now + 2 * RENEW_MARGIN_SECS);
        let token = SecretString::from(created.authentication_token);
        *session = Some(Session {
            token: token.clone(),
            renew_at: expires_at - RENEW_MARGIN_SECS,
        });
        Ok(token)
    }

    async fn stream(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        let body = json!({ "events": events.iter().map(MeterEvent::v2).collect::<Vec<_>>() });
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            self.counted(1, 0);
            match self
                .stripe
                .post_json_with_session::<Value>(&self.stream_base, STREAM_PATH, &body, &token)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if !renewed && session_expired(&error) => renewed = true,
                Err(error) => return Err(error),
            }
        }
    }

    async fn one_by_one(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        for event in events {
            self.counted(0, 1);
            // The identifier is the idempotency key too: a retry gets Stripe's first answer.
            let key = format!("meter-event-{}", event.identifier);
            self.stripe.post::<Value>(V1_PATH, &event.v1(), Some(&key)).await?;
        }
        Ok(())
    }
}

/// Stripe's answer to a stream request with an expired session token.
fn session_expired(error: &StripeError) -> bool {
    error
        .api()
        .is_some_and(|api| api.status == 401 || api.code.as_deref() == Some("billing_meter_event_session_expired"))
}

impl MeterEventSink for StripeMeterEvents {
    async fn send(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.api() == MeterApi::V2 {
            match self.stream(events).await {
                Err(error) if error.is_not_found() => {
                    tracing::warn!("the v2 meter event stream is not available to this account; sending through v1");
                    crate::telemetry::count("MeterEventsV1Fallback");
                    self.v1_only.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.one_by_one(events).await
    }
}

/// The in-memory twin: keeps what Stripe would count (one event per identifier) and how many
/// requests it took.
#[derive(Default)]
pub struct MemoryMeterEvents {
    state: Mutex<MemoryMeterState>,
}

#[derive(Default)]
struct MemoryMeterState {
    seen: std::collections::HashSet<String>,
    totals: std::collections::BTreeMap<(String, String), f64>,
    requests: u64,
}

impl MemoryMeterEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// What Stripe would have aggregated, by (customer, event name): the sum of values of
    /// distinct identifiers.
    pub fn totals(&self) -> std::collections::BTreeMap<(String, String), f64> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .totals
            .clone()
    }

    pub fn requests(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
    }
}

impl MeterEventSink for MemoryMeterEvents {
    async fn send(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.requests += 1;
        for event in events {
            if state.seen.insert(event.identifier.clone()) {
                *state
                    .totals
                    .entry((event.customer_id.clone(), event.event_name.clone()))
                    .or_default() += event.value;
            }
        }
        Ok(())
    }
}

impl<M: MeterEventSink> MeterEventSink for std::sync::Arc<M> {
    fn send(&self, events: &[MeterEvent]) -> impl Future<Output = Result<(), StripeError>> + Send {
        (**self).send(events)
    }
}
