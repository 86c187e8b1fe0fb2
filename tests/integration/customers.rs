//! What real customers and real Stripe accounts do, event by event (Stripe is the stand-in,
//! answering with Stripe's fixtures; the expected requests are Stripe's documented API).

use std::sync::Arc;

use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{fixtures, unique};
use serde_json::{Value, json};
use shared::config::Catalog;
use shared::notify::MemoryNotifier;
use shared::processing::{EventHandler, Outcome};
use shared::store::{Access, AccountId, BillingStore, DunningStage, MemoryStore};
use shared::sync::{SyncPolicy, Syncer};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

const NOW: i64 = 1_763_900_000;

fn syncer(store: Arc<MemoryStore>, stripe: &StripeStandIn, policy: SyncPolicy) -> Syncer<Arc<MemoryStore>> {
    Syncer {
        store,
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy,
        app_events: shared::notify::NoAppEvents,
    }
}

fn list(url: &str, data: Vec<Value>, has_more: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"object": "list", "url": url, "has_more": has_more, "data": data}))
}

async fn serve(stripe: &StripeStandIn, verb: &str, route: String, body: Value) {
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&stripe.server)
        .await;
}

fn completed(session: &str, customer: &str, subscription: &str, user: &str) -> String {
    let mut object = fixtures::checkout_session(session);
    object["customer"] = json!(customer);
    object["subscription"] = json!(subscription);
    object["mode"] = json!("subscription");
    object["client_reference_id"] = json!(user);
    object["metadata"] = json!({});
    fixtures::event(&unique("evt_"), "checkout.session.completed", NOW, object).to_string()
}

fn calls<'a>(requests: &'a [Request], verb: &str, route: &str) -> Vec<&'a Request> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == route)
        .collect()
}

/// A Payment Link or pricing table lets the browser set `client_reference_id`: such a session
/// links nobody, and a user linked to another customer is never recomputed from it.
#[tokio::test]
async fn checkout_sessions_we_did_not_create_take_over_nobody() {
    let stripe = StripeStandIn::start().await;
    let tag = unique("");
    let (victim, foreign_customer, sub) = (format!("user-{tag}"), format!("cus_{tag}"), format!("sub_{tag}"));
    serve(
        &stripe,
        "GET",
        format!("/v1/subscriptions/{sub}"),
        subscription_state(&sub, &foreign_customer, "price_pro", "active", false),
    )
    .await;
    let store = Arc::new(MemoryStore::new());
    let before = shared::telemetry::count_of("ForeignCheckoutSession");
    let strict = syncer(store.clone(), &stripe, SyncPolicy::default());
    let event = completed(&format!("cs_{tag}"), &foreign_customer, &sub, &victim);
    assert_eq!(
        strict.handle_message(&event, NOW, NOW + 60).await.unwrap(),
        Outcome::Ignored
    );
    let victim_id = AccountId::parse(&victim).unwrap();
    assert_eq!(store.customer_of_account(&victim_id).await.unwrap(), None);
    assert_eq!(store.get_entitlement(&victim_id).await.unwrap(), None);
    assert!(
        shared::telemetry::count_of("ForeignCheckoutSession") > before,
        "counted"
    );
    assert!(stripe.requests().await.is_empty(), "not even read");

    // Accepting foreign sessions: a user already linked to their own customer stays theirs.
    let own = format!("cus_own_{tag}");
    store.link_customer(&victim_id, &own).await.unwrap();
    let lenient = syncer(
        store.clone(),
        &stripe,
        SyncPolicy {
            accept_foreign_sessions: true,
            ..SyncPolicy::default()
        },
    );
    let again = completed(&format!("cs2_{tag}"), &foreign_customer, &sub, &victim);
    assert_eq!(
        lenient.handle_message(&again, NOW, NOW + 60).await.unwrap(),
        Outcome::Ignored
    );
    assert_eq!(store.customer_of_account(&victim_id).await.unwrap(), Some(own));
    assert_eq!(
        store.get_entitlement(&victim_id).await.unwrap(),
        None,
        "not recomputed from the foreign customer"
    );
    assert_eq!(store.account_of_customer(&foreign_customer).await.unwrap(), None);

    // …and an unlinked user is linked by it, as the option says.
    let newcomer = format!("user-new-{tag}");
    let sub_list = subscription_state(&sub, &foreign_customer, "price_pro", "active", false);
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(list("/v1/subscriptions", vec![sub_list], false))
        .mount(&stripe.server)
        .await;
    let third = completed(&format!("cs3_{tag}"), &foreign_customer, &sub, &newcomer);
    assert_eq!(
        lenient.handle_message(&third, NOW, NOW + 60).await.unwrap(),
        Outcome::Applied
    );
    let newcomer_id = AccountId::parse(&newcomer).unwrap();
    assert_eq!(
        store.get_entitlement(&newcomer_id).await.unwrap().map(|e| e.access),
        Some(Access::Active)
    );
}

