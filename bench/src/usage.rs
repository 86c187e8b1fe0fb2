//! `cargo run --release -p bench -- usage`: the usage processor's throughput and costs. The
//! handler on the in-memory adapters (one core: a current-thread runtime), then against the
//! offline simulator over HTTP with the v2 stream and with v1; per 1,000 reports, the Stripe
//! requests and the DynamoDB item writes the DynamoDB adapter would make (one per identifier
//! record, one per counter update, one per confirmation), counted at the ledger port.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::json;
use shared::config::Catalog;
use shared::store::{AccountId, BillingStore, MemoryStore, StoreError};
use shared::stripe::meter_events::{MemoryMeterEvents, MeterApi, MeterEventSink, StripeMeterEvents};
use shared::usage::{AccountUsage, Commit, CommitOutcome, CounterKey, RecordedUsage, UsageLedger, UsageProcessor};

/// Counts what the DynamoDB adapter would write and read for each ledger call.
struct Counted<L> {
    inner: L,
    item_writes: AtomicU64,
    requests: AtomicU64,
}

impl<L: UsageLedger> UsageLedger for Counted<L> {
    async fn recorded(&self, ids: &[&str]) -> Result<std::collections::HashMap<String, RecordedUsage>, StoreError> {
        self.requests
            .fetch_add(ids.len().div_ceil(100) as u64, Ordering::Relaxed);
        self.inner.recorded(ids).await
    }
    async fn account_usage(&self, account: &AccountId) -> Result<AccountUsage, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.account_usage(account).await
    }
    async fn commit(&self, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.item_writes
            .fetch_add(commit.identifiers.len() as u64 + 1, Ordering::Relaxed);
        self.inner.commit(commit).await
    }
    async fn confirm(&self, counter: &CounterKey, sends: &[&str]) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.item_writes.fetch_add(1, Ordering::Relaxed);
        self.inner.confirm(counter, sends).await
    }
}

pub struct Figures {
    pub label: &'static str,
    pub reports: usize,
    pub per_second: f64,
    pub stripe_per_thousand: f64,
    pub item_writes_per_report: f64,
    pub requests_per_report: f64,
}

fn catalog() -> Catalog {
    let mut catalog: serde_json::Value =
        serde_json::from_str(include_str!("../../infra/catalog.example.json")).unwrap_or_default();
    catalog["meters"]["tokens"] = json!({"event_name": "llm.tokens", "aggregation": "sum"});
    Catalog::parse(&catalog.to_string()).unwrap_or_default()
}

/// `accounts` accounts sending `reports` reports (half tokens, a sum meter; half API calls, a
/// count meter), in SQS batches of `batch`.
fn batches(reports: usize, accounts: usize, batch: usize, run: &str) -> Vec<SqsEvent> {
    let now = shared::unix_now();
    let bodies: Vec<String> = (0..reports)
        .map(|n| {
            let account = format!("bench-{run}-{}", n % accounts);
            let (meter, value) = if n % 2 == 0 { ("tokens", 120) } else { ("api_calls", 1) };
            json!({"account": account, "meter": meter, "value": value, "identifier": format!("{run}-{n}"), "timestamp": now})
                .to_string()
        })
        .collect();
    bodies
        .chunks(batch)
        .map(|chunk| {
            let mut event = SqsEvent::default();
            for (index, body) in chunk.iter().enumerate() {
                let mut message = SqsMessage::default();
                message.message_id = Some(index.to_string());
                message.body = Some(body.clone());
                event.records.push(message);
            }
            event
        })
        .collect()
}

async fn seed(store: &MemoryStore, run: &str, accounts: usize, customer: impl Fn(usize) -> String) {
    for n in 0..accounts {
        let Ok(account) = AccountId::parse(&format!("bench-{run}-{n}")) else {
            continue;
        };
        let mut entitlement = shared::entitlement::nothing(&account);
        entitlement.customer_id = Some(customer(n));
        entitlement.version = 1;
        let _ = store.put_entitlement(&entitlement).await;
    }
}

pub async fn measure<M: MeterEventSink>(
    label: &'static str,
    meter_events: M,
    stripe_requests: impl Fn(&M) -> u64,
    reports: usize,
    accounts: usize,
    customer: impl Fn(usize) -> String,
) -> Figures {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let store = Arc::new(MemoryStore::new());
    seed(&store, &run, accounts, customer).await;
    let processor = UsageProcessor {
        ledger: Counted {
            inner: store,
            item_writes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        },
        meter_events,
        catalog: catalog(),
    };
    let work = batches(reports, accounts, 100, &run);
    let started = Instant::now();
    let mut failed = 0;
    for event in work {
        failed += processor
            .handle_batch(event, shared::unix_now())
            .await
            .batch_item_failures
            .len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if failed > 0 {
        eprintln!("{label}: {failed} reports failed");
    }
    let thousands = reports as f64 / 1000.0;
    Figures {
        label,
        reports,
        per_second: reports as f64 / elapsed,
        stripe_per_thousand: stripe_requests(&processor.meter_events) as f64 / thousands,
        item_writes_per_report: processor.ledger.item_writes.load(Ordering::Relaxed) as f64 / reports as f64,
        requests_per_report: processor.ledger.requests.load(Ordering::Relaxed) as f64 / reports as f64,
    }
}

pub async fn run(reports: usize, accounts: usize) -> Vec<Figures> {
    let mut figures = vec![
        measure(
            "in-memory adapters",
            MemoryMeterEvents::new(),
            MemoryMeterEvents::requests,
            reports,
            accounts,
            |n| format!("cus_{n}"),
        )
        .await,
    ];
    let Ok(simulator) = stripe_simulator::Simulator::start(0, stripe_simulator::Delivery::default()).await else {
        eprintln!("the simulator did not start");
        return figures;
    };
    let http = reqwest::Client::new();
    let mut customers = Vec::new();
    for _ in 0..accounts {
        let created: serde_json::Value = match http
            .post(format!("{}/v1/customers", simulator.base_url))
            .bearer_auth("sk_test_bench")
            .send()
            .await
        {
            Ok(answer) => answer.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        customers.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    let Ok(base) = url::Url::parse(&simulator.base_url) else {
        return figures;
    };
    let stripe = shared::stripe::StripeClient::new(
        reqwest::Client::new(),
        base.clone(),
        secrecy::SecretString::from("sk_test_bench".to_owned()),
        Default::default(),
    );
    for (label, api, count) in [
        ("simulator, v2 stream, batched", MeterApi::V2, reports),
        ("simulator, v1, one by one", MeterApi::V1, reports.min(20_000)),
    ] {
        let customers = customers.clone();
        figures.push(
            measure(
                label,
                StripeMeterEvents::new(stripe.clone(), base.clone(), api),
                |sink| {
                    let (v2, v1) = sink.requests();
                    v2 + v1
                },
                count,
                accounts,
                move |n| customers.get(n).cloned().unwrap_or_default(),
            )
            .await,
        );
    }
    figures
}
