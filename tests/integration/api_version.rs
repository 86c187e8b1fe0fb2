//! The pinned API version, checked against its oracle: stripe-python 16.1.0, generated from
//! Stripe's spec at that version (tests/oracle/endive_shapes.py asks it). What the simulator
//! answers and emits has the version's shapes, what the models read exists in it, and what the
//! client may send (the spec subset the simulator validates against) is its parameters.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Value, json};
use shared::stripe::event::{
    EnvelopeData, EnvelopeObject, EnvelopeRelated, EventEnvelope, RelatedObject, WireData, WireEvent,
};
use shared::stripe::objects::{
    BillingPortalSession, Charge, CheckoutSession, Customer, Dispute, Invoice, InvoiceLineItem, InvoiceLineItemDetails,
    InvoiceLineParent, InvoiceParent, InvoicePayment, InvoicePaymentTarget, InvoiceSubscriptionDetails, List,
    PauseCollection, PaymentError, PaymentIntent, Price, PromotionCode, Recurring, Refund, SchedulePhaseDates,
    Subscription, SubscriptionItem, SubscriptionSchedule,
};
use stripe_simulator::{Delivery, Simulator};

const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/oracle/endive_shapes.py");
const SPEC_SUBSET: &str = include_str!("../fixtures/stripe/spec-subset.json");

/// stripe-python's answer to one question (see tests/oracle/endive_shapes.py).
fn oracle(mode: &str, request: &Value) -> Value {
    serde_json::from_slice(&billing_tests::oracle::python(&[ORACLE, mode], &request.to_string())).unwrap()
}

