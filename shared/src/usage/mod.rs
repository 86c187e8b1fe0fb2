//! Usage-based billing: the app reports use to the `usage` queue (never waiting for Stripe);
//! the `usage` function counts each report once in local counters (for quotas) and sends it to
//! Stripe's meters (for invoices). See [`report`] for the contract, [`ledger`] for how repeats
//! are made free, and [`processor`] for the batch.

pub mod ledger;
pub mod period;
pub mod processor;
pub mod quota;
pub mod report;
pub mod reporter;

pub use ledger::{
    AccountUsage, Commit, CommitOutcome, CounterKey, PendingSend, RecordedUsage, UsageCounter, UsageLedger,
};
pub use processor::{UsageCounts, UsageProcessor};
pub use quota::{MeterUsage, Quota};
pub use report::{Rejection, UsageEvent, ValidUsage};
pub use reporter::{ReportError, UsageReporter};
