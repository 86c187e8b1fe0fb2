//! Typed models of the Stripe objects the system reads. Unknown fields are ignored and optional
//! ones are `Option`, so API additions never break parsing; status enums fall back to `Unknown`.
//! Personal data is modelled only where a feature needs it (an invoice's `customer_email`, to
//! send the dunning email); it is never logged or stored.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ids::ObjectId;

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// A customer-facing code for a coupon (`stripe/_promotion_code.py`): what a buyer types.
#[derive(Debug, Clone, Deserialize)]
pub struct PromotionCode {
    pub id: String,
    pub code: String,
    #[serde(default)]
    pub active: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub customer: Option<ObjectId>,
    #[serde(default)]
    pub subscription: Option<ObjectId>,
    /// `paid`, `unpaid` (a delayed method still processing) or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    /// A payment-mode session's payment.
    #[serde(default)]
    pub payment_intent: Option<ObjectId>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

/// A subscription schedule (`stripe/_subscription_schedule.py`): what the system reads of one
/// it made to change a subscription at its period's end.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionSchedule {
    pub id: String,
    #[serde(default)]
    pub current_phase: Option<SchedulePhaseDates>,
    #[serde(default)]
    pub phases: Vec<SchedulePhaseDates>,
}

impl SubscriptionSchedule {
    /// Whether a phase after the current one is still to come: a change that waits. In its
    /// last phase a `release` schedule only holds on until that phase ends.
    pub fn waits(&self) -> bool {
        self.current_phase
            .is_some_and(|now| self.phases.iter().any(|phase| phase.start_date > now.start_date))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SchedulePhaseDates {
    pub start_date: i64,
    pub end_date: i64,
}

/// A payment's charge (`stripe/_charge.py`): what a refund is counted on.
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub customer: Option<ObjectId>,
    #[serde(default)]
    pub payment_intent: Option<ObjectId>,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    /// "Whether the charge has been fully refunded."
    #[serde(default)]
    pub refunded: bool,
}

/// A cardholder's dispute of a charge (`stripe/_dispute.py`); it names no customer.
#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub charge: ObjectId,
    #[serde(default)]
    pub payment_intent: Option<ObjectId>,
    /// `lost` once the bank decided for the cardholder.
    pub status: String,
}

/// A usage meter (`stripe/billing/_meter.py`): what a meter error report is about.
#[derive(Debug, Clone, Deserialize)]
pub struct BillingMeter {
    pub id: String,
    pub event_name: String,
}

impl CheckoutSession {
    /// Metadata key and value this system puts on every session it creates.
    pub const MARKER: (&'static str, &'static str) = ("billing_source", "checkout_api");

    pub fn is_ours_by_marker(&self) -> bool {
        self.metadata.get(Self::MARKER.0).map(String::as_str) == Some(Self::MARKER.1)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub amount: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BillingPortalSession {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: ObjectId,
    pub status: SubscriptionStatus,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub cancel_at: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// Where API versions before 2025-03-31 put them; newer ones moved them onto the items.
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub pause_collection: Option<PauseCollection>,
    #[serde(default)]
    pub latest_invoice: Option<ObjectId>,
    /// The subscription schedule that manages it, if any.
    #[serde(default)]
    pub schedule: Option<ObjectId>,
    /// The discounts applied to it (ids unless expanded).
    #[serde(default)]
    pub discounts: Vec<ObjectId>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub items: List<SubscriptionItem>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

impl Subscription {
    /// The period end, from the subscription (older API versions) or its items (newer ones).
    pub fn period_end(&self) -> Option<i64> {
        self.current_period_end
            .or_else(|| self.items.data.iter().filter_map(|item| item.current_period_end).max())
    }

    pub fn period_start(&self) -> Option<i64> {
        self.current_period_start.or_else(|| {
            self.items
                .data
                .iter()
                .filter_map(|item| item.current_period_start)
                .max()
        })
    }

    pub fn primary_item(&self) -> Option<&SubscriptionItem> {
        self.items.data.first()
    }
}

/// Collection paused: invoices are drafted, voided or written off instead of charged.
#[derive(Debug, Clone, Deserialize)]
pub struct PauseCollection {
    pub behavior: String,
    #[serde(default)]
    pub resumes_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    pub price: Price,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub product: Option<ObjectId>,
    #[serde(default)]
    pub lookup_key: Option<String>,
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    pub interval: String,
    #[serde(default)]
    pub interval_count: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Uncollectible,
    Void,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<ObjectId>,
    #[serde(default)]
    pub status: Option<InvoiceStatus>,
    /// Where API versions before 2025-03-31 put it; newer ones use `parent.subscription_details`.
    #[serde(default)]
    pub subscription: Option<ObjectId>,
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    #[serde(default)]
    pub amount_due: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub amount_remaining: i64,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    #[serde(default)]
    pub invoice_pdf: Option<String>,
    /// Set once the invoice is finalized (a draft has none).
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    /// Present when requested with `expand[]=payments.data.payment.payment_intent`.
    #[serde(default)]
    pub payments: Option<List<InvoicePayment>>,
    #[serde(default)]
    pub lines: Option<List<InvoiceLineItem>>,
}

/// One line of an invoice (`stripe/_invoice_line_item.py`).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLineItem {
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parent: Option<InvoiceLineParent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLineParent {
    #[serde(default)]
    pub subscription_item_details: Option<InvoiceLineItemDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLineItemDetails {
    /// Whether the line is a proration (the change's credit or charge for part of a period).
    #[serde(default)]
    pub proration: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePayment {
    #[serde(default)]
    pub payment: Option<InvoicePaymentTarget>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePaymentTarget {
    #[serde(default)]
    pub payment_intent: Option<Expandable<PaymentIntent>>,
}

/// A reference that may be expanded into the object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(T),
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<InvoiceSubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceSubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<ObjectId>,
}

impl Invoice {
    /// The newest payment error among the invoice's (expanded) payment attempts.
    pub fn last_payment_error(&self) -> Option<&PaymentError> {
        self.payments.as_ref()?.data.iter().rev().find_map(|payment| {
            match payment.payment.as_ref()?.payment_intent.as_ref()? {
                Expandable::Object(intent) => intent.last_payment_error.as_ref(),
                Expandable::Id(_) => None,
            }
        })
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription
            .as_ref()
            .or_else(|| {
                self.parent
                    .as_ref()?
                    .subscription_details
                    .as_ref()?
                    .subscription
                    .as_ref()
            })
            .map(ObjectId::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_do_not_break_parsing() {
        let status: SubscriptionStatus = serde_json::from_str(r#""some_future_status""#).unwrap();
        assert_eq!(status, SubscriptionStatus::Unknown);
        let status: InvoiceStatus = serde_json::from_str(r#""teleported""#).unwrap();
        assert_eq!(status, InvoiceStatus::Unknown);
    }

    #[test]
    fn period_end_prefers_the_subscription_then_the_items() {
        let json = r#"{"id":"sub_1","customer":"cus_1","status":"active","items":{"data":[
            {"id":"si_1","price":{"id":"price_1"},"current_period_end":200},
            {"id":"si_2","price":{"id":"price_2"},"current_period_end":300}]}}"#;
        let mut sub: Subscription = serde_json::from_str(json).unwrap();
        assert_eq!(sub.period_end(), Some(300));
        sub.current_period_end = Some(100);
        assert_eq!(sub.period_end(), Some(100));
    }
}