/// Two tabs both paid: the later subscription is cancelled and its payment refunded, once,
/// however often either completion is delivered.
#[tokio::test]
async fn a_second_paid_subscription_is_cancelled_and_refunded_once() {
    let stripe = StripeStandIn::start().await;
    let tag = unique("");
    let (user, customer) = (format!("user-{tag}"), format!("cus_{tag}"));
    let (first, second) = (format!("sub_a{tag}"), format!("sub_b{tag}"));
    let mut older = subscription_state(&first, &customer, "price_pro", "active", false);
    older["created"] = json!(NOW - 30);
    let mut newer = subscription_state(&second, &customer, "price_pro", "active", false);
    newer["created"] = json!(NOW - 20);
    newer["latest_invoice"] = json!(format!("in_{tag}"));
    let mut invoice = fixtures::invoice(&format!("in_{tag}"), &customer, &second, "paid");
    invoice["payments"] = json!({"object": "list", "has_more": false, "data": [
        {"payment": {"type": "payment_intent", "payment_intent": {"id": format!("pi_{tag}"), "object": "payment_intent"}}}]});
    serve(&stripe, "GET", format!("/v1/subscriptions/{first}"), older.clone()).await;
    // Stripe's list before the cancel, then after it.
    let mut cancelled = newer.clone();
    cancelled["status"] = json!("canceled");
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(list("/v1/subscriptions", vec![newer.clone(), older.clone()], false))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(list("/v1/subscriptions", vec![cancelled.clone(), older.clone()], false))
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{second}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(&newer))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    serve(&stripe, "GET", format!("/v1/subscriptions/{second}"), cancelled.clone()).await;
    serve(&stripe, "DELETE", format!("/v1/subscriptions/{second}"), cancelled).await;
    serve(&stripe, "GET", format!("/v1/invoices/in_{tag}"), invoice).await;
    // The first refund attempt fails for good (the cancel went through): the redelivery, which
    // finds the duplicate already cancelled, must still refund it.
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(500).insert_header("Stripe-Should-Retry", "false"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    serve(
        &stripe,
        "POST",
        "/v1/refunds".into(),
        json!({"id": format!("re_{tag}"), "object": "refund", "status": "succeeded", "amount": 2000}),
    )
    .await;

    let store = Arc::new(MemoryStore::new());
    let user_id = AccountId::parse(&user).unwrap();
    store.link_customer(&user_id, &customer).await.unwrap();
    for session in [format!("cs_a{tag}"), format!("cs_b{tag}")] {
        store
            .put_checkout_session(&session, &user_id, NOW + 86_400)
            .await
            .unwrap();
    }
    let app = Arc::new(MemoryNotifier::new());
    let syncer = Syncer {
        app_events: app.clone(),
        store: store.clone(),
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: SyncPolicy::default(),
    };
    let counted = shared::telemetry::count_of("DuplicateSubscriptionRefunded");
    let keep = completed(&format!("cs_a{tag}"), &customer, &first, &user);
    let duplicate = completed(&format!("cs_b{tag}"), &customer, &second, &user);
    assert!(
        syncer.handle_message(&duplicate, NOW, NOW + 60).await.is_err(),
        "the refund failed, so the event is retried"
    );
    let outcomes = [
        syncer.handle_message(&duplicate, NOW, NOW + 60).await.unwrap(),
        syncer.handle_message(&keep, NOW, NOW + 60).await.unwrap(),
        syncer.handle_message(&duplicate, NOW, NOW + 60).await.unwrap(),
    ];
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied, Outcome::Duplicate]);
    let requests = stripe.requests().await;
    assert_eq!(
        calls(&requests, "DELETE", &format!("/v1/subscriptions/{second}")).len(),
        1
    );
    assert!(
        calls(&requests, "DELETE", &format!("/v1/subscriptions/{first}")).is_empty(),
        "the first one stays"
    );
    let refunds = calls(&requests, "POST", "/v1/refunds");
    assert_eq!(refunds.len(), 2, "the failed attempt and the retry that succeeded");
    assert_eq!(
        refunds[0].headers.get("idempotency-key"),
        refunds[1].headers.get("idempotency-key"),
        "one key for both: Stripe refunds once"
    );
    let refund: Vec<(String, String)> = url::form_urlencoded::parse(&refunds[0].body).into_owned().collect();
    assert!(
        refund.contains(&("payment_intent".into(), format!("pi_{tag}"))),
        "{refund:?}"
    );
    assert_eq!(
        refunds[0].headers.get("idempotency-key").unwrap(),
        &format!("refund-pi_{tag}"),
        "a retried event cannot refund twice"
    );
    assert!(
        shared::telemetry::count_of("DuplicateSubscriptionRefunded") > counted,
        "the operator is told"
    );
    let told: Vec<Value> = app
        .published()
        .into_iter()
        .filter(|e| e["type"] == "billing.duplicate_subscription_refunded")
        .collect();
    assert_eq!(told.len(), 1, "the app is told once the refund went through: {told:?}");
    assert_eq!(
        (
            &told[0]["kept_subscription_id"],
            &told[0]["cancelled_subscription_id"],
            &told[0]["account_id"]
        ),
        (&json!(first), &json!(second), &json!(user))
    );
    assert_eq!(told[0]["refunded_payment_intents"], json!([format!("pi_{tag}")]));
    let stored = store.get_subscription(&customer, &second).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::stripe::SubscriptionStatus::Canceled);
    let entitlement = store.get_entitlement(&user_id).await.unwrap().unwrap();
    assert_eq!(
        (entitlement.access, entitlement.subscription_id.as_deref()),
        (Access::Active, Some(first.as_str()))
    );
    stripe.assert_requests_valid().await;
}

