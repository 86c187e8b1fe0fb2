//! `billing doctor`: one table of checks against the live wiring, each OK, WARN or FAIL with
//! the fix. Exits non-zero when any check fails.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use shared::store::{BillingStore, LedgerState};
use shared::stripe::client::ThinEventsPage;
use shared::stripe::wiring::{EventDestination, WebhookEndpoint};
use shared::stripe::{API_VERSION, EventEnvelope};

use super::{STACK_TAG, StoredSigning, Wiring, WiringError, catalogue};
use crate::ops::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a WARN or FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// How old a reconcile cursor may be before it is worth a look: the default schedule is every
/// 15 minutes, so an hour is four missed runs.
const CURSOR_WARN_AFTER: i64 = 3_600;
/// A handled event older than this and not in the ledger was lost on the way (Stripe retries
/// a failed delivery within minutes at first).
const UNPROCESSED_FAIL_AFTER: i64 = 600;
/// How many of Stripe's newest events the ledger check looks at.
const RECENT_EVENTS: &str = "50";

#[derive(Debug, Serialize)]
struct Report {
    stack: String,
    ok: bool,
    checks: Vec<Check>,
}

pub async fn doctor(wiring: &Wiring, output: Output) -> Result<(), WiringError> {
    let mut checks = Vec::new();
    let webhook = wiring.outputs.get("WebhookUrl").map(str::to_owned);
    let bus = wiring.outputs.get("EventBusName").map(str::to_owned);
    if webhook.is_none() && bus.is_none() {
        checks.push(fail(
            "delivery",
            "the stack has neither a WebhookUrl nor an EventBusName output",
            "deploy the stack from infra/template.yaml (sam deploy)",
        ));
    }
    if let Some(url) = &webhook {
        webhook_checks(wiring, url, &mut checks).await;
    }
    if let Some(bus) = &bus {
        destination_checks(wiring, bus, &mut checks).await;
    }
    queue_checks(wiring, &mut checks).await;
    alarm_checks(wiring, &mut checks).await;
    store_checks(wiring, &mut checks).await;

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let total = checks.len();
    let mut human = format!("Stack {}\n", wiring.outputs.stack);
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in &checks {
        let status = match check.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        human.push_str(&format!("{status}  {:width$}  {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            human.push_str(&format!("      {:width$}  fix: {fix}\n", ""));
        }
    }
    let report = Report {
        stack: wiring.outputs.stack.clone(),
        ok: failed == 0,
        checks,
    };
    output
        .emit(human.trim_end(), &report)
        .map_err(|error| WiringError::Usage(error.to_string()))?;
    if failed > 0 {
        return Err(WiringError::ChecksFailed { failed, total });
    }
    Ok(())
}

/// The endpoint the stack uses: the one its stored secret names, else a tagged one, else
/// one at its URL.
fn our_endpoint<'a>(
    endpoints: &'a [WebhookEndpoint],
    url: &str,
    stack: &str,
    recorded: Option<&str>,
) -> Option<&'a WebhookEndpoint> {
    endpoints
        .iter()
        .find(|e| Some(e.id.as_str()) == recorded)
        .or_else(|| {
            endpoints
                .iter()
                .find(|e| e.metadata.get(STACK_TAG).is_some_and(|s| s == stack))
        })
        .or_else(|| endpoints.iter().find(|e| e.url == url))
}

fn event_set_check(name: &'static str, have: &[String], wanted: &[String], fix: &str) -> Check {
    let have: BTreeSet<&str> = have.iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    if have.contains("*") {
        return warn(
            name,
            "all events (*): every event costs a delivery and an SQS message it does not need",
            fix,
        );
    }
    let missing: Vec<&str> = wanted.difference(&have).copied().collect();
    let extra: Vec<&str> = have.difference(&wanted).copied().collect();
    match (missing.is_empty(), extra.is_empty()) {
        (true, true) => ok(name, format!("the catalogue's {} event types", wanted.len())),
        (true, false) => warn(name, format!("extra: {}", extra.join(", ")), fix),
        (false, true) => fail(name, format!("missing: {}", missing.join(", ")), fix),
        (false, false) => fail(
            name,
            format!("missing: {}; extra: {}", missing.join(", "), extra.join(", ")),
            fix,
        ),
    }
}