/// Every problem the oracle named, one a line; nothing when every list is empty.
fn problems(answer: &Value) -> Vec<String> {
    answer
        .as_object()
        .unwrap()
        .values()
        .flat_map(|list| list.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn stripe_python_pins_our_api_version() {
    let version = oracle("version", &json!({}));
    assert_eq!(
        version["package"], "16.1.0",
        "tests/requirements.txt pins stripe==16.1.0"
    );
    assert_eq!(version["api_version"], shared::stripe::API_VERSION);
}

pub(super) struct Sim {
    pub(super) simulator: Simulator,
    pub(super) http: reqwest::Client,
}

impl Sim {
    async fn send(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .request(method, format!("{}{path}", self.simulator.base_url))
            .header("Authorization", "Bearer sk_test_api_version")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    pub(super) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        self.send(reqwest::Method::POST, path, form).await
    }

    pub(super) async fn get(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, &[]).await
    }
}

/// What the oracle checks: an object the simulator answered with, and its stripe-python class.
#[derive(Default)]
struct Shown(Vec<Value>);

impl Shown {
    fn add(&mut self, label: &str, class: &str, object: &Value) {
        assert!(object.is_object(), "{label}: {object}");
        self.0.push(json!({"label": label, "class": class, "object": object}));
    }

    /// Each object of a list answer, after checking the list's own fields.
    fn list(&mut self, label: &str, class: &str, list: &Value) {
        assert_eq!(list["object"], "list", "{label}: {list}");
        let data = list["data"].as_array().unwrap();
        assert!(!data.is_empty(), "{label}: an empty list shows no shape");
        for (at, object) in data.iter().enumerate() {
            self.add(&format!("{label}.data[{at}]"), class, object);
        }
    }
}

pub(super) fn id(object: &Value, at: &str) -> String {
    object
        .pointer(at)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {at} in {object}"))
        .to_owned()
}

/// The checkout session the checkout route creates (functions/checkout/src/routes/checkout.rs).
pub(super) async fn checkout_session(sim: &Sim, customer: &str, trial: bool) -> Value {
    let mut form = vec![
        ("mode", "subscription"),
        ("customer", customer),
        ("client_reference_id", "user-api-version"),
        ("line_items[0][price]", "price_pro"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "https://app.example/billing/success?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://app.example/billing/cancel"),
        ("metadata[user_id]", "user-api-version"),
        ("metadata[billing_source]", "checkout_api"),
        ("subscription_data[metadata][user_id]", "user-api-version"),
        ("allow_promotion_codes", "true"),
    ];
    if trial {
        form.push(("subscription_data[trial_period_days]", "14"));
    }
    sim.post("/v1/checkout/sessions", &form).await
}

/// A customer's life in the simulator, every object fetched the way the system fetches it
/// and every event it emitted, each checked against stripe-python's class for it.
#[tokio::test]
async fn the_simulator_answers_and_emits_the_pinned_versions_shapes() {
    let sim = Sim {
        simulator: Simulator::start(0, Delivery::default()).await.unwrap(),
        http: reqwest::Client::new(),
    };
    let mut shown = Shown::default();

    let customer = sim
        .post("/v1/customers", &[("metadata[user_id]", "user-api-version")])
        .await;
    let cus = id(&customer, "/id");
    shown.add("POST /v1/customers", "stripe.Customer", &customer);
    shown.add(
        "GET /v1/customers/{id}",
        "stripe.Customer",
        &sim.get(&format!("/v1/customers/{cus}")).await,
    );

    let open = checkout_session(&sim, &cus, false).await;
    let cs = id(&open, "/id");
    shown.add("POST /v1/checkout/sessions", "stripe.checkout.Session", &open);
    let listed = sim
        .get(&format!("/v1/checkout/sessions?customer={cus}&status=open"))
        .await;
    shown.list("GET /v1/checkout/sessions", "stripe.checkout.Session", &listed);

    let done = sim.post(&format!("/sim/checkout/{cs}/complete"), &[]).await;
    let sub = id(&done, "/result/subscription");
    let paid = id(&done, "/result/invoice");
    shown.add(
        "GET /v1/checkout/sessions/{id} (complete)",
        "stripe.checkout.Session",
        &sim.get(&format!("/v1/checkout/sessions/{cs}")).await,
    );
    let subscription = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    shown.add("GET /v1/subscriptions/{id}", "stripe.Subscription", &subscription);
    shown.list(
        "GET /v1/subscriptions",
        "stripe.Subscription",
        &sim.get(&format!("/v1/subscriptions?customer={cus}&status=all")).await,
    );
    let price = id(&subscription, "/items/data/0/price/id");
    shown.add(
        "GET /v1/prices/{id}",
        "stripe.Price",
        &sim.get(&format!("/v1/prices/{price}")).await,
    );

    shown.add(
        "GET /v1/invoices/{id}",
        "stripe.Invoice",
        &sim.get(&format!("/v1/invoices/{paid}")).await,
    );
    let expanded = sim
        .get(&format!(
            "/v1/invoices/{paid}?expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    shown.add("GET /v1/invoices/{id}?expand[] (paid)", "stripe.Invoice", &expanded);
    let intent = id(&expanded, "/payments/data/0/payment/payment_intent/id");
    let payment_intent = sim.get(&format!("/v1/payment_intents/{intent}")).await;
    shown.add(
        "GET /v1/payment_intents/{id} (succeeded)",
        "stripe.PaymentIntent",
        &payment_intent,
    );
    let charge = id(&payment_intent, "/latest_charge");
    shown.add(
        "GET /v1/charges/{id}",
        "stripe.Charge",
        &sim.get(&format!("/v1/charges/{charge}")).await,
    );

    let refund = sim
        .post(
            "/v1/refunds",
            &[("payment_intent", intent.as_str()), ("reason", "duplicate")],
        )
        .await;
    let re = id(&refund, "/id");
    shown.add("POST /v1/refunds", "stripe.Refund", &refund);
    shown.add(
        "GET /v1/refunds/{id}",
        "stripe.Refund",
        &sim.get(&format!("/v1/refunds/{re}")).await,
    );
    shown.list(
        "GET /v1/refunds",
        "stripe.Refund",
        &sim.get(&format!("/v1/refunds?payment_intent={intent}")).await,
    );
    shown.add(
        "GET /v1/charges/{id} (refunded)",
        "stripe.Charge",
        &sim.get(&format!("/v1/charges/{charge}")).await,
    );

    let failed = sim
        .post(
            &format!("/sim/subscriptions/{sub}/fail_payment?decline_code=insufficient_funds"),
            &[],
        )
        .await;
    let open_invoice = id(&failed, "/result/invoice");
    let declined = sim
        .get(&format!(
            "/v1/invoices/{open_invoice}?expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    shown.add("GET /v1/invoices/{id}?expand[] (declined)", "stripe.Invoice", &declined);
    sim.post(
        &format!("/sim/subscriptions/{sub}/fail_payment?action_required=true"),
        &[],
    )
    .await;
    let declined_intent = id(&declined, "/payments/data/0/payment/payment_intent/id");
    shown.add(
        "GET /v1/payment_intents/{id} (requires_action)",
        "stripe.PaymentIntent",
        &sim.get(&format!("/v1/payment_intents/{declined_intent}")).await,
    );
    shown.add(
        "GET /sim/objects/subscriptions/{id} (past_due)",
        "stripe.Subscription",
        &sim.get(&format!("/sim/objects/subscriptions/{sub}")).await["result"],
    );
    let preview = sim
        .post(
            "/v1/invoices/create_preview",
            &[
                ("customer", cus.as_str()),
                ("subscription", sub.as_str()),
                (
                    "subscription_details[items][0][id]",
                    &id(&subscription, "/items/data/0/id"),
                ),
                ("subscription_details[items][0][quantity]", "3"),
                ("subscription_details[proration_behavior]", "create_prorations"),
            ],
        )
        .await;
    shown.add("POST /v1/invoices/create_preview", "stripe.Invoice", &preview);
    shown.list(
        "POST /v1/invoices/create_preview lines",
        "stripe.InvoiceLineItem",
        &preview["lines"],
    );
    // A downgrade at the period's end: a schedule from the subscription, its next phase set,
    // then released.
    let made = sim
        .post("/v1/subscription_schedules", &[("from_subscription", sub.as_str())])
        .await;
    shown.add("POST /v1/subscription_schedules", "stripe.SubscriptionSchedule", &made);
    let schedule_id = id(&made, "/id");
    let start = made["current_phase"]["start_date"].to_string();
    let end = made["current_phase"]["end_date"].to_string();
    let price_now = id(&subscription, "/items/data/0/price/id");
    let phased = sim
        .post(
            &format!("/v1/subscription_schedules/{schedule_id}"),
            &[
                ("end_behavior", "release"),
                ("phases[0][items][0][price]", price_now.as_str()),
                ("phases[0][items][0][quantity]", "1"),
                ("phases[0][start_date]", start.as_str()),
                ("phases[0][end_date]", end.as_str()),
                ("phases[1][items][0][price]", "price_basic"),
                ("phases[1][items][0][quantity]", "1"),
                ("phases[1][proration_behavior]", "none"),
                ("phases[1][metadata][plan]", "basic"),
            ],
        )
        .await;
    shown.add(
        "POST /v1/subscription_schedules/{id}",
        "stripe.SubscriptionSchedule",
        &phased,
    );
    shown.add(
        "GET /v1/subscription_schedules/{id}",
        "stripe.SubscriptionSchedule",
        &sim.get(&format!("/v1/subscription_schedules/{schedule_id}")).await,
    );
    let released = sim
        .post(&format!("/v1/subscription_schedules/{schedule_id}/release"), &[])
        .await;
    shown.add(
        "POST /v1/subscription_schedules/{id}/release",
        "stripe.SubscriptionSchedule",
        &released,
    );
    sim.post(&format!("/v1/invoices/{open_invoice}/void"), &[]).await;
    shown.list(
        "GET /v1/invoices",
        "stripe.Invoice",
        &sim.get(&format!("/v1/invoices?customer={cus}")).await,
    );

    let portal = sim
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", cus.as_str()),
                ("return_url", "https://app.example/account"),
            ],
        )
        .await;
    shown.add(
        "POST /v1/billing_portal/sessions",
        "stripe.billing_portal.Session",
        &portal,
    );

    let paused = sim
        .post(
            &format!("/v1/subscriptions/{sub}"),
            &[
                ("pause_collection[behavior]", "mark_uncollectible"),
                ("cancel_at_period_end", "true"),
            ],
        )
        .await;
    shown.add("POST /v1/subscriptions/{id}", "stripe.Subscription", &paused);
    sim.post(
        &format!("/v1/subscriptions/{sub}"),
        &[("pause_collection", ""), ("cancel_at_period_end", "false")],
    )
    .await;
    sim.post(&format!("/sim/subscriptions/{sub}/end_period"), &[]).await;

    let second = checkout_session(&sim, &cus, true).await;
    let expired = sim
        .post(&format!("/v1/checkout/sessions/{}/expire", id(&second, "/id")), &[])
        .await;
    shown.add(
        "POST /v1/checkout/sessions/{id}/expire",
        "stripe.checkout.Session",
        &expired,
    );

    let other = sim.post("/v1/customers", &[]).await;
    let other_id = id(&other, "/id");
    let trial = checkout_session(&sim, &other_id, true).await;
    let trial_done = sim
        .post(&format!("/sim/checkout/{}/complete", id(&trial, "/id")), &[])
        .await;
    shown.add(
        "GET /v1/subscriptions/{id} (trialing)",
        "stripe.Subscription",
        &sim.get(&format!(
            "/v1/subscriptions/{}",
            id(&trial_done, "/result/subscription")
        ))
        .await,
    );

    let canceled = sim
        .send(reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[])
        .await;
    shown.add("DELETE /v1/subscriptions/{id}", "stripe.Subscription", &canceled);
    let deleted = sim
        .send(reqwest::Method::DELETE, &format!("/v1/customers/{other_id}"), &[])
        .await;
    shown.add("DELETE /v1/customers/{id}", "stripe.Customer", &deleted);
    shown.add(
        "GET /v1/customers/{id} (deleted)",
        "stripe.Customer",
        &sim.get(&format!("/v1/customers/{other_id}")).await,
    );

    // A promotion code (made as the dashboard makes one) found by its code, as checkout looks
    // it up; a one-time purchase paid, and its charge disputed and lost.
    let promotion = sim.post("/sim/promotion_codes?code=LAUNCH20&coupon=L20", &[]).await;
    let promo = id(&promotion, "/result/id");
    shown.list(
        "GET /v1/promotion_codes?code=",
        "stripe.PromotionCode",
        &sim.get("/v1/promotion_codes?code=launch20&active=true&limit=1").await,
    );
    shown.add(
        "GET /v1/promotion_codes/{id}",
        "stripe.PromotionCode",
        &sim.get(&format!("/v1/promotion_codes/{promo}")).await,
    );
    let purchase = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("customer", cus.as_str()),
                ("line_items[0][price]", "price_lifetime"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://app.example/done"),
                ("payment_intent_data[metadata][product]", "lifetime"),
                ("automatic_tax[enabled]", "true"),
                ("customer_update[address]", "auto"),
            ],
        )
        .await;
    let bought = id(&purchase, "/id");
    sim.post(&format!("/sim/checkout/{bought}/complete"), &[]).await;
    let paid_session = sim.get(&format!("/v1/checkout/sessions/{bought}")).await;
    shown.add(
        "GET /v1/checkout/sessions/{id} (payment, paid)",
        "stripe.checkout.Session",
        &paid_session,
    );
    let purchase_intent = sim
        .get(&format!("/v1/payment_intents/{}", id(&paid_session, "/payment_intent")))
        .await;
    shown.add(
        "GET /v1/payment_intents/{id} (one-time)",
        "stripe.PaymentIntent",
        &purchase_intent,
    );
    let disputed = sim
        .post(
            &format!(
                "/sim/charges/{}/dispute?status=lost",
                id(&purchase_intent, "/latest_charge")
            ),
            &[],
        )
        .await;
    shown.add(
        "GET /v1/disputes/{id}",
        "stripe.Dispute",
        &sim.get(&format!("/v1/disputes/{}", id(&disputed, "/result/dispute")))
            .await,
    );

    let events = all_events(&sim).await;
    let kinds: BTreeSet<String> = events
        .iter()
        .map(|e| e["data"]["object"]["object"].as_str().unwrap_or_default().to_owned())
        .collect();
    let classes = oracle("event_classes", &json!(kinds));
    for event in &events {
        let label = format!(
            "event {} {}",
            event["type"].as_str().unwrap_or_default(),
            id(event, "/id")
        );
        shown.add(&label, "stripe.Event", event);
        let object = &event["data"]["object"];
        let class = classes[object["object"].as_str().unwrap_or_default()].as_str().unwrap();
        shown.add(&format!("{label} data.object"), class, object);
    }
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "charge",
            "checkout.session",
            "customer",
            "dispute",
            "invoice",
            "refund",
            "subscription",
            "subscription_schedule"
        ],
        "every kind of object the simulator puts in events is checked"
    );

    for entry in &shown.0 {
        let (label, object) = (&entry["label"], &entry["object"]);
        match entry["class"].as_str() {
            // Clover (2025-09-30) made flexible billing mode the default for new subscriptions.
            Some("stripe.Subscription") => assert_eq!(object["billing_mode"]["type"], "flexible", "{label}"),
            // The session's UI mode (its value is one of the pinned version's, checked below):
            // the simulator's sessions are Stripe-hosted pages.
            Some("stripe.checkout.Session") => assert!(object["ui_mode"].is_string(), "{label}: {object}"),
            _ => {}
        }
    }
    let answer = oracle("shapes", &Value::Array(shown.0));
    let found = problems(&answer);
    assert!(
        found.is_empty(),
        "{} differences from stripe-python {}'s classes:\n{}",
        found.len(),
        shared::stripe::API_VERSION,
        found.join("\n")
    );
}

