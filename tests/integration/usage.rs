//! Usage-based billing end to end: reports through the `usage` processor into the local
//! counters (DynamoDB on moto, or memory) and into Stripe's meters (the simulator over HTTP:
//! the v2 stream with its session, or v1), the quota and `GET /billing/me`, and the renewal
//! invoice that bills the overage. Expected totals are the tests' own inputs (the unique
//! reports sent); what Stripe counted is the simulator's record (its event summaries, its
//! invoice), never the processor's.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing_tests::api::spawn_api_with;
use billing_tests::shop::{CATALOG, simulated_stripe};
use billing_tests::{aws, openapi, unique, usage_conformance};
use serde_json::{Value, json};
use shared::config::{AccountSettings, Catalog, Env, RateLimits};
use shared::notify::MemoryNotifier;
use shared::processing::EventHandler;
use shared::store::{AccountId, MemoryStore};
use shared::stripe::StripeError;
use shared::stripe::meter_events::{MemoryMeterEvents, MeterApi, MeterEvent, MeterEventSink, StripeMeterEvents};
use shared::sync::{SyncPolicy, Syncer};
use shared::usage::{CommitOutcome, UsageLedger, UsageProcessor};

const KEY: &str = "sk_test_usage";

/// The example catalog with the api plan including 100 calls, so a test crosses it quickly.
fn catalog() -> Catalog {
    let mut catalog: Value = serde_json::from_str(CATALOG).unwrap();
    catalog["plans"]["api"]["meters"]["api_calls"]["included"] = json!(100);
    Catalog::parse(&catalog.to_string()).unwrap()
}

fn report(account: &str, identifier: &str, timestamp: i64) -> String {
    json!({"account": account, "meter": "api_calls", "identifier": identifier, "timestamp": timestamp}).to_string()
}

fn batch(bodies: &[String]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for body in bodies {
        let mut message = SqsMessage::default();
        message.message_id = Some(unique("msg-"));
        message.body = Some(body.clone());
        event.records.push(message);
    }
    event
}

async fn sim_form(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    form: &[(&str, &str)],
) -> Value {
    let answer = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{path}: {}", answer.text().await.unwrap());
    answer.json().await.unwrap()
}

/// One Stripe event through an events processor, as its queue delivers it; it must apply.
async fn process_ok<H: EventHandler>(handler: &H, event: &Value) {
    let message = vec![(unique("msg-"), "group", event.to_string())];
    let now = shared::unix_now();
    let response = handler
        .handle_batch(billing_tests::lifecycle::sqs_batch(&message), now, now + 60)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{}", event["type"]);
}

/// A meter in the simulator, as the dashboard makes one.
async fn create_meter(http: &reqwest::Client, base: &str, name: &str, event_name: &str, formula: &str) -> Value {
    let form = [
        ("display_name", name),
        ("event_name", event_name),
        ("default_aggregation[formula]", formula),
    ];
    sim_form(http, base, reqwest::Method::POST, "/v1/billing/meters", &form).await
}

#[tokio::test]
async fn the_usage_ledger_keeps_its_contract_in_memory() {
    usage_conformance::run(Arc::new(MemoryStore::new()), true).await;
}

#[tokio::test]
async fn the_usage_ledger_keeps_its_contract_on_dynamodb() {
    usage_conformance::run(Arc::new(aws::fresh_store().await), false).await;
}

