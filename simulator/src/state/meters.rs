//! Billing meters and usage-based billing: meters, meter events (v1, and the v2 high-throughput
//! stream with its sessions), event summaries, the asynchronous error reports, and the usage a
//! renewal invoice bills.
//!
//! As Stripe does (https://docs.stripe.com/billing/subscriptions/usage-based, the API reference
//! and stripe-python 16.1.0's `stripe/billing/_meter.py`, `_meter_event.py`,
//! `_meter_event_summary.py`, `stripe/v2/billing/_meter_event_session.py`):
//! - one active meter per `event_name`;
//! - a meter event's `timestamp` lies within the past 35 days and at most 5 minutes ahead (a
//!   400 from v1; from the v2 stream, which validates asynchronously, an error report);
//! - an event whose `identifier` was seen within the last 24 hours is accepted and not counted
//!   again, across v1 and v2;
//! - the rest of an event's validation is asynchronous: an event for a meter whose customer
//!   does not exist or whose value is not a number is accepted, not counted, and reported in a
//!   `v1.billing.meter.error_report_triggered` thin event (one per meter and request);
//! - a v2 stream request carries 1 to 100 events and authenticates with a meter event
//!   session's `authentication_token` (15 minutes unless configured), not an API key.
//!
//! Renewals bill each metered item the usage since it was last billed: the events for its
//! meter and customer with a timestamp from the item's period start up to the renewal. Events
//! timestamped in the renewal's own second count when they arrived before it, so nothing is
//! billed twice or lost when a test sends events and ends the period within one second.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::prices::metered;
use super::subscriptions::preview_line;
use super::thin::rfc3339;
use super::{ApiError, ApiResult, ControlResult, Sim, integer, limit, not_found, page, public, text};

/// How far back a meter event's timestamp may be: 35 calendar days.
const PAST_SECS: i64 = 35 * 86_400;
/// How far ahead: 5 minutes.
const FUTURE_SECS: i64 = 300;
/// Stripe "enforces uniqueness within a rolling period of at least 24 hours".
const DEDUP_SECS: i64 = 86_400;
/// A meter event session's lifetime unless configured.
const SESSION_SECS: i64 = 15 * 60;
/// The most events one v2 stream request may carry.
const STREAM_MAX: usize = 100;
/// The most sample errors an error report lists per error code.
const SAMPLES: usize = 10;

/// How many meter events the API has taken and how many of them count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterCounts {
    /// Events accepted (answered 200), duplicates and invalid ones included.
    pub accepted: u64,
    /// Events counted towards a meter: unique and valid.
    pub recorded: u64,
}

/// One counted meter event.
struct Usage {
    meter: String,
    customer: String,
    value: f64,
    timestamp: i64,
    /// Arrival order, which splits a renewal's own second (see the module docs).
    seq: u64,
}

/// `(timestamp, arrival)`: the point a usage window starts or ends at.
type Mark = (i64, u64);

#[derive(Default)]
pub(super) struct Metering {
    pub(super) meters: BTreeMap<String, Value>,
    usage: Vec<Usage>,
    next_seq: u64,
    /// Identifier → when it was first seen; and the same in the order seen, to forget them.
    identifiers: HashMap<String, i64>,
    seen: VecDeque<(i64, String)>,
    /// Authentication token → (session id, expires_at).
    sessions: HashMap<String, (String, i64)>,
    session_secs: Option<i64>,
    /// Per subscription item: where its unbilled usage starts.
    billed_from: HashMap<String, Mark>,
    /// Per subscription: the usage lines its next invoice bills.
    pending: BTreeMap<String, Vec<Value>>,
    counts: MeterCounts,
}

/// One event as both API versions give it.
struct Incoming<'a> {
    event_name: &'a str,
    identifier: Option<String>,
    payload: &'a Map<String, Value>,
    timestamp: i64,
    /// Why the timestamp is out of Stripe's window, if it is: an error code and message.
    out_of_window: Option<(&'static str, String)>,
}

/// One entry of a stream request, checked.
struct StreamEvent {
    event_name: String,
    identifier: Option<String>,
    payload: Map<String, Value>,
    timestamp: i64,
}

/// Per meter: per error code, (message, identifier) of each event refused.
type Reports = BTreeMap<String, BTreeMap<&'static str, Vec<(String, String)>>>;

fn uuid_like() -> String {
    let hex: String = std::iter::repeat_with(|| fastrand::char('a'..='f')).take(32).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn token() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(48).collect()
}

