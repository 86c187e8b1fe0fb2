//! How events arrive: snapshot and thin payloads, other API versions, the other mode's events,
//! payloads that are not events, and Amazon EventBridge beside the webhook.

use billing_tests::lifecycle::{PLANS, T0};
use billing_tests::queue_conformance::drain;
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::{Value, json};
use shared::config::{Catalog, EventBridgeSettings};
use shared::eventbridge::{EventBridgeReceiver, Verdict};
use shared::processing::{EventHandler, Outcome};
use shared::queue::{MemoryQueue, QueueName};
use shared::reconcile::{EventPayload, IN_FLIGHT_SECS, Reconciler};
use shared::store::{BillingStore, LedgerState, MemoryStore};
use shared::stripe::API_VERSION;
use shared::sync::Syncer;
use shared::telemetry::count_of;
use shared::webhook::{Delivery, WebhookReceiver};
use stripe_simulator::Simulator;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use super::api_version::{Sim, checkout_session, id};

const NOW: i64 = T0 + 60;
const LEASE: i64 = NOW + 30;
const ACCOUNT: &str = "123456789012";
const SOURCE: &str = "aws.partner/stripe.com/ed_test_61RM8sQ5";

fn syncer(stripe: &StripeStandIn) -> Syncer<MemoryStore> {
    Syncer {
        store: MemoryStore::new(),
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    }
}

/// The stand-in answers `GET /v1/subscriptions/{id}` with the subscription at the pinned
/// version — only when asked with that version.
async fn serve_pinned(stripe: &StripeStandIn, subscription: &Value) {
    let route = format!("/v1/subscriptions/{}", subscription["id"].as_str().unwrap());
    Mock::given(method("GET"))
        .and(path(route))
        .and(header("Stripe-Version", API_VERSION))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription))
        .mount(&stripe.server)
        .await;
}

async fn stored_price(syncer: &Syncer<MemoryStore>, customer: &str, sub: &str) -> Option<String> {
    let stored = syncer.store.get_subscription(customer, sub).await.unwrap();
    stored.and_then(|s| s.price_id)
}

/// The delivery a new user met with a webhook endpoint on API 2017-08-15 (captured from a
/// third-party emulator): subscription items carry a `plan` and no `price`. It must not become
/// poison: the subscription is read at the pinned version and applied; the mismatch is counted.
#[tokio::test]
async fn an_event_in_another_versions_shape_is_applied_from_its_object_at_the_pin() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(&stripe);
    let (sub, customer) = (unique("sub_old"), unique("cus_old"));
    serve_pinned(&stripe, &fixtures::subscription(&sub, &customer, "price_pro", "active")).await;
    let old_shape = json!({"id": sub, "object": "subscription", "customer": customer, "status": "active",
        "current_period_end": NOW + 86_400,
        "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
            "plan": {"id": "gold", "object": "plan", "amount": 2000, "interval": "month"}, "quantity": 1}]}});
    let mut event = fixtures::event(&unique("evt_"), "customer.subscription.updated", NOW, old_shape);
    event["api_version"] = json!("2017-08-15");
    let before = count_of("ApiVersionMismatch");

    let outcome = syncer.handle_message(&event.to_string(), NOW, LEASE).await.unwrap();

    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(
        stored_price(&syncer, &customer, &sub).await.as_deref(),
        Some("price_pro")
    );
    assert!(count_of("ApiVersionMismatch") > before);

    // No api_version, and a shape the pinned models cannot read: read again, applied too.
    let (sub2, customer2) = (unique("sub_old"), unique("cus_old"));
    serve_pinned(
        &stripe,
        &fixtures::subscription(&sub2, &customer2, "price_basic", "active"),
    )
    .await;
    let unversioned = json!({"id": unique("evt_"), "object": "event", "type": "customer.subscription.created",
        "created": NOW, "livemode": false,
        "data": {"object": {"id": sub2, "object": "subscription", "customer": customer2, "status": "active",
            "items": {"data": [{"id": "si_2", "plan": {"id": "basic"}}]}}}});
    let outcome = syncer
        .handle_message(&unversioned.to_string(), NOW, LEASE)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(
        stored_price(&syncer, &customer2, &sub2).await.as_deref(),
        Some("price_basic")
    );
}

