//! The Stripe client against the stand-in over HTTP: retries, idempotency, typed errors,
//! deadline, and request bodies that Stripe's official spec accepts.

use std::time::Duration;

use billing_tests::fixtures;
use billing_tests::stripe_standin::StripeStandIn;
use secrecy::SecretString;
use serde_json::json;
use shared::stripe::{API_VERSION, RetryPolicy, StripeClient, StripeError};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn stripe_error(kind: &str, code: &str) -> serde_json::Value {
    json!({"error": {"type": kind, "code": code, "message": "fixture message"}})
}

fn idempotency_keys(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_429_then_200_is_one_logical_call_with_one_idempotency_key() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(stripe_error("invalid_request_error", "rate_limit")),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixtures::customer("cus_retry")))
        .mount(&stripe.server)
        .await;

    let customer = stripe
        .client()
        .create_customer(&json!({"metadata": {"user_id": "u1"}}), "customer-u1")
        .await
        .unwrap();

    assert_eq!(customer.id, "cus_retry");
    let requests = stripe.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(idempotency_keys(&requests), ["customer-u1", "customer-u1"]);
    for request in &requests {
        assert_eq!(request.headers.get("stripe-version").unwrap(), API_VERSION);
        assert_eq!(request.headers.get("authorization").unwrap(), "Bearer sk_test_standin");
    }
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn posts_without_a_caller_key_still_carry_one_and_keep_it_across_retries() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixtures::subscription("sub_1", "cus_1", "price_1", "active")),
        )
        .mount(&stripe.server)
        .await;

    let sub = stripe
        .client()
        .update_subscription("sub_1", &json!({"cancel_at_period_end": true}), None)
        .await
        .unwrap();

    assert_eq!(sub.id, "sub_1");
    let keys = idempotency_keys(&stripe.requests().await);
    assert_eq!(keys.len(), 3);
    assert!(!keys[0].is_empty() && keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn a_400_is_not_retried_and_carries_stripes_error() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("Request-Id", "req_123")
                .set_body_json(stripe_error("invalid_request_error", "resource_missing")),
        )
        .mount(&stripe.server)
        .await;

    let error = stripe.client().retrieve_invoice("in_missing").await.unwrap_err();

    let api = error.api().expect("an API error");
    assert_eq!((api.status, api.error_type.as_str()), (400, "invalid_request_error"));
    assert_eq!(api.code.as_deref(), Some("resource_missing"));
    assert_eq!(api.request_id.as_deref(), Some("req_123"));
    assert_eq!(stripe.requests().await.len(), 1);
}

#[tokio::test]
async fn stripe_should_retry_false_stops_retries_even_on_5xx() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).insert_header("Stripe-Should-Retry", "false"))
        .mount(&stripe.server)
        .await;

    let error = stripe.client().retrieve_subscription("sub_1").await.unwrap_err();

    assert_eq!(error.api().map(|a| a.status), Some(500));
    assert_eq!(stripe.requests().await.len(), 1);
}

#[tokio::test]
async fn stripe_should_retry_true_and_409_are_retried_up_to_the_limit() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(409).insert_header("Stripe-Should-Retry", "true"))
        .mount(&stripe.server)
        .await;

    let error = stripe.client().retrieve_subscription("sub_1").await.unwrap_err();

    assert_eq!(error.api().map(|a| a.status), Some(409));
    assert_eq!(stripe.requests().await.len(), 4, "one call and three retries");
}

#[tokio::test]
async fn a_slow_stripe_ends_at_the_deadline() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&stripe.server)
        .await;
    let client = stripe.client_with(RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        deadline: Duration::from_millis(300),
    });

    let error = client.retrieve_subscription("sub_1").await.unwrap_err();

    assert!(matches!(error, StripeError::DeadlineExceeded(_)), "{error:?}");
}

/// Each call's own limit is 20 s, but inside an invocation it ends by the invocation's
/// deadline, so a slow Stripe cannot make a Lambda run over its timeout.
#[tokio::test]
async fn a_call_ends_by_the_invocation_deadline_before_its_own() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&stripe.server)
        .await;
    let client = stripe.client_with(RetryPolicy::default());
    assert_eq!(RetryPolicy::default().deadline, Duration::from_secs(20));

    let deadline = shared::deadline::Deadline::after(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let error = deadline.scope(client.retrieve_subscription("sub_1")).await.unwrap_err();
    // Measured here, not by the client: far from the 20 s of its own limit and the 30 s answer.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    match error {
        StripeError::DeadlineExceeded(budget) => assert!(budget <= Duration::from_millis(400), "{budget:?}"),
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert_eq!(stripe.requests().await.len(), 1, "no retry fits after the deadline");
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = url::Url::parse(&format!("http://127.0.0.1:{closed_port}")).unwrap();
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let client = StripeClient::new(
        StripeClient::http_client().unwrap(),
        base,
        SecretString::from("sk_test_x".to_string()),
        retry,
    );

    let error = client.retrieve_subscription("sub_1").await.unwrap_err();

    assert!(matches!(error, StripeError::Transport(_)), "{error:?}");
}