/// An API-plan customer makes calls, crosses the included 100, sees it in `GET /billing/me`
/// and the quota, and the renewal invoice bills the overage at the metered price.
#[tokio::test]
async fn usage_reaches_stripes_meter_the_counters_and_the_invoice() {
    let (simulator, stripe) = simulated_stripe(KEY).await;
    let base = simulator.base_url.clone();
    let http = reqwest::Client::new();
    let meter = create_meter(&http, &base, "API calls", "api_call", "count").await;
    let meter_id = meter["id"].as_str().unwrap().to_owned();
    // 0.5 cents a call beyond the 100 the plan includes (a graduated first tier at 0).
    sim_form(
        &http,
        &base,
        reqwest::Method::POST,
        "/sim/prices?id=price_api_calls_month_usd&meter=api_call&unit_amount_decimal=0.5&free_up_to=100",
        &[],
    )
    .await;

    let store = Arc::new(aws::fresh_store().await);
    let accounts = AccountSettings::from_env(&Env::from_pairs([("BILLING_ACCOUNT_CLAIM", "org_id")])).unwrap();
    let api = spawn_api_with(
        store.clone(),
        stripe.clone(),
        RateLimits::UNLIMITED,
        accounts,
        catalog(),
    );
    let events = Syncer {
        store: store.clone(),
        stripe: stripe.clone(),
        plans: catalog(),
        grace_days: 14,
        policy: SyncPolicy::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let org = unique("org_");
    let claims = json!({"sub": "user_1", "org_id": org});
    let call = |method: &'static str, path: &'static str, body: &'static str| {
        let (api, claims) = (&api, claims.clone());
        async move { api.call_as(method, path, claims, body).await }
    };

    // Checkout of the api plan carries its metered price, without a quantity.
    let created = call("POST", "/checkout/sessions", r#"{"plan":"api"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = created.body["id"].as_str().unwrap().to_owned();
    sim_form(
        &http,
        &base,
        reqwest::Method::POST,
        &format!("/sim/checkout/{session}/complete"),
        &[],
    )
    .await;
    let recorded = sim_form(&http, &base, reqwest::Method::GET, "/v1/events?limit=100", &[]).await;
    let mut delivered: Vec<Value> = recorded["data"].as_array().unwrap().clone();
    delivered.reverse();
    for event in &delivered {
        process_ok(&events, event).await;
    }
    let me = call("GET", "/billing/me", "").await;
    assert_eq!(me.body["plan"], "api", "{}", me.body);
    assert_eq!(me.body["usage"]["api_calls"]["used"], 0.0);
    assert_eq!(me.body["usage"]["api_calls"]["included"], 100);
    let subscription_id = me.body["sources"][0]["id"].as_str().unwrap().to_owned();
    let subscription = sim_form(
        &http,
        &base,
        reqwest::Method::GET,
        &format!("/v1/subscriptions/{subscription_id}"),
        &[],
    )
    .await;
    let items: Vec<(String, Value)> = subscription["items"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["price"]["id"].as_str().unwrap().to_owned(),
                item["quantity"].clone(),
            )
        })
        .collect();
    assert!(
        items.iter().any(|(price, q)| price == "price_api_month_usd" && q == 1),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|(price, q)| price == "price_api_calls_month_usd" && q.is_null()),
        "{items:?}"
    );

    // 130 calls, 13 of them reported twice, in three batches.
    let now = shared::unix_now();
    let mut bodies: Vec<String> = (0..130)
        .map(|n| report(&org, &format!("call-{session}-{n}"), now))
        .collect();
    bodies.extend((0..13).map(|n| report(&org, &format!("call-{session}-{}", n * 10), now)));
    fastrand::shuffle(&mut bodies);
    let processor = UsageProcessor {
        ledger: store.clone(),
        meter_events: StripeMeterEvents::new(stripe.clone(), url::Url::parse(&base).unwrap(), MeterApi::V2),
        catalog: catalog(),
    };
    let mut stripe_requests = 0;
    for chunk in bodies.chunks(50) {
        let (response, counts) = processor.process(batch(chunk), shared::unix_now()).await;
        assert!(response.batch_item_failures.is_empty(), "{counts:?}");
        stripe_requests += counts.stripe_requests;
    }
    // One stream request a batch (a session besides), not one per call.
    assert_eq!(stripe_requests, 3);
    assert_eq!(
        processor.meter_events.requests(),
        (4, 0),
        "3 stream requests and 1 session"
    );

    // Stripe's own count: the meter's summary for the customer.
    let customer = me.body["sources"][0]["id"]
        .as_str()
        .map(|_| ())
        .and(store_customer(&store, &org).await)
        .unwrap();
    let minute = |t: i64| t - t.rem_euclid(60);
    let (start, end) = (minute(now - 3_600).to_string(), (minute(now) + 120).to_string());
    let summaries = sim_form(
        &http,
        &base,
        reqwest::Method::GET,
        &format!("/v1/billing/meters/{meter_id}/event_summaries?customer={customer}&start_time={start}&end_time={end}"),
        &[],
    )
    .await;
    assert_eq!(summaries["data"][0]["aggregated_value"], 130.0, "{summaries}");

    // The local counter says the same, and the plan's soft limit lets use go on.
    let me = call("GET", "/billing/me", "").await;
    let usage = &me.body["usage"]["api_calls"];
    assert_eq!(
        (
            usage["used"].as_f64(),
            usage["over"].as_bool(),
            usage["allowed"].as_bool()
        ),
        (Some(130.0), Some(true), Some(true))
    );
    openapi::assert_matches("EntitlementView", &me.body);
    let quota = call("GET", "/billing/quota/api_calls", "").await;
    assert_eq!(quota.status, 200, "{}", quota.body);
    assert_eq!(
        (quota.body["used"].as_f64(), quota.body["remaining"].as_f64()),
        (Some(130.0), Some(0.0))
    );
    openapi::assert_matches("Quota", &quota.body);
    assert_eq!(call("GET", "/billing/quota/bytes", "").await.status, 404);

    // The renewal bills the 30 calls beyond the 100 included: 30 x 0.5 cents = 15 cents.
    sim_form(
        &http,
        &base,
        reqwest::Method::POST,
        &format!("/sim/subscriptions/{subscription_id}/end_period"),
        &[],
    )
    .await;
    let invoices = sim_form(
        &http,
        &base,
        reqwest::Method::GET,
        &format!("/v1/invoices?customer={customer}&limit=1"),
        &[],
    )
    .await;
    let lines = invoices["data"][0]["lines"]["data"].as_array().unwrap().clone();
    let usage_line = lines
        .iter()
        .find(|line| line.to_string().contains("price_api_calls_month_usd"))
        .unwrap_or_else(|| panic!("no usage line in {lines:?}"));
    assert_eq!(
        (usage_line["quantity"].as_u64(), usage_line["amount"].as_i64()),
        (Some(130), Some(15)),
        "{usage_line}"
    );

    // A change to team, which bills no calls (its allowance is a hard quota), takes the
    // metered item off; the plan item is swapped in place.
    let changed = call("POST", "/subscription/change", r#"{"plan":"team"}"#).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let subscription = sim_form(
        &http,
        &base,
        reqwest::Method::GET,
        &format!("/v1/subscriptions/{subscription_id}"),
        &[],
    )
    .await;
    let prices: Vec<&str> = subscription["items"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["price"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["price_team_month_usd"], "{subscription}");
}