async fn webhook_checks(wiring: &Wiring, url: &str, checks: &mut Vec<Check>) {
    let stack = &wiring.outputs.stack;
    let stored = match wiring.outputs.get("StripeWebhookSecretArn") {
        Some(arn) => wiring.read_signing(arn).await.map(Some),
        None => Ok(None),
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            checks.push(fail(
                "signing secret",
                error.to_string(),
                "give this AWS identity secretsmanager:GetSecretValue on the stack's webhook secret",
            ));
            None
        }
    };
    let recorded = stored.as_ref().and_then(StoredSigning::endpoint);
    let endpoints = match wiring.stripe.list_webhook_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            checks.push(fail(
                "webhook endpoint",
                format!("Stripe refused listing webhook endpoints: {error}"),
                "run with STRIPE_SECRET_KEY set to a key that may read webhook endpoints",
            ));
            return;
        }
    };
    let Some(endpoint) = our_endpoint(&endpoints, url, stack, recorded) else {
        checks.push(fail("webhook endpoint", format!("none for {url}"), "billing setup"));
        return;
    };
    if endpoint.url != url {
        checks.push(fail(
            "webhook endpoint",
            format!("{} points at {}, not {url}", endpoint.id, endpoint.url),
            "billing setup",
        ));
    } else if !endpoint.enabled() {
        checks.push(fail(
            "webhook endpoint",
            format!("{} is disabled", endpoint.id),
            "billing setup",
        ));
    } else {
        checks.push(ok("webhook endpoint", format!("{} enabled at {url}", endpoint.id)));
    }
    checks.push(event_set_check(
        "endpoint events",
        &endpoint.enabled_events,
        &catalogue(),
        "billing setup",
    ));
    match endpoint.api_version.as_deref() {
        Some(API_VERSION) => checks.push(ok("endpoint API version", API_VERSION)),
        other => checks.push(fail(
            "endpoint API version",
            format!(
                "{}, not the pinned {API_VERSION}",
                other.unwrap_or("the account's default")
            ),
            "billing setup (a new endpoint at the pinned version; the old one is deleted after its secret is stored)",
        )),
    }
    checks.push(key_mode_check(wiring, endpoint.livemode).await);
    if let Some(stored) = &stored {
        checks.push(signature_check(url, stored, endpoint).await);
    }
}

/// Signs a ping the way Stripe signs a delivery, with the stored secret, and sends it to the
/// stack's webhook: a 2xx means the deployed receiver holds the same secret. The ping's type
/// is one no route takes, so nothing is enqueued.
async fn signature_check(url: &str, stored: &StoredSigning, endpoint: &WebhookEndpoint) -> Check {
    const NAME: &str = "signing secret";
    let secrets = stored.secrets();
    let Some(secret) = secrets.first() else {
        return fail(
            NAME,
            "the stack's webhook secret holds no whsec_ secret",
            "billing setup",
        );
    };
    let now = shared::unix_now();
    let ping = json!({
        "id": format!("evt_doctor_{}", uuid::Uuid::new_v4().simple()),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "type": "billing.doctor_ping",
        "livemode": endpoint.livemode,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"object": "doctor_ping"}},
    })
    .to_string();
    let header = shared::stripe::signature::sign(secret.expose_secret(), now, ping.as_bytes());
    let sent = reqwest::Client::new()
        .post(url)
        .header("Stripe-Signature", header)
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(ping)
        .send()
        .await;
    let named = match stored.endpoint() {
        Some(id) if id == endpoint.id => String::new(),
        Some(id) => format!("; but it is {id}'s secret, not {}'s", endpoint.id),
        None => "; which endpoint it belongs to is not recorded".to_owned(),
    };
    match sent {
        Ok(answer) if answer.status().is_success() && named.is_empty() => ok(
            NAME,
            format!(
                "a delivery signed with the stored secret is accepted ({})",
                answer.status()
            ),
        ),
        Ok(answer) if answer.status().is_success() => warn(
            NAME,
            format!("a delivery signed with the stored secret is accepted{named}"),
            "billing setup",
        ),
        Ok(answer) => fail(
            NAME,
            format!(
                "the webhook answered {} to a delivery signed with the stored secret",
                answer.status()
            ),
            "billing setup; if the webhook answers 500, check its log for the secret it could not read",
        ),
        Err(error) => fail(
            NAME,
            format!("the webhook could not be reached: {error}"),
            "check the stack's WebhookUrl output and the HTTP API",
        ),
    }
}

