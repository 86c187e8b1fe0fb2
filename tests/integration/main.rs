//! Integration tests: one binary (so moto starts once), one module per capability.
#![recursion_limit = "256"]

mod accounts;
mod announcements;
mod api_version;
mod catalog;
mod chaos;
mod checkout;
mod customers;
mod delivery;
mod dunning;
mod entitlement;
mod events;
mod fuzz;
mod privacy;
mod purchases;
mod queue;
mod races;
mod reconcile;
mod secrets;
mod security;
mod store;
mod stripe_client;
mod usage;
mod webhook;
