//! The simulator over real HTTP: Stripe's validation and error shape, and the signed events
//! each control action delivers to a webhook.

mod common;

use common::{Deliveries, form_body, webhook};
use std::num::NonZeroU64;

use secrecy::SecretString;
use serde_json::Value;
use shared::stripe::SignatureVerifier;
use stripe_simulator::{Delivery, Simulator};

const SECRET: &str = "whsec_simulator_test";

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
            ..Delivery::default()
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

    async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}{path}", self.sim.base_url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Every delivered event so far, oldest first, each checked against the webhook secret.
    fn delivered(&self) -> Vec<Value> {
        let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], NonZeroU64::new(300).unwrap());
        let deliveries = self.deliveries.lock().unwrap();
        deliveries
            .iter()
            .map(|(signature, body)| {
                verifier
                    .verify(signature.as_deref(), body, shared::unix_now())
                    .expect("every delivery is signed with the webhook secret");
                serde_json::from_slice(body).unwrap()
            })
            .collect()
    }

    /// The delivered events of one type, oldest first.
    fn delivered_of(&self, event_type: &str) -> Vec<Value> {
        self.delivered()
            .into_iter()
            .filter(|event| event["type"] == event_type)
            .collect()
    }

    fn forget_deliveries(&self) {
        self.deliveries.lock().unwrap().clear();
    }

    async fn customer(&self) -> String {
        let (status, customer) = self.post("/v1/customers", &[("metadata[user_id]", "u1")]).await;
        assert_eq!(status, 200, "{customer}");
        customer["id"].as_str().unwrap().to_owned()
    }

    /// An open subscription-mode session for the customer with these extra parameters
    /// (`line_items[0]` is price_basic × 1 unless they name line items).
    async fn session(&self, customer: &str, extra: &[(&str, &str)]) -> Value {
        let mut form = vec![
            ("mode", "subscription"),
            ("customer", customer),
            ("success_url", "https://app.example.com/ok"),
            ("cancel_url", "https://app.example.com/no"),
        ];
        if !extra.iter().any(|(key, _)| key.starts_with("line_items")) {
            form.extend([
                ("line_items[0][price]", "price_basic"),
                ("line_items[0][quantity]", "1"),
            ]);
        }
        form.extend_from_slice(extra);
        let (status, session) = self.post("/v1/checkout/sessions", &form).await;
        assert_eq!(status, 200, "{session}");
        session
    }

    /// Completes a session: returns the control's result (`subscription`, `invoice`).
    async fn complete(&self, session: &str) -> Value {
        let (status, done) = self.post(&format!("/sim/checkout/{session}/complete"), &[]).await;
        assert_eq!(status, 200, "{done}");
        done["result"].clone()
    }

    /// The payment intent of an invoice's (only) payment.
    async fn intent_of(&self, invoice: &str) -> String {
        let (_, invoice) = self.get(&format!("/v1/invoices/{invoice}")).await;
        invoice["payments"]["data"][0]["payment"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned()
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

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn checkout_sessions_are_retrieved_listed_and_expired_as_stripe_does() {
    let sim = Harness::start(false).await;
    let customer = sim.customer().await;
    let first = sim
        .session(
            &customer,
            &[
                ("client_reference_id", "user-7"),
                ("metadata[plan]", "basic"),
                ("subscription_data[metadata][user_id]", "u7"),
                ("subscription_data[trial_period_days]", "14"),
            ],
        )
        .await;
    let second = sim.session(&customer, &[]).await;
    let third = sim.session(&customer, &[]).await;
    let (first, second, third) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
        third["id"].as_str().unwrap(),
    );
    let done = sim.complete(first).await;
    let (expire_status, expired) = sim.post(&format!("/v1/checkout/sessions/{second}/expire"), &[]).await;

    let (_, shown) = sim.get(&format!("/v1/checkout/sessions/{first}")).await;
    assert_eq!(shown["client_reference_id"], "user-7");
    assert_eq!(shown["metadata"]["plan"], "basic");
    assert_eq!(shown["status"], "complete");
    assert_eq!(shown["subscription"], done["subscription"]);
    assert!(shown.get("_simulated_lines").is_none(), "bookkeeping stays private");
    let (_, sub) = sim
        .get(&format!("/v1/subscriptions/{}", done["subscription"].as_str().unwrap()))
        .await;
    assert_eq!(sub["metadata"]["user_id"], "u7");
    assert_eq!(sub["status"], "trialing");
    assert_eq!((expire_status, expired["status"].as_str()), (200, Some("expired")));

    for (session, status) in [(first, "complete"), (second, "expired")] {
        let (code, refused) = sim.post(&format!("/v1/checkout/sessions/{session}/expire"), &[]).await;
        assert_eq!(code, 400, "a {status} session cannot be expired: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
        let (code, _) = sim.post(&format!("/sim/checkout/{session}/complete"), &[]).await;
        assert_eq!(code, 400, "a {status} session cannot be completed");
    }
    let (missing, _) = sim.get("/v1/checkout/sessions/cs_test_nope").await;
    assert_eq!(missing, 404);

    let harness = &sim;
    let list = |query: String| async move { harness.get(&format!("/v1/checkout/sessions?{query}")).await.1 };
    let all = list(format!("customer={customer}")).await;
    assert_eq!(ids(&all), [third, second, first], "newest first");
    assert_eq!(all["has_more"], false);
    for (status, id) in [("open", third), ("expired", second), ("complete", first)] {
        assert_eq!(ids(&list(format!("customer={customer}&status={status}")).await), [id]);
    }
    let page = list(format!("customer={customer}&limit=2")).await;
    assert_eq!(
        (ids(&page), page["has_more"].as_bool()),
        (vec![third.to_owned(), second.to_owned()], Some(true))
    );
    let rest = list(format!("customer={customer}&limit=2&starting_after={second}")).await;
    assert_eq!(
        (ids(&rest), rest["has_more"].as_bool()),
        (vec![first.to_owned()], Some(false))
    );
    let (bad, _) = sim.get("/v1/checkout/sessions?status=lost").await;
    assert_eq!(bad, 400, "status is one of open, complete, expired");

    let expired_events = sim.delivered_of("checkout.session.expired");
    assert_eq!(expired_events.len(), 1);
    assert_eq!(expired_events[0]["data"]["object"]["id"], second);
    assert_eq!(expired_events[0]["data"]["object"]["status"], "expired");
}

#[tokio::test]
async fn several_line_items_complete_into_one_subscription_with_an_item_each() {
    let sim = Harness::start(false).await;
    let customer = sim.customer().await;
    let session = sim
        .session(
            &customer,
            &[
                ("line_items[0][price]", "price_basic"),
                ("line_items[0][quantity]", "1"),
                ("line_items[1][price]", "price_addon"),
                ("line_items[1][quantity]", "3"),
            ],
        )
        .await;
    let done = sim.complete(session["id"].as_str().unwrap()).await;
    let sub_id = done["subscription"].as_str().unwrap();
    let (_, sub) = sim.get(&format!("/v1/subscriptions/{sub_id}")).await;
    let (_, invoice) = sim
        .get(&format!("/v1/invoices/{}", done["invoice"].as_str().unwrap()))
        .await;

    let items = sub["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{sub}");
    assert_ne!(items[0]["id"], items[1]["id"]);
    for (item, (price, quantity)) in items.iter().zip([("price_basic", 1), ("price_addon", 3)]) {
        assert!(item["id"].as_str().unwrap().starts_with("si_"));
        assert_eq!(item["price"]["object"], "price");
        assert_eq!(item["price"]["id"], price);
        assert_eq!(item["quantity"], quantity);
        assert!(item["current_period_start"].as_i64().unwrap() < item["current_period_end"].as_i64().unwrap());
    }
    assert!(sub["created"].as_i64().unwrap() > 0);
    assert_eq!(sub["latest_invoice"], done["invoice"]);
    assert_eq!(invoice["amount_due"], 4 * 2000, "the sum of the line items");
    assert_eq!(invoice["amount_paid"], 4 * 2000);
    assert_eq!(
        sim.delivered_of("customer.subscription.created").len(),
        1,
        "one subscription"
    );
}

#[tokio::test]
async fn every_paid_invoice_carries_a_succeeded_payment_intent_with_a_charge() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    let (_, failed) = sim
        .post(&format!("/sim/subscriptions/{subscription}/fail_payment"), &[])
        .await;
    let retried = failed["result"]["invoice"].as_str().unwrap().to_owned();
    let declined_intent = sim.intent_of(&retried).await;
    sim.post(&format!("/sim/invoices/{retried}/pay"), &[]).await;
    sim.post(&format!("/sim/subscriptions/{subscription}/end_period"), &[])
        .await;
    let (status, repaid) = sim.post(&format!("/sim/invoices/{retried}/pay"), &[]).await;
    assert_eq!(status, 400, "a paid invoice is not paid twice: {repaid}");

    let paid = sim.delivered_of("invoice.paid");
    assert_eq!(paid.len(), 3, "checkout, the retried invoice, the renewal");
    let mut intents = std::collections::HashSet::new();
    for event in &paid {
        let invoice = &event["data"]["object"];
        let intent = invoice["payments"]["data"][0]["payment"]["payment_intent"]
            .as_str()
            .unwrap();
        assert!(intent.starts_with("pi_"), "{invoice}");
        let (_, shown) = sim.get(&format!("/v1/payment_intents/{intent}")).await;
        assert_eq!(shown["status"], "succeeded");
        assert_eq!(shown["amount"], invoice["amount_paid"]);
        let charge = shown["latest_charge"].as_str().unwrap();
        assert!(charge.starts_with("ch_"));
        let (_, charge) = sim.get(&format!("/v1/charges/{charge}")).await;
        assert_eq!(
            (charge["amount"].clone(), charge["payment_intent"].as_str()),
            (invoice["amount_paid"].clone(), Some(intent))
        );
        intents.insert(intent.to_owned());
    }
    assert_eq!(intents.len(), 3, "one payment intent per invoice");
    assert!(
        intents.contains(&declined_intent),
        "a retried invoice keeps its payment intent"
    );
    let (_, sub) = sim.get(&format!("/v1/subscriptions/{subscription}")).await;
    assert_eq!(sub["latest_invoice"], paid[2]["data"]["object"]["id"]);
}

#[tokio::test]
async fn two_sessions_of_one_customer_make_two_subscriptions() {
    let sim = Harness::start(false).await;
    let customer = sim.customer().await;
    let first = sim.session(&customer, &[]).await;
    let second = sim
        .session(
            &customer,
            &[("line_items[0][price]", "price_pro"), ("line_items[0][quantity]", "1")],
        )
        .await;
    let first = sim.complete(first["id"].as_str().unwrap()).await;
    let second = sim.complete(second["id"].as_str().unwrap()).await;
    let (_, listed) = sim.get(&format!("/v1/subscriptions?customer={customer}")).await;

    assert_ne!(first["subscription"], second["subscription"]);
    assert_eq!(
        ids(&listed),
        [
            second["subscription"].as_str().unwrap(),
            first["subscription"].as_str().unwrap()
        ]
    );
    assert_eq!(sim.delivered_of("customer.subscription.created").len(), 2);
}

#[tokio::test]
async fn refunds_are_made_against_payment_intents_and_can_be_counted() {
    let sim = Harness::start(false).await;
    let first = sim.subscribed().await;
    let second = sim.subscribed().await;
    let (_, first) = sim.get(&format!("/v1/subscriptions/{first}")).await;
    let (_, second) = sim.get(&format!("/v1/subscriptions/{second}")).await;
    let first = sim.intent_of(first["latest_invoice"].as_str().unwrap()).await;
    let second = sim.intent_of(second["latest_invoice"].as_str().unwrap()).await;
    sim.forget_deliveries();

    let (status, partial) = sim
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", &first),
                ("amount", "500"),
                ("reason", "requested_by_customer"),
                ("metadata[ticket]", "T-1"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(partial["object"], "refund");
    assert!(partial["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(partial["status"], "succeeded");
    assert_eq!(partial["amount"], 500);
    assert_eq!(partial["payment_intent"], first.as_str());
    assert_eq!(partial["reason"], "requested_by_customer");
    assert_eq!(partial["metadata"]["ticket"], "T-1");
    let (too_much, refused) = sim
        .post("/v1/refunds", &[("payment_intent", &first), ("amount", "1501")])
        .await;
    assert_eq!(too_much, 400, "only 1500 remain: {refused}");
    let (status, rest) = sim.post("/v1/refunds", &[("payment_intent", &first)]).await;
    assert_eq!(
        (status, rest["amount"].as_i64()),
        (200, Some(1500)),
        "the remainder by default"
    );
    let (again, _) = sim.post("/v1/refunds", &[("payment_intent", &first)]).await;
    assert_eq!(again, 400, "nothing is left to refund");
    let (unknown, missing) = sim.post("/v1/refunds", &[("payment_intent", "pi_nope")]).await;
    assert_eq!(unknown, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");
    assert_eq!(missing["error"]["param"], "payment_intent");
    let (status, _) = sim
        .post("/v1/refunds", &[("payment_intent", &second), ("amount", "100")])
        .await;
    assert_eq!(status, 200);

    let (_, of_first) = sim.get(&format!("/v1/refunds?payment_intent={first}")).await;
    assert_eq!(
        ids(&of_first),
        [rest["id"].as_str().unwrap(), partial["id"].as_str().unwrap()]
    );
    let (_, all) = sim.get("/v1/refunds?limit=100").await;
    let intents: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|refund| refund["payment_intent"].as_str().unwrap())
        .collect();
    assert_eq!(
        intents,
        [second.as_str(), first.as_str(), first.as_str()],
        "three refunds, newest first"
    );

    let charges: Vec<(i64, bool)> = sim
        .delivered_of("charge.refunded")
        .iter()
        .map(|event| {
            let charge = &event["data"]["object"];
            assert_eq!(charge["object"], "charge");
            (charge["amount_refunded"].as_i64().unwrap(), charge["refunded"] == true)
        })
        .collect();
    assert_eq!(charges, [(500, false), (2000, true), (100, false)]);
    assert_eq!(sim.delivered_of("refund.created").len(), 3);
}

#[tokio::test]
async fn deleting_a_customer_cancels_its_subscriptions_and_leaves_the_deleted_form() {
    let sim = Harness::start(false).await;
    let customer = sim.customer().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let session = sim.session(&customer, &[]).await;
        subs.push(sim.complete(session["id"].as_str().unwrap()).await["subscription"].clone());
    }
    let already = subs[0].as_str().unwrap();
    sim.post(&format!("/sim/subscriptions/{already}/cancel"), &[]).await;
    let open = sim.session(&customer, &[]).await;
    sim.forget_deliveries();

    let (status, deleted) = sim.delete(&format!("/v1/customers/{customer}")).await;
    let gone = serde_json::json!({"id": customer, "object": "customer", "deleted": true});
    assert_eq!((status, &deleted), (200, &gone));
    assert_eq!(sim.get(&format!("/v1/customers/{customer}")).await, (200, gone.clone()));
    let canceled: Vec<Value> = sim
        .delivered_of("customer.subscription.deleted")
        .iter()
        .map(|event| event["data"]["object"]["id"].clone())
        .collect();
    assert_eq!(canceled, subs[1..], "only the subscriptions still live");
    let customer_deleted = sim.delivered_of("customer.deleted");
    assert_eq!(customer_deleted.len(), 1);
    assert_eq!(customer_deleted[0]["data"]["object"], gone);
    let (_, all) = sim
        .get(&format!("/v1/subscriptions?customer={customer}&status=all"))
        .await;
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "canceled")
    );

    let (status, refused) = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", &customer),
                ("line_items[0][price]", "price_basic"),
                ("success_url", "https://app.example.com/ok"),
            ],
        )
        .await;
    assert_eq!(
        status, 404,
        "Stripe's \"No such customer\" for a deleted one: {refused}"
    );
    assert_eq!(refused["error"]["code"], "resource_missing");
    assert_eq!(refused["error"]["param"], "customer");
    let (status, _) = sim
        .post(&format!("/sim/checkout/{}/complete", open["id"].as_str().unwrap()), &[])
        .await;
    assert_eq!(status, 400, "a deleted customer cannot complete a checkout");
    assert_eq!(sim.delete(&format!("/v1/customers/{customer}")).await.0, 404);
}

