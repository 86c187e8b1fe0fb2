//! `billing setup`: makes Stripe's side match the stack — one webhook endpoint at the
//! stack's URL with the catalogue's events and the pinned API version, its signing secret in
//! the stack's secret — or, with `--delivery eventbridge`, one event destination. Idempotent:
//! it plans from what Stripe and Secrets Manager hold now, and a run with nothing to change
//! changes nothing and says so.

use std::collections::BTreeSet;

use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::stripe::API_VERSION;
use shared::stripe::wiring::{DestinationSpec, EndpointSpec, EventDestination, WebhookEndpoint};

use super::{STACK_TAG, Wiring, WiringError, catalogue, stripe_error, tag};
use crate::ops::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    Webhook,
    Eventbridge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    Snapshot,
    Thin,
}

impl Payload {
    fn name(self) -> &'static str {
        match self {
            Payload::Snapshot => "snapshot",
            Payload::Thin => "thin",
        }
    }
}

/// One change to make, in the order made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A new endpoint at the pinned version (an endpoint's version cannot change).
    CreateEndpoint,
    /// The new endpoint's secret into the stack's secret, the replaced one kept beside it.
    StoreSecret,
    UpdateEndpoint {
        id: String,
        changes: Vec<String>,
    },
    DeleteEndpoint {
        id: String,
        reason: String,
    },
    CreateDestination,
    UpdateDestination {
        id: String,
        changes: Vec<String>,
    },
    DeleteDestination {
        id: String,
        reason: String,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::CreateEndpoint => format!("create a webhook endpoint at API version {API_VERSION}"),
            Step::StoreSecret => {
                "store its signing secret in the stack's secret (the replaced one kept beside it)".into()
            }
            Step::UpdateEndpoint { id, changes } => format!("update {id}: {}", changes.join("; ")),
            Step::DeleteEndpoint { id, reason } => format!("delete {id}: {reason}"),
            Step::CreateDestination => "create an Amazon EventBridge event destination".into(),
            Step::UpdateDestination { id, changes } => format!("update {id}: {}", changes.join("; ")),
            Step::DeleteDestination { id, reason } => format!("delete {id}: {reason}"),
        }
    }
}

/// What an existing endpoint is, as the plan compares it.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: BTreeSet<String>,
    pub api_version: Option<String>,
    pub enabled: bool,
    pub tagged: bool,
}

impl EndpointView {
    fn of(endpoint: &WebhookEndpoint, stack: &str) -> Self {
        Self {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.enabled_events.iter().cloned().collect(),
            api_version: endpoint.api_version.clone(),
            enabled: endpoint.enabled(),
            tagged: endpoint.metadata.get(STACK_TAG).is_some_and(|s| s == stack),
        }
    }
}

