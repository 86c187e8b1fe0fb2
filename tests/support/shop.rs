//! A shop on the offline simulator over HTTP: the billing API on DynamoDB (moto) for an
//! organisation's members, the events processor beside it, and the events Stripe recorded
//! (`GET /v1/events`, as Stripe sends them) fed to it one message each, in the order a test
//! chooses.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shared::config::{AccountSettings, Catalog, Env, RateLimits};
use shared::notify::{NoAppEvents, Publisher};
use shared::processing::EventHandler;
use shared::store::DynamoStore;
use shared::sync::{SyncPolicy, Syncer};
use stripe_simulator::Simulator;

use crate::api::{Answer, TestApi, spawn_api_with};
use crate::lifecycle::sqs_batch;
use crate::{aws, unique};

/// The example catalog the README documents.
pub const CATALOG: &str = include_str!("../../infra/catalog.example.json");
const KEY: &str = "sk_test_shop";

pub struct Shop<P = NoAppEvents> {
    pub api: TestApi<DynamoStore>,
    pub events: Syncer<Arc<DynamoStore>, P>,
    pub simulator: Simulator,
    pub http: reqwest::Client,
    /// The organisation (`org_id` claim) whose member calls the API.
    pub org: String,
    seen: Mutex<HashSet<String>>,
}

/// The offline simulator and a Stripe client on it, with `key`.
pub async fn simulated_stripe(key: &str) -> (Simulator, shared::stripe::StripeClient) {
    let simulator = Simulator::start(0, stripe_simulator::Delivery::default())
        .await
        .unwrap();
    let stripe = shared::stripe::StripeClient::new(
        reqwest::Client::new(),
        url::Url::parse(&simulator.base_url).unwrap(),
        secrecy::SecretString::from(key.to_owned()),
        Default::default(),
    );
    (simulator, stripe)
}

impl Shop {
    pub async fn open() -> Self {
        Self::open_with(NoAppEvents).await
    }
}

impl<P: Publisher> Shop<P> {
    /// The events processor tells the app through `publisher`.
    pub async fn open_with(publisher: P) -> Self {
        let (simulator, stripe) = simulated_stripe(KEY).await;
        let accounts = AccountSettings::from_env(&Env::from_pairs([("BILLING_ACCOUNT_CLAIM", "org_id")])).unwrap();
        let store = Arc::new(aws::fresh_store().await);
        let catalog = Catalog::parse(CATALOG).unwrap();
        let events = Syncer {
            store: store.clone(),
            stripe: stripe.clone(),
            plans: catalog.clone(),
            grace_days: 14,
            policy: SyncPolicy::default(),
            app_events: publisher,
        };
        let api = spawn_api_with(store, stripe, RateLimits::UNLIMITED, accounts, catalog);
        Self {
            api,
            events,
            simulator,
            http: reqwest::Client::new(),
            org: unique("org_"),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The API as a member of the organisation; a `null` body sends none.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Answer {
        let claims = json!({"sub": "user_1", "org_id": self.org});
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.api.call_as(method, path, claims, &body).await
    }

    /// A Stripe API call to the simulator, as the dashboard or an operator makes it.
    pub async fn stripe(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.simulator.base_url))
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

    /// A `/sim/...` action: what customers and banks do.
    pub async fn sim(&self, action: &str) -> Value {
        self.stripe(reqwest::Method::POST, &format!("/sim/{action}"), &[]).await["result"].clone()
    }

    /// A checkout for `request`; the session's id.
    pub async fn checkout(&self, request: Value) -> String {
        let created = self.call("POST", "/checkout/sessions", request).await;
        assert_eq!(created.status, 201, "{}", created.body);
        created.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn session(&self, id: &str) -> Value {
        self.stripe(reqwest::Method::GET, &format!("/v1/checkout/sessions/{id}"), &[])
            .await
    }

    /// The charge that paid a payment intent, as Stripe has it.
    pub async fn charge_of(&self, intent: &str) -> String {
        let paid = self
            .stripe(reqwest::Method::GET, &format!("/v1/payment_intents/{intent}"), &[])
            .await;
        paid["latest_charge"].as_str().unwrap().to_owned()
    }

    /// Every event Stripe recorded since the last call, oldest first.
    pub async fn new_events(&self) -> Vec<Value> {
        let list = self.stripe(reqwest::Method::GET, "/v1/events?limit=100", &[]).await;
        let mut seen = self.seen.lock().unwrap();
        let mut fresh: Vec<Value> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| seen.insert(event["id"].as_str().unwrap().to_owned()))
            .cloned()
            .collect();
        fresh.reverse();
        fresh
    }

    /// Processes `events` one message each, in the order given, as the events queue delivers
    /// them; the types of those that failed (and would be retried).
    pub async fn process(&self, events: &[Value]) -> Vec<String> {
        let mut failed = Vec::new();
        for event in events {
            let message = vec![(unique("msg-"), "group", event.to_string())];
            let response = self
                .events
                .handle_batch(sqs_batch(&message), shared::unix_now(), shared::unix_now() + 60)
                .await
                .unwrap();
            if !response.batch_item_failures.is_empty() {
                failed.push(event["type"].as_str().unwrap_or_default().to_owned());
            }
        }
        failed
    }

    pub async fn process_ok(&self, events: &[Value]) {
        assert_eq!(self.process(events).await, Vec::<String>::new(), "no message fails");
    }

    /// The entitlement `GET /billing/me` shows, without this period's `usage` beside it: what
    /// app events carry.
    pub async fn entitlement(&self) -> Value {
        let mut me = self.me().await;
        if let Some(fields) = me.as_object_mut() {
            fields.remove("usage");
        }
        me
    }

    /// `GET /billing/me`.
    pub async fn me(&self) -> Value {
        let me = self.call("GET", "/billing/me", Value::Null).await;
        assert_eq!(me.status, 200, "{}", me.body);
        me.body
    }
}
