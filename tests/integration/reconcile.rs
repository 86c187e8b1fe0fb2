//! The reconciler against the Stripe stand-in, DynamoDB and SQS on moto.

use std::sync::Arc;

use billing_tests::lifecycle::{Lifecycle, PLANS, subscription_state};
use billing_tests::queue_conformance::drain;
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::{Value, json};
use shared::config::{Catalog, QueueSettings};
use shared::processing::{EventHandler, Outcome};
use shared::queue::{MemoryQueue, QueueName, SqsQueue};
use shared::reconcile::{CURSOR, EVENT_RETENTION_SECS, EventPayload, IN_FLIGHT_SECS, Reconciler, drift, emf_line};
use shared::store::{Access, AccountId, BillingStore, LedgerClaim, MemoryStore, WriteRule};
use shared::stripe::{Subscription, SubscriptionStatus};
use shared::sync::Syncer;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

const NOW: i64 = 1_763_900_000;

fn list(events: &[Value], has_more: bool) -> Value {
    json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": events})
}

/// Two pages, newest first as Stripe lists them.
async fn serve_events(stripe: &StripeStandIn, first: &[Value], second: &[Value]) {
    let last_of_first = first
        .last()
        .and_then(|e| e["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(first, true)))
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("starting_after", last_of_first))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(second, false)))
        .mount(&stripe.server)
        .await;
}

fn invoice_event(id: &str, event_type: &str, created: i64) -> Value {
    fixtures::event(
        id,
        event_type,
        created,
        fixtures::invoice(&unique("in_"), &unique("cus_"), &unique("sub_"), "paid"),
    )
}