/// A voided or written-off invoice ends its dunning episode, so an old episode can never cut
/// the grace of a later failure short.
#[tokio::test]
async fn voided_and_uncollectible_invoices_close_their_dunning_episode() {
    for settled in ["invoice.voided", "invoice.marked_uncollectible"] {
        let stripe = StripeStandIn::start().await;
        let tag = unique("");
        let (user, customer, sub, invoice_id) = (
            format!("user-{tag}"),
            format!("cus_{tag}"),
            format!("sub_{tag}"),
            format!("in_{tag}"),
        );
        serve(
            &stripe,
            "GET",
            format!("/v1/subscriptions/{sub}"),
            subscription_state(&sub, &customer, "price_pro", "active", false),
        )
        .await;
        let store = Arc::new(MemoryStore::new());
        store
            .link_customer(&AccountId::parse(&user).unwrap(), &customer)
            .await
            .unwrap();
        let open: shared::store::DunningRecord = serde_json::from_value(json!({
            "invoice_id": invoice_id, "customer_id": customer, "subscription_id": sub, "stage": "retrying",
            "attempt_count": 2, "next_payment_attempt": null, "failure_code": null, "decline_code": null,
            "hosted_invoice_url": null, "grace_until": NOW - 86_400, "watermark": NOW - 90_000}))
        .unwrap();
        store.put_dunning(&open).await.unwrap();
        let syncer = syncer(store.clone(), &stripe, SyncPolicy::default());
        let status = if settled == "invoice.voided" {
            "void"
        } else {
            "uncollectible"
        };
        let event = fixtures::event(
            &unique("evt_"),
            settled,
            NOW,
            fixtures::invoice(&invoice_id, &customer, &sub, status),
        );
        assert_eq!(
            syncer.handle_message(&event.to_string(), NOW, NOW + 60).await.unwrap(),
            Outcome::Applied
        );
        let record = store.get_dunning(&customer, &invoice_id).await.unwrap().unwrap();
        assert_eq!(record.stage, DunningStage::Closed, "{settled}");
    }
}

/// More than one page of subscriptions: `POST /billing/sync` reads them all.
#[tokio::test]
async fn stripe_lists_are_read_to_the_last_page() {
    let stripe = StripeStandIn::start().await;
    let customer = unique("cus_");
    let page = |range: std::ops::Range<usize>| -> Vec<Value> {
        range
            .map(|i| subscription_state(&format!("sub_{i:03}"), &customer, "price_basic", "canceled", false))
            .collect()
    };
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("starting_after", "sub_099"))
        .respond_with(list("/v1/subscriptions", page(100..130), false))
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(list("/v1/subscriptions", page(0..100), true))
        .mount(&stripe.server)
        .await;
    let subscriptions = stripe.client().list_subscriptions(&customer).await.unwrap();
    assert_eq!(subscriptions.len(), 130);
    assert_eq!(subscriptions.last().map(|s| s.id.as_str()), Some("sub_129"));
    stripe.assert_requests_valid().await;
}
