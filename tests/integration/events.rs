//! The events processor: exactly-once effects and order independence.

use std::sync::Arc;

use billing_tests::lifecycle::{Lifecycle, PLANS, sqs_batch};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures};
use serde_json::{Value, json};
use shared::config::Catalog;
use shared::processing::{EventHandler, Outcome, ProcessError};
use shared::store::{Access, AccountId, BillingStore, LedgerState, MemoryStore};
use shared::stripe::{Subscription, SubscriptionStatus};
use shared::sync::Syncer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const NOW: i64 = billing_tests::lifecycle::T0 + 60;
const LEASE: i64 = NOW + 30;

fn syncer<S: BillingStore>(store: S, stripe: &StripeStandIn) -> Syncer<S> {
    Syncer {
        store,
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    }
}

async fn serve_subscription(stripe: &StripeStandIn, subscription: &Value) {
    let route = format!("/v1/subscriptions/{}", subscription["id"].as_str().unwrap());
    Mock::given(method("GET"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription))
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "url": "/v1/subscriptions", "has_more": false, "data": [subscription]}),
        ))
        .mount(&stripe.server)
        .await;
}

fn body(event: &Value) -> String {
    serde_json::to_string(event).unwrap()
}

fn subscription_gets(requests: &[wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().starts_with("/v1/subscriptions/"))
        .count()
}

/// After everything, the stored subscription is what Stripe says now, and so is access.
async fn assert_matches_stripe<S: BillingStore>(syncer: &Syncer<S>, lifecycle: &Lifecycle, context: &str) {
    let stripe_now: Subscription = serde_json::from_value(lifecycle.final_subscription.clone()).unwrap();
    let mut stored = syncer
        .store
        .get_subscription(&lifecycle.customer, &lifecycle.subscription)
        .await
        .unwrap()
        .expect(context);
    let expected = syncer.record_of(&stripe_now, stored.watermark);
    stored.watermark = expected.watermark;
    assert_eq!(stored, expected, "{context}");
    let entitlement = syncer
        .store
        .get_entitlement(&AccountId::parse(&lifecycle.user).unwrap())
        .await
        .unwrap()
        .expect(context);
    assert_eq!(entitlement.status, Some(stripe_now.status), "{context}");
    assert_eq!(entitlement.plan.as_deref(), Some("pro"), "{context}");
}

#[tokio::test]
async fn any_order_with_duplicates_converges_to_stripes_state() {
    let stripe = StripeStandIn::start().await;
    let lifecycles = [Lifecycle::to_deletion("perm"), Lifecycle::with_tie("tie")];
    for lifecycle in &lifecycles {
        serve_subscription(&stripe, &lifecycle.final_subscription).await;
    }
    let mut rng = fastrand::Rng::with_seed(20261123);
    for lifecycle in &lifecycles {
        for run in 0..150 {
            let syncer = syncer(MemoryStore::new(), &stripe);
            lifecycle.record_session(&syncer.store).await;
            let mut deliveries: Vec<&Value> = lifecycle
                .events
                .iter()
                .flat_map(|e| std::iter::repeat_n(e, rng.usize(1..=3)))
                .collect();
            rng.shuffle(&mut deliveries);
            for event in &deliveries {
                syncer.handle_message(&body(event), NOW, LEASE).await.unwrap();
            }
            assert_matches_stripe(&syncer, lifecycle, &format!("{} run {run}", lifecycle.subscription)).await;
        }
    }
}

#[tokio::test]
async fn the_lifecycle_converges_on_dynamodb_in_reverse_and_shuffled_order() {
    let stripe = StripeStandIn::start().await;
    let lifecycle = Lifecycle::to_deletion(&billing_tests::unique("dyn"));
    serve_subscription(&stripe, &lifecycle.final_subscription).await;
    let syncer = syncer(aws::fresh_store().await, &stripe);
    lifecycle.record_session(&syncer.store).await;
    let mut events: Vec<&Value> = lifecycle.events.iter().rev().collect();
    events.extend(lifecycle.events.iter().skip(2));
    for event in events {
        syncer.handle_message(&body(event), NOW, LEASE).await.unwrap();
    }
    assert_matches_stripe(&syncer, &lifecycle, "dynamodb").await;
    let entitlement = syncer
        .store
        .get_entitlement(&AccountId::parse(&lifecycle.user).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entitlement.access, Access::None);
    assert_eq!(entitlement.status, Some(SubscriptionStatus::Canceled));
}

