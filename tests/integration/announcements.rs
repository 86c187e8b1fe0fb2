//! `billing.entitlement_changed`: every change of what an account may use reaches the app, at
//! least once and in version order, even when the API (which has no topic) made the change or
//! the publish failed; each message matches the JSON Schema in the repo, checked by the
//! `jsonschema` package (Draft 2020-12), not by this code.

use std::sync::Arc;

use billing_tests::faults::{FaultPlan, FlakyNotifier};
use billing_tests::oracle::python;
use billing_tests::shop::Shop;
use serde_json::{Value, json};
use shared::notify::MemoryNotifier;
use shared::store::{AccountId, BillingStore};

const SCHEMA: &str = "infra/schemas/billing.entitlement_changed.schema.json";

fn announcements(notifier: &MemoryNotifier) -> Vec<Value> {
    notifier
        .published()
        .into_iter()
        .filter(|event| event["type"] == "billing.entitlement_changed")
        .collect()
}

/// Each message validated by the `jsonschema` package against the schema file.
fn assert_valid(messages: &[Value]) {
    let schema = format!("{}/../{SCHEMA}", env!("CARGO_MANIFEST_DIR"));
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        for message in json.load(sys.stdin):\n    jsonschema.Draft202012Validator(schema).validate(message)\n";
    python(&["-c", script, &schema], &Value::from(messages.to_vec()).to_string());
}

