//! Reconciliation: Stripe stops delivering sometimes (endpoint disabled, deploys dropping
//! requests, an outage longer than Stripe's retries). On a schedule, list Stripe's events
//! since a stored cursor and enqueue every handled one the ledger has not completed, through
//! the webhook's own routing — FIFO deduplication and the ledger make overlaps harmless.
//!
//! Which listing depends on the destination's payload (`BILLING_EVENT_PAYLOAD`): snapshot
//! events are listed from `GET /v1/events`, thin ones from `GET /v2/core/events`. A thin event
//! and its snapshot twin have different ids, so each destination must be reconciled against
//! the listing of the events it delivers, or every delivered event would look missed.

pub mod drift;

use serde::Serialize;
use serde_json::Value;

use crate::config::{ConfigError, Env};
use crate::queue::{EventQueue, QueueError};
use crate::routing;
use crate::store::{BillingStore, LedgerState, StoreError};
use crate::stripe::client::ThinEventsPage;
use crate::stripe::objects::List;
use crate::stripe::{EventEnvelope, StripeClient, StripeError};
use drift::DriftReport;

pub const CURSOR: &str = "stripe-events";
/// Stripe keeps events for 30 days; older ones cannot be listed.
pub const EVENT_RETENTION_SECS: i64 = 30 * 24 * 3600;
/// Events are re-listed this far behind the cursor: `created` has one-second resolution and
/// an event can become listable slightly after a later one.
pub const OVERLAP_SECS: i64 = 600;
/// An event this young that the ledger has not completed is most likely still on its way
/// through the queue (Stripe's first attempt comes within seconds). A pass leaves it alone and
/// stops its cursor this far back, so the next pass meets it again once it is old enough: then
/// it is either done or missed, enqueued and counted. The alarm on `MissedEvents` thus fires
/// for every lost delivery, once, and never for ordinary queue latency.
pub const IN_FLIGHT_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing events from Stripe failed")]
    Stripe(#[from] StripeError),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("enqueueing a missed event failed; the cursor was not moved")]
    Queue(#[from] QueueError),
    #[error("Stripe listed an event this system cannot read: {0}")]
    Malformed(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub window_start: i64,
    pub seen: usize,
    pub already_done: usize,
    /// Events that were not completed and are past the in-flight window: deliveries that were
    /// lost or have failed until now (`MissedEvents`).
    pub enqueued: usize,
    /// Listed events younger than [`IN_FLIGHT_SECS`] and not completed: left to their delivery.
    pub in_flight: usize,
    /// Age of the oldest missed event (0 when none was).
    pub lag_seconds: i64,
    pub cursor: Option<i64>,
}

/// Which events the Stripe destination delivers, so which listing covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventPayload {
    #[default]
    Snapshot,
    Thin,
}

impl EventPayload {
    /// `BILLING_EVENT_PAYLOAD` = `snapshot` (default) | `thin`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.get("BILLING_EVENT_PAYLOAD").map(str::trim) {
            None | Some("" | "snapshot") => Ok(EventPayload::Snapshot),
            Some("thin") => Ok(EventPayload::Thin),
            Some(_) => Err(ConfigError::Invalid {
                var: "BILLING_EVENT_PAYLOAD",
                reason: "expected snapshot or thin".into(),
            }),
        }
    }
}

pub struct Reconciler<S, Q> {
    pub store: S,
    pub queue: Q,
    pub stripe: StripeClient,
    pub payload: EventPayload,
}

/// Where the next page of a listing starts.
enum Page {
    First,
    /// `GET /v1/events?starting_after=`
    After(String),
    /// The `next_page_url` of a `/v2/core/events` page.
    Next(String),
}