/// The functions' API key must be in the endpoint's mode: a test key with a live endpoint
/// refetches objects that do not exist in test mode.
async fn key_mode_check(wiring: &Wiring, endpoint_live: bool) -> Check {
    const NAME: &str = "API key mode";
    let mode = |live: bool| if live { "live" } else { "test" };
    let key = match wiring.outputs.get("StripeApiKeySecretArn") {
        Some(arn) => read_key(wiring, arn).await,
        None => None,
    };
    match key.as_ref().and_then(|key| key_livemode(key.expose_secret())) {
        Some(live) if live == endpoint_live => ok(
            NAME,
            format!("the functions' key and the endpoint are both {} mode", mode(live)),
        ),
        Some(live) => fail(
            NAME,
            format!(
                "the functions' key is {} mode, the endpoint {} mode",
                mode(live),
                mode(endpoint_live)
            ),
            "put a key of the endpoint's mode in the stack's API-key secret, or run billing setup with a key of the functions' mode",
        ),
        None => warn(
            NAME,
            "the functions' key could not be read from the stack's API-key secret",
            "set {\"STRIPE_SECRET_KEY\":\"rk_...\"} in the secret StripeApiKeySecretArn names",
        ),
    }
}

async fn read_key(wiring: &Wiring, arn: &str) -> Option<SecretString> {
    let answer = wiring.secrets().get_secret_value().secret_id(arn).send().await.ok()?;
    let document: Value = serde_json::from_str(answer.secret_string()?).ok()?;
    document["STRIPE_SECRET_KEY"]
        .as_str()
        .map(|key| SecretString::from(key.to_owned()))
}

fn key_livemode(key: &str) -> Option<bool> {
    let mode = key.strip_prefix("sk_").or_else(|| key.strip_prefix("rk_"))?;
    if mode.starts_with("live_") {
        Some(true)
    } else if mode.starts_with("test_") {
        Some(false)
    } else {
        None
    }
}