#[tokio::test]
async fn every_request_the_client_sends_is_one_stripe_accepts() {
    let stripe = StripeStandIn::start().await;
    let routes = [
        ("POST", "/v1/customers", fixtures::customer("cus_1")),
        ("GET", "/v1/customers/cus_1", fixtures::customer("cus_1")),
        ("POST", "/v1/checkout/sessions", fixtures::checkout_session("cs_1")),
        ("POST", "/v1/billing_portal/sessions", fixtures::portal_session("cus_1")),
        (
            "GET",
            "/v1/subscriptions/sub_1",
            fixtures::subscription("sub_1", "cus_1", "price_1", "active"),
        ),
        (
            "POST",
            "/v1/subscriptions/sub_1",
            fixtures::subscription("sub_1", "cus_1", "price_2", "active"),
        ),
        (
            "GET",
            "/v1/subscriptions",
            json!({"object": "list", "data": [fixtures::subscription("sub_1", "cus_1", "price_1", "active")], "has_more": false}),
        ),
        (
            "GET",
            "/v1/invoices/in_1",
            fixtures::invoice("in_1", "cus_1", "sub_1", "open"),
        ),
        (
            "GET",
            "/v1/events/evt_1",
            fixtures::event(
                "evt_1",
                "invoice.paid",
                1,
                fixtures::invoice("in_1", "cus_1", "sub_1", "paid"),
            ),
        ),
    ];
    for (verb, route, body) in routes {
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&stripe.server)
            .await;
    }
    let client = stripe.client();

    client
        .create_customer(&json!({"metadata": {"user_id": "u1"}}), "k1")
        .await
        .unwrap();
    client.retrieve_customer("cus_1").await.unwrap();
    let checkout = json!({
        "mode": "subscription",
        "customer": "cus_1",
        "client_reference_id": "u1",
        "line_items": [{"price": "price_1", "quantity": 1}],
        "success_url": "https://app.example.com/billing/success",
        "cancel_url": "https://app.example.com/billing",
        "allow_promotion_codes": true,
        "metadata": {"user_id": "u1", "plan": "pro"},
        "subscription_data": {"trial_period_days": 14, "metadata": {"user_id": "u1", "plan": "pro"}},
    });
    client.create_checkout_session(&checkout, "k2").await.unwrap();
    client
        .create_portal_session("cus_1", "https://app.example.com/billing")
        .await
        .unwrap();
    let sub = client.retrieve_subscription("sub_1").await.unwrap();
    assert_eq!(sub.primary_item().map(|i| i.price.id.as_str()), Some("price_1"));
    let change = json!({"items": [{"id": "si_1", "price": "price_2"}], "proration_behavior": "create_prorations"});
    client.update_subscription("sub_1", &change, Some("k3")).await.unwrap();
    assert_eq!(client.list_subscriptions("cus_1").await.unwrap().len(), 1);
    let invoice = client.retrieve_invoice("in_1").await.unwrap();
    assert_eq!(invoice.subscription_id(), Some("sub_1"));
    assert_eq!(client.retrieve_event("evt_1").await.unwrap()["type"], "invoice.paid");

    assert_eq!(stripe.requests().await.len(), 9);
    stripe.assert_requests_valid().await;
}

/// A `Retry-After` beyond any deadline (here the largest number the header can carry) ends
/// the call with Stripe's error at once, instead of overflowing the clock or sleeping.
#[tokio::test]
async fn an_absurd_retry_after_ends_the_call_without_waiting() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "18446744073709551615")
                .set_body_json(stripe_error("invalid_request_error", "rate_limit")),
        )
        .mount(&stripe.server)
        .await;
    let result = stripe
        .client()
        .create_customer(&json!({"metadata": {"user_id": "u1"}}), "customer-u1")
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(stripe.requests().await.len(), 1, "no retry the deadline cannot hold");
}