async fn store_customer(store: &shared::store::DynamoStore, org: &str) -> Option<String> {
    use shared::store::BillingStore;
    store
        .customer_of_account(&AccountId::parse(org).unwrap())
        .await
        .unwrap()
}

/// Every kind of bad report is refused at the edge with its reason: acknowledged (no retry can
/// fix it), counted nowhere, sent nowhere.
#[tokio::test]
async fn bad_reports_are_refused_at_the_edge_and_never_sent() {
    let meters = Arc::new(MemoryMeterEvents::new());
    let store = Arc::new(MemoryStore::new());
    let processor = UsageProcessor {
        ledger: store.clone(),
        meter_events: meters.clone(),
        catalog: catalog(),
    };
    let now = shared::unix_now();
    let bodies = [
        json!({"account": "a", "meter": "bytes", "identifier": "x1"}).to_string(),
        json!({"account": "a", "meter": "api_calls", "value": -1, "identifier": "x2"}).to_string(),
        json!({"account": "a", "meter": "api_calls", "value": 1e13, "identifier": "x3"}).to_string(),
        json!({"account": "a", "meter": "api_calls"}).to_string(),
        json!({"account": "a", "meter": "api_calls", "identifier": "x5", "timestamp": now - 35 * 86_400}).to_string(),
        json!({"account": "a", "meter": "api_calls", "identifier": "x6", "timestamp": now + 600}).to_string(),
        json!({"account": "a#b", "meter": "api_calls", "identifier": "x7"}).to_string(),
        json!({"account": "a", "meter": "api_calls", "identifier": "has space"}).to_string(),
        r#"{"account": "a", "meter": "api_calls", "identifier": "x9", "value": 1e400}"#.to_owned(),
        "not json".to_owned(),
        json!({"account": "a", "meter": "api_calls", "identifier": "x11", "value": 1e-300}).to_string(),
    ];
    let (response, counts) = processor.process(batch(&bodies), now).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "refusals are final, not retried"
    );
    assert_eq!((counts.rejected, counts.counted), (bodies.len(), 0));
    assert_eq!(meters.requests(), 0);
    let usage = store.account_usage(&AccountId::parse("a").unwrap()).await.unwrap();
    assert!(usage.counters.is_empty());
}

