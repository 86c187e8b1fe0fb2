//! Property-based fuzzing of every parser that sees input from outside: the `Stripe-Signature`
//! header and its verification, the event envelope, the API Gateway event → webhook and
//! → billing API conversions, and the API's request validation. Each property runs a bounded
//! number of generated cases in CI (`PROPTEST_CASES` raises it for a long run, see README).
//! cargo-fuzz needs a nightly toolchain; proptest runs on the stable one CI has.

use std::num::NonZeroU64;
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use base64::Engine;
use billing_tests::api::{TestApi, apigw_event, spawn_api};
use billing_tests::stripe_standin::StripeStandIn;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::queue::{EventQueue, MemoryQueue, QueueName};
use shared::routing;
use shared::store::{AccountId, MemoryStore};
use shared::stripe::EventEnvelope;
use shared::stripe::signature::{SignatureVerifier, parse_header, sign};
use shared::webhook::{WebhookReceiver, apigw};
use tower::ServiceExt;

const NOW: i64 = 1_763_900_000;
const SECRET: &str = "whsec_fuzz";

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Values drawn from `strategy` for properties that must await (the runner's closures are
/// synchronous); each assertion prints its input, as these cases are not shrunk.
fn samples<S: Strategy>(strategy: S, default_cases: u32) -> Vec<S::Value> {
    let mut runner = runner(default_cases);
    (0..runner.config().cases)
        .map(|_| strategy.new_tree(&mut runner).expect("a generated case").current())
        .collect()
}

/// Any JSON value, nested up to a few levels, with strings that include unicode tricks.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "(\\PC|\u{202e}|\u{200b}|\u{fffd}|\0){0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_\\[\\]]{0,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Events shaped like Stripe's: some well-formed, some with any field of the wrong type or
/// missing.
fn event_like() -> impl Strategy<Value = Value> {
    let handled = prop::sample::select(routing::handled_event_types().collect::<Vec<_>>());
    let well_formed = (handled.clone(), "[a-zA-Z0-9_]{1,30}", any::<bool>(), any_json()).prop_map(
        |(event_type, suffix, livemode, metadata)| {
            json!({
                "id": format!("evt_{suffix}"), "object": "event", "type": event_type, "created": NOW,
                "livemode": livemode,
                "data": {"object": {"id": format!("obj_{suffix}"), "object": "invoice",
                                    "customer": format!("cus_{suffix}"), "metadata": metadata}}
            })
        },
    );
    let malformed = (
        any_json(),
        prop_oneof![handled.prop_map(Value::from), any_json()],
        prop_oneof![Just(json!(NOW)), any_json()],
        prop_oneof![Just(json!(false)), any_json()],
        any_json(),
    )
        .prop_map(|(id, event_type, created, livemode, object)| {
            json!({"id": id, "object": "event", "type": event_type, "created": created,
                   "livemode": livemode, "data": {"object": object}})
        });
    prop_oneof![well_formed, malformed]
}

#[test]
fn the_envelope_parser_and_routing_never_panic() {
    let routed = std::sync::atomic::AtomicUsize::new(0);
    runner(512)
        .run(
            &prop_oneof![
                prop::collection::vec(any::<u8>(), 0..600),
                event_like().prop_map(|event| event.to_string().into_bytes()),
            ],
            |body| {
                if let Ok(envelope) = EventEnvelope::parse(&body) {
                    let text = String::from_utf8_lossy(&body);
                    if let Some((queue, message)) = routing::message_for(&envelope, &text) {
                        prop_assert_eq!(Some(queue), routing::route(&envelope.event_type));
                        prop_assert_eq!(message.event_id, envelope.id.as_ref());
                        routed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let _ = envelope.customer_id();
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        routed.into_inner() > 0,
        "well-formed events are generated and routed too"
    );
}

#[test]
fn signatures_verify_exactly_when_made_with_a_configured_secret_over_the_same_bytes() {
    let verifier = SignatureVerifier::new(
        &[SecretString::from(SECRET), SecretString::from("whsec_other")],
        NonZeroU64::new(300).unwrap(),
    );
    runner(512)
        .run(
            &(
                prop::collection::vec(any::<u8>(), 0..400),
                -400i64..400,
                any::<usize>(),
                "[a-zA-Z0-9_]{1,30}",
            ),
            |(body, skew, flip, wrong_secret)| {
                let header = sign(SECRET, NOW + skew, &body);
                let verdict = verifier.verify(Some(&header), &body, NOW);
                prop_assert_eq!(verdict.is_ok(), skew.abs() <= 300, "skew {}", skew);
                if !body.is_empty() {
                    let mut tampered = body.clone();
                    tampered[flip % body.len()] ^= 1 << (flip / body.len() % 8);
                    prop_assert!(verifier.verify(Some(&header), &tampered, NOW).is_err());
                }
                let rotated = sign("whsec_other", NOW + skew, &body);
                prop_assert_eq!(
                    verifier.verify(Some(&rotated), &body, NOW).is_ok(),
                    skew.abs() <= 300,
                    "the second configured secret verifies too"
                );
                let foreign = sign(&format!("whsec_{wrong_secret}x"), NOW, &body);
                prop_assert!(verifier.verify(Some(&foreign), &body, NOW).is_err());
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn the_signature_header_parser_never_panics_on_any_text() {
    runner(1024)
        .run(
            &prop_oneof![
                "\\PC{0,200}",
                "(t=-?[0-9]{0,21}|v1=[0-9a-fA-F]{0,80}|v0=[a-z]{0,8}|[=,]{0,3}| ){0,12}",
            ],
            |header| {
                if let Ok(parsed) = parse_header(&header) {
                    prop_assert_eq!(parsed.timestamp_text.parse::<i64>().ok(), Some(parsed.timestamp));
                }
                Ok(())
            },
        )
        .unwrap();
}

/// What an API Gateway HTTP API event can carry to the webhook, valid or not.
fn webhook_event() -> impl Strategy<Value = (ApiGatewayV2httpRequest, bool)> {
    let method = prop_oneof![Just("POST".to_owned()), Just("GET".to_owned()), "[A-Za-z]{0,10}"];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        event_like().prop_map(|event| event.to_string().into_bytes()),
    ];
    let encoding = prop_oneof![Just(0u8), Just(1), Just(2)];
    let signature = prop_oneof![Just(None), Just(Some(true)), "\\PC{0,80}".prop_map(|_| Some(false))];
    (method, body, encoding, signature, "\\PC{0,80}").prop_map(|(method, body, encoding, signature, junk)| {
        let text = String::from_utf8_lossy(&body).into_owned();
        let signed = signature == Some(true);
        let mut request = ApiGatewayV2httpRequest::default();
        request.request_context.http.method = method.parse().unwrap_or_default();
        let header = match signature {
            Some(true) => sign(SECRET, NOW, text.as_bytes()),
            Some(false) => junk.clone(),
            None => String::new(),
        };
        if let (Some(_), Ok(value)) = (signature, header.parse()) {
            request.headers.insert("stripe-signature", value);
        }
        (request.body, request.is_base64_encoded) = match encoding {
            0 => (Some(text), false),
            1 => (
                Some(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
                true,
            ),
            _ => (Some(junk), true),
        };
        (request, signed)
    })
}

#[tokio::test]
async fn any_api_gateway_event_gets_a_defined_webhook_answer() {
    let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], NonZeroU64::new(300).unwrap());
    let receiver = WebhookReceiver::new(verifier, MemoryQueue::new());
    let mut accepted = 0;
    for (request, signed) in samples(webhook_event(), 512) {
        let answer = apigw::handle(&receiver, &request, NOW).await;
        let status = answer.status_code;
        assert!([200, 400, 405, 413].contains(&status), "{status} for {request:?}");
        if status == 200 {
            assert!(signed, "only a signature made with the secret is accepted: {request:?}");
            accepted += 1;
        }
    }
    assert!(accepted > 0, "the generator makes acceptable deliveries too");
    // Whatever was accepted reached a queue whole: every message is a routable event.
    for name in QueueName::ALL {
        loop {
            let messages = receiver.queue().receive(name, 10).await.unwrap();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let envelope = EventEnvelope::parse(message.body.as_bytes()).unwrap();
                assert_eq!(routing::route(&envelope.event_type), Some(name));
                receiver.queue().delete(name, &message.receipt_handle).await.unwrap();
            }
        }
    }
}

/// Paths a client can send: the real routes, their neighbours and unicode look-alikes.
fn api_path() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "/checkout/sessions",
        "/portal/sessions",
        "/subscription/change",
        "/subscription/change/preview",
        "/subscription/seats",
        "/subscription/addons",
        "/subscription/addons/sso",
        "/subscription/cancel",
        "/subscription/resume",
        "/billing/me",
        "/billing/sync",
        "/billing/invoices",
        "/billing/invoices?limit=1&starting_after=in_1",
    ]);
    prop_oneof![
        known.clone().prop_map(str::to_owned),
        (
            known,
            "(%00|%2e%2e|/|%2F|\u{ff0f}|\u{202e}|\\.\\.|;|\\?x=1|#|%E2%80%8B){1,3}"
        )
            .prop_map(|(route, tail)| format!("{route}{tail}")),
        "/\\PC{0,40}",
    ]
}

async fn api_answer(api: &TestApi<MemoryStore>, event: &str) -> Option<u16> {
    let request = lambda_http::request::from_str(event).ok()?;
    let response = api.router.clone().oneshot(request).await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn any_request_to_the_billing_api_is_answered_without_a_server_error() {
    // The stand-in answers nothing: a request valid enough to reach Stripe gets the opaque 502.
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let user = prop_oneof![
        Just(None),
        Just(Some("user-fuzz".to_owned())),
        "\\PC{0,70}".prop_map(Some)
    ];
    let body = prop_oneof![
        any_json().prop_map(|v| v.to_string()),
        any_json().prop_map(|v| json!({"plan": v, "quantity": 1}).to_string()),
        any_json().prop_map(|v| json!({"product": v, "quantity": 2}).to_string()),
        any_json().prop_map(|v| json!({"plan": "pro", "promotion_code": v}).to_string()),
        any_json().prop_map(|v| json!({"seats": v}).to_string()),
        any_json().prop_map(|v| json!({"addon": v}).to_string()),
        "\\PC{0,200}",
    ];
    let cases = samples((method, api_path(), user, body), 384);
    let (mut answered, mut bad_gateway) = (0, 0);
    for (method, path, user, body) in &cases {
        let event = apigw_event(method, path, user.as_deref(), json!({}), body);
        let Some(status) = api_answer(&api, &event).await else {
            continue; // lambda_http refused the event itself: Lambda answers it, not the router
        };
        answered += 1;
        bad_gateway += usize::from(status == 502);
        assert!(
            status < 500 || status == 502,
            "{method} {path} as {user:?} with {body:.60} → {status}"
        );
    }
    assert!(answered * 2 > cases.len(), "most cases reach the router: {answered}");
    assert!(
        bad_gateway <= stripe.requests().await.len(),
        "a 502 only ever answers a request that reached Stripe"
    );
}

#[tokio::test]
async fn garbage_authorizer_claims_are_refused() {
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    for claim in samples(any_json(), 256) {
        let mut event: Value = serde_json::from_str(&apigw_event("GET", "/billing/me", None, json!({}), "")).unwrap();
        event["requestContext"]["authorizer"] = json!({"jwt": {"claims": {"sub": claim}, "scopes": null}});
        let Some(status) = api_answer(&api, &event.to_string()).await else {
            continue;
        };
        let acceptable_user = claim.as_str().is_some_and(|sub| AccountId::parse(sub).is_ok());
        assert!(
            status == 401 || (acceptable_user && status == 200),
            "sub {claim} → {status}"
        );
    }
}

#[tokio::test]
async fn bad_input_to_the_webhook_is_a_4xx_json_error_even_when_signed() {
    let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], NonZeroU64::new(300).unwrap());
    let receiver = WebhookReceiver::new(verifier, MemoryQueue::new());
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let huge = format!("{{\"id\":\"evt_1\",\"pad\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        ("GET", "{}".into(), "method_not_allowed"),
        ("DELETE", "{}".into(), "method_not_allowed"),
        ("POST", "{not json".into(), "invalid_payload"),
        ("POST", deep, "invalid_payload"),
        ("POST", huge, "payload_too_large"),
        (
            "POST",
            r#"{"id":1,"type":"invoice.paid","created":1}"#.into(),
            "invalid_payload",
        ),
        (
            "POST",
            r#"{"id":"evt_1","type":["invoice.paid"],"created":1}"#.into(),
            "invalid_payload",
        ),
        (
            "POST",
            r#"{"id":"evt_1","type":"invoice.paid","created":"yesterday"}"#.into(),
            "invalid_payload",
        ),
        ("POST", "\"\\ud800\"".into(), "invalid_payload"),
    ];
    for (method, body, error) in cases {
        let mut request = ApiGatewayV2httpRequest::default();
        request.request_context.http.method = method.parse().unwrap();
        request
            .headers
            .insert("stripe-signature", sign(SECRET, NOW, body.as_bytes()).parse().unwrap());
        request.body = Some(body.clone());

        let answer = apigw::handle(&receiver, &request, NOW).await;

        assert!(
            (400..500).contains(&answer.status_code),
            "{method} {body:.50} → {}",
            answer.status_code
        );
        let Some(aws_lambda_events::encodings::Body::Text(text)) = answer.body else {
            panic!("a JSON body")
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["error"],
            error,
            "{body:.50}"
        );
    }
    for name in QueueName::ALL {
        assert!(
            receiver.queue().receive(name, 10).await.unwrap().is_empty(),
            "nothing enqueued"
        );
    }
}
