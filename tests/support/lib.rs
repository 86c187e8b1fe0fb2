//! Test support shared by the integration tests: real local AWS (moto server), a Stripe
//! stand-in over HTTP built from Stripe's official fixtures, the official-spec request
//! validator, and the conformance suites every adapter pair must pass.

pub mod api;
pub mod aws;
pub mod chaos;
pub mod faults;
pub mod fixtures;
pub mod lifecycle;
pub mod openapi;
pub mod oracle;
pub mod queue_conformance;
pub mod shop;
pub mod store_conformance;
pub mod stripe_standin;
pub mod usage_conformance;

/// A short random suffix for resources created per test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
