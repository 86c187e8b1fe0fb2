//! The webhook receiver as Lambda runs it: API Gateway v2 events in, SQS (moto) out, with
//! signatures made by Stripe's official Python SDK.

use std::num::NonZeroU64;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use base64::Engine;
use billing_tests::oracle::signature_header as official_header;
use billing_tests::queue_conformance::drain;
use billing_tests::{aws, fixtures, unique};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::config::QueueSettings;
use shared::queue::{QueueName, SqsQueue};
use shared::stripe::signature::{SignatureError, SignatureVerifier, sign};
use shared::webhook::{MAX_BODY_BYTES, WebhookReceiver, apigw};

const NOW: i64 = 1_763_900_000;
const SECRET: &str = "whsec_primary_test";
const SECRET_2: &str = "whsec_rotated_test";

type HeaderFor = fn(&str) -> String;

fn verifier(secrets: &[&str]) -> SignatureVerifier {
    let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(s.to_string())).collect();
    SignatureVerifier::new(&secrets, NonZeroU64::new(300).unwrap())
}

fn invoice_event(event_type: &str, customer: &str) -> String {
    let invoice = fixtures::invoice(&unique("in_"), customer, &unique("sub_"), "open");
    serde_json::to_string(&fixtures::event(&unique("evt_"), event_type, NOW - 5, invoice)).unwrap()
}

/// An API Gateway HTTP API (payload 2.0) event, as Lambda receives it.
fn apigw_event(method: &str, headers: Value, body: &str, base64: bool) -> ApiGatewayV2httpRequest {
    let event = json!({
        "version": "2.0",
        "routeKey": format!("{method} /webhooks/stripe"),
        "rawPath": "/webhooks/stripe",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": method, "path": "/webhooks/stripe", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "Stripe/1.0"},
            "requestId": "req", "routeKey": format!("{method} /webhooks/stripe"), "stage": "$default",
            "time": "23/Nov/2026:16:00:00 +0000", "timeEpoch": 1_763_900_000_000_i64
        },
        "body": body,
        "isBase64Encoded": base64,
    });
    serde_json::from_value(event).expect("a valid API Gateway v2 event")
}

fn signed(body: &str, header: &str) -> ApiGatewayV2httpRequest {
    apigw_event(
        "POST",
        json!({"content-type": "application/json", "stripe-signature": header}),
        body,
        false,
    )
}

async fn receiver(secrets: &[&str]) -> (WebhookReceiver<SqsQueue>, SqsQueue) {
    let (_, settings, queue) = aws::fresh_queues().await;
    let receiver_queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws::sdk_config().await), settings);
    (WebhookReceiver::new(verifier(secrets), receiver_queue), queue)
}

async fn assert_queues_empty(queue: &SqsQueue) {
    for name in QueueName::ALL {
        assert!(drain(queue, name).await.is_empty(), "{name:?} queue is not empty");
    }
}

#[test]
fn signatures_from_the_official_sdk_verify_and_tampering_is_caught() {
    let payloads = [
        invoice_event("invoice.payment_failed", "cus_a"),
        invoice_event("invoice.paid", "cus_b"),
        r#"{"id":"evt_x","object":"event","type":"customer.updated","note":"ünïcödé ✓"}"#.to_owned(),
    ];
    for secret in [SECRET, SECRET_2, "whsec_with+special/chars=="] {
        for payload in &payloads {
            let header = official_header(payload, secret, NOW);
            assert_eq!(
                verifier(&[secret]).verify(Some(&header), payload.as_bytes(), NOW),
                Ok(())
            );
            assert_eq!(header, sign(secret, NOW, payload.as_bytes()), "same header as the SDK");

            let mut one_byte = payload.as_bytes().to_vec();
            let last = one_byte.len() - 2;
            one_byte[last] ^= 0x01;
            assert_eq!(
                verifier(&[secret]).verify(Some(&header), &one_byte, NOW),
                Err(SignatureError::NoMatch)
            );

            let reserialised = serde_json::to_string_pretty(&serde_json::from_str::<Value>(payload).unwrap()).unwrap();
            assert_eq!(
                verifier(&[secret]).verify(Some(&header), reserialised.as_bytes(), NOW),
                Err(SignatureError::NoMatch)
            );
        }
    }
}