#[tokio::test]
async fn missed_events_are_enqueued_once_and_completed_ones_are_not() {
    let stripe = StripeStandIn::start().await;
    let (young, missed_paid, done, missed_failed) = (unique("evt_"), unique("evt_"), unique("evt_"), unique("evt_"));
    let first = [
        invoice_event(&young, "invoice.paid", NOW - 100),
        invoice_event(&missed_paid, "invoice.paid", NOW - 350),
        invoice_event(&done, "invoice.paid", NOW - 400),
        invoice_event(&unique("evt_"), "charge.succeeded", NOW - 450),
    ];
    let second = [invoice_event(&missed_failed, "invoice.payment_failed", NOW - 500)];
    serve_events(&stripe, &first, &second).await;
    let (_, _, queue) = aws::fresh_queues().await;
    let store = aws::fresh_store().await;
    let LedgerClaim::Acquired { token } = store.claim_event(&done, NOW, NOW + 60).await.unwrap() else {
        panic!()
    };
    store.complete_event(&done, &token, NOW + 1000).await.unwrap();
    let reconciler = Reconciler {
        store,
        queue,
        stripe: stripe.client(),
        payload: EventPayload::Snapshot,
    };

    let report = reconciler.run(NOW, None).await.unwrap();
    let again = reconciler.run(NOW + 60, None).await.unwrap();

    assert_eq!((report.seen, report.already_done, report.enqueued), (5, 1, 2));
    assert_eq!(
        report.in_flight, 1,
        "the event 100 s old may still be in the queue: left to its own delivery"
    );
    assert_eq!(
        report.window_start,
        NOW - EVENT_RETENTION_SECS + 60,
        "first run starts at the oldest listable event"
    );
    assert_eq!(report.lag_seconds, 500);
    assert_eq!(
        report.cursor,
        Some(NOW - IN_FLIGHT_SECS),
        "a complete listing moves the cursor up to the in-flight window"
    );
    assert_eq!(
        again.window_start,
        NOW - IN_FLIGHT_SECS - shared::reconcile::OVERLAP_SECS,
        "later runs start at the cursor, with overlap"
    );
    let events: Vec<String> = drain(&reconciler.queue, QueueName::Events)
        .await
        .into_iter()
        .filter_map(|m| m.event_id)
        .collect();
    let failures: Vec<String> = drain(&reconciler.queue, QueueName::PaymentFailed)
        .await
        .into_iter()
        .filter_map(|m| m.event_id)
        .collect();
    assert_eq!(events, [missed_paid], "the overlap run's copy was deduplicated");
    assert_eq!(failures, [missed_failed]);

    let metrics: Value = serde_json::from_str(&emf_line(&report, None, NOW * 1000)).unwrap();
    assert_eq!(metrics["MissedEvents"], 2);
    assert_eq!(metrics["in_flight"], 1);
    assert_eq!(metrics["EventLagSeconds"], 500);
    assert_eq!(metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"], "StripeBilling");

    let listing = stripe
        .requests()
        .await
        .into_iter()
        .find(|r| r.url.path() == "/v1/events")
        .unwrap();
    let types: Vec<String> = listing
        .url
        .query_pairs()
        .filter(|(k, _)| k == "types[]")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(types, shared::routing::handled_event_types().collect::<Vec<_>>());
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn the_cursor_moves_only_after_enqueueing_succeeded() {
    let stripe = StripeStandIn::start().await;
    serve_events(
        &stripe,
        &[invoice_event(&unique("evt_"), "invoice.paid", NOW - 1000)],
        &[],
    )
    .await;
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let missing = format!("{}/123456789012/{}.fifo", aws::endpoint().await, unique("gone-"));
    let broken = SqsQueue::new(
        client,
        QueueSettings {
            events_url: missing.clone(),
            payment_failed_url: missing,
        },
    );
    let reconciler = Reconciler {
        store: MemoryStore::new(),
        queue: broken,
        stripe: stripe.client(),
        payload: EventPayload::Snapshot,
    };

    assert!(reconciler.run(NOW, None).await.is_err());
    assert_eq!(reconciler.store.get_cursor(CURSOR).await.unwrap(), None);
}

#[tokio::test]
async fn a_quiet_account_keeps_the_cursor_current_and_an_expired_cursor_restarts_at_the_oldest_event() {
    let stripe = StripeStandIn::start().await;
    serve_events(&stripe, &[], &[]).await;
    let reconciler = Reconciler {
        store: MemoryStore::new(),
        queue: MemoryQueue::new(),
        stripe: stripe.client(),
        payload: EventPayload::Snapshot,
    };

    let first = reconciler.run(NOW, None).await.unwrap();
    let quiet = reconciler.run(NOW + 900, None).await.unwrap();
    let after_outage = reconciler.run(NOW + EVENT_RETENTION_SECS + 86_400, None).await.unwrap();

    assert_eq!((first.seen, first.cursor), (0, Some(NOW - IN_FLIGHT_SECS)));
    assert_eq!(
        quiet.window_start,
        NOW - IN_FLIGHT_SECS - shared::reconcile::OVERLAP_SECS,
        "no events listed, yet the window follows the cursor"
    );
    assert_eq!(quiet.cursor, Some(NOW + 900 - IN_FLIGHT_SECS));
    assert_eq!(
        after_outage.window_start,
        NOW + 86_400 + 60,
        "a cursor past Stripe's retention restarts at the oldest listable event"
    );
    assert_eq!(
        reconciler.store.get_cursor(CURSOR).await.unwrap(),
        Some(NOW + EVENT_RETENTION_SECS + 86_400 - IN_FLIGHT_SECS)
    );
}

#[tokio::test]
async fn a_crash_before_the_cursor_write_causes_no_double_effect() {
    let stripe = StripeStandIn::start().await;
    let lifecycle = Lifecycle::to_deletion(&unique("rec"));
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{}", lifecycle.subscription)))
        .respond_with(ResponseTemplate::new(200).set_body_json(&lifecycle.final_subscription))
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "url": "/v1/subscriptions", "has_more": false, "data": [&lifecycle.final_subscription]}),
        ))
        .mount(&stripe.server)
        .await;
    let newest_first: Vec<Value> = lifecycle.events.iter().rev().cloned().collect();
    serve_events(&stripe, &newest_first, &[]).await;
    let store = Arc::new(MemoryStore::new());
    lifecycle.record_session(&*store).await;
    let reconciler = Reconciler {
        store: store.clone(),
        queue: MemoryQueue::new(),
        stripe: stripe.client(),
        payload: EventPayload::Snapshot,
    };
    let syncer = Syncer {
        store: store.clone(),
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let window = NOW - 3600;

    // The first pass enqueues everything; the "crashed" pass re-lists the same window.
    assert_eq!(reconciler.run(NOW, Some(window)).await.unwrap().enqueued, 6);
    assert_eq!(reconciler.run(NOW, Some(window)).await.unwrap().enqueued, 6);
    let mut outcomes = Vec::new();
    for message in drain(&reconciler.queue, QueueName::Events).await {
        outcomes.push(syncer.handle_message(&message.body, NOW, NOW + 60).await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Applied).count(),
        6,
        "each event applied once: {outcomes:?}"
    );

    // Once applied, a third pass over the same window finds them all done.
    let third = reconciler.run(NOW, Some(window)).await.unwrap();
    assert_eq!((third.already_done, third.enqueued), (6, 0));
}