/// A thin event as stripe-python 16.1 parses one (`parse_event_notification`): the processor
/// reads the related object at the pinned version and applies it like a snapshot; the ledger
/// keys it by the thin event's id.
#[tokio::test]
async fn a_thin_event_is_applied_from_its_related_object_read_at_the_pin() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(&stripe);
    let (sub, customer) = (unique("sub_thin"), unique("cus_thin"));
    serve_pinned(
        &stripe,
        &fixtures::subscription(&sub, &customer, "price_pro", "trialing"),
    )
    .await;
    let thin = json!({"id": unique("evt_test_"), "object": "v2.core.event", "type": "v1.customer.subscription.created",
        "created": "2025-11-13T02:14:20.000Z", "livemode": false, "context": null, "reason": null,
        "related_object": {"id": sub, "type": "subscription", "url": format!("/v1/subscriptions/{sub}")}});
    let parsed = official_parse("thin", &thin);
    assert_eq!(parsed["type"], "v1.customer.subscription.created");
    assert_eq!(parsed["related_object_id"], sub.as_str());

    let body = thin.to_string();
    assert_eq!(
        syncer.handle_message(&body, NOW, LEASE).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        syncer.handle_message(&body, NOW, LEASE).await.unwrap(),
        Outcome::Duplicate
    );

    let stored = syncer.store.get_subscription(&customer, &sub).await.unwrap().unwrap();
    assert_eq!(stored.price_id.as_deref(), Some("price_pro"));
    // 2025-11-13T02:14:20Z is Unix 1763000060 (T0 + 60): the watermark in the snapshots' unit.
    assert_eq!(stored.watermark, 1_763_000_060);
    let thin_id = thin["id"].as_str().unwrap();
    assert_eq!(
        syncer.store.event_state(thin_id).await.unwrap(),
        Some(LedgerState::Completed)
    );
}

/// Requirement 11: an event of the other mode than the key's is not processed, and counted.
#[tokio::test]
async fn an_event_from_the_other_mode_is_not_processed_and_is_counted() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(&stripe);
    let (sub, customer) = (unique("sub_live"), unique("cus_live"));
    let mut event = fixtures::event(
        &unique("evt_"),
        "customer.subscription.created",
        NOW,
        fixtures::subscription(&sub, &customer, "price_pro", "active"),
    );
    event["livemode"] = json!(true);
    let before = count_of("LivemodeMismatch");

    let outcome = syncer.handle_message(&event.to_string(), NOW, LEASE).await.unwrap();

    assert_eq!(outcome, Outcome::Ignored);
    assert!(count_of("LivemodeMismatch") > before);
    assert!(syncer.store.get_subscription(&customer, &sub).await.unwrap().is_none());
    assert_eq!(
        syncer.store.event_state(event["id"].as_str().unwrap()).await.unwrap(),
        None
    );
    assert!(stripe.requests().await.is_empty(), "nothing was asked of Stripe");
}

/// A message that is not a Stripe event at all is acknowledged once, as final, and counted;
/// it does not fail its batch nor hold back its group.
#[tokio::test]
async fn a_message_that_is_not_a_stripe_event_is_dropped_once_as_final() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(&stripe);
    let (sub, customer) = (unique("sub_ok"), unique("cus_ok"));
    let good = fixtures::event(
        &unique("evt_"),
        "customer.subscription.created",
        NOW,
        fixtures::subscription(&sub, &customer, "price_pro", "active"),
    );
    let batch: Vec<(String, &str, String)> = vec![
        ("junk".into(), customer.as_str(), "{\"id\": truncated".into()),
        (
            "charge".into(),
            customer.as_str(),
            json!({"id": "ch_1", "object": "charge", "type": "x", "created": 1, "data": {"object": {}}}).to_string(),
        ),
        ("good".into(), customer.as_str(), good.to_string()),
    ];
    let before = count_of("RejectedMessages");

    let response = syncer
        .handle_batch(billing_tests::lifecycle::sqs_batch(&batch), NOW, LEASE)
        .await
        .unwrap();

    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert!(count_of("RejectedMessages") >= before + 2);
    assert!(syncer.store.get_subscription(&customer, &sub).await.unwrap().is_some());
}

