//! How Stripe reaches a deployment: webhook endpoints (`/v1/webhook_endpoints`) and event
//! destinations (`/v2/core/event_destinations`), which `billing setup` creates and
//! `billing doctor` checks. Field names and the parameters sent follow stripe-python 16.1.0
//! (`stripe/_webhook_endpoint.py`, `stripe/v2/core/_event_destination.py`).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{StripeClient, StripeError, path_id};

/// A webhook endpoint as Stripe shows it. `secret` is only in the answer to the create call.
#[derive(Debug, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub enabled_events: Vec<String>,
    /// `None`: events are rendered at the account's default version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub secret: Option<SecretString>,
}

impl WebhookEndpoint {
    pub fn enabled(&self) -> bool {
        self.status == "enabled"
    }
}

/// What an endpoint should be: where, which events, and the metadata that marks it as a
/// deployment's own.
#[derive(Debug, Clone)]
pub struct EndpointSpec<'a> {
    pub url: &'a str,
    pub enabled_events: &'a [String],
    pub api_version: &'a str,
    pub description: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
}

/// An Amazon EventBridge event destination as Stripe shows it.
#[derive(Debug, Deserialize)]
pub struct EventDestination {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub enabled_events: Vec<String>,
    /// `snapshot` or `thin`.
    pub event_payload: String,
    #[serde(default)]
    pub snapshot_api_version: Option<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub amazon_eventbridge: Option<AmazonEventBridge>,
}

#[derive(Debug, Deserialize)]
pub struct AmazonEventBridge {
    pub aws_account_id: String,
    /// `arn:aws:events:<region>::event-source/aws.partner/stripe.com/<id>`.
    pub aws_event_source_arn: String,
    /// `active`, `pending`, `deleted` or `unknown`.
    pub aws_event_source_status: String,
}

impl AmazonEventBridge {
    /// The partner event source's name, the part of its ARN after `event-source/`.
    pub fn event_source_name(&self) -> Option<&str> {
        self.aws_event_source_arn
            .split_once("event-source/")
            .map(|(_, name)| name)
    }
}

/// What a destination should be.
#[derive(Debug, Clone)]
pub struct DestinationSpec<'a> {
    pub name: &'a str,
    pub enabled_events: &'a [String],
    /// `snapshot` or `thin`.
    pub event_payload: &'a str,
    pub api_version: &'a str,
    pub aws_account_id: &'a str,
    pub aws_region: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct V2Page<T> {
    data: Vec<T>,
    #[serde(default)]
    next_page_url: Option<String>,
}

fn endpoint_params(spec: &EndpointSpec<'_>) -> Value {
    json!({
        "url": spec.url,
        "enabled_events": spec.enabled_events,
        "description": spec.description,
        "metadata": spec.metadata,
    })
}

impl StripeClient {
    /// Every webhook endpoint of the account, all pages.
    pub async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StripeError> {
        self.list_all("/v1/webhook_endpoints", &[], |e: &WebhookEndpoint| e.id.clone())
            .await
    }

    /// Creates an endpoint; the answer carries its signing secret, which no later call shows.
    /// The idempotency key is the caller's, so a retried create makes one endpoint.
    pub async fn create_webhook_endpoint(
        &self,
        spec: &EndpointSpec<'_>,
        idempotency_key: &str,
    ) -> Result<WebhookEndpoint, StripeError> {
        let mut params = endpoint_params(spec);
        params["api_version"] = json!(spec.api_version);
        self.post("/v1/webhook_endpoints", &params, Some(idempotency_key)).await
    }

    /// Sets the URL, events and description and enables the endpoint; its API version cannot
    /// change (Stripe's update takes no `api_version`).
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        spec: &EndpointSpec<'_>,
    ) -> Result<WebhookEndpoint, StripeError> {
        let mut params = endpoint_params(spec);
        params["disabled"] = json!(false);
        self.post(&format!("/v1/webhook_endpoints/{}", path_id(id)?), &params, None)
            .await
    }

    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<Value, StripeError> {
        self.delete(&format!("/v1/webhook_endpoints/{}", path_id(id)?), None)
            .await
    }

    /// Every event destination of the account, following `next_page_url`.
    pub async fn list_event_destinations(&self) -> Result<Vec<EventDestination>, StripeError> {
        let mut all = Vec::new();
        let mut page: V2Page<EventDestination> = self.get(DESTINATIONS_PATH, &[]).await?;
        loop {
            all.extend(page.data);
            let Some(next) = page.next_page_url.filter(|next| next.starts_with(DESTINATIONS_PATH)) else {
                return Ok(all);
            };
            let (path, query) = next.split_once('?').unwrap_or((&next, ""));
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            let query: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            page = self.get(path, &query).await?;
        }
    }

    pub async fn create_event_destination(
        &self,
        spec: &DestinationSpec<'_>,
        idempotency_key: &str,
    ) -> Result<EventDestination, StripeError> {
        let mut params = json!({
            "name": spec.name,
            "type": "amazon_eventbridge",
            "amazon_eventbridge": {"aws_account_id": spec.aws_account_id, "aws_region": spec.aws_region},
            "enabled_events": spec.enabled_events,
            "event_payload": spec.event_payload,
            "metadata": spec.metadata,
        });
        if spec.event_payload == "snapshot" {
            params["snapshot_api_version"] = json!(spec.api_version);
        }
        self.post_json(DESTINATIONS_PATH, &params, Some(idempotency_key)).await
    }

    /// Sets the events and name; payload, API version and AWS account are fixed at creation.
    pub async fn update_event_destination(
        &self,
        id: &str,
        spec: &DestinationSpec<'_>,
    ) -> Result<EventDestination, StripeError> {
        let params = json!({"name": spec.name, "enabled_events": spec.enabled_events});
        self.post_json(&format!("{DESTINATIONS_PATH}/{}", path_id(id)?), &params, None)
            .await
    }

    pub async fn delete_event_destination(&self, id: &str) -> Result<Value, StripeError> {
        self.delete(&format!("{DESTINATIONS_PATH}/{}", path_id(id)?), None)
            .await
    }
}

const DESTINATIONS_PATH: &str = "/v2/core/event_destinations";
