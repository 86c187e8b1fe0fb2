//! Each function's configuration and a realistic stream of events for it, on moto and a
//! Stripe stand-in: every invocation does its real work (SQS send, DynamoDB writes, Stripe
//! reads, SES and SNS), so the figures include the client code on each path.

use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::{Value, json};
use shared::stripe::signature;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

pub const ALL: [&str; 6] = ["floor", "webhook", "events", "payment-failed", "checkout", "reconcile"];

const WEBHOOK_SECRET: &str = "whsec_bench";
const FROM: &str = "billing@example.com";

pub struct Setup {
    pub env: Vec<(String, String)>,
    pub events: Vec<Vec<u8>>,
}

/// Stripe answers for every function, mounted once.
pub async fn stripe() -> StripeStandIn {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "url": "/v1/events", "has_more": false, "data": []})),
        )
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/invoices/in_[A-Za-z0-9_]+$"))
        .respond_with(|request: &Request| {
            let id = request.url.path().rsplit('/').next().unwrap_or_default();
            let mut invoice = fixtures::invoice(id, "cus_bench", "sub_bench", "open");
            invoice["attempt_count"] = json!(1);
            invoice["customer_email"] = json!("customer@example.com");
            ResponseTemplate::new(200).set_body_json(invoice)
        })
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_bench"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription_state(
            "sub_bench",
            "cus_bench",
            "price_pro",
            "past_due",
            false,
        )))
        .mount(&stripe.server)
        .await;
    stripe
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn base_env(name: &str, stripe: &StripeStandIn, aws_endpoint: &str) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_LAMBDA_FUNCTION_NAME", name),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("STRIPE_SECRET_KEY", "sk_test_bench"),
        ("BILLING_PLANS", PLANS),
        ("APP_BASE_URL", "https://app.example.com"),
    ]);
    env.push(("AWS_ENDPOINT_URL".into(), aws_endpoint.to_owned()));
    env.push(("STRIPE_API_BASE".into(), stripe.server.uri()));
    env
}

fn sqs_record(body: &str, group: &str) -> Vec<u8> {
    json!({"Records": [{
        "messageId": unique("msg-"), "receiptHandle": "rh", "body": body,
        "attributes": {"MessageGroupId": group, "ApproximateReceiveCount": "1"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench.fifo", "awsRegion": "us-east-1"
    }]})
    .to_string()
    .into_bytes()
}

fn http_event(method: &str, route: &str, headers: Value, body: Option<String>, claims: Option<Value>) -> Vec<u8> {
    json!({
        "version": "2.0", "routeKey": format!("{method} {route}"), "rawPath": route, "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "bench", "domainName": "bench.example.com", "domainPrefix": "bench",
            "http": {"method": method, "path": route, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1", "userAgent": "bench"},
            "requestId": unique("req-"), "routeKey": format!("{method} {route}"), "stage": "$default",
            "time": "23/Nov/2026:00:00:00 +0000", "timeEpoch": 0,
            "authorizer": claims.map(|claims| json!({"jwt": {"claims": claims, "scopes": null}}))
        },
        "body": body, "isBase64Encoded": false
    })
    .to_string()
    .into_bytes()
}

fn subscription_event(created: i64) -> String {
    let object = subscription_state("sub_bench", "cus_bench", "price_pro", "active", false);
    fixtures::event(&unique("evt_"), "customer.subscription.updated", created, object).to_string()
}

/// Fresh AWS resources for one cold start of `name`, and `n` events.
/// `aws_endpoint` is where the function reaches moto (the keep-alive proxy); the tables and
/// queues are created on moto directly.
pub async fn setup(name: &str, n: usize, stripe: &StripeStandIn, aws_endpoint: &str) -> Setup {
    let mut env = base_env(name, stripe, aws_endpoint).await;
    let store = aws::fresh_store().await;
    let (_, queues, _) = aws::fresh_queues().await;
    env.extend([
        ("BILLING_TABLE".into(), store.table().to_owned()),
        ("EVENTS_QUEUE_URL".into(), queues.events_url.clone()),
        ("PAYMENT_FAILED_QUEUE_URL".into(), queues.payment_failed_url.clone()),
        ("STRIPE_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
    ]);
    let now = shared::unix_now();
    let events = match name {
        "floor" => (0..n).map(|i| json!({"n": i}).to_string().into_bytes()).collect(),
        "webhook" => (0..n)
            .map(|_| {
                let body = subscription_event(now);
                let header = signature::sign(WEBHOOK_SECRET, shared::unix_now(), body.as_bytes());
                let headers = json!({"stripe-signature": header, "content-type": "application/json"});
                http_event("POST", "/webhooks/stripe", headers, Some(body), None)
            })
            .collect(),
        // Each event newer than the last, so every one is applied, none skipped as stale.
        "events" => {
            env.push(("BILLING_EVENTS_TOPIC_ARN".into(), app_topic().await));
            (0..n)
                .map(|i| sqs_record(&subscription_event(now - 10_000 + i as i64), "cus_bench"))
                .collect()
        }
        "payment-failed" => {
            let sdk = aws::sdk_config().await;
            let ses = aws_sdk_sesv2::Client::new(&sdk);
            let _ = ses.create_email_identity().email_identity(FROM).send().await;
            let topic = app_topic().await;
            env.extend([
                ("BILLING_NOTIFY_FROM".into(), FROM.into()),
                ("BILLING_EVENTS_TOPIC_ARN".into(), topic),
            ]);
            (0..n)
                .map(|_| {
                    let invoice = fixtures::invoice(&unique("in_"), "cus_bench", "sub_bench", "open");
                    let event = fixtures::event(&unique("evt_"), "invoice.payment_failed", now, invoice);
                    sqs_record(&event.to_string(), "cus_bench")
                })
                .collect()
        }
        "checkout" => (0..n)
            .map(|_| {
                let claims = json!({"sub": "user-bench"});
                http_event(
                    "GET",
                    "/billing/me",
                    json!({"accept": "application/json"}),
                    None,
                    Some(claims),
                )
            })
            .collect(),
        "reconcile" => (0..n).map(|_| b"{}".to_vec()).collect(),
        _ => Vec::new(),
    };
    Setup { env, events }
}

/// A fresh app-events topic on moto, as the stack's `AppEventsTopic`.
async fn app_topic() -> String {
    let sdk = aws::sdk_config().await;
    aws_sdk_sns::Client::new(&sdk)
        .create_topic()
        .name(unique("bench-"))
        .send()
        .await
        .ok()
        .and_then(|t| t.topic_arn)
        .unwrap_or_default()
}