/// What stripe-python 16.1 makes of a payload: `parse_event_notification_without_verification`
/// (thin) or `construct_event_without_verification` (snapshot), both of which also unwrap an
/// EventBridge envelope.
fn official_parse(shape: &str, payload: &Value) -> Value {
    let script = r#"
import json, sys, stripe
client = stripe.StripeClient("sk_test_oracle")
raw = sys.stdin.read()
if sys.argv[1] == "thin":
    n = client.parse_event_notification_without_verification(raw)
    print(json.dumps({"id": n.id, "type": n.type, "related_object_id": n.related_object.id}))
else:
    e = client.construct_event_without_verification(raw)
    print(json.dumps({"id": e.id, "type": e.type, "object_id": e.data.object.id}))
"#;
    serde_json::from_slice(&billing_tests::oracle::python(
        &["-c", script, shape],
        &payload.to_string(),
    ))
    .unwrap()
}

/// The envelope EventBridge hands a Lambda target for a Stripe partner event.
fn envelope(source: &str, account: &str, detail: &Value) -> Value {
    json!({"version": "0", "id": unique("eb-"), "detail-type": detail["type"], "source": source,
        "account": account, "time": "2025-11-13T02:14:20Z", "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1::event-source/{source}")], "detail": detail})
}

/// Requirement 34, on SQS (moto): an envelope from the configured source and account is
/// routed to the FIFO queue with the Stripe event id as its deduplication id; a wrong source or
/// account is refused with nothing enqueued; the same event by webhook and by EventBridge is
/// processed once.
#[tokio::test]
async fn eventbridge_delivery_is_checked_routed_and_deduplicated_with_the_webhook() {
    let (_client, _settings, queue) = aws::fresh_queues().await;
    let receiver = EventBridgeReceiver::new(
        EventBridgeSettings {
            account: ACCOUNT.into(),
            source: Some(SOURCE.into()),
        },
        queue.clone(),
    );
    let (sub, customer) = (unique("sub_eb"), unique("cus_eb"));
    let snapshot = fixtures::event(
        &unique("evt_"),
        "customer.subscription.created",
        shared::unix_now(),
        fixtures::subscription(&sub, &customer, "price_pro", "active"),
    );
    let thin = json!({"id": unique("evt_test_"), "object": "v2.core.event", "type": "v1.invoice.payment_failed",
        "created": "2025-11-13T02:14:20.000Z", "livemode": false,
        "related_object": {"id": "in_1", "type": "invoice", "url": "/v1/invoices/in_1"}});
    for (shape, detail) in [("snapshot", &snapshot), ("thin", &thin)] {
        let parsed = official_parse(shape, &envelope(SOURCE, ACCOUNT, detail));
        assert_eq!(parsed["id"], detail["id"], "stripe-python reads the envelope's detail");
    }

    let before = count_of("EventBridgeRefused");
    for (source, account) in [
        ("aws.partner/stripe.com/ed_test_other", ACCOUNT),
        ("aws.partner/example.com/ed_test_61RM8sQ5", ACCOUNT),
        (SOURCE, "210987654321"),
    ] {
        let refused = receiver
            .receive(&envelope(source, account, &snapshot).to_string())
            .await
            .unwrap();
        assert!(matches!(refused, Verdict::Refused(_)), "{source} {account}");
    }
    for junk in [
        "not json",
        "{}",
        &json!({"source": SOURCE, "account": ACCOUNT, "id": "x", "detail": {"a": 1}}).to_string(),
    ] {
        assert!(
            matches!(receiver.receive(junk).await.unwrap(), Verdict::Refused(_)),
            "{junk}"
        );
    }
    assert!(count_of("EventBridgeRefused") >= before + 6);
    assert!(
        drain(&queue, QueueName::Events).await.is_empty(),
        "nothing enqueued when refused"
    );

    let unhandled = json!({"id": unique("evt_"), "object": "event", "type": "charge.succeeded", "created": 1,
        "livemode": false, "data": {"object": {"id": "ch_1", "object": "charge"}}});
    assert_eq!(
        receiver
            .receive(&envelope(SOURCE, ACCOUNT, &unhandled).to_string())
            .await
            .unwrap(),
        Verdict::Ignored
    );
    assert_eq!(
        receiver
            .receive(&envelope(SOURCE, ACCOUNT, &snapshot).to_string())
            .await
            .unwrap(),
        Verdict::Enqueued
    );
    assert_eq!(
        receiver
            .receive(&envelope(SOURCE, ACCOUNT, &thin).to_string())
            .await
            .unwrap(),
        Verdict::Enqueued
    );

    // The same snapshot event through the webhook: SQS drops it as a duplicate (same
    // deduplication id), so one message reaches the processor.
    let secret = "whsec_both_paths";
    let webhook = WebhookReceiver::new(
        shared::stripe::SignatureVerifier::new(
            &[secrecy::SecretString::from(secret.to_owned())],
            std::num::NonZeroU64::new(300).unwrap(),
        ),
        queue.clone(),
    );
    let body = snapshot.to_string();
    let now = shared::unix_now();
    let signature = shared::stripe::signature::sign(secret, now, body.as_bytes());
    let reply = webhook
        .receive(
            Delivery {
                method: "POST",
                signature: Some(&signature),
                body: body.as_bytes(),
            },
            now,
        )
        .await;
    assert_eq!(reply.status, 200);

    let events = drain(&queue, QueueName::Events).await;
    assert_eq!(events.len(), 1, "one message for the one Stripe event");
    assert_eq!(serde_json::from_str::<Value>(&events[0].body).unwrap(), snapshot);
    let failed = drain(&queue, QueueName::PaymentFailed).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(serde_json::from_str::<Value>(&failed[0].body).unwrap(), thin);

    // And were both copies to reach the processor (after SQS's 5-minute deduplication
    // window, say), the ledger applies the event once.
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(&stripe);
    assert_eq!(
        syncer.handle_message(&events[0].body, now, now + 30).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        syncer.handle_message(&body, now, now + 30).await.unwrap(),
        Outcome::Duplicate
    );
}

