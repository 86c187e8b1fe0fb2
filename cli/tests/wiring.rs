//! `billing setup` and `billing doctor` end to end, run as an operator runs them: the real
//! binary, a CloudFormation stack on moto whose outputs name queues, a table and secrets on
//! moto, the offline Stripe simulator (which keeps the webhook endpoints and delivers signed
//! events to them), and a webhook receiver that reads its signing secret from Secrets Manager
//! as the deployed function does. The oracle for what setup did is Stripe's side — the
//! simulator's endpoint list — and what arrives on the queue.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use billing_tests::queue_conformance::drain;
use billing_tests::{aws, unique};
use common::{Run, run};
use serde_json::{Value, json};
use shared::config::Env;
use shared::queue::{QueueName, SqsQueue};
use shared::store::{BillingStore, LedgerClaim};
use shared::stripe::API_VERSION;
use shared::webhook::{Delivery, WebhookReceiver};
use stripe_simulator::Simulator;

/// A stack as the template deploys it, on moto.
struct Stack {
    name: String,
    simulator: Simulator,
    webhook_url: String,
    webhook_secret_arn: String,
    queue: SqsQueue,
    store: shared::store::DynamoStore,
    api_key_arn: String,
    events_dead_letter_url: String,
    http: reqwest::Client,
}

async fn create_secret(value: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    client
        .create_secret()
        .name(unique("billing-secret-"))
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap()
}

async fn secret_value(arn: &str) -> Value {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let answer = client.get_secret_value().secret_id(arn).send().await.unwrap();
    serde_json::from_str(answer.secret_string().unwrap()).unwrap()
}

async fn put_secret(arn: &str, value: &Value) {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    client
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
}