/// A float as Stripe writes it: `15`, not `15.0`, when whole.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// What a meter's formula makes of events: their sum, their count, or the latest value.
fn aggregate<'a>(formula: &str, events: impl Iterator<Item = &'a Usage>) -> f64 {
    match formula {
        "count" => events.count() as f64,
        "last" => events
            .max_by_key(|usage| (usage.timestamp, usage.seq))
            .map_or(0.0, |usage| usage.value),
        _ => events.map(|usage| usage.value).sum(),
    }
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(format!("Missing required param: {param}."))
        .with_code("parameter_missing")
        .with_param(param)
}

fn unknown(param: &str) -> ApiError {
    ApiError::invalid(format!("Received unknown parameter: {param}"))
        .with_code("parameter_unknown")
        .with_param(param)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid_request_error",
        message: message.to_owned(),
        code: None,
        param: None,
    }
}

impl Sim {
    /// `POST /v1/billing/meters`: `customer_mapping` defaults to `stripe_customer_id` by id,
    /// `value_settings` to `value`; a second active meter of one `event_name` is refused.
    pub(super) fn create_meter(&mut self, params: &Value) -> ApiResult {
        let display_name = text(&params["display_name"]).ok_or_else(|| missing("display_name"))?;
        let event_name = text(&params["event_name"]).ok_or_else(|| missing("event_name"))?;
        let formula =
            text(&params["default_aggregation"]["formula"]).ok_or_else(|| missing("default_aggregation[formula]"))?;
        if let Some(existing) = self.active_meter(&event_name) {
            return Err(ApiError::invalid(format!(
                "An active meter (`{}`) already exists for event_name `{event_name}`.",
                existing["id"].as_str().unwrap_or_default()
            ))
            .with_param("event_name"));
        }
        let customer_key = params["customer_mapping"]["event_payload_key"]
            .as_str()
            .unwrap_or("stripe_customer_id");
        let value_key = params["value_settings"]["event_payload_key"]
            .as_str()
            .unwrap_or("value");
        let now = self.now();
        let id = self.id("mtr");
        let meter = json!({
            "id": id,
            "object": "billing.meter",
            "created": now,
            "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
            "default_aggregation": {"formula": formula},
            "display_name": display_name,
            "event_name": event_name,
            "event_time_window": params["event_time_window"],
            "livemode": false,
            "status": "active",
            "status_transitions": {"deactivated_at": null},
            "updated": now,
            "value_settings": {"event_payload_key": value_key},
        });
        self.metering.meters.insert(id, meter.clone());
        Ok((meter, Vec::new()))
    }

    fn active_meter(&self, event_name: &str) -> Option<&Value> {
        self.metering
            .meters
            .values()
            .find(|meter| meter["event_name"] == event_name && meter["status"] == "active")
    }

    /// `GET /v1/billing/meters`, newest first, optionally by `status`.
    pub(super) fn list_meters(&self, query: &Value) -> ApiResult {
        let matching: Vec<&Value> = self
            .metering
            .meters
            .values()
            .filter(|meter| query["status"].is_null() || meter["status"] == query["status"])
            .collect();
        let list = page(
            matching,
            query,
            "/v1/billing/meters",
            &self.metering.meters,
            "billing meter",
        )?;
        Ok((list, Vec::new()))
    }

    /// Whether Stripe takes a timestamp (within the past 35 days, at most 5 minutes ahead),
    /// or the error code and message of one it does not.
    fn out_of_window(&self, timestamp: i64) -> Option<(&'static str, String)> {
        let now = self.now();
        if timestamp < now - PAST_SECS {
            return Some((
                "timestamp_too_far_in_past",
                format!(
                    "The timestamp {timestamp} is too far in the past: meter events must be within the past 35 calendar days."
                ),
            ));
        }
        if timestamp > now + FUTURE_SECS {
            return Some((
                "timestamp_in_future",
                format!(
                    "The timestamp {timestamp} is too far in the future: meter events may be at most 5 minutes ahead."
                ),
            ));
        }
        None
    }

