//! Everything that speaks Stripe: object models, the API client, webhook signatures.

pub mod client;
pub mod event;
pub mod form;
pub mod ids;
pub mod objects;
pub mod signature;

pub use client::{API_VERSION, ApiError, RetryPolicy, StripeClient, StripeError};
pub use event::{Event, EventEnvelope};
pub use ids::ObjectId;
pub use objects::{
    CheckoutSession, Customer, Expandable, Invoice, InvoiceStatus, Price, Refund, Subscription, SubscriptionStatus,
};
pub use signature::{SignatureError, SignatureVerifier};