/// Without a v2 stream (or told to use v1), every report goes one request each to v1, which
/// deduplicates by identifier too; Stripe's 429s are waited out within the deadline.
#[tokio::test]
async fn v1_and_rate_limits_count_each_report_once() {
    let (simulator, stripe) = simulated_stripe(KEY).await;
    let http = reqwest::Client::new();
    let meter = create_meter(&http, &simulator.base_url, "Tokens", "llm.tokens", "sum").await;
    let customer = sim_form(&http, &simulator.base_url, reqwest::Method::POST, "/v1/customers", &[]).await;
    let customer = customer["id"].as_str().unwrap();
    let base = url::Url::parse(&simulator.base_url).unwrap();
    simulator.set_meter_rate_limit(Some(3));
    for api in [MeterApi::V1, MeterApi::V2] {
        let sink = StripeMeterEvents::new(stripe.clone(), base.clone(), api);
        let events: Vec<MeterEvent> = (0..6)
            .map(|n| MeterEvent {
                identifier: format!("{api:?}-{n}"),
                event_name: "llm.tokens".into(),
                customer_id: customer.to_owned(),
                value: 10.0,
                timestamp: shared::unix_now(),
            })
            .collect();
        for _ in 0..2 {
            // Each chunk twice: the second time every identifier is a repeat.
            for chunk in events.chunks(2) {
                sink.send(chunk).await.unwrap();
            }
        }
    }
    let counted = simulator.meter_requests();
    assert!(counted.rate_limited > 0, "the limit was hit: {counted:?}");
    let now = shared::unix_now();
    let minute = |t: i64| t - t.rem_euclid(60);
    let path = format!(
        "/v1/billing/meters/{}/event_summaries?customer={customer}&start_time={}&end_time={}",
        meter["id"].as_str().unwrap(),
        minute(now - 3_600),
        minute(now) + 120
    );
    let summaries = sim_form(&http, &simulator.base_url, reqwest::Method::GET, &path, &[]).await;
    // 6 unique reports of 10 through each API.
    assert_eq!(summaries["data"][0]["aggregated_value"], 120.0, "{summaries}");
}