    /// `POST /v1/billing/meter_events`.
    pub(super) fn create_meter_event(&mut self, params: &Value) -> ApiResult {
        let event_name = text(&params["event_name"]).ok_or_else(|| missing("event_name"))?;
        let payload = params["payload"].as_object().cloned().unwrap_or_default();
        if payload.is_empty() {
            return Err(missing("payload"));
        }
        let now = self.now();
        let timestamp = integer(&params["timestamp"], "timestamp")?.unwrap_or(now);
        if let Some((_, message)) = self.out_of_window(timestamp) {
            return Err(ApiError::invalid(message).with_param("timestamp"));
        }
        let mut reports = Reports::new();
        let identifier = self.ingest(
            Incoming {
                event_name: &event_name,
                identifier: text(&params["identifier"]),
                payload: &payload,
                timestamp,
                out_of_window: None,
            },
            now,
            &mut reports,
        );
        let events = self.error_reports(reports, now);
        let event = json!({
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": false,
            "payload": payload,
            "timestamp": timestamp,
        });
        Ok((event, events))
    }

    /// Takes one accepted event: counts it unless its identifier was seen within the
    /// deduplication window, or it fails the validation Stripe does after accepting it (then
    /// it goes into `reports`). Returns its identifier.
    fn ingest(&mut self, incoming: Incoming, now: i64, reports: &mut Reports) -> String {
        let metering = &mut self.metering;
        metering.counts.accepted += 1;
        let identifier = incoming.identifier.unwrap_or_else(uuid_like);
        while let Some((at, _)) = metering.seen.front().filter(|(at, _)| at + DEDUP_SECS <= now) {
            let at = *at;
            if let Some((_, old)) = metering.seen.pop_front() {
                if metering.identifiers.get(&old) == Some(&at) {
                    metering.identifiers.remove(&old);
                }
            }
        }
        if metering.identifiers.contains_key(&identifier) {
            return identifier;
        }
        metering.identifiers.insert(identifier.clone(), now);
        metering.seen.push_back((now, identifier.clone()));
        // An event no active meter takes is not counted (Stripe's `no_meter`, reported for no
        // meter).
        let Some(meter) = self.active_meter(incoming.event_name).cloned() else {
            return identifier;
        };
        let meter_id = text(&meter["id"]).unwrap_or_default();
        let customer_key = meter["customer_mapping"]["event_payload_key"]
            .as_str()
            .unwrap_or("stripe_customer_id");
        let value_key = meter["value_settings"]["event_payload_key"].as_str().unwrap_or("value");
        let formula = meter["default_aggregation"]["formula"].as_str().unwrap_or("sum");
        let mut refuse = |code: &'static str, message: String| {
            reports
                .entry(meter_id.clone())
                .or_default()
                .entry(code)
                .or_default()
                .push((message, identifier.clone()));
        };
        if let Some((code, message)) = incoming.out_of_window {
            refuse(code, message);
            return identifier;
        }
        let Some(customer) = incoming.payload.get(customer_key).and_then(Value::as_str) else {
            refuse(
                "meter_event_no_customer_defined",
                format!("The event's payload has no `{customer_key}`, which names the customer."),
            );
            return identifier;
        };
        if !self.live_customer(customer) {
            refuse(
                "meter_event_customer_not_found",
                format!("No customer with id `{customer}` was found for `{customer_key}`."),
            );
            return identifier;
        }
        let value = if formula == "count" {
            Some(1.0)
        } else {
            incoming
                .payload
                .get(value_key)
                .and_then(Value::as_str)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        let Some(value) = value else {
            refuse(
                "meter_event_invalid_value",
                format!("The event's `{value_key}` is missing or not a number."),
            );
            return identifier;
        };
        let metering = &mut self.metering;
        metering.next_seq += 1;
        metering.usage.push(Usage {
            meter: meter_id,
            customer: customer.to_owned(),
            value,
            timestamp: incoming.timestamp,
            seq: metering.next_seq,
        });
        metering.counts.recorded += 1;
        identifier
    }

    /// One `v1.billing.meter.error_report_triggered` thin event per meter with refused events
    /// (stripe-python 16.1.0, `stripe/events/_v1_billing_meter_error_report_triggered_event.py`).
    fn error_reports(&mut self, reports: Reports, now: i64) -> Vec<Value> {
        let mut events = Vec::new();
        for (meter_id, by_code) in reports {
            let Some(meter) = self.metering.meters.get(&meter_id).cloned() else {
                continue;
            };
            let count: usize = by_code.values().map(Vec::len).sum();
            let error_types: Vec<Value> = by_code
                .iter()
                .map(|(code, errors)| {
                    let samples: Vec<Value> = errors
                        .iter()
                        .take(SAMPLES)
                        .map(|(message, identifier)| {
                            json!({"error_message": message, "request": {"identifier": identifier}})
                        })
                        .collect();
                    json!({"code": code, "error_count": errors.len(), "sample_errors": samples})
                })
                .collect();
            let codes: Vec<&str> = by_code.keys().copied().collect();
            let data = json!({
                "developer_message_summary": format!(
                    "{count} meter event(s) for meter {meter_id} failed validation: {}", codes.join(", ")),
                "reason": {"error_count": count, "error_types": error_types},
                "validation_start": rfc3339(now),
                "validation_end": rfc3339(now),
            });
            events.push(self.thin_only_event("billing.meter.error_report_triggered", &meter, data, now));
        }
        events
    }