/// A destination on the thin payload is reconciled from `GET /v2/core/events`: every handled
/// thin event the simulator emitted is listed and enqueued, as a thin event.
#[tokio::test]
async fn reconcile_lists_thin_events_for_a_thin_destination() {
    let sim = Sim {
        simulator: Simulator::start(0, stripe_simulator::Delivery::default())
            .await
            .unwrap(),
        http: reqwest::Client::new(),
    };
    let customer = sim.post("/v1/customers", &[("metadata[user_id]", "user-thin")]).await;
    let cus = id(&customer, "/id");
    let session = checkout_session(&sim, &cus, false).await;
    sim.post(&format!("/sim/checkout/{}/complete", id(&session, "/id")), &[])
        .await;
    let listed = sim.get("/v1/events?limit=100").await;
    let handled: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| shared::routing::route(e["type"].as_str().unwrap()).is_some())
        .map(|e| format!("v1.{}", e["type"].as_str().unwrap()))
        .collect();
    assert!(handled.len() >= 3, "{listed}");

    let queue = MemoryQueue::new();
    let reconciler = Reconciler {
        store: MemoryStore::new(),
        queue,
        stripe: shared::stripe::StripeClient::new(
            reqwest::Client::new(),
            url::Url::parse(&sim.simulator.base_url).unwrap(),
            secrecy::SecretString::from("sk_test_thin".to_owned()),
            Default::default(),
        ),
        payload: EventPayload::Thin,
    };
    let report = reconciler
        .run(shared::unix_now() + IN_FLIGHT_SECS + 60, None)
        .await
        .unwrap();

    assert_eq!(report.enqueued, handled.len(), "{report:?}");
    let mut enqueued: Vec<Value> = drain(&reconciler.queue, QueueName::Events)
        .await
        .into_iter()
        .chain(drain(&reconciler.queue, QueueName::PaymentFailed).await)
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect();
    assert_eq!(enqueued.len(), handled.len());
    enqueued.sort_by_key(|e| e["id"].as_str().unwrap().to_owned());
    for event in &enqueued {
        assert_eq!(event["object"], "v2.core.event", "{event}");
        let parsed = official_parse("thin", event);
        assert!(
            handled.contains(&parsed["type"].as_str().unwrap().to_owned()),
            "{event}"
        );
    }
}
