//! `billing usage report` (reports onto the usage queue, or to a local `billing dev`) and
//! `billing usage reconcile` (one account's local counter against Stripe's meter event
//! summary for the same period).

use serde::Serialize;
use serde_json::Value;
use shared::config::{Catalog, UsageSettings};
use shared::store::AccountId;
use shared::stripe::List;
use shared::usage::period::period_of;
use shared::usage::{UsageEvent, UsageLedger, UsageReporter};

use super::{Deployment, OpsError, Output};

/// Where reports go: the deployment's queue, or a local `billing dev` (`--dev URL`).
pub enum Destination {
    Queue,
    Dev(url::Url),
}

#[derive(Debug, Serialize)]
struct Reported {
    reported: usize,
    to: String,
}

pub async fn report(reports: Vec<UsageEvent>, to: Destination, output: Output) -> Result<(), OpsError> {
    let count = reports.len();
    let to = match to {
        Destination::Dev(base) => {
            let url = base
                .join("/_dev/usage")
                .map_err(|error| OpsError::Usage(error.to_string()))?;
            let answer = reqwest::Client::new()
                .post(url.clone())
                .json(&reports)
                .send()
                .await
                .map_err(|error| OpsError::Usage(format!("{url}: {error}")))?;
            if !answer.status().is_success() {
                return Err(OpsError::Usage(format!("{url} answered {}", answer.status())));
            }
            url.to_string()
        }
        Destination::Queue => {
            let deployment = Deployment::load().await?;
            let queue_url = UsageSettings::from_env(&deployment.env)?.queue_url.ok_or_else(|| {
                OpsError::Usage("USAGE_QUEUE_URL is not set (the stack's UsageQueueUrl output)".into())
            })?;
            UsageReporter::new(deployment.sqs(), queue_url.clone())
                .report(&reports)
                .await
                .map_err(|error| OpsError::Usage(error.to_string()))?;
            queue_url
        }
    };
    let done = Reported { reported: count, to };
    output.emit(&format!("{} report(s) queued at {}", done.reported, done.to), &done)
}

#[derive(Debug, Serialize)]
struct Reconciliation {
    account: String,
    meter: String,
    customer: Option<String>,
    period_start: i64,
    period_end: i64,
    /// The local counter (what quotas read).
    local: f64,
    /// Stripe's meter event summary over the same minutes (what invoices bill).
    stripe: Option<f64>,
    /// Committed locally and not confirmed by Stripe yet (sends, and what they add to Stripe's
    /// figure: their sum, or their number on a count meter). Use counted before the account
    /// had a customer is local only and shows as drift.
    pending_sends: usize,
    pending_value: f64,
    drift: f64,
}

/// Compares one account's counter for `meter` in the period holding `at` (now by default)
/// with Stripe's summary; an error when they differ by more than what is still pending.
pub async fn reconcile(
    deployment: &Deployment,
    account: &str,
    meter_key: &str,
    at: Option<i64>,
    output: Output,
) -> Result<(), OpsError> {
    let account_id = AccountId::parse(account).map_err(|error| OpsError::Usage(error.to_string()))?;
    let catalog = Catalog::from_env(&deployment.env)?;
    let meter = catalog
        .meter(meter_key)
        .ok_or_else(|| OpsError::Usage(format!("the catalog has no meter {meter_key:?}")))?;
    let store = deployment.store()?;
    let usage = store.account_usage(&account_id).await?;
    let period = period_of(&usage, meter_key, at.unwrap_or_else(shared::unix_now));
    let counter = usage
        .counters
        .iter()
        .find(|counter| counter.meter == meter_key && counter.period_start == period.start);
    let local = counter.map_or(0.0, |counter| counter.used);
    let pending_sends = counter.map_or(0, |counter| counter.pending.len());
    // What the pending sends add to Stripe's figure: their values, or one each on a count meter.
    let pending_value: f64 = counter.map_or(0.0, |counter| match meter.aggregation {
        shared::config::Aggregation::Sum => counter.pending.values().map(|send| send.value).fold(0.0, |a, b| a + b),
        shared::config::Aggregation::Count => counter.pending.len() as f64,
    });
    let customer = usage
        .customer_id
        .clone()
        .or_else(|| usage.entitlement.as_ref().and_then(|e| e.customer_id.clone()));
    let stripe = match &customer {
        None => None,
        Some(customer) => {
            let client = deployment.stripe().await?;
            let meters: List<Value> = client.get("/v1/billing/meters", &[("limit", "100")]).await?;
            let found = meters
                .data
                .iter()
                .find(|m| m["event_name"] == meter.event_name.as_str() && m["status"] != "inactive")
                .and_then(|m| m["id"].as_str())
                .ok_or_else(|| {
                    OpsError::NotFound(format!("Stripe has no active meter for event {:?}", meter.event_name))
                })?;
            // Summaries take minute boundaries: the period widened to whole minutes.
            let start = (period.start - period.start.rem_euclid(60)).to_string();
            let end = (period.end + (60 - period.end.rem_euclid(60)) % 60).to_string();
            let path = format!(
                "/v1/billing/meters/{}/event_summaries",
                shared::stripe::client::path_id(found)?
            );
            let summaries: List<Value> = client
                .get(
                    &path,
                    &[
                        ("customer", customer.as_str()),
                        ("start_time", &start),
                        ("end_time", &end),
                    ],
                )
                .await?;
            Some(
                summaries
                    .data
                    .iter()
                    .filter_map(|s| s["aggregated_value"].as_f64())
                    .fold(0.0, |a, b| a + b),
            )
        }
    };
    let drift = stripe.map_or(0.0, |stripe| local - stripe);
    let report = Reconciliation {
        account: account.to_owned(),
        meter: meter_key.to_owned(),
        customer,
        period_start: period.start,
        period_end: period.end,
        local,
        stripe,
        pending_sends,
        pending_value,
        drift,
    };
    let human = format!(
        "{account} {meter_key} [{}, {}): local {local}, Stripe {}, pending {pending_sends} send(s) of {pending_value}, drift {drift}",
        period.start,
        period.end,
        stripe.map_or("- (no customer)".to_owned(), |v| v.to_string()),
    );
    output.emit(&human, &report)?;
    // What is pending may not have reached Stripe yet; more than that is drift.
    if drift.abs() > pending_value {
        return Err(OpsError::Usage(format!(
            "usage drift of {drift} beyond the {pending_value} pending"
        )));
    }
    Ok(())
}