    /// `POST /v2/billing/meter_event_session`: a token for the stream, valid 15 minutes unless
    /// configured.
    pub(super) fn create_meter_event_session(&mut self, params: &Value) -> ApiResult {
        // MeterEventSessionCreateParams declares no parameter.
        if let Some(param) = params.as_object().and_then(|map| map.keys().next()) {
            return Err(unknown(param));
        }
        let now = self.now();
        let expires_at = now + self.metering.session_secs.unwrap_or(SESSION_SECS);
        let id = self.id("mes");
        let authentication_token = token();
        self.metering
            .sessions
            .insert(authentication_token.clone(), (id.clone(), expires_at));
        Ok((
            json!({
                "object": "v2.billing.meter_event_session",
                "id": id,
                "authentication_token": authentication_token,
                "created": rfc3339(now),
                "expires_at": rfc3339(expires_at),
                "livemode": false,
            }),
            Vec::new(),
        ))
    }

    /// How long meter event sessions made from now on last.
    pub fn set_meter_session_secs(&mut self, secs: i64) {
        self.metering.session_secs = Some(secs.max(0));
    }

    /// `/sim/meter_event_sessions?ttl_secs=N`.
    pub(super) fn set_session_ttl_control(&mut self, query: &Value) -> ControlResult {
        let secs = query["ttl_secs"]
            .as_str()
            .and_then(|secs| secs.parse::<i64>().ok())
            .filter(|secs| *secs >= 0)
            .ok_or("/sim/meter_event_sessions needs ttl_secs, a whole number of seconds")?;
        self.set_meter_session_secs(secs);
        Ok((json!({"ttl_secs": secs}), Vec::new()))
    }

    pub fn meter_counts(&self) -> MeterCounts {
        self.metering.counts
    }

    /// `POST /v2/billing/meter_event_stream` with a session's token: checks every event
    /// (stripe-python 16.1.0, `stripe/params/v2/billing/_meter_event_stream_create_params.py`),
    /// then takes them all, or none; answers `{}`.
    pub fn meter_event_stream(&mut self, token: Option<&str>, params: &Value) -> ApiResult {
        let now = self.now();
        let token = token.unwrap_or_default();
        let Some((_, expires_at)) = self.metering.sessions.get(token) else {
            return Err(unauthorized(if token.starts_with("sk_") || token.starts_with("rk_") {
                "The meter event stream authenticates with a meter event session's authentication_token, not an API key."
            } else {
                "Invalid meter event session authentication token."
            }));
        };
        if now >= *expires_at {
            let mut error = unauthorized("The meter event session has expired: create a new one.");
            error.kind = "temporary_session_expired";
            return Err(error.with_code("billing_meter_event_session_expired"));
        }
        let body = params.as_object().cloned().unwrap_or_default();
        if let Some(param) = body.keys().find(|key| *key != "events") {
            return Err(unknown(param));
        }
        let entries = params["events"].as_array().cloned().ok_or_else(|| missing("events"))?;
        if entries.is_empty() || entries.len() > STREAM_MAX {
            return Err(ApiError::invalid(format!(
                "A request carries 1 to {STREAM_MAX} events; this one has {}.",
                entries.len()
            ))
            .with_param("events"));
        }
        let mut checked = Vec::new();
        for (at, entry) in entries.iter().enumerate() {
            checked.push(self.stream_event(at, entry, now)?);
        }
        let mut reports = Reports::new();
        for event in &checked {
            let out_of_window = self.out_of_window(event.timestamp);
            self.ingest(
                Incoming {
                    event_name: &event.event_name,
                    identifier: event.identifier.clone(),
                    payload: &event.payload,
                    timestamp: event.timestamp,
                    out_of_window,
                },
                now,
                &mut reports,
            );
        }
        let events = self.error_reports(reports, now);
        Ok((json!({}), events))
    }

