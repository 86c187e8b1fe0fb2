//! The per-request and per-event costs, on Stripe's official example objects:
//! `cargo bench -p shared --bench hot_paths`. Floors first (HMAC-SHA256 alone, a borrowed
//! parse alone), then what the webhook and the processors really do.

use std::hint::black_box;
use std::num::NonZeroU64;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use shared::config::Catalog;
use shared::entitlement;
use shared::processing::EventHandler;
use shared::store::{AccountId, ItemRecord, MemoryStore, SubscriptionRecord};
use shared::stripe::signature::{SignatureVerifier, sign};
use shared::stripe::{EventEnvelope, RetryPolicy, StripeClient, SubscriptionStatus};
use shared::sync::Syncer;

const NOW: i64 = 1_763_900_000;
const SECRET: &str = "whsec_benchmark_secret_0123456789";
const PLANS: &str = r#"{"basic":{"price_id":"price_basic","features":["reports"]},"pro":{"price_id":"price_pro","features":["reports","api"]}}"#;

fn fixture(name: &str) -> Value {
    let text = match name {
        "invoice" => include_str!("../../tests/fixtures/stripe/invoice.json"),
        "subscription" => include_str!("../../tests/fixtures/stripe/subscription.json"),
        _ => include_str!("../../tests/fixtures/stripe/event.json"),
    };
    serde_json::from_str(text).expect("fixture")
}

fn event(id: &str, event_type: &str, object: Value) -> String {
    let mut event = fixture("event");
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["created"] = json!(NOW);
    event["data"] = json!({ "object": object });
    serde_json::to_string(&event).expect("event")
}

fn webhook(c: &mut Criterion) {
    let mut invoice = fixture("invoice");
    invoice["customer"] = json!("cus_bench");
    let body = event("evt_bench", "invoice.payment_failed", invoice);
    let header = sign(SECRET, NOW, body.as_bytes());
    let verifier = SignatureVerifier::new(
        &[SecretString::from(SECRET.to_owned())],
        NonZeroU64::new(300).expect("non-zero"),
    );
    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("floor_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
            mac.update(b"1763900000.");
            mac.update(black_box(body.as_bytes()));
            black_box(mac.finalize().into_bytes())
        })
    });
    group.bench_function("floor_borrowed_parse", |b| {
        b.iter(|| black_box(EventEnvelope::parse(black_box(body.as_bytes())).expect("parse").created))
    });
    group.bench_function("verify_and_parse", |b| {
        b.iter(|| {
            verifier
                .verify(Some(black_box(&header)), black_box(body.as_bytes()), NOW)
                .expect("valid");
            black_box(
                EventEnvelope::parse(body.as_bytes())
                    .expect("parse")
                    .ordering_key()
                    .len(),
            )
        })
    });
    group.finish();
    println!(
        "payload: {} bytes (invoice.payment_failed around Stripe's official invoice fixture)",
        body.len()
    );
}

fn entitlements(c: &mut Criterion) {
    let plans = Catalog::parse(PLANS).expect("plans");
    let user = AccountId::parse("user-bench").expect("user");
    let records: Vec<SubscriptionRecord> = (0..3)
        .map(|i| SubscriptionRecord {
            subscription_id: format!("sub_{i}"),
            customer_id: "cus_bench".into(),
            status: [
                SubscriptionStatus::Canceled,
                SubscriptionStatus::Active,
                SubscriptionStatus::PastDue,
            ][i],
            price_id: Some("price_pro".into()),
            plan: None,
            quantity: Some(1),
            items: vec![ItemRecord {
                price_id: "price_pro".into(),
                quantity: Some(1),
            }],
            cancel_at_period_end: false,
            cancel_at: None,
            pause_collection: None,
            current_period_start: Some(NOW - 86_400),
            current_period_end: Some(NOW + 86_400),
            trial_end: None,
            ended_at: None,
            latest_invoice: None,
            created: NOW - 86_400,
            past_due_since: None,
            schedule: None,
            watermark: NOW,
        })
        .collect();
    c.bench_function("entitlement_compute", |b| {
        b.iter(|| {
            black_box(entitlement::compute(
                &user,
                "cus_bench",
                black_box(&records),
                &[],
                &plans,
                14,
            ))
        })
    });
}

fn event_apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Never called: subscription events carry the whole object, so no Stripe read happens.
    let stripe = StripeClient::new(
        reqwest::Client::new(),
        url::Url::parse("http://127.0.0.1:9").expect("url"),
        SecretString::from("sk_test_x".to_owned()),
        RetryPolicy::default(),
    );
    let syncer = Syncer {
        store: MemoryStore::new(),
        stripe,
        plans: Catalog::parse(PLANS).expect("plans"),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let mut subscription = fixture("subscription");
    subscription["customer"] = json!("cus_CUSTOMER");
    subscription["items"]["data"][0]["price"]["id"] = json!("price_pro");
    let template = event("EVENT_ID", "customer.subscription.updated", subscription);
    let mut counter = 0u64;
    let mut group = c.benchmark_group("events_processor");
    group.throughput(Throughput::Elements(10));
    group.bench_function("batch_of_10_subscription_updates_memory_store", |b| {
        b.iter(|| {
            let mut batch = SqsEvent::default();
            for _ in 0..10 {
                counter += 1;
                let mut message = SqsMessage::default();
                message.message_id = Some(counter.to_string());
                // Each event newer than the last, so none is a same-second tie (which asks Stripe).
                let body = template
                    .replace("EVENT_ID", &format!("evt_{counter}"))
                    .replace("cus_CUSTOMER", &format!("cus_{}", counter % 500))
                    .replace(
                        &format!("\"created\":{NOW}"),
                        &format!("\"created\":{}", NOW + counter as i64),
                    );
                message.body = Some(body);
                batch.records.push(message);
            }
            let response = runtime
                .block_on(syncer.handle_batch(batch, NOW, NOW + 60))
                .expect("batch");
            assert!(response.batch_item_failures.is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, webhook, entitlements, event_apply);
criterion_main!(benches);
