//! The domain core of the Stripe billing backend, shared by every Lambda function and the CLI.
//!
//! Ports ([`store::BillingStore`], [`queue::EventQueue`], the Stripe client) sit beside their
//! adapters; each adapter has an in-memory twin that passes the same conformance suite.

pub mod aws;
pub mod bootstrap;
pub mod config;
pub mod deadline;
pub mod dunning;
pub mod entitlement;
pub mod eventbridge;
pub mod notify;
pub mod processing;
pub mod queue;
pub mod reconcile;
pub mod routing;
pub mod store;
pub mod stripe;
pub mod sync;
pub mod telemetry;
pub mod usage;
pub mod webhook;

/// Seconds since the Unix epoch, the unit Stripe uses for every timestamp.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}