async fn all_events(sim: &Sim) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let page = sim.get(&format!("/v1/events?limit=100{after}")).await;
        let data = page["data"].as_array().unwrap();
        events.extend(data.iter().cloned());
        match data.last() {
            Some(last) if page["has_more"] == true => after = format!("&starting_after={}", id(last, "/id")),
            _ => return events,
        }
    }
}

/// A deserializer that only records the fields a struct asks for, then refuses: what serde
/// reads for a model, without listing it by hand.
struct Recorder<'a>(&'a mut Vec<&'static str>);

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs are recorded"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn read_by<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    let mut fields = Vec::new();
    assert!(T::deserialize(Recorder(&mut fields)).is_err());
    assert!(!fields.is_empty(), "{} is not a struct", std::any::type_name::<T>());
    fields
}

/// Fields the models read that the pinned version does not have, each with why.
const OLDER_VERSIONS: &str = "older API versions' payloads; see issue: events in another version's shape";
/// A snapshot event (`stripe.Event`) or a thin one (a v1 event notification; any will do, they
/// declare the same fields).
const BOTH_SHAPES: &str = "stripe.Event|stripe.events.V1InvoicePaidEventNotification";

const READ_THOUGH_ABSENT: &[(&str, &str, &str)] = &[
    ("Subscription", "current_period_start", OLDER_VERSIONS),
    ("Subscription", "current_period_end", OLDER_VERSIONS),
    ("Invoice", "subscription", OLDER_VERSIONS),
    (
        "EnvelopeObject as stripe.Customer",
        "customer",
        "read from every event's object; a customer event's object is the customer, found by its id",
    ),
    (
        "EnvelopeObject as stripe.Dispute",
        "customer",
        "read from every event's object; a dispute names none, so its events are grouped by its id",
    ),
];