    /// One entry of a stream's `events`: its event name, identifier, payload and timestamp.
    fn stream_event(&self, at: usize, entry: &Value, now: i64) -> Result<StreamEvent, ApiError> {
        let param = |field: &str| format!("events[{at}].{field}");
        let fields = entry
            .as_object()
            .ok_or_else(|| ApiError::invalid("Each event is an object.").with_param(format!("events[{at}]")))?;
        if let Some(field) = fields
            .keys()
            .find(|key| !["event_name", "identifier", "payload", "timestamp"].contains(&key.as_str()))
        {
            return Err(unknown(&param(field)));
        }
        let event_name = text(&entry["event_name"]).ok_or_else(|| missing(&param("event_name")))?;
        let identifier = match &entry["identifier"] {
            Value::Null => None,
            Value::String(identifier) if identifier.chars().count() <= 100 && !identifier.is_empty() => {
                Some(identifier.clone())
            }
            _ => {
                return Err(ApiError::invalid("An identifier is a string of 1 to 100 characters.")
                    .with_param(param("identifier")));
            }
        };
        let payload = entry["payload"]
            .as_object()
            .cloned()
            .ok_or_else(|| missing(&param("payload")))?;
        if let Some(key) = payload.iter().find(|(_, value)| !value.is_string()).map(|(key, _)| key) {
            return Err(ApiError::invalid("Payload values are strings.").with_param(param(&format!("payload.{key}"))));
        }
        let timestamp = match entry["timestamp"].as_str() {
            None if entry["timestamp"].is_null() => now,
            None => {
                return Err(ApiError::invalid("A timestamp is an RFC 3339 string.").with_param(param("timestamp")));
            }
            Some(time) => OffsetDateTime::parse(time, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|_| ApiError::invalid("A timestamp is an RFC 3339 string.").with_param(param("timestamp")))?,
        };
        Ok(StreamEvent {
            event_name,
            identifier,
            payload,
            timestamp,
        })
    }

    /// `GET /v1/billing/meters/{id}/event_summaries`: the meter's aggregate for a customer over
    /// `[start_time, end_time)`, minute-aligned; with `value_grouping_window`, one summary per
    /// hour or day (aligned to it), newest first.
    pub(super) fn event_summaries(&self, id: &str, query: &Value) -> ApiResult {
        let meter = self
            .metering
            .meters
            .get(id)
            .ok_or_else(|| not_found("billing meter", id))?;
        let customer = text(&query["customer"]).ok_or_else(|| missing("customer"))?;
        let start = integer(&query["start_time"], "start_time")?.ok_or_else(|| missing("start_time"))?;
        let end = integer(&query["end_time"], "end_time")?.ok_or_else(|| missing("end_time"))?;
        let (window, unit) = match query["value_grouping_window"].as_str() {
            None => (None, "minute"),
            Some("hour") => (Some(3_600), "hour"),
            Some("day") => (Some(86_400), "day"),
            Some(other) => {
                return Err(ApiError::invalid(format!("Invalid value_grouping_window: {other}"))
                    .with_param("value_grouping_window"));
            }
        };
        let alignment = window.unwrap_or(60);
        for (param, time) in [("start_time", start), ("end_time", end)] {
            if time.rem_euclid(alignment) != 0 {
                return Err(
                    ApiError::invalid(format!("{param} must be aligned with {unit} boundaries.")).with_param(param),
                );
            }
        }
        if start >= end {
            return Err(ApiError::invalid("start_time must be before end_time.").with_param("start_time"));
        }
        let formula = meter["default_aggregation"]["formula"].as_str().unwrap_or("sum");
        let step = window.unwrap_or(end - start);
        let mut windows = Vec::new();
        let mut from = start;
        while from < end {
            windows.push((from, (from + step).min(end)));
            from += step;
        }
        let mut summaries: Vec<Value> = windows
            .into_iter()
            .rev()
            .map(|(from, to)| {
                let value = aggregate(
                    formula,
                    self.metering.usage.iter().filter(|usage| {
                        usage.meter == id && usage.customer == customer && (from..to).contains(&usage.timestamp)
                    }),
                );
                json!({
                    "id": format!("mtrusg_{}_{from}_{to}", id.trim_start_matches("mtr_")),
                    "object": "billing.meter_event_summary",
                    "aggregated_value": number(value),
                    "start_time": from,
                    "end_time": to,
                    "livemode": false,
                    "meter": id,
                })
            })
            .collect();
        if let Some(after) = query["starting_after"].as_str() {
            let at = summaries
                .iter()
                .position(|summary| summary["id"] == after)
                .ok_or_else(|| not_found("billing meter event summary", after).with_param("starting_after"))?;
            summaries.drain(..=at);
        }
        let limit = limit(query)?;
        let has_more = summaries.len() > limit;
        summaries.truncate(limit);
        let url = format!("/v1/billing/meters/{id}/event_summaries");
        Ok((
            json!({"object": "list", "url": url, "has_more": has_more, "data": summaries}),
            Vec::new(),
        ))
    }

