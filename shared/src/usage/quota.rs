//! What an account has used of each meter this period against what its plan includes: the
//! `usage` of `GET /billing/me` and the answer of `GET /billing/quota/{meter}`, both from one
//! read of the account's partition. Counters trail use by the queue's latency (seconds), so a
//! hard limit may be passed by what is in flight when it is reached.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ledger::AccountUsage;
use super::period::period_of;
use crate::config::{Catalog, LimitKind};
use crate::entitlement::EntitlementView;

/// One meter's use this period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterUsage {
    pub used: f64,
    pub included: u64,
    pub limit: LimitKind,
    /// What is left of the included quantity (0 once it is used up).
    pub remaining: f64,
    /// Whether more use is allowed now: always under a soft limit, below the included
    /// quantity under a hard one.
    pub allowed: bool,
    /// Use beyond the included quantity (billed, under a soft limit with a metered price).
    pub over: bool,
    pub period_start: i64,
    pub period_end: i64,
}

/// The answer of `GET /billing/quota/{meter}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quota {
    pub meter: String,
    #[serde(flatten)]
    pub usage: MeterUsage,
}

/// The account's use of `meter` at `now`, against the allowance of the plan running then.
pub fn meter_usage(catalog: &Catalog, usage: &AccountUsage, meter: &str, now: i64) -> MeterUsage {
    let plan = usage
        .entitlement
        .as_ref()
        .and_then(|entitlement| EntitlementView::at(entitlement, now).plan);
    let allowance = catalog.allowance(plan.as_deref(), meter);
    let period = period_of(usage, meter, now);
    let used = usage
        .counters
        .iter()
        .filter(|counter| counter.meter == meter && counter.period_start == period.start)
        .map(|counter| counter.used)
        .fold(0.0, |sum, used| sum + used);
    let included = allowance.included as f64;
    MeterUsage {
        used,
        included: allowance.included,
        limit: allowance.limit,
        remaining: (included - used).max(0.0),
        allowed: allowance.limit == LimitKind::Soft || used < included,
        over: used > included,
        period_start: period.start,
        period_end: period.end,
    }
}

/// Every meter of the catalog, for `GET /billing/me`.
pub fn usage_view(catalog: &Catalog, usage: &AccountUsage, now: i64) -> BTreeMap<String, MeterUsage> {
    catalog
        .meters()
        .map(|(key, _)| (key.to_owned(), meter_usage(catalog, usage, key, now)))
        .collect()
}