#[tokio::test]
async fn a_signed_event_is_enqueued_unchanged_on_its_route() {
    let (receiver, queue) = receiver(&[SECRET]).await;
    let failed = invoice_event("invoice.payment_failed", "cus_route");
    let paid = invoice_event("invoice.paid", "cus_route");

    for body in [&failed, &paid] {
        let response = apigw::handle(&receiver, &signed(body, &official_header(body, SECRET, NOW)), NOW).await;
        assert_eq!(response.status_code, 200);
    }

    let on_failed = drain(&queue, QueueName::PaymentFailed).await;
    let on_events = drain(&queue, QueueName::Events).await;
    assert_eq!((on_failed.len(), on_events.len()), (1, 1));
    assert_eq!(on_failed[0].body, failed, "the raw body goes through unchanged");
    assert_eq!(on_events[0].body, paid);
    let envelope: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(on_failed[0].event_id.as_deref(), envelope["id"].as_str());
    assert_eq!(on_failed[0].event_type.as_deref(), Some("invoice.payment_failed"));
    assert_eq!(on_failed[0].group_id.as_deref(), Some("cus_route"));
}

#[tokio::test]
async fn redelivered_events_are_enqueued_once() {
    let (receiver, queue) = receiver(&[SECRET]).await;
    let body = invoice_event("invoice.paid", "cus_dup");
    for offset in 0..3 {
        let header = official_header(&body, SECRET, NOW + offset);
        assert_eq!(
            apigw::handle(&receiver, &signed(&body, &header), NOW + offset)
                .await
                .status_code,
            200
        );
    }
    assert_eq!(drain(&queue, QueueName::Events).await.len(), 1);
}

#[tokio::test]
async fn edge_cases_that_must_be_accepted_are() {
    let (receiver, queue) = receiver(&[SECRET, SECRET_2]).await;
    let bad_v1 = format!("v1={}", "ab".repeat(32));
    let v1_of = |header: String| header.split_once(',').unwrap().1.to_owned();
    let cases: [(&str, HeaderFor); 3] = [
        ("299 s old", |body| official_header(body, SECRET, NOW - 299)),
        ("299 s ahead", |body| official_header(body, SECRET, NOW + 299)),
        ("signed with the second secret", |body| {
            official_header(body, SECRET_2, NOW)
        }),
    ];
    let mut requests: Vec<(String, ApiGatewayV2httpRequest)> = Vec::new();
    for (name, make_header) in cases {
        let body = invoice_event("invoice.paid", &unique("cus_"));
        requests.push((name.into(), signed(&body, &make_header(&body))));
    }
    let body = invoice_event("invoice.paid", &unique("cus_"));
    let header = format!("{},{bad_v1},{bad_v1}", official_header(&body, SECRET, NOW));
    requests.push(("good v1 first of several".into(), signed(&body, &header)));
    let body = invoice_event("invoice.paid", &unique("cus_"));
    let header = format!(
        "t={NOW},{bad_v1},{bad_v1},{}",
        v1_of(official_header(&body, SECRET_2, NOW))
    );
    requests.push(("good v1 last of several".into(), signed(&body, &header)));
    let body = invoice_event("invoice.paid", &unique("cus_"));
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    let header = official_header(&body, SECRET, NOW);
    requests.push((
        "base64-encoded body".into(),
        apigw_event("POST", json!({"stripe-signature": header}), &encoded, true),
    ));

    for (name, request) in &requests {
        assert_eq!(apigw::handle(&receiver, request, NOW).await.status_code, 200, "{name}");
    }
    assert_eq!(drain(&queue, QueueName::Events).await.len(), requests.len());
}