async fn destination_checks(wiring: &Wiring, bus: &str, checks: &mut Vec<Check>) {
    let destinations = match wiring.stripe.list_event_destinations().await {
        Ok(destinations) => destinations,
        Err(error) => {
            checks.push(fail(
                "event destination",
                format!("Stripe refused listing event destinations: {error}"),
                "run with STRIPE_SECRET_KEY set to a key that may read event destinations",
            ));
            return;
        }
    };
    let used = destinations.iter().find(|d: &&EventDestination| {
        d.amazon_eventbridge.as_ref().and_then(|aws| aws.event_source_name()) == Some(bus)
    });
    let Some(destination) = used else {
        checks.push(fail(
            "event destination",
            format!("none delivers to the partner source {bus}"),
            "billing setup --delivery eventbridge",
        ));
        return;
    };
    let status = destination
        .amazon_eventbridge
        .as_ref()
        .map_or("unknown", |aws| aws.aws_event_source_status.as_str());
    if destination.status != "enabled" {
        checks.push(fail(
            "event destination",
            format!("{} is {}", destination.id, destination.status),
            "enable it in the dashboard (Workbench > Event destinations)",
        ));
    } else if status != "active" {
        checks.push(fail(
            "event destination",
            format!("{}: the partner event source is {status}", destination.id),
            "sam deploy with StripePartnerEventSource set to it (associates the source with the bus)",
        ));
    } else {
        checks.push(ok(
            "event destination",
            format!("{} enabled, source active", destination.id),
        ));
    }
    let wanted: Vec<String> = if destination.event_payload == "thin" {
        shared::routing::handled_thin_event_types().collect()
    } else {
        catalogue()
    };
    checks.push(event_set_check(
        "destination events",
        &destination.enabled_events,
        &wanted,
        "billing setup --delivery eventbridge",
    ));
    if destination.event_payload == "snapshot" {
        match destination.snapshot_api_version.as_deref() {
            Some(API_VERSION) => checks.push(ok("destination API version", API_VERSION)),
            other => checks.push(fail(
                "destination API version",
                format!("{}, not the pinned {API_VERSION}", other.unwrap_or("none")),
                "billing setup --delivery eventbridge (a new destination; then deploy with its source)",
            )),
        }
    }
    checks.push(key_mode_check(wiring, destination.livemode).await);
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64), String> {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|error| aws_sdk_sqs::error::DisplayErrorContext(error).to_string())?;
    let count = |name: QueueAttributeName| {
        answer
            .attributes()
            .and_then(|attributes| attributes.get(&name))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

async fn queue_checks(wiring: &Wiring, checks: &mut Vec<Check>) {
    let sqs = aws_sdk_sqs::Client::new(&wiring.sdk);
    for (name, output, redrive) in [
        ("events queue", "EventsQueueUrl", None),
        ("payment-failed queue", "PaymentFailedQueueUrl", None),
        ("events DLQ", "EventsDeadLetterQueueUrl", Some("events")),
        (
            "payment-failed DLQ",
            "PaymentFailedDeadLetterQueueUrl",
            Some("payment-failed"),
        ),
    ] {
        let Some(url) = wiring.outputs.get(output) else {
            checks.push(warn(
                name,
                format!("the stack has no {output} output"),
                "deploy the current template",
            ));
            continue;
        };
        match (queue_depth(&sqs, url).await, redrive) {
            (Err(error), _) => checks.push(fail(name, format!("unreachable: {error}"), "check the AWS credentials and Region")),
            (Ok((0, 0)), Some(_)) => checks.push(ok(name, "empty")),
            (Ok((visible, hidden)), Some(queue)) => checks.push(fail(
                name,
                format!("{} dead-lettered messages", visible + hidden),
                format!("look at them with billing redrive --queue {queue} --dry-run, fix the cause, then billing redrive --queue {queue}"),
            )),
            (Ok((visible, hidden)), None) => {
                checks.push(ok(name, format!("reachable; {visible} waiting, {hidden} in flight")))
            }
        }
    }
}

async fn alarm_checks(wiring: &Wiring, checks: &mut Vec<Check>) {
    const NAME: &str = "alarms";
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&wiring.sdk);
    // CloudFormation names each alarm `<stack>-<logical id>-<suffix>`.
    let prefix = format!("{}-", wiring.outputs.stack);
    let mut alarms = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let answer = cloudwatch
            .describe_alarms()
            .alarm_name_prefix(&prefix)
            .set_next_token(token.take())
            .send()
            .await;
        match answer {
            Ok(answer) => {
                alarms.extend(answer.metric_alarms().iter().map(|alarm| {
                    (
                        alarm.alarm_name().unwrap_or_default().to_owned(),
                        alarm.state_value().map(|s| s.as_str().to_owned()),
                    )
                }));
                match answer.next_token() {
                    Some(next) => token = Some(next.to_owned()),
                    None => break,
                }
            }
            Err(error) => {
                checks.push(fail(
                    NAME,
                    format!("CloudWatch: {}", aws_sdk_cloudwatch::error::DisplayErrorContext(error)),
                    "give this AWS identity cloudwatch:DescribeAlarms",
                ));
                return;
            }
        }
    }
    let firing: Vec<&str> = alarms
        .iter()
        .filter(|(_, state)| state.as_deref() == Some("ALARM"))
        .map(|(name, _)| name.as_str())
        .collect();
    if alarms.is_empty() {
        checks.push(warn(
            NAME,
            format!("no alarm named {prefix}…"),
            "deploy the current template",
        ));
    } else if firing.is_empty() {
        let plural = if alarms.len() == 1 { "" } else { "s" };
        checks.push(ok(NAME, format!("{} alarm{plural}, none firing", alarms.len())));
    } else {
        checks.push(fail(
            NAME,
            format!("in ALARM: {}", firing.join(", ")),
            "see the alarm's description and the runbook in the README (Operations)",
        ));
    }
}