/// Stripe's asynchronous error report (a meter event for a customer it does not know) reaches
/// the events processor as a thin event, and is surfaced: metric, log, app event.
#[tokio::test]
async fn meter_error_reports_are_surfaced_to_the_operator_and_the_app() {
    let (simulator, stripe) = simulated_stripe(KEY).await;
    let http = reqwest::Client::new();
    create_meter(&http, &simulator.base_url, "API calls", "api_call", "count").await;
    let sink = StripeMeterEvents::new(
        stripe.clone(),
        url::Url::parse(&simulator.base_url).unwrap(),
        MeterApi::V2,
    );
    let orphan = MeterEvent {
        identifier: unique("orphan-"),
        event_name: "api_call".into(),
        customer_id: "cus_nobody".into(),
        value: 1.0,
        timestamp: shared::unix_now(),
    };
    sink.send(std::slice::from_ref(&orphan)).await.unwrap();
    let thin: Value = stripe.get("/v2/core/events", &[]).await.unwrap();
    let report = thin["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "v1.billing.meter.error_report_triggered")
        .cloned()
        .unwrap_or_else(|| panic!("no error report among {thin}"));
    let notifier = Arc::new(MemoryNotifier::new());
    let events = Syncer {
        store: Arc::new(MemoryStore::new()),
        stripe,
        plans: catalog(),
        grace_days: 14,
        policy: SyncPolicy::default(),
        app_events: notifier.clone(),
    };
    let before = shared::telemetry::count_of("MeterErrorReports");
    // As a destination receives it: the notification, without `data`, which the processor
    // reads from Stripe.
    let mut report = report;
    report.as_object_mut().unwrap().remove("data");
    process_ok(&events, &report).await;
    assert!(shared::telemetry::count_of("MeterErrorReports") > before);
    let published = notifier.published();
    let announced = published
        .iter()
        .find(|e| e["type"] == "billing.usage_error_reported")
        .unwrap_or_else(|| panic!("{published:?}"));
    assert_eq!(announced["meter"], "api_calls");
    assert_eq!(announced["event_name"], "api_call");
    assert_eq!(
        announced["errors"][0][0], "meter_event_customer_not_found",
        "{announced}"
    );
}

/// A ledger and a Stripe that fail 1 % of calls each — before the work, or after it with the
/// answer lost (the worst case: done, but reported failed).
struct Flaky<T> {
    inner: T,
}

fn draw() -> Option<bool> {
    match fastrand::u16(0..1000) {
        0..5 => Some(false),
        5..10 => Some(true),
        _ => None,
    }
}

impl<T: UsageLedger> UsageLedger for Flaky<T> {
    async fn recorded(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, shared::usage::RecordedUsage>, shared::store::StoreError> {
        if draw().is_some() {
            return Err(shared::store::StoreError::Backend("injected".into()));
        }
        self.inner.recorded(ids).await
    }
    async fn account_usage(
        &self,
        account: &AccountId,
    ) -> Result<shared::usage::AccountUsage, shared::store::StoreError> {
        if draw().is_some() {
            return Err(shared::store::StoreError::Backend("injected".into()));
        }
        self.inner.account_usage(account).await
    }
    async fn commit(&self, commit: &shared::usage::Commit) -> Result<CommitOutcome, shared::store::StoreError> {
        match draw() {
            Some(false) => Err(shared::store::StoreError::Backend("injected".into())),
            Some(true) => {
                self.inner.commit(commit).await?;
                Err(shared::store::StoreError::Backend("injected after the write".into()))
            }
            None => self.inner.commit(commit).await,
        }
    }
    async fn confirm(
        &self,
        counter: &shared::usage::CounterKey,
        sends: &[&str],
    ) -> Result<(), shared::store::StoreError> {
        match draw() {
            Some(false) => Err(shared::store::StoreError::Backend("injected".into())),
            Some(true) => {
                self.inner.confirm(counter, sends).await?;
                Err(shared::store::StoreError::Backend("injected after the write".into()))
            }
            None => self.inner.confirm(counter, sends).await,
        }
    }
}

impl<T: MeterEventSink> MeterEventSink for Flaky<T> {
    async fn send(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        match draw() {
            Some(false) => Err(StripeError::InvalidId("injected".into())),
            Some(true) => {
                self.inner.send(events).await?;
                Err(StripeError::InvalidId("injected after Stripe took them".into()))
            }
            None => self.inner.send(events).await,
        }
    }
}

/// The chaos run of usage: 100,000 reports of 50 accounts on a sum meter and a count meter,
/// 10 % of them sent twice, shuffled, in batches of 100, with 1 % of every ledger and Stripe
/// call failing; failed messages come back until none is left. Stripe's total per customer and
/// meter (the twin's record of unique identifiers) and the local counters both equal the sum
/// of the unique reports, which the test computes from what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_of_100k_reports_counts_each_once_in_stripe_and_locally() {
    let mut catalog: Value = serde_json::from_str(CATALOG).unwrap();
    catalog["meters"]["tokens"] = json!({"event_name": "llm.tokens", "aggregation": "sum"});
    let catalog = Catalog::parse(&catalog.to_string()).unwrap();
    let store = Arc::new(MemoryStore::new());
    let accounts: Vec<String> = (0..50).map(|n| format!("acct-{n}")).collect();
    for account in &accounts {
        let mut entitlement = shared::entitlement::nothing(&AccountId::parse(account).unwrap());
        entitlement.customer_id = Some(format!("cus_{account}"));
        entitlement.version = 1;
        use shared::store::BillingStore;
        store.put_entitlement(&entitlement).await.unwrap();
    }
    let stripe = Arc::new(MemoryMeterEvents::new());
    let processor = UsageProcessor {
        ledger: Flaky { inner: store.clone() },
        meter_events: Flaky { inner: stripe.clone() },
        catalog,
    };
    let now = shared::unix_now();
    let mut expected: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut queue: Vec<String> = Vec::new();
    for n in 0..100_000u32 {
        let account = &accounts[fastrand::usize(..accounts.len())];
        let (meter, event_name, value) = if n % 2 == 0 {
            ("tokens", "llm.tokens", f64::from(fastrand::u32(1..500)))
        } else {
            ("api_calls", "api_call", 1.0)
        };
        *expected
            .entry((format!("cus_{account}"), event_name.to_owned()))
            .or_default() += value;
        let body = json!({"account": account, "meter": meter, "value": value, "identifier": format!("r-{n}"), "timestamp": now - i64::from(n % 3600)}).to_string();
        if n % 10 == 0 {
            queue.push(body.clone());
        }
        queue.push(body);
    }
    fastrand::shuffle(&mut queue);
    let mut rounds = 0;
    let mut seen_ids = HashSet::new();
    while !queue.is_empty() {
        rounds += 1;
        assert!(rounds < 100, "{} messages never succeed", queue.len());
        let mut retry = Vec::new();
        for chunk in queue.chunks(100) {
            let event = batch(chunk);
            let ids: Vec<String> = event.records.iter().map(|r| r.message_id.clone().unwrap()).collect();
            let (response, _) = processor.process(event, now).await;
            let failed: HashSet<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            for (id, body) in ids.iter().zip(chunk) {
                seen_ids.insert(id.clone());
                if failed.contains(id.as_str()) {
                    retry.push(body.clone());
                }
            }
        }
        fastrand::shuffle(&mut retry);
        queue = retry;
    }
    assert_eq!(stripe.totals(), expected, "Stripe counted each unique report once");
    let mut local: BTreeMap<(String, String), f64> = BTreeMap::new();
    for account in &accounts {
        let usage = store.account_usage(&AccountId::parse(account).unwrap()).await.unwrap();
        for counter in usage.counters {
            let event_name = if counter.meter == "tokens" {
                "llm.tokens"
            } else {
                "api_call"
            };
            *local
                .entry((format!("cus_{account}"), event_name.to_owned()))
                .or_default() += counter.used;
            assert!(counter.pending.is_empty(), "every send confirmed");
        }
    }
    assert_eq!(local, expected, "the local counters too");
    // Batched: far fewer Stripe requests than reports.
    let per_thousand = stripe.requests() as f64 / 110.0;
    assert!(per_thousand <= 20.0, "{per_thousand} Stripe requests per 1,000 reports");
}

/// The reporting contract's schema (`infra/schemas/usage_event.schema.json`, validated by the
/// `jsonschema` package) and the processor's edge agree on what a report is, case by case,
/// against a decision table written from the contract.
#[tokio::test]
async fn the_schema_and_the_edge_agree_on_what_a_report_is() {
    let now = shared::unix_now();
    // (report, valid by the contract)
    let table: Vec<(Value, bool)> = vec![
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_1"}),
            true,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_2", "value": 2.5, "timestamp": now}),
            true,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_3", "value": 0}),
            true,
        ),
        (json!({"account": "org_1", "meter": "api_calls"}), false),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": ""}),
            false,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "x".repeat(101)}),
            false,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "with space"}),
            false,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_4", "value": -1}),
            false,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_5", "value": "1"}),
            false,
        ),
        (
            json!({"account": "org#1", "meter": "api_calls", "identifier": "req_6"}),
            false,
        ),
        (
            json!({"account": "", "meter": "api_calls", "identifier": "req_7"}),
            false,
        ),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_8", "extra": 1}),
            false,
        ),
        (json!({"account": "org_1", "identifier": "req_9"}), false),
        (
            json!({"account": "org_1", "meter": "api_calls", "identifier": "req_10", "timestamp": 1.5}),
            false,
        ),
    ];
    let schema = format!(
        "{}/../infra/schemas/usage_event.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        v = jsonschema.Draft202012Validator(schema)\n\
        print(json.dumps([v.is_valid(r) for r in json.load(sys.stdin)]))\n";
    let reports: Vec<Value> = table.iter().map(|(report, _)| report.clone()).collect();
    let printed = billing_tests::oracle::python(&["-c", script, &schema], &Value::from(reports).to_string());
    let by_schema: Vec<bool> = serde_json::from_slice(&printed).unwrap();
    let catalog = catalog();
    for ((report, valid), schema_says) in table.iter().zip(by_schema) {
        assert_eq!(schema_says, *valid, "the schema on {report}");
        let edge = shared::usage::UsageEvent::validate_body(&report.to_string(), &catalog, now, now);
        assert_eq!(edge.is_ok(), *valid, "the edge on {report}: {edge:?}");
    }
}

