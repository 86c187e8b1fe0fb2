//! Everything that speaks Stripe: object models, the API client, webhook signatures.

pub mod client;
pub mod event;
pub mod form;
pub mod ids;
pub mod meter_events;
pub mod objects;
pub mod resource;
pub mod signature;
pub mod wiring;

pub use client::{API_VERSION, ApiError, RetryPolicy, StripeClient, StripeError};
pub use event::{Event, EventEnvelope, NotAnEvent, RelatedObject, Shape};
pub use ids::ObjectId;
pub use objects::{
    BillingMeter, Charge, CheckoutSession, Customer, Dispute, Expandable, Invoice, InvoiceStatus, List, Price,
    PromotionCode, Refund, Subscription, SubscriptionSchedule, SubscriptionStatus,
};
pub use resource::Resource;
pub use signature::{SignatureError, SignatureVerifier};