#[tokio::test]
async fn open_invoices_are_voided_or_marked_uncollectible_and_listed() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    let fail = format!("/sim/subscriptions/{subscription}/fail_payment");
    let (_, failed) = sim.post(&fail, &[]).await;
    let first = failed["result"]["invoice"].as_str().unwrap().to_owned();
    let (status, uncollectible) = sim.post(&format!("/v1/invoices/{first}/mark_uncollectible"), &[]).await;
    assert_eq!(
        (status, uncollectible["status"].as_str()),
        (200, Some("uncollectible")),
        "{uncollectible}"
    );
    let (status, voided) = sim.post(&format!("/v1/invoices/{first}/void"), &[]).await;
    assert_eq!(
        (status, voided["status"].as_str()),
        (200, Some("void")),
        "an uncollectible invoice can be voided"
    );
    let (status, _) = sim.post(&format!("/v1/invoices/{first}/mark_uncollectible"), &[]).await;
    assert_eq!(status, 400, "a void invoice stays void");
    let (status, _) = sim.post(&format!("/sim/invoices/{first}/pay"), &[]).await;
    assert_eq!(status, 400, "a void invoice cannot be paid");
    let (_, failed) = sim.post(&fail, &[]).await;
    let second = failed["result"]["invoice"].as_str().unwrap().to_owned();
    assert_ne!(first, second, "a new attempt opens a new invoice");
    let (status, _) = sim.post(&format!("/v1/invoices/{second}/void"), &[]).await;
    assert_eq!(status, 200);
    let (_, sub) = sim.get(&format!("/v1/subscriptions/{subscription}")).await;
    let paid = sim.intent_of(sub["latest_invoice"].as_str().unwrap()).await;
    assert!(paid.starts_with("pi_"));

    let (_, all) = sim.get(&format!("/v1/invoices?subscription={subscription}")).await;
    let checkout = ids(&all)[2].clone();
    for action in ["void", "mark_uncollectible"] {
        let (status, refused) = sim.post(&format!("/v1/invoices/{checkout}/{action}"), &[]).await;
        assert_eq!(status, 400, "a paid invoice cannot be {action}: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
    }
    assert_eq!(ids(&all), [second.as_str(), first.as_str(), checkout.as_str()]);
    let (_, paid_list) = sim
        .get(&format!("/v1/invoices?subscription={subscription}&status=paid"))
        .await;
    assert_eq!(ids(&paid_list), [checkout.as_str()]);
    let customer = all["data"][0]["customer"].as_str().unwrap();
    let (_, page) = sim.get(&format!("/v1/invoices?customer={customer}&limit=1")).await;
    assert_eq!(
        (ids(&page), page["has_more"].as_bool()),
        (vec![second.clone()], Some(true))
    );
    let (_, next) = sim
        .get(&format!(
            "/v1/invoices?customer={customer}&limit=2&starting_after={second}"
        ))
        .await;
    assert_eq!(
        (ids(&next), next["has_more"].as_bool()),
        (vec![first.clone(), checkout.clone()], Some(false))
    );
    let (_, void_list) = sim.get("/v1/invoices?status=void").await;
    assert_eq!(void_list["data"].as_array().unwrap().len(), 2);

    let closed: Vec<(String, Value)> = sim
        .delivered()
        .iter()
        .filter(|e| e["type"] == "invoice.voided" || e["type"] == "invoice.marked_uncollectible")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["object"]["id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        closed,
        [
            ("invoice.marked_uncollectible".to_owned(), Value::from(first.as_str())),
            ("invoice.voided".to_owned(), Value::from(first.as_str())),
            ("invoice.voided".to_owned(), Value::from(second.as_str())),
        ]
    );
}

