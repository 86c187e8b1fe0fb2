//! The simulator over real HTTP: Stripe's validation and error shape, and the signed events
//! each control action delivers to a webhook.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use secrecy::SecretString;
use serde_json::Value;
use shared::stripe::SignatureVerifier;
use stripe_simulator::{Delivery, Simulator};

const SECRET: &str = "whsec_simulator_test";

type Deliveries = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A webhook that records every delivery with its `Stripe-Signature` header.
async fn webhook() -> (String, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Deliveries>, headers: HeaderMap, body: Bytes| async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().unwrap().push((signature, body));
                    "{}"
                },
            ),
        )
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, deliveries)
}

fn form_body(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    deliveries: Deliveries,
}

impl Harness {
    async fn start(duplicates: bool) -> Self {
        let (url, deliveries) = webhook().await;
        let delivery = Delivery {
            webhook_url: Some(url),
            webhook_secret: SECRET.into(),
            duplicates,
            shuffle: duplicates,
        };
        Self {
            sim: Simulator::start(0, delivery).await.unwrap(),
            http: reqwest::Client::new(),
            deliveries,
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url))
            .header("Authorization", "Bearer sk_test_simulator")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.sim.base_url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Every delivery so far, each checked against the webhook secret; returns the event types.
    fn delivered_types(&self) -> Vec<String> {
        let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], NonZeroU64::new(300).unwrap());
        let deliveries = self.deliveries.lock().unwrap();
        deliveries
            .iter()
            .map(|(signature, body)| {
                verifier
                    .verify(signature.as_deref(), body, shared::unix_now())
                    .expect("every delivery is signed with the webhook secret");
                let event: Value = serde_json::from_slice(body).unwrap();
                event["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// A customer with a completed checkout: returns the subscription id.
    async fn subscribed(&self) -> String {
        let (_, customer) = self.post("/v1/customers", &[("metadata[user_id]", "u1")]).await;
        let (status, session) = self
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", customer["id"].as_str().unwrap()),
                    ("line_items[0][price]", "price_basic"),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", "https://app.example.com/ok"),
                    ("cancel_url", "https://app.example.com/no"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{session}");
        let id = session["id"].as_str().unwrap();
        let (status, done) = self.post(&format!("/sim/checkout/{id}/complete"), &[]).await;
        assert_eq!(status, 200, "{done}");
        done["result"]["subscription"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn requests_stripe_would_refuse_get_stripes_error_shape() {
    let sim = Harness::start(false).await;

    let (status, unknown) = sim.post("/v1/customers", &[("favourite_colour", "blue")]).await;
    let (missing_status, missing) = sim.post("/v1/checkout/sessions", &[("mode", "subscription")]).await;
    let (wrong_status, wrong) = sim.post("/v1/customers", &[("balance", "lots")]).await;
    let (gone_status, gone) = sim.get("/v1/subscriptions/sub_nope").await;

    assert_eq!(status, 400);
    assert_eq!(unknown["error"]["type"], "invalid_request_error");
    assert_eq!(unknown["error"]["code"], "parameter_unknown");
    assert_eq!(unknown["error"]["param"], "favourite_colour");
    assert_eq!(missing_status, 400);
    assert_eq!(missing["error"]["code"], "parameter_missing", "{missing}");
    assert_eq!(wrong_status, 400);
    assert_eq!(wrong["error"]["code"], "parameter_invalid", "{wrong}");
    assert_eq!(gone_status, 404);
    assert_eq!(gone["error"]["type"], "invalid_request_error");
    assert!(sim.delivered_types().is_empty(), "refused requests emit nothing");
}

#[tokio::test]
async fn each_control_action_delivers_the_signed_events_stripe_would_send() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    assert_eq!(
        sim.delivered_types(),
        [
            "customer.subscription.created",
            "invoice.payment_succeeded",
            "invoice.paid",
            "checkout.session.completed"
        ]
    );
    sim.deliveries.lock().unwrap().clear();

    let (_, secure) = sim
        .post(
            &format!("/sim/subscriptions/{subscription}/fail_payment?action_required=true"),
            &[],
        )
        .await;
    let invoice = secure["result"]["invoice"].as_str().unwrap().to_owned();
    let (_, declined) = sim
        .post(
            &format!("/sim/subscriptions/{subscription}/fail_payment?decline_code=insufficient_funds"),
            &[],
        )
        .await;
    let (_, stored) = sim
        .get(&format!(
            "/v1/invoices/{invoice}?expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    sim.post(&format!("/sim/invoices/{invoice}/pay"), &[]).await;
    let (_, canceled) = sim
        .post(&format!("/sim/subscriptions/{subscription}/cancel"), &[])
        .await;
    let (_, price) = sim.get("/v1/prices/price_basic").await;

    assert_eq!(declined["result"]["attempt"], 2, "the same open invoice is retried");
    let error = &stored["payments"]["data"][0]["payment"]["payment_intent"]["last_payment_error"];
    assert_eq!(error["decline_code"], "insufficient_funds");
    assert_eq!(canceled["result"]["status"], "canceled");
    assert_eq!(
        (price["object"].as_str(), price["id"].as_str()),
        (Some("price"), Some("price_basic"))
    );
    assert_eq!(
        sim.delivered_types(),
        [
            "invoice.payment_failed",
            "invoice.payment_action_required",
            "customer.subscription.updated",
            "invoice.payment_failed",
            "customer.subscription.updated",
            "invoice.payment_succeeded",
            "invoice.paid",
            "customer.subscription.updated",
            "customer.subscription.deleted",
        ]
    );
    let (_, listed) = sim
        .get("/v1/events?limit=100&types[]=customer.subscription.deleted")
        .await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "events are listable, filtered by type"
    );
}

#[tokio::test]
async fn the_duplicate_switch_delivers_every_event_at_least_once_and_some_twice() {
    let sim = Harness::start(true).await;
    let mut delivered = 0;
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..10 {
        sim.subscribed().await;
    }
    for (_, body) in sim.deliveries.lock().unwrap().iter() {
        let event: Value = serde_json::from_slice(body).unwrap();
        distinct.insert(event["id"].as_str().unwrap().to_owned());
        delivered += 1;
    }
    let (_, listed) = sim.get("/v1/events?limit=100").await;

    assert_eq!(
        distinct.len(),
        listed["data"].as_array().unwrap().len(),
        "no event is lost"
    );
    assert!(
        delivered > distinct.len(),
        "some of 40 events arrive twice: {delivered}"
    );
    assert_eq!(sim.delivered_types().len(), delivered, "copies are signed too");
}