/// Stripe, switched on and off by the test.
struct Switchable {
    up: std::sync::atomic::AtomicBool,
    inner: Arc<MemoryMeterEvents>,
}

impl MeterEventSink for Switchable {
    async fn send(&self, events: &[MeterEvent]) -> Result<(), StripeError> {
        if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StripeError::InvalidId("Stripe is down".into()));
        }
        self.inner.send(events).await
    }
}

/// A report counted before is resent when it comes back, whatever the clock says of its
/// timestamp by then; a send pending past Stripe's 24-hour deduplication window is not resent
/// but counted and cleared; the customer comes from the account's link (written at checkout,
/// before the entitlement names it); an account without one is counted and not billed.
#[tokio::test]
async fn seen_again_a_report_is_resent_within_the_window_and_given_up_after_it() {
    use shared::store::BillingStore;
    let store = Arc::new(MemoryStore::new());
    let twin = Arc::new(MemoryMeterEvents::new());
    let stripe = Arc::new(Switchable {
        up: false.into(),
        inner: twin.clone(),
    });
    let processor = UsageProcessor {
        ledger: store.clone(),
        meter_events: stripe.clone(),
        catalog: catalog(),
    };
    let account = AccountId::parse(&unique("acct-")).unwrap();
    store.link_customer(&account, "cus_linked").await.unwrap();
    let now = shared::unix_now();
    // Inside the edge's 34 days by ten seconds; Stripe is down, so it stays pending.
    let edge = now - 34 * 86_400 + 10;
    let early = vec![report(account.as_str(), "late-1", edge)];
    let (response, counts) = processor.process(batch(&early), now).await;
    assert_eq!((response.batch_item_failures.len(), counts.counted), (1, 1));
    // A minute later the timestamp is outside the edge's window; the retry still goes.
    stripe.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let (response, counts) = processor.process(batch(&early), now + 60).await;
    assert!(response.batch_item_failures.is_empty(), "{counts:?}");
    assert_eq!((counts.resent, counts.rejected), (1, 0));
    assert_eq!(twin.totals()[&("cus_linked".to_owned(), "api_call".to_owned())], 1.0);

    // Pending for more than a day: not resent, and cleared by the next commit.
    stripe.up.store(false, std::sync::atomic::Ordering::SeqCst);
    let stuck = vec![report(account.as_str(), "stuck-1", now)];
    processor.process(batch(&stuck), now).await;
    stripe.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let day_later = now + 86_400;
    let (response, counts) = processor.process(batch(&stuck), day_later).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((counts.resent, counts.unconfirmed), (0, 1));
    let fresh = vec![report(account.as_str(), "fresh-1", day_later)];
    let (_, counts) = processor.process(batch(&fresh), day_later).await;
    assert_eq!(
        counts.unconfirmed, 1,
        "the stuck send is given up as the counter is written"
    );
    let usage = store.account_usage(&account).await.unwrap();
    assert!(
        usage.counters.iter().all(|c| c.pending.is_empty()),
        "{:?}",
        usage.counters
    );
    assert_eq!(
        twin.totals()[&("cus_linked".to_owned(), "api_call".to_owned())],
        2.0,
        "late-1 and fresh-1"
    );

    // No customer at all: counted for quotas, not sent.
    let before = twin.requests();
    let (_, counts) = processor.process(batch(&[report("nobody", "free-1", now)]), now).await;
    assert_eq!((counts.counted, counts.unbilled), (1, 1));
    assert_eq!(twin.requests(), before);
}

