//! The usage port: local counters per account × meter × billing period, and a record of every
//! identifier counted, so a repeat is free and a retry resends exactly what was committed.
//!
//! A group of reports is committed atomically — each identifier's record (only if absent) and
//! the counter's increment, with the sends to Stripe the group makes kept on the counter as
//! *pending* — and a send leaves the pending set once Stripe accepted it. A report seen again
//! whose send is still pending resends it under the same identifier, which Stripe deduplicates.
//! Adapters: DynamoDB ([`crate::store::DynamoStore`]) and memory ([`crate::store::MemoryStore`]),
//! one conformance suite (`tests/support/usage_conformance.rs`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::store::{AccountId, Entitlement, StoreError};

type Res<T> = Result<T, StoreError>;

/// Which counter: one per account, meter and billing period (by its start).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    pub account: AccountId,
    pub meter: String,
    pub period_start: i64,
}

/// A meter event committed locally and not yet known to be accepted by Stripe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSend {
    pub customer_id: String,
    pub event_name: String,
    pub value: f64,
    pub timestamp: i64,
    /// When it was committed: a send older than Stripe's deduplication window is not resent.
    pub committed_at: i64,
}

/// One meter's use by one account in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageCounter {
    pub meter: String,
    pub period_start: i64,
    /// The sum of the values (a sum meter) or the number of events (a count meter).
    pub used: f64,
    pub events: u64,
    /// Send identifier → the meter event to send.
    #[serde(default)]
    pub pending: BTreeMap<String, PendingSend>,
}

/// What became of an identifier counted earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedUsage {
    pub counter: CounterKey,
    /// The identifier of the meter event that carries it to Stripe (its own, or an aggregate's).
    pub send: String,
}

/// An account's entitlement and usage counters, read together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountUsage {
    /// The account's Stripe customer, from its link (written at checkout, before the
    /// entitlement names it).
    pub customer_id: Option<String>,
    pub entitlement: Option<Entitlement>,
    pub counters: Vec<UsageCounter>,
}

/// Reports of one counter to record together.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub counter: CounterKey,
    /// Each identifier with the send that carries it.
    pub identifiers: Vec<(String, String)>,
    pub amount: f64,
    pub sends: BTreeMap<String, PendingSend>,
    /// Pending sends given up (past the resend window), cleared from the counter.
    pub expired: Vec<String>,
    /// Identifier records and the counter disappear after these (TTL).
    pub identifiers_expire_at: i64,
    pub counter_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Nothing was written: these identifiers were recorded meanwhile by another writer.
    Taken(Vec<String>),
}

/// The most identifiers one commit holds: DynamoDB transactions take 100 items, one of which
/// is the counter.
pub const MAX_COMMIT_IDENTIFIERS: usize = 99;

pub trait UsageLedger: Send + Sync {
    /// The identifiers among `identifiers` already counted.
    fn recorded(&self, identifiers: &[&str]) -> impl Future<Output = Res<HashMap<String, RecordedUsage>>> + Send;
    /// The entitlement and every usage counter of the account, in one read.
    fn account_usage(&self, account: &AccountId) -> impl Future<Output = Res<AccountUsage>> + Send;
    /// Records the identifiers (each only if absent), adds `amount` and the events to the
    /// counter and keeps the sends pending — all of it, or nothing.
    fn commit(&self, commit: &Commit) -> impl Future<Output = Res<CommitOutcome>> + Send;
    /// Stripe accepted these sends: they are no longer pending.
    fn confirm(&self, counter: &CounterKey, sends: &[&str]) -> impl Future<Output = Res<()>> + Send;
}

impl<L: UsageLedger> UsageLedger for std::sync::Arc<L> {
    fn recorded(&self, identifiers: &[&str]) -> impl Future<Output = Res<HashMap<String, RecordedUsage>>> + Send {
        (**self).recorded(identifiers)
    }
    fn account_usage(&self, account: &AccountId) -> impl Future<Output = Res<AccountUsage>> + Send {
        (**self).account_usage(account)
    }
    fn commit(&self, commit: &Commit) -> impl Future<Output = Res<CommitOutcome>> + Send {
        (**self).commit(commit)
    }
    fn confirm(&self, counter: &CounterKey, sends: &[&str]) -> impl Future<Output = Res<()>> + Send {
        (**self).confirm(counter, sends)
    }
}
