//! Webhook endpoints (`/v1/webhook_endpoints`) and event destinations
//! (`/v2/core/event_destinations`): what `billing setup` creates and `billing doctor` reads.
//!
//! As with Stripe (https://docs.stripe.com/api/webhook_endpoints): the signing `secret` is in
//! the answer to the create call only; an update may change `url`, `enabled_events`,
//! `disabled`, `description` and `metadata` but not `api_version`, which is fixed at creation;
//! a deleted endpoint is gone (404). Events then reach every enabled endpoint whose
//! `enabled_events` names their type (or `*`), signed with that endpoint's secret and rendered
//! at its `api_version` (the simulator renders only the pinned shape, but sets the field, so a
//! receiver can see a mismatch).

use serde_json::{Value, json};

use super::{ApiError, ApiResult, Sim, found, not_found, page, public, text};

/// Where a registered endpoint wants events, as the delivery loop needs it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub url: String,
    pub secret: String,
    pub api_version: String,
}

fn event_names(params: &Value) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = params["enabled_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    if names.is_empty() {
        return Err(ApiError::invalid("enabled_events must name at least one event type").with_param("enabled_events"));
    }
    Ok(names)
}

/// Stripe refuses an endpoint URL that is not an absolute http(s) URL.
fn endpoint_url(value: &Value) -> Result<String, ApiError> {
    let raw = text(value).unwrap_or_default();
    match url::Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(raw),
        _ => Err(ApiError::invalid(format!("Invalid URL: {raw}")).with_param("url")),
    }
}