    /// A new subscription item's usage starts now: events already in for this second are
    /// another period's.
    pub(super) fn start_usage(&mut self, item: &str, now: i64) {
        let mark = (now, self.metering.next_seq + 1);
        self.metering.billed_from.insert(item.to_owned(), mark);
    }

    /// The usage line of a metered item: its meter's aggregate for the subscription's customer
    /// from where the item's unbilled usage starts to `until` (this second's events that have
    /// arrived included), priced by the item's price. None for a licensed item.
    fn usage_line(&self, sub: &Value, item: &Value, until: i64) -> Option<(Value, Mark)> {
        if !metered(&item["price"]) {
            return None;
        }
        let meter_id = item["price"]["recurring"]["meter"].as_str()?;
        let formula = self.metering.meters.get(meter_id).map_or("sum", |meter| {
            meter["default_aggregation"]["formula"].as_str().unwrap_or("sum")
        });
        let item_id = item["id"].as_str().unwrap_or_default();
        let from = self
            .metering
            .billed_from
            .get(item_id)
            .copied()
            .unwrap_or((item["current_period_start"].as_i64().unwrap_or(until), 0));
        let to = (until, self.metering.next_seq + 1);
        let customer = sub["customer"].as_str().unwrap_or_default();
        // A trial's usage is not charged.
        let quantity = if sub["status"] == "trialing" {
            0.0
        } else {
            aggregate(
                formula,
                self.metering.usage.iter().filter(|usage| {
                    let at = (usage.timestamp, usage.seq);
                    usage.meter == meter_id && usage.customer == customer && from <= at && at < to
                }),
            )
        };
        let price_id = item["price"]["id"].as_str().unwrap_or_default();
        let amount = self.line_amount(price_id, quantity);
        let description = format!("{price_id} × {} (usage)", number(quantity));
        let mut line = preview_line(item, amount, description, false, from.0, until.max(from.0));
        line["quantity"] = json!(quantity.round().max(0.0) as i64);
        line["quantity_decimal"] = json!(number(quantity).to_string());
        line["pricing"]["unit_amount_decimal"] = super::prices::unit_amount_decimal(&item["price"]);
        Some((line, to))
    }

    /// At a renewal: bills each metered item of `sub` its usage up to `until`, for the
    /// subscription's next invoice, and starts its next usage there.
    pub(super) fn bill_usage(&mut self, sub: &Value, until: i64) {
        let mut lines = Vec::new();
        for item in sub["items"]["data"].as_array().into_iter().flatten() {
            if let Some((line, to)) = self.usage_line(sub, item, until) {
                lines.push(line);
                self.metering
                    .billed_from
                    .insert(item["id"].as_str().unwrap_or_default().to_owned(), to);
            }
        }
        if let Some(sub_id) = text(&sub["id"]) {
            self.metering.pending.entry(sub_id).or_default().extend(lines);
        }
    }

    /// The usage lines waiting for the subscription's next invoice.
    pub(super) fn take_usage(&mut self, sub: &str) -> Vec<Value> {
        self.metering.pending.remove(sub).unwrap_or_default()
    }

    /// The usage so far, unbilled, for an invoice preview; nothing is marked billed.
    pub(super) fn usage_so_far(&self, sub: &Value, item: &Value, until: i64) -> Option<Value> {
        self.usage_line(sub, item, until).map(|(line, _)| line)
    }

    /// A thin-only event: Stripe has no snapshot form of it, so only thin destinations get it
    /// and `/v1/events` does not list it (see `thin.rs`).
    fn thin_only_event(&mut self, event_type: &str, object: &Value, data: Value, created: i64) -> Value {
        let event = json!({
            "id": self.id("evt"),
            "object": "v2.core.event",
            "type": event_type,
            "created": created,
            "livemode": false,
            "data": {"object": public(object)},
            "_simulated_thin_only": true,
            "_simulated_thin_data": data,
        });
        self.events.push(event.clone());
        event
    }
}