/// An account without the v2 stream (its session endpoint answers 404) is served through v1
/// from then on, one request an event, with the identifier as the idempotency key.
#[tokio::test]
async fn without_the_stream_meter_events_go_through_v1() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let stripe = billing_tests::stripe_standin::StripeStandIn::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/billing/meter_event_session"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(
                json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
            ),
        )
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "billing.meter_event"})))
        .mount(&stripe.server)
        .await;
    let base = url::Url::parse(&stripe.server.uri()).unwrap();
    let sink = StripeMeterEvents::new(stripe.client(), base, MeterApi::V2);
    let events: Vec<MeterEvent> = (0..3)
        .map(|n| MeterEvent {
            identifier: format!("id-{n}"),
            event_name: "api_call".into(),
            customer_id: "cus_1".into(),
            value: 1.0,
            timestamp: 1_796_414_400,
        })
        .collect();
    sink.send(&events).await.unwrap();
    sink.send(&events[..1]).await.unwrap();
    assert_eq!(sink.api(), MeterApi::V1);
    let received = stripe.server.received_requests().await.unwrap();
    let paths: Vec<&str> = received.iter().map(|r| r.url.path()).collect();
    assert_eq!(
        paths,
        [
            "/v2/billing/meter_event_session",
            "/v1/billing/meter_events",
            "/v1/billing/meter_events",
            "/v1/billing/meter_events",
            "/v1/billing/meter_events"
        ],
        "one session attempt, then v1 only"
    );
    let first = &received[1];
    assert_eq!(first.headers.get("idempotency-key").unwrap(), "meter-event-id-0");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&first.body).into_owned().collect();
    // The parameters of stripe-python's `MeterEventCreateParams`.
    assert_eq!(form["event_name"], "api_call");
    assert_eq!(form["identifier"], "id-0");
    assert_eq!(form["payload[stripe_customer_id]"], "cus_1");
    assert_eq!(form["payload[value]"], "1");
    assert_eq!(form["timestamp"], "1796414400");
}