#[tokio::test]
async fn a_duplicate_delivered_3_times_then_10_at_once_has_one_effect() {
    let stripe = StripeStandIn::start().await;
    let lifecycle = Lifecycle::to_deletion(&billing_tests::unique("dup"));
    serve_subscription(&stripe, &lifecycle.final_subscription).await;
    let syncer = Arc::new(syncer(aws::fresh_store().await, &stripe));
    let paid = body(&lifecycle.events[2]);

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(syncer.handle_message(&paid, NOW, LEASE).await.unwrap());
    }
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Duplicate, Outcome::Duplicate]);
    assert_eq!(
        subscription_gets(&stripe.requests().await),
        1,
        "invoice.paid refetched the subscription once"
    );

    let created = body(&lifecycle.events[1]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (syncer, created) = (syncer.clone(), created.clone());
        tasks.spawn(async move { syncer.handle_message(&created, NOW, LEASE).await });
    }
    let results = tasks.join_all().await;
    let applied = results.iter().filter(|r| matches!(r, Ok(Outcome::Applied))).count();
    // moto's conditional puts are not atomic under concurrent requests (DynamoDB's are): now
    // and then two claims both win there, and the later completion then finds its lease gone.
    // That is reported, never applied twice: one `Applied` is what must hold.
    let others_ok = results.iter().all(|r| {
        matches!(
            r,
            Ok(Outcome::Applied | Outcome::Duplicate)
                | Err(ProcessError::Busy(_))
                | Err(ProcessError::Store(shared::store::StoreError::LeaseLost(_)))
        )
    });
    assert_eq!(applied, 1, "{results:?}");
    assert!(others_ok, "{results:?}");
    let event_id = lifecycle.events[1]["id"].as_str().unwrap();
    assert_eq!(
        syncer.store.event_state(event_id).await.unwrap(),
        Some(LedgerState::Completed)
    );
}

#[tokio::test]
async fn a_failure_after_the_lease_releases_it_and_the_redelivery_completes() {
    let stripe = StripeStandIn::start().await;
    let lifecycle = Lifecycle::to_deletion(&billing_tests::unique("fail"));
    let route = format!("/v1/subscriptions/{}", lifecycle.subscription);
    Mock::given(method("GET"))
        .and(path(route.clone()))
        .respond_with(ResponseTemplate::new(500).insert_header("Stripe-Should-Retry", "false"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    serve_subscription(&stripe, &lifecycle.final_subscription).await;
    let syncer = syncer(aws::fresh_store().await, &stripe);
    let paid = body(&lifecycle.events[2]);
    let event_id = lifecycle.events[2]["id"].as_str().unwrap();

    let first = syncer.handle_message(&paid, NOW, LEASE).await;
    assert!(matches!(first, Err(ProcessError::Stripe(_))), "{first:?}");
    assert_eq!(
        syncer.store.event_state(event_id).await.unwrap(),
        None,
        "the lease was released"
    );
    assert!(
        syncer
            .store
            .get_subscription(&lifecycle.customer, &lifecycle.subscription)
            .await
            .unwrap()
            .is_none(),
        "nothing half-written"
    );

    assert_eq!(
        syncer.handle_message(&paid, NOW + 1, LEASE + 1).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        syncer.store.event_state(event_id).await.unwrap(),
        Some(LedgerState::Completed)
    );
}

/// A Stripe event that cannot be applied now: a thin event about a subscription Stripe (the
/// stand-in) does not know, so reading it fails — every time, until it goes to the DLQ.
fn unreadable_event() -> String {
    json!({"id": "evt_unreadable", "object": "v2.core.event", "type": "v1.customer.subscription.updated",
        "created": "2025-11-13T02:14:20Z", "livemode": false,
        "related_object": {"id": "sub_unknown", "type": "subscription", "url": "/v1/subscriptions/sub_unknown"}})
    .to_string()
}

#[tokio::test]
async fn a_poisoned_message_fails_alone_and_holds_back_only_its_group() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(MemoryStore::new(), &stripe);
    let mut messages = Vec::new();
    for index in 1..=10 {
        let customer = format!("cus_batch{index}");
        let sub = billing_tests::lifecycle::subscription_state(
            &format!("sub_batch{index}"),
            &customer,
            "price_pro",
            "active",
            false,
        );
        let event = fixtures::event(&format!("evt_batch{index}"), "customer.subscription.created", NOW, sub);
        let body = if index == 4 { unreadable_event() } else { body(&event) };
        messages.push((format!("msg-{index}"), customer, body));
    }
    let batch: Vec<(String, &str, String)> = messages
        .iter()
        .map(|(id, g, b)| (id.clone(), g.as_str(), b.clone()))
        .collect();

    let response = syncer.handle_batch(sqs_batch(&batch), NOW, LEASE).await.unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["msg-4"]);
    for index in [1, 3, 5, 10] {
        assert!(
            syncer
                .store
                .get_subscription(&format!("cus_batch{index}"), &format!("sub_batch{index}"))
                .await
                .unwrap()
                .is_some()
        );
    }

    let same_group: Vec<(String, &str, String)> = vec![
        ("a".into(), "cus_g", batch[0].2.clone()),
        ("b".into(), "cus_g", unreadable_event()),
        ("c".into(), "cus_g", batch[1].2.clone()),
        ("d".into(), "cus_other", batch[2].2.clone()),
    ];
    let response = syncer.handle_batch(sqs_batch(&same_group), NOW, LEASE).await.unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["b", "c"],
        "later messages of a failed group are held back to keep order"
    );
}