#[test]
fn what_the_models_read_exists_at_the_pinned_version() {
    let models: Vec<(&str, &str, Vec<&'static str>)> = vec![
        ("Customer", "stripe.Customer", read_by::<Customer>()),
        (
            "CheckoutSession",
            "stripe.checkout.Session",
            read_by::<CheckoutSession>(),
        ),
        ("Refund", "stripe.Refund", read_by::<Refund>()),
        ("Charge", "stripe.Charge", read_by::<Charge>()),
        ("Dispute", "stripe.Dispute", read_by::<Dispute>()),
        ("PromotionCode", "stripe.PromotionCode", read_by::<PromotionCode>()),
        (
            "SubscriptionSchedule",
            "stripe.SubscriptionSchedule",
            read_by::<SubscriptionSchedule>(),
        ),
        (
            "SchedulePhaseDates",
            "stripe.SubscriptionSchedule.CurrentPhase",
            read_by::<SchedulePhaseDates>(),
        ),
        (
            "BillingPortalSession",
            "stripe.billing_portal.Session",
            read_by::<BillingPortalSession>(),
        ),
        ("Subscription", "stripe.Subscription", read_by::<Subscription>()),
        (
            "List<SubscriptionItem>",
            "stripe.ListObject",
            read_by::<List<SubscriptionItem>>(),
        ),
        (
            "SubscriptionItem",
            "stripe.SubscriptionItem",
            read_by::<SubscriptionItem>(),
        ),
        (
            "PauseCollection",
            "stripe.Subscription.PauseCollection",
            read_by::<PauseCollection>(),
        ),
        ("Price", "stripe.Price", read_by::<Price>()),
        ("Recurring", "stripe.Price.Recurring", read_by::<Recurring>()),
        ("Invoice", "stripe.Invoice", read_by::<Invoice>()),
        (
            "InvoiceLineItem",
            "stripe.InvoiceLineItem",
            read_by::<InvoiceLineItem>(),
        ),
        (
            "InvoiceLineParent",
            "stripe.InvoiceLineItem.Parent",
            read_by::<InvoiceLineParent>(),
        ),
        (
            "InvoiceLineItemDetails",
            "stripe.InvoiceLineItem.Parent.SubscriptionItemDetails",
            read_by::<InvoiceLineItemDetails>(),
        ),
        ("InvoiceParent", "stripe.Invoice.Parent", read_by::<InvoiceParent>()),
        (
            "InvoiceSubscriptionDetails",
            "stripe.Invoice.Parent.SubscriptionDetails",
            read_by::<InvoiceSubscriptionDetails>(),
        ),
        ("InvoicePayment", "stripe.InvoicePayment", read_by::<InvoicePayment>()),
        (
            "InvoicePaymentTarget",
            "stripe.InvoicePayment.Payment",
            read_by::<InvoicePaymentTarget>(),
        ),
        ("PaymentIntent", "stripe.PaymentIntent", read_by::<PaymentIntent>()),
        (
            "PaymentError",
            "stripe.PaymentIntent.LastPaymentError",
            read_by::<PaymentError>(),
        ),
        ("WireEvent", BOTH_SHAPES, read_by::<WireEvent>()),
        ("WireData", "stripe.Event.Data", read_by::<WireData>()),
        (
            "RelatedObject",
            "stripe.v2.core._event.RelatedObject",
            read_by::<RelatedObject>(),
        ),
        ("EventEnvelope", BOTH_SHAPES, read_by::<EventEnvelope>()),
        ("EnvelopeData", "stripe.Event.Data", read_by::<EnvelopeData>()),
        (
            "EnvelopeRelated",
            "stripe.v2.core._event.RelatedObject",
            read_by::<EnvelopeRelated>(),
        ),
        // The envelope reads these of whatever object an event carries: each kind it routes.
        (
            "EnvelopeObject as stripe.Subscription",
            "stripe.Subscription",
            read_by::<EnvelopeObject>(),
        ),
        (
            "EnvelopeObject as stripe.Invoice",
            "stripe.Invoice",
            read_by::<EnvelopeObject>(),
        ),
        (
            "EnvelopeObject as stripe.checkout.Session",
            "stripe.checkout.Session",
            read_by::<EnvelopeObject>(),
        ),
        (
            "EnvelopeObject as stripe.Customer",
            "stripe.Customer",
            read_by::<EnvelopeObject>(),
        ),
        (
            "EnvelopeObject as stripe.Charge",
            "stripe.Charge",
            read_by::<EnvelopeObject>(),
        ),
        (
            "EnvelopeObject as stripe.Dispute",
            "stripe.Dispute",
            read_by::<EnvelopeObject>(),
        ),
    ];
    let request: Vec<Value> = models
        .iter()
        .map(|(name, class, fields)| json!({"struct": name, "class": class, "fields": fields}))
        .collect();
    let answer = oracle("declared", &Value::Array(request));
    let absent: BTreeSet<(String, String)> = answer
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(name, fields)| {
            fields
                .as_array()
                .unwrap()
                .iter()
                .map(move |f| (name.clone(), f.as_str().unwrap().to_owned()))
        })
        .collect();
    let allowed: BTreeSet<(String, String)> = READ_THOUGH_ABSENT
        .iter()
        .map(|(name, field, _)| ((*name).to_owned(), (*field).to_owned()))
        .collect();
    assert_eq!(
        absent,
        allowed,
        "the fields the models read that {} lacks are exactly the allow-listed ones",
        shared::stripe::API_VERSION
    );
}