#[tokio::test]
async fn rejected_deliveries_enqueue_nothing() {
    let (receiver, queue) = receiver(&[SECRET]).await;
    let body = invoice_event("invoice.payment_failed", "cus_reject");
    let good = official_header(&body, SECRET, NOW);
    let v1_only = good.split_once(',').unwrap().1.to_owned();
    let oversized = format!("{{\"id\":\"evt_big\",\"pad\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let cases: Vec<(&str, ApiGatewayV2httpRequest, i64)> = vec![
        ("no signature header", apigw_event("POST", json!({}), &body, false), 400),
        ("empty header", signed(&body, ""), 400),
        ("v0 only", signed(&body, &good.replace("v1=", "v0=")), 400),
        ("no timestamp", signed(&body, &v1_only), 400),
        (
            "non-numeric t",
            signed(&body, &good.replace(&format!("t={NOW}"), "t=soon")),
            400,
        ),
        (
            "overflowing t",
            signed(&body, &good.replace(&format!("t={NOW}"), "t=99999999999999999999")),
            400,
        ),
        (
            "stale by 301 s",
            signed(&body, &official_header(&body, SECRET, NOW - 301)),
            400,
        ),
        (
            "future by 301 s",
            signed(&body, &official_header(&body, SECRET, NOW + 301)),
            400,
        ),
        (
            "wrong secret",
            signed(&body, &official_header(&body, "whsec_attacker", NOW)),
            400,
        ),
        (
            "tampered body",
            signed(&body.replacen("cus_reject", "cus_rejecT", 1), &good),
            400,
        ),
        (
            "bad base64",
            apigw_event("POST", json!({"stripe-signature": good}), "%%%not base64%%%", true),
            400,
        ),
        (
            "oversized body",
            signed(&oversized, &official_header(&oversized, SECRET, NOW)),
            413,
        ),
        (
            "GET",
            apigw_event("GET", json!({"stripe-signature": good}), &body, false),
            405,
        ),
    ];
    for (name, request, status) in cases {
        let response = apigw::handle(&receiver, &request, NOW).await;
        assert_eq!(response.status_code, status, "{name}");
        let answer = match response.body {
            Some(aws_lambda_events::encodings::Body::Text(text)) => text,
            other => panic!("{name}: unexpected body {other:?}"),
        };
        assert!(answer.starts_with("{\"error\":"), "{name}: {answer}");
        assert!(
            !answer.contains("whsec") && !answer.contains(&good[..10]),
            "{name} leaks: {answer}"
        );
    }
    assert_queues_empty(&queue).await;
}

#[tokio::test]
async fn unhandled_event_types_are_acknowledged_and_dropped() {
    let (receiver, queue) = receiver(&[SECRET]).await;
    let body = serde_json::to_string(&fixtures::event(
        "evt_plan",
        "plan.created",
        NOW,
        fixtures::price("price_1"),
    ))
    .unwrap();
    let response = apigw::handle(&receiver, &signed(&body, &official_header(&body, SECRET, NOW)), NOW).await;
    assert_eq!(response.status_code, 200);
    assert_queues_empty(&queue).await;
}

#[tokio::test]
async fn without_a_secret_every_delivery_is_refused_with_500() {
    let (receiver, queue) = receiver(&[]).await;
    let body = invoice_event("invoice.paid", "cus_noconf");
    for header in [
        official_header(&body, SECRET, NOW),
        official_header(&body, "", NOW),
        String::new(),
    ] {
        assert_eq!(
            apigw::handle(&receiver, &signed(&body, &header), NOW).await.status_code,
            500
        );
    }
    assert_queues_empty(&queue).await;
}

#[tokio::test]
async fn a_queue_failure_answers_500_so_stripe_retries() {
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let missing = format!("{}/123456789012/{}.fifo", aws::endpoint().await, unique("missing-"));
    let settings = QueueSettings {
        events_url: missing.clone(),
        payment_failed_url: missing,
    };
    let receiver = WebhookReceiver::new(verifier(&[SECRET]), SqsQueue::new(client, settings));
    let body = invoice_event("invoice.paid", "cus_down");
    let response = apigw::handle(&receiver, &signed(&body, &official_header(&body, SECRET, NOW)), NOW).await;
    assert_eq!(response.status_code, 500);
}
