//! `v1.billing.meter.error_report_triggered`: Stripe validates meter events after taking them
//! and reports, per meter and window, the ones it could not use (an unknown customer, a bad
//! value). They are not billed, so the operator is told (log, `MeterErrorReports`, alarmed)
//! and so is the app (`billing.usage_error_reported`), which may report them again fixed.

use serde_json::Value;

use crate::notify::{Publisher, UsageErrorReportedEvent};
use crate::processing::{Outcome, ProcessError};
use crate::store::BillingStore;
use crate::stripe::{BillingMeter, Event, Shape};
use crate::telemetry;

use super::{Syncer, object};

pub(super) async fn reported<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let meter: BillingMeter = object(event)?;
    // A thin notification is a reference; its `data` (the reason) comes with the event from
    // Stripe, unless the payload already holds it.
    let data = match event.shape {
        Shape::Thin if event.details.as_ref().is_some_and(|d| d.get("reason").is_some()) => {
            event.details.clone().unwrap_or_default()
        }
        Shape::Thin => {
            let full: Value = syncer
                .stripe
                .get(
                    &format!("/v2/core/events/{}", crate::stripe::client::path_id(&event.id)?),
                    &[],
                )
                .await?;
            full.get("data").cloned().unwrap_or_default()
        }
        Shape::Snapshot => event
            .data
            .object
            .get("reason")
            .map_or(Value::Null, |reason| serde_json::json!({ "reason": reason })),
    };
    let reason = &data["reason"];
    let errors: Vec<(String, u64)> = reason["error_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kind| {
            Some((
                kind["code"].as_str()?.to_owned(),
                kind["error_count"].as_u64().unwrap_or(0),
            ))
        })
        .collect();
    let error_count = reason["error_count"]
        .as_u64()
        .unwrap_or_else(|| errors.iter().map(|(_, n)| n).sum());
    let key = syncer
        .plans
        .meters()
        .find(|(_, m)| m.event_name == meter.event_name)
        .map(|(key, _)| key.to_owned());
    telemetry::count("MeterErrorReports");
    tracing::error!(event_id = %event.id, meter_id = %meter.id, event_name = %meter.event_name,
        meter = key.as_deref().unwrap_or(""), error_count, errors = ?errors,
        "Stripe could not use some meter events: they are not billed");
    if syncer.app_events.enabled() {
        let announced = UsageErrorReportedEvent {
            event_type: "billing.usage_error_reported",
            stripe_event_id: event.id.clone(),
            meter_id: meter.id,
            event_name: meter.event_name,
            meter: key,
            error_count,
            errors,
        };
        syncer
            .app_events
            .publish(&announced)
            .await
            .map_err(|error| ProcessError::Notify(error.to_string()))?;
    }
    Ok(Outcome::Applied)
}
