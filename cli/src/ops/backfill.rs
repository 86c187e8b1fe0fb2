//! `billing backfill` and `billing drift`: the reconciler's two passes on demand.

use shared::reconcile::{ReconcileReport, Reconciler, drift as drift_check};

use super::{Deployment, OpsError, Output, Since, spinner};

/// Lists Stripe's events since `since` and enqueues every handled one the ledger has not
/// completed: the scheduled reconcile pass over a window of the operator's choosing.
pub async fn backfill(deployment: &Deployment, since: Since, output: Output) -> Result<(), OpsError> {
    let now = shared::unix_now();
    let start = since.resolve(now).map_err(OpsError::Usage)?;
    let reconciler = Reconciler {
        store: deployment.store()?,
        queue: deployment.queue()?,
        stripe: deployment.stripe().await?,
        payload: deployment.event_payload()?,
    };
    let progress = spinner("listing Stripe events and checking the ledger");
    let report = reconciler.run(now, Some(start)).await;
    progress.finish_and_clear();
    let report: ReconcileReport = report?;
    let clamped = if report.window_start > start {
        " (Stripe keeps events 30 days: started at the oldest available)"
    } else {
        ""
    };
    let human = format!(
        "Listed {} events from {}{clamped}: {} already processed, {} enqueued{}, {} younger than 5 minutes left to their delivery",
        report.seen,
        report.window_start,
        report.already_done,
        report.enqueued,
        match report.lag_seconds {
            0 => String::new(),
            lag => format!(" (the oldest {lag} s old)"),
        },
        report.in_flight
    );
    output.emit(&human, &report)
}

/// Compares up to `sample` stored subscriptions with Stripe and replaces the drifted ones.
pub async fn drift(deployment: &Deployment, sample: usize, output: Output) -> Result<(), OpsError> {
    let syncer = deployment.syncer().await?;
    let progress = spinner("comparing stored subscriptions with Stripe");
    let report = drift_check::check(&syncer, sample, shared::unix_now()).await;
    progress.finish_and_clear();
    let report = report?;
    let human = format!(
        "Checked {} subscriptions: {} had drifted and were replaced with Stripe's state{}{}",
        report.checked,
        report.repaired.len(),
        if report.repaired.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.repaired.join(", "))
        },
        match report.unreadable {
            0 => String::new(),
            n => format!("; {n} could not be read from Stripe (see the log)"),
        }
    );
    output.emit(&human, &report)
}