fn flag(value: &Value) -> Option<bool> {
    match value.as_str() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

fn listens_to(enabled: &Value, event_type: &str) -> bool {
    enabled
        .as_array()
        .into_iter()
        .flatten()
        .any(|name| name == "*" || name == event_type)
}

impl Sim {
    pub(super) fn create_webhook_endpoint(&mut self, params: &Value) -> ApiResult {
        let url = endpoint_url(&params["url"])?;
        let events = event_names(params)?;
        let id = self.id("we");
        let secret = format!(
            "whsec_{}",
            std::iter::repeat_with(fastrand::alphanumeric)
                .take(32)
                .collect::<String>()
        );
        let endpoint = json!({
            "id": id,
            "object": "webhook_endpoint",
            "api_version": params["api_version"],
            "application": null,
            "created": self.now(),
            "description": params["description"],
            "enabled_events": events,
            "livemode": false,
            "metadata": params.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "status": "enabled",
            "url": url,
            "_simulated_secret": secret,
        });
        self.webhook_endpoints.insert(id, endpoint.clone());
        let mut answer = public(&endpoint);
        answer["secret"] = json!(secret);
        Ok((answer, Vec::new()))
    }

    pub(super) fn list_webhook_endpoints(&self, query: &Value) -> ApiResult {
        let all: Vec<&Value> = self.webhook_endpoints.values().collect();
        let list = page(
            all,
            query,
            "/v1/webhook_endpoints",
            &self.webhook_endpoints,
            "webhook endpoint",
        )?;
        Ok((list, Vec::new()))
    }

    pub(super) fn webhook_endpoint(&self, id: &str) -> ApiResult {
        found(&self.webhook_endpoints, "webhook endpoint", id)
    }

    pub(super) fn update_webhook_endpoint(&mut self, id: &str, params: &Value) -> ApiResult {
        let url = params.get("url").map(endpoint_url).transpose()?;
        let events = params.get("enabled_events").map(|_| event_names(params)).transpose()?;
        let endpoint = self
            .webhook_endpoints
            .get_mut(id)
            .ok_or_else(|| not_found("webhook endpoint", id))?;
        if let Some(url) = url {
            endpoint["url"] = json!(url);
        }
        if let Some(events) = events {
            endpoint["enabled_events"] = json!(events);
        }
        if let Some(disabled) = flag(&params["disabled"]) {
            endpoint["status"] = json!(if disabled { "disabled" } else { "enabled" });
        }
        for field in ["description", "metadata"] {
            if let Some(value) = params.get(field) {
                endpoint[field] = value.clone();
            }
        }
        Ok((public(endpoint), Vec::new()))
    }

    pub(super) fn delete_webhook_endpoint(&mut self, id: &str) -> ApiResult {
        self.webhook_endpoints
            .remove(id)
            .ok_or_else(|| not_found("webhook endpoint", id))?;
        Ok((
            json!({"id": id, "object": "webhook_endpoint", "deleted": true}),
            Vec::new(),
        ))
    }

    /// The enabled endpoints that take an event of this type.
    pub fn endpoints_for(&self, event_type: &str) -> Vec<Registered> {
        self.webhook_endpoints
            .values()
            .filter(|endpoint| endpoint["status"] == "enabled" && listens_to(&endpoint["enabled_events"], event_type))
            .map(|endpoint| Registered {
                url: text(&endpoint["url"]).unwrap_or_default(),
                secret: text(&endpoint["_simulated_secret"]).unwrap_or_default(),
                api_version: text(&endpoint["api_version"]).unwrap_or_else(|| shared::stripe::API_VERSION.to_owned()),
            })
            .collect()
    }

    /// `POST /v2/core/event_destinations` for `type=amazon_eventbridge`, the one type this
    /// system consumes besides webhooks (stripe-python 16.1.0,
    /// `stripe/v2/core/_event_destination.py`): the partner event source is `pending` until
    /// the AWS account associates it with a bus.
    pub(super) fn create_event_destination(&mut self, params: &Value) -> ApiResult {
        known_only(params, DESTINATION_CREATE_PARAMS)?;
        let name = text(&params["name"]).ok_or_else(|| missing("name"))?;
        let kind = text(&params["type"]).ok_or_else(|| missing("type"))?;
        if kind != "amazon_eventbridge" {
            return Err(ApiError::invalid(format!(
                "The simulator offers only amazon_eventbridge destinations, not {kind}"
            ))
            .with_param("type"));
        }
        let payload = text(&params["event_payload"]).ok_or_else(|| missing("event_payload"))?;
        if payload != "snapshot" && payload != "thin" {
            return Err(ApiError::invalid(format!("Invalid event_payload: {payload}")).with_param("event_payload"));
        }
        let events = event_names(params)?;
        let account = text(&params["amazon_eventbridge"]["aws_account_id"])
            .ok_or_else(|| missing("amazon_eventbridge.aws_account_id"))?;
        let region = text(&params["amazon_eventbridge"]["aws_region"])
            .ok_or_else(|| missing("amazon_eventbridge.aws_region"))?;
        let id = self.id("ed_test");
        let created = iso8601(self.now());
        let destination = json!({
            "id": id,
            "object": "v2.core.event_destination",
            "amazon_eventbridge": {
                "aws_account_id": account,
                "aws_event_source_arn": format!("arn:aws:events:{region}::event-source/aws.partner/stripe.com/{id}"),
                "aws_event_source_status": "pending",
            },
            "created": created,
            // A v2 destination's description is a string, empty when none was given.
            "description": params.get("description").cloned().unwrap_or_else(|| json!("")),
            "enabled_events": events,
            "event_payload": payload,
            "events_from": params.get("events_from").cloned().unwrap_or_else(|| json!(["self"])),
            "livemode": false,
            "metadata": params.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "name": name,
            "snapshot_api_version": if payload == "snapshot" {
                params.get("snapshot_api_version").cloned().unwrap_or_else(|| json!(shared::stripe::API_VERSION))
            } else {
                Value::Null
            },
            "status": "enabled",
            "status_details": null,
            "type": "amazon_eventbridge",
            "updated": created,
            "webhook_endpoint": null,
        });
        self.event_destinations.insert(id, destination.clone());
        Ok((destination, Vec::new()))
    }

    /// A v2 list: `data` and page URLs, all destinations on one page.
    pub(super) fn list_event_destinations(&self) -> ApiResult {
        let data: Vec<Value> = self.event_destinations.values().cloned().collect();
        Ok((
            json!({"data": data, "next_page_url": null, "previous_page_url": null}),
            Vec::new(),
        ))
    }

    pub(super) fn event_destination(&self, id: &str) -> ApiResult {
        found(&self.event_destinations, "event destination", id)
    }

    /// An update may change `enabled_events`, `name`, `description` and `metadata`; the payload
    /// and its API version are fixed at creation (`EventDestinationUpdateParams`).
    pub(super) fn update_event_destination(&mut self, id: &str, params: &Value) -> ApiResult {
        known_only(params, DESTINATION_UPDATE_PARAMS)?;
        let events = params.get("enabled_events").map(|_| event_names(params)).transpose()?;
        let now = iso8601(self.now());
        let destination = self
            .event_destinations
            .get_mut(id)
            .ok_or_else(|| not_found("event destination", id))?;
        if let Some(events) = events {
            destination["enabled_events"] = json!(events);
        }
        for field in ["name", "description", "metadata"] {
            if let Some(value) = params.get(field) {
                destination[field] = value.clone();
            }
        }
        destination["updated"] = json!(now);
        Ok((destination.clone(), Vec::new()))
    }

    pub(super) fn delete_event_destination(&mut self, id: &str) -> ApiResult {
        self.event_destinations
            .remove(id)
            .ok_or_else(|| not_found("event destination", id))?;
        Ok((
            json!({"id": id, "object": "v2.core.event_destination", "deleted": true}),
            Vec::new(),
        ))
    }
}

/// The parameters of `EventDestinationCreateParams` and `EventDestinationUpdateParams`
/// (stripe-python 16.1.0, `stripe/params/v2/core/`); the 2023 spec has no v2 API to check them.
const DESTINATION_CREATE_PARAMS: &[&str] = &[
    "amazon_eventbridge",
    "azure_event_grid",
    "description",
    "enabled_events",
    "event_payload",
    "events_from",
    "include",
    "metadata",
    "name",
    "snapshot_api_version",
    "type",
    "webhook_endpoint",
];
const DESTINATION_UPDATE_PARAMS: &[&str] = &[
    "description",
    "enabled_events",
    "include",
    "metadata",
    "name",
    "webhook_endpoint",
];

fn known_only(params: &Value, known: &[&str]) -> Result<(), ApiError> {
    match params
        .as_object()
        .and_then(|map| map.keys().find(|key| !known.contains(&key.as_str())))
    {
        Some(unknown) => Err(ApiError::invalid(format!("Received unknown parameter: {unknown}"))
            .with_code("parameter_unknown")
            .with_param(unknown.clone())),
        None => Ok(()),
    }
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(format!("Missing required param: {param}."))
        .with_code("parameter_missing")
        .with_param(param)
}

fn iso8601(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
