//! Thin events: each snapshot event the simulator emits has a thin twin, as Stripe gives an
//! event destination on the thin payload: `{object: "v2.core.event", type: "v1.<type>",
//! created: <RFC 3339>, related_object: {id, type, url}}` and no object. The shapes are
//! stripe-python 16.1's `EventNotification` and `stripe.v2.core.Event`.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ApiError, ApiResult, Sim, not_found};

/// The thin twin's id: the snapshot's, marked, so the two never collide and either finds the
/// other.
pub(super) fn thin_id(snapshot_id: &str) -> String {
    format!("evt_thin_{}", snapshot_id.trim_start_matches("evt_"))
}

pub(super) fn rfc3339(unix: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// Where an object is read, by its `object`: `checkout.session` at `/v1/checkout/sessions/…`.
fn url_of(object: &str, id: &str) -> String {
    format!("/v1/{}s/{id}", object.replace('.', "/"))
}

/// Whether an event is thin only: Stripe has no snapshot form of it (such as
/// `v1.billing.meter.error_report_triggered`), so it reaches only thin destinations, and
/// `/v1/events` does not show it. It is kept with the snapshots, in their order, in the same
/// shape (its related object in `data.object`) plus the `data` of its v2 event.
pub fn thin_only(event: &Value) -> bool {
    event["_simulated_thin_only"] == true
}

/// The notification Stripe pushes to a thin destination.
pub fn notification(snapshot: &Value) -> Value {
    let object = &snapshot["data"]["object"];
    let (id, kind) = (
        object["id"].as_str().unwrap_or_default(),
        object["object"].as_str().unwrap_or_default(),
    );
    json!({
        "id": thin_id(snapshot["id"].as_str().unwrap_or_default()),
        "object": "v2.core.event",
        "type": format!("v1.{}", snapshot["type"].as_str().unwrap_or_default()),
        "created": rfc3339(snapshot["created"].as_i64().unwrap_or_default()),
        "livemode": snapshot["livemode"],
        "context": null,
        "reason": null,
        "related_object": {"id": id, "type": kind, "url": url_of(kind, id)},
    })
}

/// The event as `GET /v2/core/events` shows it: the notification plus what only the API has
/// (a thin-only event's `data`, and no snapshot event).
fn listed(snapshot: &Value) -> Value {
    let mut event = notification(snapshot);
    event["changes"] = Value::Null;
    if thin_only(snapshot) {
        event["snapshot_event"] = Value::Null;
        event["data"] = snapshot["_simulated_thin_data"].clone();
    } else {
        event["snapshot_event"] = snapshot["id"].clone();
    }
    event
}

/// The query parameters `GET /v2/core/events` takes (stripe-python 16.1's `EventListParams`,
/// and `page`, the token of a `next_page_url`).
const LIST_PARAMS: [&str; 5] = ["created", "limit", "object_id", "types", "page"];

impl Sim {
    pub(super) fn thin_event(&self, id: &str) -> ApiResult {
        self.events
            .iter()
            .find(|e| thin_id(e["id"].as_str().unwrap_or_default()) == id)
            .map(|e| (listed(e), Vec::new()))
            .ok_or_else(|| not_found("v2.core.event", id))
    }

    /// Newest first, `limit` per page; `created[gte]` is an RFC 3339 time, as in v2.
    pub(super) fn list_thin_events(&self, query: &Value) -> ApiResult {
        if let Some(unknown) = query
            .as_object()
            .and_then(|params| params.keys().find(|key| !LIST_PARAMS.contains(&key.as_str())))
        {
            return Err(ApiError::invalid(format!("unknown query parameter {unknown}")).with_param(unknown.clone()));
        }
        let since = match query["created"]["gte"].as_str() {
            Some(text) => OffsetDateTime::parse(text, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|_| ApiError::invalid("created[gte] must be an RFC 3339 time").with_param("created[gte]"))?,
            None => i64::MIN,
        };
        let types: Vec<&str> = match &query["types"] {
            Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
            Value::Object(indexed) => indexed.values().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let limit = query["limit"]
            .as_str()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(20)
            .clamp(1, 100);
        let matching = self
            .events
            .iter()
            .rev()
            .filter(|e| e["created"].as_i64().unwrap_or(0) >= since)
            .filter(|e| {
                types.is_empty()
                    || types
                        .iter()
                        .any(|t| t.strip_prefix("v1.").is_some_and(|t| e["type"] == *t))
            });
        let candidates: Vec<&Value> = match query["page"].as_str() {
            Some(after) => matching
                .skip_while(|e| thin_id(e["id"].as_str().unwrap_or_default()) != after)
                .skip(1)
                .collect(),
            None => matching.collect(),
        };
        let page: Vec<Value> = candidates.iter().take(limit).map(|e| listed(e)).collect();
        let next_page_url = match (candidates.len() > limit, page.last()) {
            (true, Some(last)) => {
                let mut url =
                    url::Url::parse("http://sim/v2/core/events").map_err(|e| ApiError::invalid(e.to_string()))?;
                {
                    let mut pairs = url.query_pairs_mut();
                    pairs.append_pair("page", last["id"].as_str().unwrap_or_default());
                    pairs.append_pair("limit", &limit.to_string());
                    if let Some(gte) = query["created"]["gte"].as_str() {
                        pairs.append_pair("created[gte]", gte);
                    }
                    for (index, t) in types.iter().enumerate() {
                        pairs.append_pair(&format!("types[{index}]"), t);
                    }
                }
                json!(format!("{}?{}", url.path(), url.query().unwrap_or_default()))
            }
            _ => Value::Null,
        };
        Ok((
            json!({"data": page, "next_page_url": next_page_url, "previous_page_url": null}),
            Vec::new(),
        ))
    }
}
