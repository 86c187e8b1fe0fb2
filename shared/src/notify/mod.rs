//! The notification port: the dunning email to the customer (Amazon SES) and the app-level
//! `billing.payment_failed` event the SaaS subscribes to (Amazon SNS).
//!
//! SNS rather than EventBridge: the consumers are the SaaS's own services, which subscribe an
//! SQS queue, a Lambda or an HTTPS endpoint to one topic and filter on the `type` attribute;
//! no cross-account bus, archive or schema registry is needed, and SNS costs one API call.

mod aws;
mod memory;

use std::future::Future;

use serde::Serialize;

pub use aws::AwsNotifier;
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
    pub user_id: Option<String>,
    pub customer_id: String,
    pub invoice_id: String,
    pub subscription_id: Option<String>,
    pub attempt: u32,
    pub action_required: bool,
    pub next_payment_attempt: Option<i64>,
    pub grace_until: Option<i64>,
    pub hosted_invoice_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("sending the email failed: {0}")]
    Email(String),
    #[error("publishing the app event failed: {0}")]
    Publish(String),
}

pub trait Notifier: Send + Sync {
    fn send_email(&self, email: &DunningEmail) -> impl Future<Output = Result<(), NotifyError>> + Send;
    fn publish(&self, event: &PaymentFailedEvent) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

impl<N: Notifier> Notifier for std::sync::Arc<N> {
    fn send_email(&self, email: &DunningEmail) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).send_email(email)
    }

    fn publish(&self, event: &PaymentFailedEvent) -> impl Future<Output = Result<(), NotifyError>> + Send {
        (**self).publish(event)
    }
}