/// A stream request whose session Stripe says expired is made once more with a new session
/// (the simulator's sessions expire at once with a lifetime of 0, so the second fails too, and
/// the call reports it); with a normal lifetime, one session serves many requests.
#[tokio::test]
async fn an_expired_session_is_renewed_once_and_a_live_one_is_reused() {
    let (simulator, stripe) = simulated_stripe(KEY).await;
    let base = url::Url::parse(&simulator.base_url).unwrap();
    let event = |n: u32| MeterEvent {
        identifier: unique(&format!("s{n}-")),
        event_name: "api_call".into(),
        customer_id: "cus_x".into(),
        value: 1.0,
        timestamp: shared::unix_now(),
    };
    simulator.set_meter_event_session_ttl(std::time::Duration::ZERO);
    let sink = StripeMeterEvents::new(stripe.clone(), base.clone(), MeterApi::V2);
    let refused = sink.send(&[event(0)]).await.unwrap_err();
    assert_eq!(refused.api().map(|e| e.status), Some(401), "{refused:?}");
    assert_eq!(
        simulator.meter_requests().v2,
        2,
        "the stream was tried with a second session"
    );
    simulator.set_meter_event_session_ttl(std::time::Duration::from_secs(900));
    let sink = StripeMeterEvents::new(stripe, base, MeterApi::V2);
    for n in 1..=3 {
        sink.send(&[event(n)]).await.unwrap();
    }
    assert_eq!(simulator.meter_requests().v2, 5, "three more stream requests");
    assert_eq!(sink.requests(), (4, 0), "one session for the three");
}

/// The app's reporter puts each report on the usage queue (a standard queue on moto) as one
/// message whose body is the report, ten a request; the usage processor takes those bodies.
#[tokio::test]
async fn the_reporter_queues_each_report_as_one_message() {
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let queue_url = client
        .create_queue()
        .queue_name(unique("usage-"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let reports: Vec<shared::usage::UsageEvent> = (0..25)
        .map(|n| shared::usage::UsageEvent {
            account: "org_1".into(),
            meter: "api_calls".into(),
            value: 1.0,
            identifier: Some(format!("req-{n}")),
            timestamp: None,
        })
        .collect();
    shared::usage::UsageReporter::new(client.clone(), queue_url.clone())
        .report(&reports)
        .await
        .unwrap();
    let mut received: Vec<shared::usage::UsageEvent> = Vec::new();
    for _ in 0..20 {
        let page = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = page.messages.unwrap_or_default();
        if messages.is_empty() && received.len() >= reports.len() {
            break;
        }
        for message in messages {
            received.push(serde_json::from_str(message.body().unwrap()).unwrap());
        }
    }
    received.sort_by_key(|r| {
        r.identifier
            .clone()
            .unwrap()
            .trim_start_matches("req-")
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(received, reports);
}
