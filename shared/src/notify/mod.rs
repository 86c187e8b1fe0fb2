//! The notification port: the dunning email to the customer (Amazon SES) and the app-level
//! events the SaaS subscribes to (Amazon SNS): `billing.payment_failed`,
//! `billing.duplicate_subscription_refunded` and `billing.entitlement_changed`. App events
//! are delivered at least once (a retried message may publish again); consumers deduplicate
//! on `stripe_event_id`, or for entitlement changes keep the highest `version`.
//!
//! SNS rather than EventBridge: the consumers are the SaaS's own services, which subscribe an
//! SQS queue, a Lambda or an HTTPS endpoint to one topic and filter on the `type` attribute;
//! no cross-account bus, archive or schema registry is needed, and SNS costs one API call.

mod aws;
mod memory;

use std::future::Future;

use serde::Serialize;

pub use aws::{AwsNotifier, SnsPublisher};
pub use memory::MemoryNotifier;

/// What the customer is told; rendered into the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningEmail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// What the app is told, as JSON on the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentFailedEvent {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub stripe_event_id: String,
    pub account_id: Option<String>,
    pub customer_id: String,
    pub invoice_id: String,
    pub subscription_id: Option<String>,
    pub attempt: u32,
    pub action_required: bool,
    pub next_payment_attempt: Option<i64>,
    pub grace_until: Option<i64>,
    pub hosted_invoice_url: Option<String>,
}

/// A second paid subscription of one customer (two tabs both paid) was cancelled and its
/// payment refunded: the app may want to tell the customer, and the operator sees it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateSubscriptionEvent {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub stripe_event_id: String,
    pub account_id: Option<String>,
    pub customer_id: String,
    pub kept_subscription_id: String,
    pub cancelled_subscription_id: String,
    pub refunded_payment_intents: Vec<String>,
}

/// What an account may use changed: the new view, so the app can keep a cache instead of
/// calling `GET /billing/me` on every request. `version` orders the messages of one account
/// (keep the highest; an older one arriving late is ignored); `previous_version` is the last
/// version announced before it. The view is as of `at`: access ends at `access_until`
/// without another message. Schema: `infra/schemas/billing.entitlement_changed.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntitlementChangedEvent {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub account_id: String,
    pub customer_id: Option<String>,
    pub version: u64,
    pub previous_version: u64,
    pub at: i64,
    pub entitlement: crate::entitlement::EntitlementView,
}

impl AppEvent for EntitlementChangedEvent {
    const TYPE: &'static str = "billing.entitlement_changed";
}

/// Stripe could not use some meter events (`v1.billing.meter.error_report_triggered`): they
/// are not billed. The codes say why (`meter_event_customer_not_found`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageErrorReportedEvent {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub stripe_event_id: String,
    pub meter_id: String,
    pub event_name: String,
    /// The catalog's key of the meter, when the catalog has one with that event name.
    pub meter: Option<String>,
    pub error_count: u64,
    /// (code, count) per kind of error.
    pub errors: Vec<(String, u64)>,
}

impl AppEvent for UsageErrorReportedEvent {
    const TYPE: &'static str = "billing.usage_error_reported";
}

/// An event the app is told about, with its `type` (the SNS message attribute to filter on).
pub trait AppEvent: Serialize + Send + Sync + 'static {
    const TYPE: &'static str;
}

impl AppEvent for PaymentFailedEvent {
    const TYPE: &'static str = "billing.payment_failed";
}

impl AppEvent for DuplicateSubscriptionEvent {
    const TYPE: &'static str = "billing.duplicate_subscription_refunded";
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("sending the email failed: {0}")]
    Email(String),
    #[error("publishing the app event failed: {0}")]
    Publish(String),
}

/// Where app events go.
pub trait Publisher: Send + Sync {
    fn publish<E: AppEvent>(&self, event: &E) -> impl Future<Output = Result<(), NotifyError>> + Send;

    /// Whether publishing reaches anyone: a writer without a topic leaves an entitlement
    /// change for the next writer that has one to announce.
    fn enabled(&self) -> bool {
        true
    }
}

/// App events and the customer's email.
pub trait Notifier: Publisher {
    fn send_email(&self, email: &DunningEmail) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

impl<P: Publisher> Publisher for std::sync::Arc<P> {
    fn publish<E: AppEvent>(&self, event: &E) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).publish(event)
    }

    fn enabled(&self) -> bool {
        (**self).enabled()
    }
}

impl<N: Notifier> Notifier for std::sync::Arc<N> {
    fn send_email(&self, email: &DunningEmail) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).send_email(email)
    }
}

/// The publisher of a sync core that publishes nothing: the checkout API's, and the
/// payment-failed processor's inner one (which announces through its own notifier). Their
/// entitlement changes are announced by the next writer that can ([`Publisher::enabled`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAppEvents;

impl Publisher for NoAppEvents {
    async fn publish<E: AppEvent>(&self, _event: &E) -> Result<(), NotifyError> {
        tracing::warn!(event_type = E::TYPE, "an app event arose where none is published");
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}