#[tokio::test]
async fn the_drift_check_replaces_drifted_subscriptions_with_stripes_state() {
    let stripe = StripeStandIn::start().await;
    let (alice, drifted_customer, fine_customer) = (unique("user-"), unique("cus_"), unique("cus_"));
    let (drifted, fine, gone) = (unique("sub_"), unique("sub_"), unique("sub_"));
    let canceled_in_stripe = subscription_state(&drifted, &drifted_customer, "price_pro", "canceled", false);
    let fine_in_stripe = subscription_state(&fine, &fine_customer, "price_basic", "active", false);
    for (id, body) in [(&drifted, &canceled_in_stripe), (&fine, &fine_in_stripe)] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/subscriptions/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&stripe.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{gone}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}})))
        .mount(&stripe.server)
        .await;
    let syncer = Syncer {
        store: aws::fresh_store().await,
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let user = AccountId::parse(&alice).unwrap();
    syncer.store.link_customer(&user, &drifted_customer).await.unwrap();
    let as_stored = |value: &Value, status: &str, watermark: i64| {
        let mut value = value.clone();
        value["status"] = json!(status);
        syncer.record_of(&serde_json::from_value::<Subscription>(value).unwrap(), watermark)
    };
    // The cancellation's event was lost: the store still says active, and so does access.
    let mut gone_in_stripe = fine_in_stripe.clone();
    gone_in_stripe["id"] = json!(gone);
    for record in [
        as_stored(&canceled_in_stripe, "active", NOW - 5000),
        as_stored(&fine_in_stripe, "active", NOW - 5000),
        as_stored(&gone_in_stripe, "active", NOW - 5000),
    ] {
        syncer
            .store
            .put_subscription(&record, WriteRule::IfNewer)
            .await
            .unwrap();
    }
    syncer.refresh_entitlement(&drifted_customer, None).await.unwrap();
    assert_eq!(
        syncer.store.get_entitlement(&user).await.unwrap().unwrap().access,
        Access::Active
    );

    let report = drift::check(&syncer, 10, NOW).await.unwrap();

    assert_eq!((report.checked, report.unreadable), (3, 1), "{report:?}");
    assert_eq!(report.repaired, vec![drifted.clone()]);
    let repaired = syncer
        .store
        .get_subscription(&drifted_customer, &drifted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (repaired.status, repaired.watermark),
        (SubscriptionStatus::Canceled, NOW)
    );
    assert_eq!(
        syncer.store.get_entitlement(&user).await.unwrap().unwrap().access,
        Access::None
    );
    let untouched = syncer
        .store
        .get_subscription(&fine_customer, &fine)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.watermark, NOW - 5000, "a matching record is not rewritten");

    let again = drift::check(&syncer, 10, NOW + 60).await.unwrap();
    assert!(again.repaired.is_empty(), "{again:?}");
    let metrics: Value = serde_json::from_str(&emf_line(
        &shared::reconcile::ReconcileReport::default(),
        Some(&report),
        NOW * 1000,
    ))
    .unwrap();
    assert_eq!(metrics["DriftedSubscriptions"], 1);
    assert_eq!(
        metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"][2]["Name"],
        "DriftedSubscriptions"
    );
    stripe.assert_requests_valid().await;
}