/// Each operation of the spec subset (what the client may send and the simulator accepts),
/// with the stripe-python params TypedDict of that operation.
const OPERATIONS: &[(&str, &str, &str)] = &[
    ("POST", "/v1/customers", "stripe.params.CustomerCreateParams"),
    (
        "GET",
        "/v1/customers/{customer}",
        "stripe.params.CustomerRetrieveParams",
    ),
    (
        "DELETE",
        "/v1/customers/{customer}",
        "stripe.params.CustomerDeleteParams",
    ),
    (
        "GET",
        "/v1/checkout/sessions",
        "stripe.params.checkout.SessionListParams",
    ),
    (
        "POST",
        "/v1/checkout/sessions",
        "stripe.params.checkout.SessionCreateParams",
    ),
    (
        "GET",
        "/v1/checkout/sessions/{session}",
        "stripe.params.checkout.SessionRetrieveParams",
    ),
    (
        "POST",
        "/v1/checkout/sessions/{session}/expire",
        "stripe.params.checkout.SessionExpireParams",
    ),
    ("GET", "/v1/refunds", "stripe.params.RefundListParams"),
    ("POST", "/v1/refunds", "stripe.params.RefundCreateParams"),
    ("POST", "/v1/billing/meters", "stripe.params.billing.MeterCreateParams"),
    ("GET", "/v1/billing/meters", "stripe.params.billing.MeterListParams"),
    (
        "GET",
        "/v1/billing/meters/{id}",
        "stripe.params.billing.MeterRetrieveParams",
    ),
    (
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        "stripe.params.billing.MeterListEventSummariesParams",
    ),
    (
        "POST",
        "/v1/billing/meter_events",
        "stripe.params.billing.MeterEventCreateParams",
    ),
    ("POST", "/v1/prices", "stripe.params.PriceCreateParams"),
    ("GET", "/v1/refunds/{refund}", "stripe.params.RefundRetrieveParams"),
    (
        "GET",
        "/v1/payment_intents/{intent}",
        "stripe.params.PaymentIntentRetrieveParams",
    ),
    ("GET", "/v1/charges/{charge}", "stripe.params.ChargeRetrieveParams"),
    ("GET", "/v1/disputes/{dispute}", "stripe.params.DisputeRetrieveParams"),
    (
        "POST",
        "/v1/subscription_schedules",
        "stripe.params.SubscriptionScheduleCreateParams",
    ),
    (
        "GET",
        "/v1/subscription_schedules/{schedule}",
        "stripe.params.SubscriptionScheduleRetrieveParams",
    ),
    (
        "POST",
        "/v1/subscription_schedules/{schedule}",
        "stripe.params.SubscriptionScheduleModifyParams",
    ),
    (
        "POST",
        "/v1/subscription_schedules/{schedule}/release",
        "stripe.params.SubscriptionScheduleReleaseParams",
    ),
    ("GET", "/v1/promotion_codes", "stripe.params.PromotionCodeListParams"),
    (
        "GET",
        "/v1/promotion_codes/{promotion_code}",
        "stripe.params.PromotionCodeRetrieveParams",
    ),
    ("GET", "/v1/invoices", "stripe.params.InvoiceListParams"),
    ("GET", "/v1/invoices/{invoice}", "stripe.params.InvoiceRetrieveParams"),
    (
        "POST",
        "/v1/invoices/create_preview",
        "stripe.params.InvoiceCreatePreviewParams",
    ),
    (
        "POST",
        "/v1/invoices/{invoice}/void",
        "stripe.params.InvoiceVoidInvoiceParams",
    ),
    (
        "POST",
        "/v1/invoices/{invoice}/mark_uncollectible",
        "stripe.params.InvoiceMarkUncollectibleParams",
    ),
    (
        "POST",
        "/v1/billing_portal/sessions",
        "stripe.params.billing_portal.SessionCreateParams",
    ),
    ("GET", "/v1/subscriptions", "stripe.params.SubscriptionListParams"),
    (
        "GET",
        "/v1/subscriptions/{subscription_exposed_id}",
        "stripe.params.SubscriptionRetrieveParams",
    ),
    (
        "POST",
        "/v1/subscriptions/{subscription_exposed_id}",
        "stripe.params.SubscriptionModifyParams",
    ),
    (
        "DELETE",
        "/v1/subscriptions/{subscription_exposed_id}",
        "stripe.params.SubscriptionCancelParams",
    ),
    ("GET", "/v1/prices/{price}", "stripe.params.PriceRetrieveParams"),
    ("GET", "/v1/events", "stripe.params.EventListParams"),
    ("GET", "/v1/events/{id}", "stripe.params.EventRetrieveParams"),
    (
        "GET",
        "/v1/webhook_endpoints",
        "stripe.params.WebhookEndpointListParams",
    ),
    (
        "POST",
        "/v1/webhook_endpoints",
        "stripe.params.WebhookEndpointCreateParams",
    ),
    (
        "GET",
        "/v1/webhook_endpoints/{webhook_endpoint}",
        "stripe.params.WebhookEndpointRetrieveParams",
    ),
    (
        "POST",
        "/v1/webhook_endpoints/{webhook_endpoint}",
        "stripe.params.WebhookEndpointModifyParams",
    ),
    (
        "DELETE",
        "/v1/webhook_endpoints/{webhook_endpoint}",
        "stripe.params.WebhookEndpointDeleteParams",
    ),
];