async fn webhook(State(receiver): State<Arc<WebhookReceiver<SqsQueue>>>, headers: HeaderMap, body: Bytes) -> Response {
    let delivery = Delivery {
        method: "POST",
        signature: headers.get("stripe-signature").and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let reply = receiver.receive(delivery, shared::unix_now()).await;
    (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response()
}

impl Stack {
    async fn deploy() -> Self {
        let sdk = aws::sdk_config().await;
        let store = aws::fresh_store().await;
        store
            .set_cursor(shared::reconcile::CURSOR, None, shared::unix_now())
            .await
            .unwrap();
        let (sqs, settings, queue) = aws::fresh_queues().await;
        let mut dead_letter = Vec::new();
        for name in ["events-dlq", "payment-failed-dlq"] {
            let created = sqs
                .create_queue()
                .queue_name(format!("{}.fifo", unique(name)))
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .unwrap();
            dead_letter.push(created.queue_url.unwrap());
        }
        // As the template creates them: the webhook secret empty, the functions' key set.
        let webhook_secret_arn = create_secret("{}").await;
        let api_key_arn = create_secret(r#"{"STRIPE_SECRET_KEY":"rk_test_functions"}"#).await;

        // The receiver as the webhook function runs: its secret from Secrets Manager.
        // A one-second refresh window (the deployed default is 300 s) so that a forced re-read
        // on an unsigned delivery is allowed again 0.1 s after the last one.
        let env = Env::from_pairs([
            ("STRIPE_WEBHOOK_SECRET_ARN", webhook_secret_arn.as_str()),
            ("BILLING_SECRETS_MAX_AGE_SECS", "1"),
        ]);
        let verifier = shared::bootstrap::webhook_verifier(&sdk, &env).await.unwrap();
        let receiver = Arc::new(WebhookReceiver::new(verifier, queue.clone()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let webhook_url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/webhooks/stripe", post(webhook))
            .with_state(receiver);
        tokio::spawn(async move { axum::serve(listener, app).await });

        let name = unique("billing-stack-");
        let outputs = json!({
            "WebhookUrl": webhook_url,
            "StripeWebhookSecretArn": webhook_secret_arn,
            "StripeApiKeySecretArn": api_key_arn,
            "StripeApiVersion": API_VERSION,
            "BillingTableName": store.table(),
            "EventsQueueUrl": settings.events_url,
            "PaymentFailedQueueUrl": settings.payment_failed_url,
            "EventsDeadLetterQueueUrl": dead_letter[0],
            "PaymentFailedDeadLetterQueueUrl": dead_letter[1],
        });
        let template = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
            "Outputs": outputs
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, value)| (key.clone(), json!({"Value": value})))
                .collect::<serde_json::Map<String, Value>>(),
        });
        aws_sdk_cloudformation::Client::new(&sdk)
            .create_stack()
            .stack_name(&name)
            .template_body(template.to_string())
            .send()
            .await
            .unwrap();
        // An alarm as CloudFormation names the template's: `<stack>-<logical id>-<suffix>`.
        aws_sdk_cloudwatch::Client::new(&sdk)
            .put_metric_alarm()
            .alarm_name(format!("{name}-EventsDeadLetterQueueAlarm-ABC123"))
            .namespace("AWS/SQS")
            .metric_name("ApproximateNumberOfMessagesVisible")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .period(60)
            .evaluation_periods(1)
            .threshold(0.0)
            .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .unwrap();

        let simulator = Simulator::start(0, stripe_simulator::Delivery::default())
            .await
            .unwrap();
        Self {
            name,
            simulator,
            webhook_url,
            webhook_secret_arn,
            queue,
            store,
            api_key_arn,
            events_dead_letter_url: dead_letter[0].clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn billing(&self, args: &[&str]) -> Run {
        let mut args = args.to_vec();
        args.extend(["--stack", self.name.as_str()]);
        run(
            &args,
            &[
                ("STRIPE_SECRET_KEY", "sk_test_operator".into()),
                ("STRIPE_API_BASE", self.simulator.base_url.clone()),
            ],
        )
        .await
    }

    /// `billing doctor --json`: the report and whether the command succeeded.
    async fn doctor(&self) -> (bool, Value) {
        let run = self.billing(&["doctor", "--json"]).await;
        let report = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}\n{}", run.stdout, run.stderr));
        (run.ok, report)
    }

    /// Stripe's side, as an API call sees it.
    async fn stripe(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        self.http
            .request(method, format!("{}{path}", self.simulator.base_url))
            .bearer_auth("sk_test_operator")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn endpoints(&self) -> Vec<Value> {
        let list = self.stripe(reqwest::Method::GET, "/v1/webhook_endpoints", &[]).await;
        list["data"].as_array().unwrap().clone()
    }

    /// A customer deleted in Stripe: `customer.deleted`, a handled type, goes to every
    /// endpoint; the id of the event that reached the events queue comes back.
    async fn delivered_event(&self) -> Option<String> {
        // Past the receiver's limit on forced re-reads (a tenth of its window).
        tokio::time::sleep(Duration::from_millis(150)).await;
        let customer = self.stripe(reqwest::Method::POST, "/v1/customers", &[]).await;
        let id = customer["id"].as_str().unwrap();
        self.stripe(reqwest::Method::DELETE, &format!("/v1/customers/{id}"), &[])
            .await;
        let messages = drain(&self.queue, QueueName::Events).await;
        messages.into_iter().find_map(|m| m.event_id)
    }
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn catalogue() -> BTreeSet<String> {
    shared::routing::handled_event_types().map(str::to_owned).collect()
}

fn events_of(endpoint: &Value) -> BTreeSet<String> {
    endpoint["enabled_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn setup_wires_the_endpoint_once_and_doctor_reports_then_setup_fixes_drifted_events() {
    let stack = Stack::deploy().await;

    // Before setup: nothing is wired, and the doctor says so with the fix.
    let (ok, report) = stack.doctor().await;
    assert!(!ok, "doctor must fail: {report:#}");
    assert_eq!(check(&report, "webhook endpoint")["status"], "FAIL");
    assert_eq!(check(&report, "webhook endpoint")["fix"], "billing setup");
    assert_eq!(stack.delivered_event().await, None, "no endpoint, no delivery");

    // The dry run shows the plan and changes nothing.
    let dry = stack.billing(&["setup", "--dry-run"]).await;
    assert!(dry.ok, "{}", dry.stderr);
    assert!(dry.stdout.contains("create a webhook endpoint"), "{}", dry.stdout);
    assert!(dry.stdout.contains("dry run: nothing changed"), "{}", dry.stdout);
    assert!(stack.endpoints().await.is_empty());
    assert_eq!(secret_value(&stack.webhook_secret_arn).await, json!({}));

    // Setup: one endpoint, as Stripe keeps it, and its secret in the stack's secret.
    let first = stack.billing(&["setup"]).await;
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    let endpoints = stack.endpoints().await;
    assert_eq!(endpoints.len(), 1, "{endpoints:#?}");
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["url"], stack.webhook_url.as_str());
    assert_eq!(endpoint["api_version"], API_VERSION);
    assert_eq!(endpoint["status"], "enabled");
    assert_eq!(events_of(endpoint), catalogue());
    assert_eq!(endpoint["metadata"]["billing_stack"], stack.name.as_str());
    let stored = secret_value(&stack.webhook_secret_arn).await;
    let secret = stored["STRIPE_WEBHOOK_SECRET"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && !secret.contains(','), "{stored}");
    assert_eq!(stored["STRIPE_WEBHOOK_ENDPOINT"], endpoint["id"]);
    assert!(
        !first.stdout.contains(&secret) && !first.stderr.contains(&secret),
        "the secret is never printed"
    );

    // Stripe now delivers to the stack, signed with the stored secret: the event is queued.
    let delivered = stack
        .delivered_event()
        .await
        .expect("an event reached the events queue");
    // The events processor's ledger entry for it, as the processor leaves it.
    let now = shared::unix_now();
    let LedgerClaim::Acquired { token } = stack.store.claim_event(&delivered, now, now + 60).await.unwrap() else {
        panic!("a fresh event is claimable");
    };
    stack
        .store
        .complete_event(&delivered, &token, now + 86_400)
        .await
        .unwrap();

    // A second run changes nothing and says so.
    let second = stack.billing(&["setup"]).await;
    assert!(second.ok, "{}", second.stderr);
    assert!(second.stdout.contains("nothing to change"), "{}", second.stdout);
    assert_eq!(stack.endpoints().await[0]["id"], endpoint["id"]);
    assert_eq!(secret_value(&stack.webhook_secret_arn).await, stored);

    // All green.
    let (ok, report) = stack.doctor().await;
    assert!(ok, "{report:#}");
    for name in [
        "webhook endpoint",
        "endpoint events",
        "endpoint API version",
        "signing secret",
        "API key mode",
    ] {
        assert_eq!(check(&report, name)["status"], "OK", "{name}: {report:#}");
    }
    assert_eq!(check(&report, "alarms")["status"], "OK", "{report:#}");
    // The one delivered and processed; the one Stripe made before setup never arrived, and is
    // too new to call lost (the reconciler would bring it).
    let last = check(&report, "last processed event");
    assert_eq!(last["status"], "OK", "{report:#}");
    let detail = last["detail"].as_str().unwrap();
    assert!(
        detail.ends_with(
            "s ago; 1 of Stripe's 2 newest handled events processed, 1 under ten minutes old and on their way"
        ),
        "{detail}"
    );
    assert_eq!(check(&report, "events DLQ")["status"], "OK", "{report:#}");

    // Someone edits the endpoint in the dashboard: invoice.paid dropped, charge.succeeded added.
    let id = endpoint["id"].as_str().unwrap();
    let mut edited: Vec<String> = catalogue().into_iter().filter(|e| e != "invoice.paid").collect();
    edited.push("charge.succeeded".into());
    let form: Vec<(&str, &str)> = edited.iter().map(|e| ("enabled_events[]", e.as_str())).collect();
    stack
        .stripe(reqwest::Method::POST, &format!("/v1/webhook_endpoints/{id}"), &form)
        .await;
    let (ok, report) = stack.doctor().await;
    assert!(!ok);
    let events = check(&report, "endpoint events");
    assert_eq!(events["status"], "FAIL");
    assert_eq!(events["detail"], "missing: invoice.paid; extra: charge.succeeded");

    // Setup puts them back in place, keeping the endpoint and its secret.
    let fix = stack.billing(&["setup"]).await;
    assert!(fix.ok, "{}", fix.stderr);
    assert!(fix.stdout.contains(&format!("update {id}")), "{}", fix.stdout);
    let endpoints = stack.endpoints().await;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["id"], id);
    assert_eq!(events_of(&endpoints[0]), catalogue());
    assert_eq!(secret_value(&stack.webhook_secret_arn).await, stored);
    let (ok, report) = stack.doctor().await;
    assert!(ok, "{report:#}");
}

#[tokio::test]
async fn an_endpoint_at_another_api_version_is_reported_and_replaced_with_its_secret_rotated() {
    let stack = Stack::deploy().await;
    // Wired by hand, as before this command: the endpoint at an older version, its secret
    // pasted into the stack's secret.
    let mut form: Vec<(&str, &str)> = vec![("url", stack.webhook_url.as_str()), ("api_version", "2025-03-31.basil")];
    let names: Vec<String> = catalogue().into_iter().collect();
    form.extend(names.iter().map(|e| ("enabled_events[]", e.as_str())));
    let manual = stack
        .stripe(reqwest::Method::POST, "/v1/webhook_endpoints", &form)
        .await;
    let old_secret = manual["secret"].as_str().unwrap().to_owned();
    put_secret(&stack.webhook_secret_arn, &json!({"STRIPE_WEBHOOK_SECRET": old_secret})).await;
    assert!(stack.delivered_event().await.is_some(), "the hand-made wiring delivers");

    let (ok, report) = stack.doctor().await;
    assert!(!ok);
    let version = check(&report, "endpoint API version");
    assert_eq!(version["status"], "FAIL");
    assert_eq!(
        version["detail"],
        format!("2025-03-31.basil, not the pinned {API_VERSION}")
    );
    assert_eq!(check(&report, "endpoint events")["status"], "OK");

    let fix = stack.billing(&["setup"]).await;
    assert!(fix.ok, "{}\n{}", fix.stdout, fix.stderr);
    let endpoints = stack.endpoints().await;
    assert_eq!(endpoints.len(), 1, "the old endpoint is deleted: {endpoints:#?}");
    assert_ne!(endpoints[0]["id"], manual["id"]);
    assert_eq!(endpoints[0]["api_version"], API_VERSION);
    // The new secret first, the replaced one beside it for deliveries already signed.
    let stored = secret_value(&stack.webhook_secret_arn).await;
    let secrets: Vec<&str> = stored["STRIPE_WEBHOOK_SECRET"].as_str().unwrap().split(',').collect();
    assert_eq!(secrets.len(), 2, "{stored}");
    assert!(secrets[0].starts_with("whsec_") && secrets[0] != old_secret);
    assert_eq!(secrets[1], old_secret);
    assert_eq!(stored["STRIPE_WEBHOOK_ENDPOINT"], endpoints[0]["id"]);

    // The running receiver takes deliveries signed with the new secret.
    assert!(stack.delivered_event().await.is_some(), "the new endpoint delivers");
    let (ok, report) = stack.doctor().await;
    assert!(ok, "{report:#}");
    assert_eq!(check(&report, "endpoint API version")["detail"], API_VERSION);
}

#[tokio::test]
async fn setup_creates_one_event_destination_and_names_the_deploy_that_associates_it() {
    let stack = Stack::deploy().await;
    let dir = std::env::temp_dir().join(unique("billing-outputs-"));
    std::fs::create_dir_all(&dir).unwrap();
    let outputs = dir.join("outputs.json");
    // Outputs as `aws cloudformation describe-stacks --query 'Stacks[0].Outputs'` prints them,
    // of a stack deployed for webhooks that is moving to EventBridge.
    let write = |extra: &[(&str, &str)]| {
        let mut list = vec![
            json!({"OutputKey": "AwsAccountId", "OutputValue": "123456789012"}),
            json!({"OutputKey": "AwsRegion", "OutputValue": "eu-west-1"}),
        ];
        list.extend(extra.iter().map(|(k, v)| json!({"OutputKey": k, "OutputValue": v})));
        std::fs::write(&outputs, Value::Array(list).to_string()).unwrap();
    };
    write(&[]);
    let path = outputs.to_str().unwrap();
    let first = stack
        .billing(&["setup", "--delivery", "eventbridge", "--outputs", path])
        .await;
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    let list = stack
        .stripe(reqwest::Method::GET, "/v2/core/event_destinations", &[])
        .await;
    let destinations = list["data"].as_array().unwrap();
    assert_eq!(destinations.len(), 1, "{list:#}");
    let destination = &destinations[0];
    assert_eq!(destination["type"], "amazon_eventbridge");
    assert_eq!(destination["amazon_eventbridge"]["aws_account_id"], "123456789012");
    assert_eq!(destination["snapshot_api_version"], API_VERSION);
    assert_eq!(destination["event_payload"], "snapshot");
    assert_eq!(events_of(destination), catalogue());
    let arn = destination["amazon_eventbridge"]["aws_event_source_arn"]
        .as_str()
        .unwrap();
    assert!(arn.starts_with("arn:aws:events:eu-west-1::event-source/"), "{arn}");
    let source = arn.split_once("event-source/").unwrap().1;
    assert!(
        first.stdout.contains(&format!("StripePartnerEventSource={source}")),
        "{}",
        first.stdout
    );

    let again = stack
        .billing(&["setup", "--delivery", "eventbridge", "--outputs", path])
        .await;
    assert!(again.stdout.contains("nothing to change"), "{}", again.stdout);
    assert_eq!(
        stack
            .stripe(reqwest::Method::GET, "/v2/core/event_destinations", &[])
            .await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deployed with that source: the doctor finds the destination, and says the source still
    // waits for its association (Stripe shows `pending` until the bus exists).
    write(&[("EventBusName", source)]);
    let doctor = stack.billing(&["doctor", "--json", "--outputs", path]).await;
    assert!(!doctor.ok);
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    let found = check(&report, "event destination");
    assert_eq!(found["status"], "FAIL", "{report:#}");
    assert_eq!(
        found["detail"],
        format!(
            "{}: the partner event source is pending",
            destination["id"].as_str().unwrap()
        )
    );
    assert_eq!(check(&report, "destination events")["status"], "OK");
    assert_eq!(check(&report, "destination API version")["status"], "OK");
}

#[tokio::test]
async fn doctor_fails_on_what_an_operator_must_act_on_and_names_the_fix() {
    let stack = Stack::deploy().await;
    let setup = stack.billing(&["setup"]).await;
    assert!(setup.ok, "{}", setup.stderr);
    let sdk = aws::sdk_config().await;
    // An alarm fires, a message is dead-lettered, and someone put a live key in the functions'
    // secret while the endpoint is a test-mode one.
    let alarm = format!("{}-EventsDeadLetterQueueAlarm-ABC123", stack.name);
    aws_sdk_cloudwatch::Client::new(&sdk)
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    aws_sdk_sqs::Client::new(&sdk)
        .send_message()
        .queue_url(&stack.events_dead_letter_url)
        .message_body("{}")
        .message_group_id("g")
        .message_deduplication_id(unique("d"))
        .send()
        .await
        .unwrap();
    put_secret(&stack.api_key_arn, &json!({"STRIPE_SECRET_KEY": "rk_live_functions"})).await;

    let (ok, report) = stack.doctor().await;
    assert!(!ok);
    let alarms = check(&report, "alarms");
    assert_eq!(alarms["status"], "FAIL");
    assert_eq!(alarms["detail"], format!("in ALARM: {alarm}"));
    let dead = check(&report, "events DLQ");
    assert_eq!(dead["status"], "FAIL");
    assert_eq!(dead["detail"], "1 dead-lettered messages");
    assert!(
        dead["fix"].as_str().unwrap().contains("billing redrive --queue events"),
        "{dead}"
    );
    let mode = check(&report, "API key mode");
    assert_eq!(mode["status"], "FAIL");
    assert_eq!(
        mode["detail"],
        "the functions' key is live mode, the endpoint test mode"
    );
    // What is fine stays OK beside it.
    assert_eq!(check(&report, "endpoint events")["status"], "OK");
    assert_eq!(check(&report, "payment-failed DLQ")["status"], "OK");

    // The table for people: one line per check, the fix under each failure, exit status 1.
    let human = stack.billing(&["doctor"]).await;
    assert!(!human.ok);
    assert!(human.stdout.contains("FAIL  alarms"), "{}", human.stdout);
    assert!(
        human
            .stdout
            .contains("fix: look at them with billing redrive --queue events --dry-run"),
        "{}",
        human.stdout
    );
    assert!(human.stderr.contains("3 of "), "{}", human.stderr);
}