#[tokio::test]
async fn every_entitlement_change_is_announced_once_in_order_even_through_a_failed_publish() {
    let notifier = Arc::new(MemoryNotifier::new());
    let faults = Arc::new(FaultPlan::new(0.0));
    let shop = Shop::open_with(FlakyNotifier {
        inner: notifier.clone(),
        plan: faults.clone(),
    })
    .await;
    let account = AccountId::parse(&shop.org).unwrap();

    // Bought: the completion links and grants; the other events change nothing more.
    let session = shop.checkout(json!({"plan": "team", "seats": 5})).await;
    shop.sim(&format!("checkout/{session}/complete")).await;
    let bought = shop.new_events().await;
    shop.process_ok(&bought).await;
    let told = announcements(&notifier);
    assert!(!told.is_empty());
    let last = told.last().unwrap();
    assert_eq!(last["account_id"], shop.org);
    assert_eq!(last["entitlement"]["plan"], "team");
    assert_eq!(last["entitlement"]["limits"]["seats"], 5);
    assert_eq!(
        last["entitlement"],
        shop.entitlement().await,
        "the message carries what /billing/me says (its usage apart)"
    );
    // A redelivery of everything: duplicates, nothing new to tell.
    shop.process_ok(&bought).await;
    assert_eq!(announcements(&notifier).len(), told.len());

    // The API changes the seats (it has no topic), and the topic is down when Stripe's event
    // about it is processed: the message fails and is retried, nothing is lost.
    let seats = shop.call("POST", "/subscription/seats", json!({"seats": 8})).await;
    assert_eq!(seats.status, 200, "{}", seats.body);
    assert_eq!(
        announcements(&notifier).len(),
        told.len(),
        "the API publishes nothing itself"
    );
    let stored = shop.api.store.get_entitlement(&account).await.unwrap().unwrap();
    assert!(stored.unannounced(), "the change waits for a writer with a topic");
    let updated = shop.new_events().await;
    assert!(
        updated.iter().any(|e| e["type"] == "customer.subscription.updated"),
        "{updated:?}"
    );
    faults.set_rate(1.0);
    assert!(
        !shop.process(&updated).await.is_empty(),
        "the publish failed, so the message did"
    );
    faults.set_rate(0.0);
    shop.process_ok(&updated).await;
    let after = announcements(&notifier);
    assert_eq!(after.len(), told.len() + 1, "told once: {after:?}");
    let change = after.last().unwrap();
    assert_eq!(change["entitlement"]["limits"]["seats"], 8);
    assert_eq!(
        change["previous_version"], last["version"],
        "after the last one the app was told"
    );
    assert_eq!(change["entitlement"], shop.entitlement().await);
    let stored = shop.api.store.get_entitlement(&account).await.unwrap().unwrap();
    assert!(!stored.unannounced());
    assert_eq!(change["version"].as_u64(), Some(stored.version));

    // Cancelled now: access ends, and that is told too.
    let cancelled = shop
        .call("POST", "/subscription/cancel", json!({"at_period_end": false}))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    shop.process_ok(&shop.new_events().await).await;
    let all = announcements(&notifier);
    assert_eq!(all.last().unwrap()["entitlement"]["access"], "none");
    let versions: Vec<u64> = all.iter().map(|m| m["version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{versions:?}");
    assert_valid(&all);
}

/// The consumer example in `examples/entitlement_cache.py`, over a real SNS topic and SQS
/// queue (moto): it ends with what `/billing/me` says, whatever order the messages came in.
#[tokio::test]
async fn the_consumer_example_keeps_the_newest_entitlement_from_the_topic() {
    let (sns, topic, _, queue) = billing_tests::aws::subscribed_topic().await;
    let shop = Shop::open_with(shared::notify::SnsPublisher::new(sns, topic)).await;

    let session = shop.checkout(json!({"plan": "team", "seats": 3})).await;
    shop.sim(&format!("checkout/{session}/complete")).await;
    shop.process_ok(&shop.new_events().await).await;
    let pack = shop.checkout(json!({"product": "credits_1000", "quantity": 2})).await;
    shop.sim(&format!("checkout/{pack}/complete")).await;
    shop.process_ok(&shop.new_events().await).await;
    let upgraded = shop.call("POST", "/subscription/addons", json!({"addon": "sso"})).await;
    assert_eq!(upgraded.status, 200, "{}", upgraded.body);
    shop.process_ok(&shop.new_events().await).await;

    let example = format!("{}/../examples/entitlement_cache.py", env!("CARGO_MANIFEST_DIR"));
    // Run as the app would run it: boto3 with its own configuration, here pointed at moto.
    let ran = std::process::Command::new("python3")
        .arg(&example)
        .arg(&queue)
        .env("AWS_ENDPOINT_URL", billing_tests::aws::endpoint().await)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let cache: Value = serde_json::from_slice(&ran.stdout).unwrap();
    let me = shop.entitlement().await;
    assert_eq!(me["credits"], 2000);
    assert_eq!(me["addons"], json!(["sso"]));
    assert_eq!(cache[&shop.org]["entitlement"], me, "{cache}");
}

/// The API stores Stripe's answer to its own change a moment after Stripe stamped the event,
/// so that event may reach the processor as stale (older than what is stored): it is dropped,
/// and what the API left unannounced is announced then.
#[tokio::test]
async fn a_stale_event_after_an_api_change_still_announces_it() {
    let notifier = Arc::new(MemoryNotifier::new());
    let shop = Shop::open_with(notifier.clone()).await;
    let account = AccountId::parse(&shop.org).unwrap();
    let session = shop.checkout(json!({"plan": "team", "seats": 5})).await;
    shop.sim(&format!("checkout/{session}/complete")).await;
    shop.process_ok(&shop.new_events().await).await;
    let before = announcements(&notifier).len();

    let seats = shop.call("POST", "/subscription/seats", json!({"seats": 8})).await;
    assert_eq!(seats.status, 200, "{}", seats.body);
    let stored = shop.api.store.get_entitlement(&account).await.unwrap().unwrap();
    assert!(stored.unannounced());
    // Stripe's event, stamped well before the API's write.
    let mut updated: Vec<Value> = shop
        .new_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "customer.subscription.updated")
        .collect();
    assert_eq!(updated.len(), 1);
    updated[0]["created"] = json!(updated[0]["created"].as_i64().unwrap() - 60);
    shop.process_ok(&updated).await;
    let told = announcements(&notifier);
    assert_eq!(told.len(), before + 1, "{told:?}");
    assert_eq!(told.last().unwrap()["entitlement"]["limits"]["seats"], 8);
    let stored = shop.api.store.get_entitlement(&account).await.unwrap().unwrap();
    assert!(!stored.unannounced());
}