#[test]
fn what_the_client_may_send_exists_at_the_pinned_version() {
    let spec: Value = serde_json::from_str(SPEC_SUBSET).unwrap();
    let in_spec: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let listed: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(in_spec, listed, "every operation of spec-subset.json is checked");

    let operations: Vec<Value> = OPERATIONS
        .iter()
        .map(|(method, path, params)| json!({"method": method, "path": path, "params": params}))
        .collect();
    let answer = oracle("params", &json!({"spec": spec, "operations": operations}));
    let found = problems(&answer);
    assert!(
        found.is_empty(),
        "spec-subset.json allows parameters stripe-python {} does not have:\n{}",
        shared::stripe::API_VERSION,
        found.join("\n")
    );
}

/// Endive removed `payment_method_types` from Checkout Sessions' parameters (stripe-python
/// 16.1 declares only `allowed_payment_method_types`): the simulator refuses it, as Stripe does.
#[test]
fn checkout_sessions_refuse_payment_method_types() {
    let declared = oracle(
        "declared",
        &json!([{"struct": "SessionCreateParams", "class": "stripe.params.checkout.SessionCreateParams",
            "fields": ["payment_method_types", "allowed_payment_method_types"]}]),
    );
    assert_eq!(declared["SessionCreateParams"], json!(["payment_method_types"]));
    let spec = stripe_simulator::spec::Spec::load();
    let body = b"mode=subscription&customer=cus_1&line_items[0][price]=price_1&payment_method_types[0]=card";
    let refused = spec.validate("POST", "/v1/checkout/sessions", None, body).unwrap_err();
    assert!(
        refused[0].contains("unknown parameter payment_method_types"),
        "{refused:?}"
    );
}