#[tokio::test]
async fn subscription_updates_schedule_cancellation_pause_collection_and_change_items() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    let path = format!("/v1/subscriptions/{subscription}");
    let update = |form: Vec<(&'static str, String)>| {
        let path = path.clone();
        let sim = &sim;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sim.post(&path, &form).await
        }
    };
    let at = (shared::unix_now() + 7 * 86_400).to_string();

    let (_, scheduled) = update(vec![("cancel_at", at.clone())]).await;
    assert_eq!(scheduled["cancel_at"].as_i64(), at.parse().ok());
    let (_, cleared) = update(vec![("cancel_at", String::new())]).await;
    assert!(cleared["cancel_at"].is_null());
    let resumes = (shared::unix_now() + 90 * 86_400).to_string();
    let (_, paused) = update(vec![
        ("pause_collection[behavior]", "void".into()),
        ("pause_collection[resumes_at]", resumes.clone()),
    ])
    .await;
    assert_eq!(
        paused["pause_collection"],
        serde_json::json!({"behavior": "void", "resumes_at": resumes.parse::<i64>().unwrap()})
    );
    let (bad, _) = update(vec![("pause_collection[behavior]", "forever".into())]).await;
    assert_eq!(bad, 400);
    sim.forget_deliveries();
    let (_, renewed) = sim
        .post(&format!("/sim/subscriptions/{subscription}/end_period"), &[])
        .await;
    assert_eq!(
        sim.delivered_types(),
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.voided",
            "customer.subscription.updated"
        ],
        "a renewal while collection is paused with `void` is voided"
    );
    let (_, voided) = sim
        .get(&format!(
            "/v1/invoices/{}",
            renewed["result"]["invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(voided["status"], "void");
    let (_, resumed) = update(vec![("pause_collection", String::new())]).await;
    assert!(resumed["pause_collection"].is_null());

    let basic = resumed["items"]["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, two) = update(vec![
        ("items[0][id]", basic.clone()),
        ("items[1][price]", "price_addon".into()),
        ("items[1][quantity]", "2".into()),
    ])
    .await;
    assert_eq!(status, 200, "{two}");
    let items = two["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let addon = items[1]["id"].as_str().unwrap().to_owned();
    assert!(addon.starts_with("si_") && addon != basic);
    assert_eq!(
        (items[1]["price"]["id"].as_str(), items[1]["quantity"].as_i64()),
        (Some("price_addon"), Some(2))
    );
    let (status, _) = update(vec![("items[0][price]", "price_addon".into())]).await;
    assert_eq!(status, 400, "Stripe refuses a second item of one price");
    let (_, three) = update(vec![("items[0][price]", "price_extra".into())]).await;
    assert_eq!(
        three["items"]["data"].as_array().unwrap().len(),
        3,
        "an item without an id is added"
    );
    let extra = three["items"]["data"][2]["id"].as_str().unwrap().to_owned();
    let (_, changed) = update(vec![
        ("items[0][id]", basic.clone()),
        ("items[0][price]", "price_pro".into()),
        ("items[1][id]", addon.clone()),
        ("items[1][quantity]", "5".into()),
        ("items[2][id]", extra),
        ("items[2][deleted]", "true".into()),
    ])
    .await;
    let items = changed["items"]["data"].as_array().unwrap();
    let shown: Vec<(&str, &str, i64)> = items
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap(),
                i["price"]["id"].as_str().unwrap(),
                i["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [(basic.as_str(), "price_pro", 1), (addon.as_str(), "price_addon", 5)]
    );
    let (status, _) = update(vec![
        ("items[0][id]", "si_nope".into()),
        ("items[0][quantity]", "2".into()),
    ])
    .await;
    assert_eq!(status, 404);
    let (status, _) = update(vec![
        ("items[0][id]", basic.clone()),
        ("items[0][deleted]", "true".into()),
        ("items[1][id]", addon.clone()),
        ("items[1][deleted]", "true".into()),
    ])
    .await;
    assert_eq!(status, 400, "a subscription keeps at least one item");
    sim.post(&format!("/sim/subscriptions/{subscription}/end_period"), &[])
        .await;
    let last = sim.delivered_of("invoice.paid").pop().unwrap();
    let invoice = &last["data"]["object"];
    let lines = invoice["lines"]["data"].as_array().unwrap();
    let sum = |proration: bool| -> i64 {
        lines
            .iter()
            .filter(|line| (line["parent"]["subscription_item_details"]["proration"] == true) == proration)
            .map(|line| line["amount"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(sum(false), 2000 + 5 * 2000, "the renewal bills every item");
    // The changes above were prorated (Stripe's default `create_prorations`): the price swap
    // nets to nothing at equal prices, the five add-on units added moments after the start
    // cost almost a whole period, onto this invoice.
    assert!((9_990..=10_000).contains(&sum(true)), "{invoice}");
    assert_eq!(invoice["amount_due"].as_i64(), Some(sum(false) + sum(true)));

    let single = sim.subscribed().await;
    let (_, added) = sim
        .post(
            &format!("/v1/subscriptions/{single}"),
            &[("items[0][price]", "price_pro")],
        )
        .await;
    let items = added["items"]["data"].as_array().unwrap();
    assert_eq!(
        (items.len(), items[1]["price"]["id"].as_str()),
        (2, Some("price_pro")),
        "as in Stripe, an item without an id is added even beside a single item"
    );

    let (_, ending) = update(vec![("cancel_at", (shared::unix_now() + 86_400).to_string())]).await;
    assert!(ending["canceled_at"].is_i64());
    let (_, ended) = sim
        .post(&format!("/sim/subscriptions/{subscription}/end_period"), &[])
        .await;
    assert_eq!(
        ended["result"]["status"], "canceled",
        "a cancel_at within the period ends it"
    );
}

#[tokio::test]
async fn pausing_and_scheduling_emit_subscription_updated() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    sim.forget_deliveries();
    let path = format!("/v1/subscriptions/{subscription}");
    for form in [
        &[("cancel_at", "4102444800")][..],
        &[("cancel_at", "")][..],
        &[("pause_collection[behavior]", "keep_as_draft")][..],
        &[("pause_collection", "")][..],
    ] {
        let (status, answer) = sim.post(&path, form).await;
        assert_eq!(status, 200, "{answer}");
    }
    let updates = sim.delivered_of("customer.subscription.updated");
    let shown: Vec<(Value, Value)> = updates
        .iter()
        .map(|e| {
            (
                e["data"]["object"]["cancel_at"].clone(),
                e["data"]["object"]["pause_collection"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (Value::from(4_102_444_800_i64), Value::Null),
            (Value::Null, Value::Null),
            (
                Value::Null,
                serde_json::json!({"behavior": "keep_as_draft", "resumes_at": null})
            ),
            (Value::Null, Value::Null),
        ]
    );
    assert_eq!(sim.delivered().len(), 4, "updated only: no paused or resumed events");
}

#[tokio::test]
async fn a_final_authentication_failure_emits_failed_and_action_required_once_each() {
    let sim = Harness::start(false).await;
    let subscription = sim.subscribed().await;
    sim.forget_deliveries();
    let (_, first) = sim
        .post(&format!("/sim/subscriptions/{subscription}/fail_payment"), &[])
        .await;
    let (_, last) = sim
        .post(
            &format!("/sim/subscriptions/{subscription}/fail_payment?action_required=true&final=true"),
            &[],
        )
        .await;

    assert_eq!(first["result"]["invoice"], last["result"]["invoice"]);
    assert_eq!(last["result"]["attempt"], 2);
    let events = sim.delivered();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "invoice.payment_failed",
            "customer.subscription.updated",
            "invoice.payment_failed",
            "invoice.payment_action_required",
            "customer.subscription.updated",
        ]
    );
    assert!(
        events[0]["data"]["object"]["next_payment_attempt"].is_i64(),
        "a retry is scheduled"
    );
    for event in &events[2..4] {
        let invoice = &event["data"]["object"];
        assert_eq!(invoice["id"], last["result"]["invoice"]);
        assert!(
            invoice["next_payment_attempt"].is_null(),
            "the final attempt: {invoice}"
        );
        assert_eq!(invoice["attempt_count"], 2);
    }
    assert_eq!(events[4]["data"]["object"]["status"], "past_due");
    let invoice = last["result"]["invoice"].as_str().unwrap();
    let (_, expanded) = sim
        .get(&format!(
            "/v1/invoices/{invoice}?expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    let intent = &expanded["payments"]["data"][0]["payment"]["payment_intent"];
    assert_eq!(intent["status"], "requires_action");
    assert_eq!(intent["last_payment_error"]["code"], "authentication_required");
}

#[tokio::test]
async fn subscriptions_list_like_stripe_without_the_canceled_and_in_pages() {
    let sim = Harness::start(false).await;
    let customer = sim.customer().await;
    let mut live = Vec::new();
    for _ in 0..13 {
        let session = sim.session(&customer, &[]).await;
        live.push(
            sim.complete(session["id"].as_str().unwrap()).await["subscription"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let canceled = live.remove(0);
    sim.post(&format!("/sim/subscriptions/{canceled}/cancel"), &[]).await;
    let other = sim.subscribed().await;

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = sim
            .get(&format!("/v1/subscriptions?customer={customer}&limit=5{after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        let page_ids = ids(&page);
        pages.push(page_ids.len());
        after = format!("&starting_after={}", page_ids.last().unwrap());
        seen.extend(page_ids);
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(pages, [5, 5, 2], "12 subscriptions, 5 a page");
    live.reverse();
    assert_eq!(seen, live, "newest first, each once, the canceled one left out");

    let count = |query: &'static str| {
        let sim = &sim;
        let customer = customer.clone();
        async move {
            let (_, list) = sim.get(&format!("/v1/subscriptions?customer={customer}&{query}")).await;
            (
                list["data"].as_array().unwrap().len(),
                list["has_more"].as_bool().unwrap(),
            )
        }
    };
    assert_eq!(count("status=all&limit=100").await, (13, false));
    assert_eq!(count("status=canceled").await, (1, false));
    assert_eq!(count("status=ended").await, (1, false));
    assert_eq!(count("status=active&limit=100").await, (12, false));
    assert_eq!(count("status=past_due").await, (0, false));
    assert_eq!(count("limit=10").await, (10, true));
    assert_eq!(count("expand[]=data.customer").await, (10, true), "10 by default");
    let (_, everyone) = sim.get("/v1/subscriptions?limit=100").await;
    assert_eq!(everyone["data"].as_array().unwrap().len(), 13);
    assert!(ids(&everyone).contains(&other));
    for bad in ["limit=0", "limit=101", "starting_after=sub_nope"] {
        let (status, refused) = sim.get(&format!("/v1/subscriptions?{bad}")).await;
        assert!(status == 400 || status == 404, "{bad}: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
    }
}