#[tokio::test]
async fn subscriptions_of_unknown_customers_are_kept_and_count_once_linked() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(MemoryStore::new(), &stripe);
    let sub = billing_tests::lifecycle::subscription_state("sub_dash", "cus_dash", "price_basic", "active", false);
    let created = fixtures::event("evt_dash_1", "customer.subscription.created", NOW, sub);
    assert_eq!(
        syncer.handle_message(&body(&created), NOW, LEASE).await.unwrap(),
        Outcome::Applied
    );
    assert!(
        syncer
            .store
            .get_subscription("cus_dash", "sub_dash")
            .await
            .unwrap()
            .is_some()
    );

    let mut customer = fixtures::customer("cus_dash");
    customer["metadata"] = json!({"user_id": "user-dash"});
    let updated = fixtures::event("evt_dash_2", "customer.updated", NOW + 1, customer);
    syncer.handle_message(&body(&updated), NOW, LEASE).await.unwrap();

    let entitlement = syncer
        .store
        .get_entitlement(&AccountId::parse("user-dash").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entitlement.access, entitlement.plan.as_deref()),
        (Access::Active, Some("basic"))
    );
    assert_eq!(entitlement.features, ["reports"]);
    assert_eq!(entitlement.access_until, None);
}

#[tokio::test]
async fn unknown_event_types_are_acknowledged() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(MemoryStore::new(), &stripe);
    let event = fixtures::event(
        "evt_other",
        "charge.succeeded",
        NOW,
        json!({"id": "ch_1", "object": "charge"}),
    );
    assert_eq!(
        syncer.handle_message(&body(&event), NOW, LEASE).await.unwrap(),
        Outcome::Ignored
    );
    assert_eq!(syncer.store.event_state("evt_other").await.unwrap(), None);
}

/// Requirement 33: with less than a message's time left before the invocation's deadline, the
/// messages not yet started go back as item failures untouched — no lease taken — so the
/// next delivery applies them at once instead of waiting out a lease.
#[tokio::test]
async fn messages_left_when_the_deadline_is_near_go_back_unstarted_and_apply_next_time() {
    let stripe = StripeStandIn::start().await;
    let syncer = syncer(MemoryStore::new(), &stripe);
    let mut messages = Vec::new();
    for index in 1..=3 {
        let sub = billing_tests::lifecycle::subscription_state(
            &format!("sub_late{index}"),
            &format!("cus_late{index}"),
            "price_pro",
            "active",
            false,
        );
        let event = fixtures::event(&format!("evt_late{index}"), "customer.subscription.created", NOW, sub);
        messages.push((format!("late-{index}"), format!("cus_late{index}"), body(&event)));
    }
    let batch: Vec<(String, &str, String)> = messages
        .iter()
        .map(|(id, group, body)| (id.clone(), group.as_str(), body.clone()))
        .collect();

    let near = shared::deadline::Deadline::after(std::time::Duration::from_secs(3));
    let response = near
        .scope(syncer.handle_batch(sqs_batch(&batch), NOW, LEASE))
        .await
        .unwrap();
    let returned: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.as_str())
        .collect();
    assert_eq!(returned, ["late-1", "late-2", "late-3"]);
    for index in 1..=3 {
        let state = syncer.store.event_state(&format!("evt_late{index}")).await.unwrap();
        assert_eq!(state, None, "no lease was taken on an unstarted message");
    }

    // Redelivered into an invocation with time to spare: all applied, none waits for a lease.
    let roomy = shared::deadline::Deadline::after(std::time::Duration::from_secs(60));
    let response = roomy
        .scope(syncer.handle_batch(sqs_batch(&batch), NOW, LEASE))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    for index in 1..=3 {
        let state = syncer.store.event_state(&format!("evt_late{index}")).await.unwrap();
        assert_eq!(state, Some(LedgerState::Completed));
    }
}