/// The webhook endpoints and event destinations `billing setup` creates in the simulator have
/// stripe-python's shapes: `stripe.WebhookEndpoint` (its `secret` only in the create answer),
/// `stripe.v2.core.EventDestination`.
#[tokio::test]
async fn the_simulators_endpoints_and_destinations_have_the_pinned_versions_shapes() {
    let sim = Sim {
        simulator: Simulator::start(0, Delivery::default()).await.unwrap(),
        http: reqwest::Client::new(),
    };
    let mut shown = Shown::default();
    let created = sim
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", "https://billing.example/webhooks/stripe"),
                ("enabled_events[]", "invoice.paid"),
                ("enabled_events[]", "customer.deleted"),
                ("api_version", shared::stripe::API_VERSION),
                ("description", "billing"),
                ("metadata[billing_stack]", "stack"),
            ],
        )
        .await;
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"), "{created}");
    shown.add("POST /v1/webhook_endpoints", "stripe.WebhookEndpoint", &created);
    let we = id(&created, "/id");
    let read = sim.get(&format!("/v1/webhook_endpoints/{we}")).await;
    assert!(
        read.get("secret").is_none(),
        "the secret is shown at creation only: {read}"
    );
    shown.add("GET /v1/webhook_endpoints/{id}", "stripe.WebhookEndpoint", &read);
    let updated = sim
        .post(&format!("/v1/webhook_endpoints/{we}"), &[("disabled", "true")])
        .await;
    assert_eq!(updated["status"], "disabled");
    shown.add("POST /v1/webhook_endpoints/{id}", "stripe.WebhookEndpoint", &updated);
    shown.list(
        "GET /v1/webhook_endpoints",
        "stripe.WebhookEndpoint",
        &sim.get("/v1/webhook_endpoints").await,
    );
    // Stripe refuses `api_version` on an update: an endpoint's version is fixed at creation.
    let refused = sim
        .http
        .post(format!("{}/v1/webhook_endpoints/{we}", sim.simulator.base_url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("api_version=2025-03-31.basil")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let destination: Value = sim
        .http
        .post(format!("{}/v2/core/event_destinations", sim.simulator.base_url))
        .header("Content-Type", "application/json")
        .body(
            json!({
                "name": "stack-billing",
                "type": "amazon_eventbridge",
                "amazon_eventbridge": {"aws_account_id": "123456789012", "aws_region": "us-east-1"},
                "enabled_events": ["invoice.paid"],
                "event_payload": "snapshot",
                "snapshot_api_version": shared::stripe::API_VERSION,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        destination["amazon_eventbridge"]["aws_event_source_status"], "pending",
        "{destination}"
    );
    shown.add(
        "POST /v2/core/event_destinations",
        "stripe.v2.core.EventDestination",
        &destination,
    );
    let answer = oracle("shapes", &Value::Array(shown.0));
    let found = problems(&answer);
    assert!(
        found.is_empty(),
        "differences from stripe-python:\n{}",
        found.join("\n")
    );
}