async fn store_checks(wiring: &Wiring, checks: &mut Vec<Check>) {
    let store = match shared::bootstrap::dynamo_store(&wiring.sdk, &wiring.env) {
        Ok(store) => store,
        Err(error) => {
            checks.push(fail("billing table", error.to_string(), "deploy the current template"));
            return;
        }
    };
    let now = shared::unix_now();
    match store.get_cursor(shared::reconcile::CURSOR).await {
        Ok(Some(covered)) if now - covered <= CURSOR_WARN_AFTER => checks.push(ok(
            "reconcile cursor",
            format!("covers events up to {}s ago", now - covered),
        )),
        Ok(Some(covered)) => checks.push(warn(
            "reconcile cursor",
            format!(
                "covers events up to {}s ago (the reconciler runs every 15 minutes by default)",
                now - covered
            ),
            "look at the reconcile function's log and its errors alarm",
        )),
        Ok(None) => checks.push(warn(
            "reconcile cursor",
            "the reconciler has not completed a run yet",
            "wait for its schedule, or look at the reconcile function's log",
        )),
        Err(error) => {
            checks.push(fail(
                "reconcile cursor",
                format!("the table: {error}"),
                "check the stack's BillingTableName output",
            ));
            return;
        }
    }
    checks.push(ledger_check(wiring, &store, now).await);
}

/// Stripe's newest handled events against the ledger: the age of the newest one processed,
/// and any older than ten minutes that were not. A stack on thin events keeps thin event ids in
/// its ledger, so it lists `GET /v2/core/events`; each item is read the way the reconciler reads
/// it (the envelope, then the routing table's message and ledger key).
async fn ledger_check(wiring: &Wiring, store: &impl BillingStore, now: i64) -> Check {
    const NAME: &str = "last processed event";
    let thin = wiring.outputs.get("EventPayload") == Some("thin");
    let listed = if thin {
        wiring
            .stripe
            .list_thin_events(ThinEventsPage::First(&[("limit", RECENT_EVENTS)]))
            .await
            .map(|page| page.data)
    } else {
        wiring
            .stripe
            .get::<Value>("/v1/events", &[("limit", RECENT_EVENTS)])
            .await
            .map(|list| list["data"].as_array().cloned().unwrap_or_default())
    };
    let events = match listed {
        Ok(events) => events,
        Err(error) => {
            return warn(
                NAME,
                format!("Stripe refused listing events: {error}"),
                "the key needs Events: Read",
            );
        }
    };
    let mut newest_processed: Option<i64> = None;
    let mut unprocessed = Vec::new();
    let (mut handled, mut processed, mut recent) = (0, 0, 0);
    for event in &events {
        let body = event.to_string();
        let Ok(envelope) = EventEnvelope::parse(body.as_bytes()) else {
            continue;
        };
        let Some((_, message)) = shared::routing::message_for(&envelope, &body) else {
            continue;
        };
        handled += 1;
        match store.event_state(message.event_id).await {
            Ok(Some(LedgerState::Completed)) => {
                processed += 1;
                newest_processed = Some(newest_processed.map_or(envelope.created, |n| n.max(envelope.created)));
            }
            Ok(_) if now - envelope.created > UNPROCESSED_FAIL_AFTER => {
                unprocessed.push((message.event_id.to_owned(), envelope.created));
            }
            Ok(_) => recent += 1,
            Err(error) => {
                return fail(
                    NAME,
                    format!("the ledger: {error}"),
                    "check the stack's BillingTableName output",
                );
            }
        }
    }
    if let Some((_, oldest)) = unprocessed.iter().min_by_key(|(_, created)| *created) {
        return fail(
            NAME,
            format!(
                "{} of Stripe's {handled} newest handled events are not processed (the oldest {}s old): {}",
                unprocessed.len(),
                now - oldest,
                unprocessed
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("billing backfill --since {}", oldest - 60),
        );
    }
    let on_their_way = if recent > 0 {
        format!(", {recent} under ten minutes old and on their way")
    } else {
        String::new()
    };
    match newest_processed {
        Some(created) => ok(
            NAME,
            format!(
                "{}s ago; {processed} of Stripe's {handled} newest handled events processed{on_their_way}",
                now - created
            ),
        ),
        None if handled == 0 => ok(NAME, "Stripe has no handled events yet"),
        None => ok(
            NAME,
            format!("none yet; Stripe's {handled} newest handled events are under ten minutes old and on their way"),
        ),
    }
}