impl<S: BillingStore, Q: EventQueue> Reconciler<S, Q> {
    /// One pass. `since` overrides the cursor: a backfill, run from an operator's machine, whose
    /// clock the schedule's cursor must not depend on, so a backfill leaves the cursor alone.
    pub async fn run(&self, now: i64, since: Option<i64>) -> Result<ReconcileReport, ReconcileError> {
        let cursor = self.store.get_cursor(CURSOR).await?;
        let oldest = now.saturating_sub(EVENT_RETENTION_SECS).saturating_add(60);
        let wanted = since.or(cursor.map(|c| c.saturating_sub(OVERLAP_SECS)));
        let window_start = match wanted {
            Some(start) if start >= oldest => start,
            Some(start) => {
                tracing::warn!(
                    requested = start,
                    oldest_available = oldest,
                    "window starts before Stripe's 30 days of events; starting from the oldest available"
                );
                oldest
            }
            None => {
                tracing::info!("first reconcile run: starting from the oldest event Stripe keeps (30 days)");
                oldest
            }
        };
        let mut report = ReconcileReport {
            window_start,
            cursor,
            ..ReconcileReport::default()
        };
        let mut oldest_missed: Option<i64> = None;
        let mut page = Page::First;
        loop {
            let (events, next) = self.page(window_start, &page).await?;
            for event in &events {
                let body =
                    serde_json::to_string(event).map_err(|error| ReconcileError::Malformed(error.to_string()))?;
                let envelope = EventEnvelope::parse(body.as_bytes())
                    .map_err(|error| ReconcileError::Malformed(error.to_string()))?;
                report.seen += 1;
                let Some((queue, message)) = routing::message_for(&envelope, &body) else {
                    continue;
                };
                if self.store.event_state(message.event_id).await? == Some(LedgerState::Completed) {
                    report.already_done += 1;
                    continue;
                }
                if now.saturating_sub(envelope.created) < IN_FLIGHT_SECS {
                    report.in_flight += 1;
                    continue;
                }
                self.queue.send(queue, &message).await?;
                report.enqueued += 1;
                oldest_missed = Some(oldest_missed.map_or(envelope.created, |o: i64| o.min(envelope.created)));
            }
            match next {
                Some(next) => page = next,
                None => break,
            }
        }
        report.lag_seconds = oldest_missed.map_or(0, |created| now.saturating_sub(created));
        // Only after everything was enqueued: a crash before this line re-lists the window,
        // and the ledger and FIFO deduplication absorb the repeats. Every event older than the
        // in-flight window has been dealt with (the overlap covers events that became listable
        // late), so the cursor moves there even when nothing was listed: a quiet account stays
        // current.
        let covered = now.saturating_sub(IN_FLIGHT_SECS);
        if since.is_none() && covered > cursor.unwrap_or(i64::MIN) {
            if self.store.set_cursor(CURSOR, cursor, covered).await? {
                report.cursor = Some(covered);
            } else {
                tracing::warn!("another reconcile run moved the cursor first; keeping its value");
            }
        }
        Ok(report)
    }

    /// One page of events created at or after `created_gte`, and where the next one starts.
    async fn page(&self, created_gte: i64, page: &Page) -> Result<(Vec<Value>, Option<Page>), ReconcileError> {
        match self.payload {
            EventPayload::Snapshot => {
                let created = created_gte.to_string();
                let mut query: Vec<(&str, &str)> = vec![("limit", "100"), ("created[gte]", &created)];
                query.extend(routing::handled_event_types().map(|event_type| ("types[]", event_type)));
                if let Page::After(after) = page {
                    query.push(("starting_after", after));
                }
                let list: List<Value> = self.stripe.get("/v1/events", &query).await?;
                let next = match (
                    list.has_more,
                    list.data.last().and_then(|e| e.get("id")).and_then(Value::as_str),
                ) {
                    (true, Some(last)) => Some(Page::After(last.to_owned())),
                    _ => None,
                };
                Ok((list.data, next))
            }
            EventPayload::Thin => {
                let list = match page {
                    Page::Next(next) => self.stripe.list_thin_events(ThinEventsPage::Next(next)).await?,
                    Page::First | Page::After(_) => {
                        let created = time::OffsetDateTime::from_unix_timestamp(created_gte)
                            .ok()
                            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                            .ok_or_else(|| ReconcileError::Malformed(format!("window start {created_gte}")))?;
                        let types: Vec<(String, String)> = routing::reconciled_thin_event_types()
                            .enumerate()
                            .map(|(index, name)| (format!("types[{index}]"), name))
                            .collect();
                        let mut query: Vec<(&str, &str)> = vec![("limit", "100"), ("created[gte]", &created)];
                        query.extend(types.iter().map(|(key, value)| (key.as_str(), value.as_str())));
                        self.stripe.list_thin_events(ThinEventsPage::First(&query)).await?
                    }
                };
                Ok((list.data, list.next_page_url.map(Page::Next)))
            }
        }
    }
}

/// The report as a CloudWatch Embedded Metric Format line: `MissedEvents`, `EventLagSeconds`
/// and, when the drift check ran, `DriftedSubscriptions` become metrics (and alarms) without
/// any API call.
pub fn emf_line(report: &ReconcileReport, drift: Option<&DriftReport>, now_ms: i64) -> String {
    let mut metrics = vec![
        serde_json::json!({"Name": "MissedEvents", "Unit": "Count"}),
        serde_json::json!({"Name": "EventLagSeconds", "Unit": "Seconds"}),
    ];
    if drift.is_some() {
        metrics.push(serde_json::json!({"Name": "DriftedSubscriptions", "Unit": "Count"}));
    }
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "StripeBilling",
                "Dimensions": [["Service"]],
                "Metrics": metrics
            }]
        },
        "Service": "reconcile",
        "MissedEvents": report.enqueued,
        "in_flight": report.in_flight,
        "EventLagSeconds": report.lag_seconds,
        "seen": report.seen,
        "already_done": report.already_done,
    });
    if let (Some(drift), Some(fields)) = (drift, line.as_object_mut()) {
        fields.insert("DriftedSubscriptions".into(), drift.repaired.len().into());
        fields.insert("drift_checked".into(), drift.checked.into());
    }
    line.to_string()
}