/// How the endpoint differs from the wanted one, one phrase per difference.
pub fn differences(view: &EndpointView, url: &str, events: &BTreeSet<String>) -> Vec<String> {
    let mut changes = Vec::new();
    if view.url != url {
        changes.push(format!("URL {} → {url}", view.url));
    }
    let missing: Vec<&str> = events.difference(&view.events).map(String::as_str).collect();
    let extra: Vec<&str> = view.events.difference(events).map(String::as_str).collect();
    if !missing.is_empty() {
        changes.push(format!("add events {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        changes.push(format!("remove events {}", extra.join(", ")));
    }
    if !view.enabled {
        changes.push("enable it".into());
    }
    changes
}

/// The steps from what exists to one endpoint as wanted. The stack's endpoints are those it
/// tagged and any at its URL. One of them is kept only if its secret is the stored one (the
/// secret names it) and its version is the pin; every other one is deleted, after the new
/// endpoint's secret is stored.
pub fn plan_webhook(
    url: &str,
    events: &BTreeSet<String>,
    existing: &[EndpointView],
    recorded: Option<&str>,
) -> Vec<Step> {
    let ours: Vec<&EndpointView> = existing.iter().filter(|e| e.tagged || e.url == url).collect();
    let kept = ours
        .iter()
        .find(|e| Some(e.id.as_str()) == recorded && e.api_version.as_deref() == Some(API_VERSION));
    let mut steps = Vec::new();
    match kept {
        Some(kept) => {
            let changes = differences(kept, url, events);
            if !changes.is_empty() {
                steps.push(Step::UpdateEndpoint {
                    id: kept.id.clone(),
                    changes,
                });
            }
        }
        None => {
            steps.push(Step::CreateEndpoint);
            steps.push(Step::StoreSecret);
        }
    }
    for other in ours.iter().filter(|e| kept.is_none_or(|k| k.id != e.id)) {
        let reason = match other.api_version.as_deref() {
            Some(API_VERSION) => "its signing secret is not the stored one".to_owned(),
            Some(version) => format!("API version {version}, not {API_VERSION} (an endpoint's version cannot change)"),
            None => format!("the account's default API version, not {API_VERSION}"),
        };
        steps.push(Step::DeleteEndpoint {
            id: other.id.clone(),
            reason,
        });
    }
    steps
}

#[derive(Debug, Serialize)]
struct Report {
    stack: String,
    delivery: &'static str,
    dry_run: bool,
    changed: bool,
    steps: Vec<Step>,
    /// The endpoint or destination the stack uses after the run.
    id: Option<String>,
    /// What the operator does next, if anything.
    next: Option<String>,
}

pub async fn setup(
    wiring: &Wiring,
    delivery: Delivery,
    payload: Payload,
    dry_run: bool,
    output: Output,
) -> Result<(), WiringError> {
    let report = match delivery {
        Delivery::Webhook => setup_webhook(wiring, dry_run).await?,
        Delivery::Eventbridge => setup_destination(wiring, payload, dry_run).await?,
    };
    let mut human = format!("Stack {} ({} delivery):\n", report.stack, report.delivery);
    if report.steps.is_empty() {
        human.push_str(&format!(
            "  nothing to change: {} is as the stack needs it\n",
            report.id.as_deref().unwrap_or("Stripe")
        ));
    }
    for step in &report.steps {
        human.push_str(&format!("  {}\n", step.describe()));
    }
    if dry_run && !report.steps.is_empty() {
        human.push_str("dry run: nothing changed\n");
    } else if report.changed {
        human.push_str(&format!("done: {} changes\n", report.steps.len()));
    }
    if let Some(next) = &report.next {
        human.push_str(&format!("next: {next}\n"));
    }
    output
        .emit(human.trim_end(), &report)
        .map_err(|error| WiringError::Usage(error.to_string()))
}

/// The key of the create call: a retried run after a failure between creating the endpoint
/// and storing its secret gets Stripe's stored answer — the same endpoint and secret —
/// instead of a second endpoint (Stripe keeps idempotent answers for 24 hours).
fn create_key(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\n").as_bytes());
    format!("billing-setup-{}", &hex::encode(digest)[..32])
}

async fn setup_webhook(wiring: &Wiring, dry_run: bool) -> Result<Report, WiringError> {
    let stack = wiring.outputs.stack.clone();
    let url = wiring
        .outputs
        .require("WebhookUrl", " (is the stack deployed with Delivery=eventbridge?)")?
        .to_owned();
    let arn = wiring
        .outputs
        .require(
            "StripeWebhookSecretArn",
            " (is the stack deployed with Delivery=eventbridge?)",
        )?
        .to_owned();
    let events = catalogue();
    let wanted: BTreeSet<String> = events.iter().cloned().collect();
    let existing = wiring.stripe.list_webhook_endpoints().await.map_err(stripe_error(
        "listing webhook endpoints (the key needs Webhook Endpoints: Write)",
    ))?;
    let views: Vec<EndpointView> = existing.iter().map(|e| EndpointView::of(e, &stack)).collect();
    let mut stored = wiring.read_signing(&arn).await?;
    let recorded = stored.endpoint().map(str::to_owned);
    let steps = plan_webhook(&url, &wanted, &views, recorded.as_deref());
    let mut id = recorded.filter(|r| views.iter().any(|v| &v.id == r));
    if dry_run || steps.is_empty() {
        return Ok(Report {
            stack,
            delivery: "webhook",
            dry_run,
            changed: false,
            steps,
            id,
            next: None,
        });
    }
    let metadata = tag(&stack);
    let description = format!("Stripe billing backend, stack {stack}");
    let spec = EndpointSpec {
        url: &url,
        enabled_events: &events,
        api_version: API_VERSION,
        description: &description,
        metadata: &metadata,
    };
    let mut created: Option<(String, SecretString)> = None;
    for step in &steps {
        match step {
            Step::CreateEndpoint => {
                let key = create_key(&[
                    &stack,
                    &url,
                    &events.join(","),
                    API_VERSION,
                    id.as_deref().unwrap_or("-"),
                ]);
                let endpoint = wiring
                    .stripe
                    .create_webhook_endpoint(&spec, &key)
                    .await
                    .map_err(stripe_error("creating the webhook endpoint"))?;
                let secret = endpoint.secret.ok_or_else(|| {
                    WiringError::Usage(format!(
                        "Stripe created {} without a signing secret in its answer",
                        endpoint.id
                    ))
                })?;
                created = Some((endpoint.id, secret));
            }
            Step::StoreSecret => {
                if let Some((endpoint, secret)) = &created {
                    stored.rotate_to(endpoint, secret);
                    wiring.write_signing(&arn, &stored).await?;
                    id = Some(endpoint.clone());
                }
            }
            Step::UpdateEndpoint { id: endpoint, .. } => {
                wiring
                    .stripe
                    .update_webhook_endpoint(endpoint, &spec)
                    .await
                    .map_err(stripe_error(format!("updating {endpoint}")))?;
            }
            Step::DeleteEndpoint { id: endpoint, .. } => {
                // A create replayed from its idempotency key returns an endpoint the listing
                // already showed: never delete the one just stored.
                if id.as_deref() == Some(endpoint.as_str()) {
                    continue;
                }
                wiring
                    .stripe
                    .delete_webhook_endpoint(endpoint)
                    .await
                    .map_err(stripe_error(format!("deleting {endpoint}")))?;
            }
            Step::CreateDestination | Step::UpdateDestination { .. } | Step::DeleteDestination { .. } => {}
        }
    }
    Ok(Report {
        stack,
        delivery: "webhook",
        dry_run,
        changed: true,
        steps,
        id,
        next: Some("billing doctor".into()),
    })
}

/// A destination as the plan compares it.
fn destination_differences(destination: &EventDestination, name: &str, events: &BTreeSet<String>) -> Vec<String> {
    let have: BTreeSet<String> = destination.enabled_events.iter().cloned().collect();
    let mut changes = Vec::new();
    if destination.name != name {
        changes.push(format!("name {} → {name}", destination.name));
    }
    let missing: Vec<&str> = events.difference(&have).map(String::as_str).collect();
    let extra: Vec<&str> = have.difference(events).map(String::as_str).collect();
    if !missing.is_empty() {
        changes.push(format!("add events {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        changes.push(format!("remove events {}", extra.join(", ")));
    }
    changes
}

fn source_of(destination: &EventDestination) -> Option<&str> {
    destination.amazon_eventbridge.as_ref()?.event_source_name()
}

/// Whether a destination delivers what the stack reads: the payload, the pinned version for
/// snapshots, and the stack's AWS account.
fn destination_fits(destination: &EventDestination, payload: Payload, account: &str) -> bool {
    destination.kind == "amazon_eventbridge"
        && destination.event_payload == payload.name()
        && (payload == Payload::Thin || destination.snapshot_api_version.as_deref() == Some(API_VERSION))
        && destination
            .amazon_eventbridge
            .as_ref()
            .is_some_and(|aws| aws.aws_account_id == account)
}

async fn setup_destination(wiring: &Wiring, payload: Payload, dry_run: bool) -> Result<Report, WiringError> {
    let stack = wiring.outputs.stack.clone();
    let account = wiring.outputs.require("AwsAccountId", "")?.to_owned();
    let region = wiring.outputs.require("AwsRegion", "")?.to_owned();
    // The bus the stack reads is named after the partner source it was deployed with.
    let in_use = wiring.outputs.get("EventBusName").map(str::to_owned);
    let events: Vec<String> = match payload {
        Payload::Snapshot => catalogue(),
        Payload::Thin => {
            let mut thin: Vec<String> = shared::routing::handled_thin_event_types().collect();
            thin.sort();
            thin
        }
    };
    let wanted: BTreeSet<String> = events.iter().cloned().collect();
    let name = format!("{stack}-billing");
    let existing = wiring
        .stripe
        .list_event_destinations()
        .await
        .map_err(stripe_error("listing event destinations"))?;
    let ours: Vec<&EventDestination> = existing
        .iter()
        .filter(|d| d.metadata.get(STACK_TAG).is_some_and(|s| s == &stack))
        .collect();
    // Prefer the one the stack already reads, then any that fits.
    let kept = ours
        .iter()
        .filter(|d| destination_fits(d, payload, &account))
        .max_by_key(|d| in_use.is_some() && source_of(d) == in_use.as_deref())
        .copied();
    let mut steps = Vec::new();
    match kept {
        Some(kept) => {
            let changes = destination_differences(kept, &name, &wanted);
            if !changes.is_empty() {
                steps.push(Step::UpdateDestination {
                    id: kept.id.clone(),
                    changes,
                });
            }
        }
        None => steps.push(Step::CreateDestination),
    }
    // Deleting a destination deletes its partner source: never the one the bus uses.
    for other in ours.iter().filter(|d| kept.is_none_or(|k| k.id != d.id)) {
        if in_use.is_some() && source_of(other) == in_use.as_deref() {
            continue;
        }
        steps.push(Step::DeleteDestination {
            id: other.id.clone(),
            reason: "a destination of this stack that it does not read".into(),
        });
    }
    let mut id = kept.map(|d| d.id.clone());
    let mut source = kept.and_then(source_of).map(str::to_owned);
    let changed = !dry_run && !steps.is_empty();
    if changed {
        let metadata = tag(&stack);
        let spec = DestinationSpec {
            name: &name,
            enabled_events: &events,
            event_payload: payload.name(),
            api_version: API_VERSION,
            aws_account_id: &account,
            aws_region: &region,
            metadata: &metadata,
        };
        for step in &steps {
            match step {
                Step::CreateDestination => {
                    let key = create_key(&[
                        &stack,
                        &account,
                        &region,
                        payload.name(),
                        &events.join(","),
                        API_VERSION,
                    ]);
                    let created = wiring
                        .stripe
                        .create_event_destination(&spec, &key)
                        .await
                        .map_err(stripe_error("creating the event destination"))?;
                    source = source_of(&created).map(str::to_owned);
                    id = Some(created.id);
                }
                Step::UpdateDestination { id: destination, .. } => {
                    wiring
                        .stripe
                        .update_event_destination(destination, &spec)
                        .await
                        .map_err(stripe_error(format!("updating {destination}")))?;
                }
                Step::DeleteDestination { id: destination, .. } => {
                    if id.as_deref() == Some(destination.as_str()) {
                        continue;
                    }
                    wiring
                        .stripe
                        .delete_event_destination(destination)
                        .await
                        .map_err(stripe_error(format!("deleting {destination}")))?;
                }
                Step::CreateEndpoint
                | Step::StoreSecret
                | Step::UpdateEndpoint { .. }
                | Step::DeleteEndpoint { .. } => {}
            }
        }
    }
    let next = source.filter(|s| in_use.as_deref() != Some(s.as_str())).map(|s| {
        format!(
            "associate the partner event source within 7 days: sam deploy --parameter-overrides Delivery=eventbridge StripePartnerEventSource={s} EventPayload={}",
            payload.name()
        )
    });
    Ok(Report {
        stack,
        delivery: "eventbridge",
        dry_run,
        changed,
        steps,
        id,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://api.example/webhooks/stripe";

    fn events(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn endpoint(id: &str, url: &str, version: Option<&str>, names: &[&str]) -> EndpointView {
        EndpointView {
            id: id.into(),
            url: url.into(),
            events: events(names),
            api_version: version.map(str::to_owned),
            enabled: true,
            tagged: false,
        }
    }

    /// The decision table, written from Stripe's rules (an endpoint's secret is shown only at
    /// creation; its `api_version` cannot be updated): rows are (what exists, which endpoint
    /// the stored secret names) → the steps.
    #[test]
    fn the_plan_follows_stripes_rules_for_endpoints() {
        let wanted = events(&["invoice.paid", "customer.subscription.updated"]);
        let right = || {
            endpoint(
                "we_1",
                URL,
                Some(API_VERSION),
                &["invoice.paid", "customer.subscription.updated"],
            )
        };

        // Nothing yet: create, then store the secret.
        assert_eq!(
            plan_webhook(URL, &wanted, &[], None),
            vec![Step::CreateEndpoint, Step::StoreSecret]
        );
        // As wanted, and the stored secret is its own: nothing.
        assert_eq!(plan_webhook(URL, &wanted, &[right()], Some("we_1")), vec![]);
        // Someone else's endpoint elsewhere is never touched.
        let foreign = endpoint("we_9", "https://other.example/hook", Some("2025-03-31.basil"), &["*"]);
        assert_eq!(plan_webhook(URL, &wanted, &[right(), foreign], Some("we_1")), vec![]);
        // Events drifted or the endpoint was disabled: update in place, secret unchanged.
        let mut drifted = endpoint("we_1", URL, Some(API_VERSION), &["invoice.paid", "charge.succeeded"]);
        drifted.enabled = false;
        assert_eq!(
            plan_webhook(URL, &wanted, &[drifted], Some("we_1")),
            vec![Step::UpdateEndpoint {
                id: "we_1".into(),
                changes: vec![
                    "add events customer.subscription.updated".into(),
                    "remove events charge.succeeded".into(),
                    "enable it".into()
                ],
            }]
        );
        // The stack's URL moved (a new API): the tagged endpoint follows it.
        let mut moved = right();
        moved.url = "https://old.example/webhooks/stripe".into();
        moved.tagged = true;
        assert_eq!(
            plan_webhook(URL, &wanted, &[moved], Some("we_1")),
            vec![Step::UpdateEndpoint {
                id: "we_1".into(),
                changes: vec![format!("URL https://old.example/webhooks/stripe → {URL}")],
            }]
        );
        // Wrong API version: a new endpoint, its secret stored, then the old one deleted.
        let old = endpoint(
            "we_1",
            URL,
            Some("2025-03-31.basil"),
            &["invoice.paid", "customer.subscription.updated"],
        );
        assert_eq!(
            plan_webhook(URL, &wanted, &[old], Some("we_1")),
            vec![
                Step::CreateEndpoint,
                Step::StoreSecret,
                Step::DeleteEndpoint {
                    id: "we_1".into(),
                    reason: format!(
                        "API version 2025-03-31.basil, not {API_VERSION} (an endpoint's version cannot change)"
                    ),
                },
            ]
        );
        // Right version, but the stored secret is not known to be its own (made by hand):
        // replaced, since a secret Stripe shows only once cannot be checked.
        assert_eq!(
            plan_webhook(URL, &wanted, &[right()], None),
            vec![
                Step::CreateEndpoint,
                Step::StoreSecret,
                Step::DeleteEndpoint {
                    id: "we_1".into(),
                    reason: "its signing secret is not the stored one".into()
                },
            ]
        );
        // Two at the URL: the stored one is kept, the duplicate deleted.
        let twin = endpoint(
            "we_2",
            URL,
            Some(API_VERSION),
            &["invoice.paid", "customer.subscription.updated"],
        );
        assert_eq!(
            plan_webhook(URL, &wanted, &[right(), twin], Some("we_1")),
            vec![Step::DeleteEndpoint {
                id: "we_2".into(),
                reason: "its signing secret is not the stored one".into()
            }]
        );
    }
}
