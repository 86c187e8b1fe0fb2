//! The whole system in one process: the billing API router and the webhook receiver on one
//! 127.0.0.1 server, a queue, and the events and payment-failed processors — the same handler
//! code as the Lambdas. Storage is in memory unless `BILLING_TABLE` is set (DynamoDB, e.g. on
//! moto through `AWS_ENDPOINT_URL`); the queue is in-process unless `EVENTS_QUEUE_URL` and
//! `PAYMENT_FAILED_QUEUE_URL` are set (SQS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use checkout::AppState;
use secrecy::SecretString;
use shared::config::{
    AccountSettings, Catalog, Env, EventBridgeSettings, QueueSettings, RateLimits, StoreSettings, StripeSettings,
    UsageSettings,
};
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::eventbridge::{EventBridgeReceiver, Verdict};
use shared::notify::{MemoryNotifier, NoAppEvents};
use shared::processing::EventHandler;
use shared::processing::batch::sqs_event;
use shared::queue::{EventQueue, MemoryQueue, QueueName, SqsQueue};
use shared::store::{BillingStore, DynamoStore, MemoryStore};
use shared::stripe::meter_events::StripeMeterEvents;
use shared::stripe::{RetryPolicy, SignatureVerifier, StripeClient};
use shared::sync::{SyncPolicy, Syncer};
use shared::usage::UsageProcessor;
use shared::webhook::{Delivery, WebhookReceiver};
use stripe_simulator::{EventBridgeTarget, Payload, Simulator};

/// The catalog of local runs, which `BILLING_CATALOG` (or `BILLING_PLANS`) replaces: the
/// repository's example (starter and team, add-ons, a lifetime deal and a credit pack, the
/// usage-billed api plan with 100 calls included) with two plans beside it, basic and pro
/// (with a 14-day trial), that the demo's lifecycle walks.
pub fn local_catalog() -> Result<Catalog, String> {
    let mut catalog: serde_json::Value =
        serde_json::from_str(include_str!("../../infra/catalog.example.json")).map_err(|e| e.to_string())?;
    catalog["plans"]["basic"] = serde_json::json!({
        "features": ["reports"],
        "prices": [{"id": "price_basic", "interval": "month", "currency": "usd"}],
    });
    // The api plan includes 100 calls here (10,000 in the example), so a local run crosses it
    // in a few reports.
    catalog["plans"]["api"]["meters"]["api_calls"]["included"] = serde_json::json!(100);
    catalog["plans"]["pro"] = serde_json::json!({
        "features": ["reports", "api", "exports"],
        "trial_days": 14,
        "allow_promotion_codes": true,
        "prices": [{"id": "price_pro", "interval": "month", "currency": "usd"}],
    });
    Catalog::parse(&catalog.to_string())
}
pub const LOCAL_WEBHOOK_SECRET: &str = "whsec_local_simulator_secret";
/// The partner event source and account of local EventBridge delivery.
pub const LOCAL_PARTNER_SOURCE: &str = "aws.partner/stripe.com/ed_test_local";
pub const LOCAL_ACCOUNT: &str = "000000000000";

/// How the simulator delivers events in a local run (`billing dev --delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryMode {
    /// Signed POSTs to `/webhooks/stripe`, as a webhook endpoint receives them.
    Webhook,
    /// Envelopes from a partner event source to the EventBridge receiver, in process.
    Eventbridge,
    /// Every event both ways, as while moving from one to the other: processed once.
    Both,
}

/// Which event shape the simulator sends (`billing dev --payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadMode {
    Snapshot,
    Thin,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start: {0}")]
    Start(String),
    #[error("demo step failed: {0}")]
    Step(String),
}

/// A queue a local run can use: what happens to a message its processor failed.
pub trait LocalQueue: EventQueue + Clone + 'static {
    fn redeliver(&self, queue: QueueName, receipt_handle: &str);
}

impl LocalQueue for Arc<MemoryQueue> {
    /// Back at the front of its lane at once, like an expired visibility timeout.
    fn redeliver(&self, queue: QueueName, receipt_handle: &str) {
        self.release(queue, receipt_handle);
    }
}

impl LocalQueue for SqsQueue {
    /// Nothing to do: SQS returns it when the visibility timeout expires, as in production.
    fn redeliver(&self, _queue: QueueName, _receipt_handle: &str) {}
}

/// What runs on a started system; generic so that each storage and queue choice runs the
/// same code.
pub trait LocalApp {
    fn run<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
        self,
        system: LocalSystem<S, Q>,
    ) -> impl std::future::Future<Output = Result<(), LocalError>>;

    /// Accounts as the app needs them; `None`: as the environment says.
    fn accounts(&self) -> Option<AccountSettings> {
        None
    }
}

/// Picks the adapters from the environment, says which loudly, starts the system on
/// `127.0.0.1:port` and hands it to `app`.
pub async fn launch(port: u16, app: impl LocalApp) -> Result<(), LocalError> {
    let env = Env::from_process();
    let wants_aws = env.get("BILLING_TABLE").is_some() || env.get("EVENTS_QUEUE_URL").is_some();
    let sdk = match wants_aws {
        true => Some(shared::aws::default_sdk_config().await),
        false => None,
    };
    let endpoint = env.get("AWS_ENDPOINT_URL").unwrap_or("AWS");
    let accounts = app.accounts();
    let store = match (&sdk, env.get("BILLING_TABLE")) {
        (Some(sdk), Some(_)) => {
            let table = StoreSettings::from_env(&env).map_err(start_error)?.table;
            let client = aws_sdk_dynamodb::Client::new(sdk);
            ensure_local_table(&client, &table, env.get("AWS_ENDPOINT_URL").is_some()).await?;
            println!("Storage: DynamoDB table {table} ({endpoint})");
            Some(DynamoStore::new(client, table))
        }
        _ => {
            println!("Storage: in-memory (everything is lost when this process stops; set BILLING_TABLE for DynamoDB)");
            None
        }
    };
    let queue = match (&sdk, env.get("EVENTS_QUEUE_URL")) {
        (Some(sdk), Some(_)) => {
            let settings = QueueSettings::from_env(&env).map_err(start_error)?;
            let client = aws_sdk_sqs::Client::new(sdk);
            let local = env.get("AWS_ENDPOINT_URL").is_some();
            for url in [&settings.events_url, &settings.payment_failed_url] {
                ensure_local_queue(&client, url, local).await?;
            }
            println!(
                "Queues: SQS {} and {} ({endpoint})",
                settings.events_url, settings.payment_failed_url
            );
            Some(SqsQueue::new(client, settings))
        }
        _ => {
            println!("Queues: in-process");
            None
        }
    };
    let memory_queue = || Arc::new(MemoryQueue::new());
    match (store, queue) {
        (None, None) => {
            app.run(LocalSystem::start(port, Arc::new(MemoryStore::new()), memory_queue(), accounts).await?)
                .await
        }
        (None, Some(sqs)) => {
            app.run(LocalSystem::start(port, Arc::new(MemoryStore::new()), sqs, accounts).await?)
                .await
        }
        (Some(dynamo), None) => {
            app.run(LocalSystem::start(port, dynamo, memory_queue(), accounts).await?)
                .await
        }
        (Some(dynamo), Some(sqs)) => app.run(LocalSystem::start(port, dynamo, sqs, accounts).await?).await,
    }
}

/// On a local endpoint (moto) a missing table is created, as the SAM stack would; against AWS
/// it must exist, since creating one there is the stack's job.
async fn ensure_local_table(client: &aws_sdk_dynamodb::Client, table: &str, local: bool) -> Result<(), LocalError> {
    if client.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    if !local {
        return Err(LocalError::Start(format!(
            "DynamoDB table {table} does not exist (deploy the stack, or set AWS_ENDPOINT_URL for moto)"
        )));
    }
    DynamoStore::create_table(client, table).await.map_err(start_error)
}

/// Like [`ensure_local_table`], for a FIFO queue named by the last segment of its URL.
async fn ensure_local_queue(client: &aws_sdk_sqs::Client, url: &str, local: bool) -> Result<(), LocalError> {
    if client.get_queue_attributes().queue_url(url).send().await.is_ok() {
        return Ok(());
    }
    let name = url.rsplit('/').next().unwrap_or_default();
    if !local || name.is_empty() {
        return Err(LocalError::Start(format!(
            "SQS queue {url} does not exist (deploy the stack, or set AWS_ENDPOINT_URL for moto)"
        )));
    }
    let created = client
        .create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::ContentBasedDeduplication,
            "false",
        )
        .send()
        .await
        .map_err(|error| start_error(aws_sdk_sqs::error::DisplayErrorContext(error)))?
        .queue_url
        .unwrap_or_default();
    if created != url {
        return Err(LocalError::Start(format!(
            "the endpoint created the queue as {created}; set its URL to that"
        )));
    }
    Ok(())
}

/// Usage reports waiting for the usage processor, as the `usage` queue holds them.
pub type UsageInbox = Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

pub struct LocalSystem<S, Q> {
    pub api_url: String,
    pub simulator: Option<Simulator>,
    pub queue: Q,
    eventbridge: Arc<EventBridgeReceiver<Q>>,
    pub notifier: Arc<MemoryNotifier>,
    events: Syncer<S, Arc<MemoryNotifier>>,
    dunning: DunningProcessor<S, Arc<MemoryNotifier>>,
    usage: UsageProcessor<S, StripeMeterEvents>,
    pub usage_inbox: UsageInbox,
}

fn start_error(error: impl std::fmt::Display) -> LocalError {
    LocalError::Start(error.to_string())
}

impl<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue> LocalSystem<S, Q> {
    /// Real Stripe when `STRIPE_SECRET_KEY` is set, the simulator otherwise.
    /// `accounts`: who the account is and who may change billing, else from the environment.
    pub async fn start(port: u16, store: S, queue: Q, accounts: Option<AccountSettings>) -> Result<Self, LocalError> {
        let env = Env::from_process();
        let plans = match env.get("BILLING_CATALOG").or(env.get("BILLING_PLANS")) {
            Some(_) => Catalog::from_env(&env).map_err(start_error)?,
            None => local_catalog().map_err(LocalError::Start)?,
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .map_err(start_error)?;
        let api_url = format!("http://{}", listener.local_addr().map_err(start_error)?);
        let http = StripeClient::http_client().map_err(start_error)?;
        let (stripe, simulator, webhook_secret) = if env.get("STRIPE_SECRET_KEY").is_some() {
            let settings = StripeSettings::from_env(&env).map_err(start_error)?;
            let secret = env.get("STRIPE_WEBHOOK_SECRET").unwrap_or_default().to_owned();
            if secret.is_empty() {
                println!(
                    "WARNING: STRIPE_WEBHOOK_SECRET is not set: every webhook delivery will be refused with 500 \
                     (copy the whsec_… secret `stripe listen` prints)"
                );
            }
            println!(
                "Stripe: REAL Stripe API at {} (forward events with `stripe listen --forward-to {api_url}/webhooks/stripe`)",
                settings.api_base
            );
            let key = StripeSettings::api_key(
                env.get("STRIPE_SECRET_KEY")
                    .map(|key| SecretString::from(key.to_owned()))
                    .as_ref(),
            )
            .map_err(start_error)?;
            (
                StripeClient::new(http, settings.api_base, key, settings.retry),
                None,
                secret,
            )
        } else {
            let delivery = stripe_simulator::Delivery {
                webhook_url: Some(format!("{api_url}/webhooks/stripe")),
                webhook_secret: LOCAL_WEBHOOK_SECRET.into(),
                ..Default::default()
            };
            let simulator = Simulator::start(0, delivery).await.map_err(start_error)?;
            println!(
                "Stripe: OFFLINE SIMULATOR at {} (no STRIPE_SECRET_KEY set; nothing leaves this machine)",
                simulator.base_url
            );
            seed_meters(&http, &simulator.base_url, &plans).await?;
            let base = url::Url::parse(&simulator.base_url).map_err(start_error)?;
            let client = StripeClient::new(
                http,
                base,
                SecretString::from("sk_test_simulator".to_owned()),
                RetryPolicy::default(),
            );
            (client, Some(simulator), LOCAL_WEBHOOK_SECRET.to_owned())
        };
        let notifier = Arc::new(MemoryNotifier::new());
        let grace_days = shared::bootstrap::grace_days(&env).map_err(start_error)?;
        let policy = DunningPolicy::from_env(&env).map_err(start_error)?;
        let sync_policy = SyncPolicy::from_env(&env).map_err(start_error)?;
        let syncer = |store: S| Syncer {
            store,
            stripe: stripe.clone(),
            plans: plans.clone(),
            grace_days,
            policy: sync_policy,
            app_events: NoAppEvents,
        };
        let secrets: Vec<SecretString> = webhook_secret
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        let tolerance = std::num::NonZeroU64::new(shared::stripe::signature::DEFAULT_TOLERANCE_SECS)
            .unwrap_or(std::num::NonZeroU64::MIN);
        let verifier = SignatureVerifier::new(&secrets, tolerance);
        let receiver = Arc::new(WebhookReceiver::new(verifier, queue.clone()));
        let eventbridge = Arc::new(EventBridgeReceiver::new(
            EventBridgeSettings {
                account: LOCAL_ACCOUNT.into(),
                source: Some(LOCAL_PARTNER_SOURCE.into()),
            },
            queue.clone(),
        ));
        let api = checkout::router(AppState {
            syncer: syncer(store.clone()),
            app_base_url: url::Url::parse(&api_url).map_err(start_error)?,
            accounts: match accounts {
                Some(accounts) => accounts,
                None => AccountSettings::from_env(&env).map_err(start_error)?,
            },
            limits: RateLimits::from_env(&env).map_err(start_error)?,
        });
        let api = api.layer(axum::middleware::from_fn(crate::dev_identity::from_header));
        let usage_inbox = UsageInbox::default();
        let app = Router::new()
            .route("/webhooks/stripe", post(webhook::<Q>).with_state(receiver))
            .route("/_dev/usage", post(report_usage).with_state(usage_inbox.clone()))
            .merge(api);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "local server stopped");
            }
        });
        let dunning = DunningProcessor {
            syncer: syncer(store.clone()),
            notifier: notifier.clone(),
            policy,
        };
        let meter_events_base = match &simulator {
            Some(simulator) => url::Url::parse(&simulator.base_url).map_err(start_error)?,
            None => UsageSettings::from_env(&env).map_err(start_error)?.meter_events_base,
        };
        let usage = UsageProcessor {
            ledger: store.clone(),
            meter_events: StripeMeterEvents::new(
                stripe.clone(),
                meter_events_base,
                UsageSettings::from_env(&env).map_err(start_error)?.api,
            ),
            catalog: plans.clone(),
        };
        Ok(Self {
            api_url,
            simulator,
            events: Syncer {
                store: store.clone(),
                stripe: stripe.clone(),
                plans: plans.clone(),
                grace_days,
                policy: sync_policy,
                app_events: notifier.clone(),
            },
            dunning,
            usage,
            usage_inbox,
            queue,
            eventbridge,
            notifier,
        })
    }

    /// The simulator's delivery for `mode` and `payload`: to this system's webhook route, to
    /// its EventBridge receiver (in process, as a rule invokes the Lambda), or both.
    pub fn delivery(&self, mode: DeliveryMode, payload: PayloadMode) -> stripe_simulator::Delivery {
        let receiver = self.eventbridge.clone();
        let sink: stripe_simulator::EventBridgeSink = Arc::new(move |envelope: String| {
            let receiver = receiver.clone();
            Box::pin(async move {
                matches!(
                    receiver.receive(&envelope).await,
                    Ok(Verdict::Enqueued | Verdict::Ignored)
                )
            })
        });
        let eventbridge = EventBridgeTarget {
            source: LOCAL_PARTNER_SOURCE.into(),
            account: LOCAL_ACCOUNT.into(),
            sink,
        };
        let webhook_url = Some(format!("{}/webhooks/stripe", self.api_url));
        let (webhook_url, eventbridge) = match mode {
            DeliveryMode::Webhook => (webhook_url, None),
            DeliveryMode::Eventbridge => (None, Some(eventbridge)),
            DeliveryMode::Both => (webhook_url, Some(eventbridge)),
        };
        stripe_simulator::Delivery {
            webhook_url,
            webhook_secret: LOCAL_WEBHOOK_SECRET.into(),
            eventbridge,
            payload: match payload {
                PayloadMode::Snapshot => Payload::Snapshot,
                PayloadMode::Thin => Payload::Thin,
            },
            duplicates: false,
            shuffle: false,
        }
    }

    /// Feeds queued messages to the processors, as the SQS triggers do, until both queues are
    /// empty; failed messages return to the queue like an expired visibility timeout.
    pub async fn drain(&self) -> Result<usize, LocalError> {
        let mut processed = 0;
        for _round in 0..50 {
            let mut progressed = false;
            for name in QueueName::ALL {
                let messages = self
                    .queue
                    .receive(name, 10)
                    .await
                    .map_err(|e| LocalError::Step(e.to_string()))?;
                if messages.is_empty() {
                    continue;
                }
                let batch = sqs_event(&messages);
                let (now, lease_until) = (shared::unix_now(), shared::unix_now() + 60);
                let response = match name {
                    QueueName::Events => self.events.handle_batch(batch, now, lease_until).await,
                    QueueName::PaymentFailed => self.dunning.handle_batch(batch, now, lease_until).await,
                }
                .map_err(|e| LocalError::Step(e.to_string()))?;
                for message in messages {
                    let failed = response
                        .batch_item_failures
                        .iter()
                        .any(|f| f.item_identifier == message.message_id);
                    if failed {
                        self.queue.redeliver(name, &message.receipt_handle);
                    } else {
                        self.queue
                            .delete(name, &message.receipt_handle)
                            .await
                            .map_err(|e| LocalError::Step(e.to_string()))?;
                        processed += 1;
                        progressed = true;
                    }
                }
            }
            processed += self.drain_usage().await;
            if !progressed {
                break;
            }
        }
        Ok(processed)
    }

    /// Feeds waiting usage reports to the usage processor in batches of 100, as the `usage`
    /// queue's trigger does; the ones that failed wait for the next round.
    pub async fn drain_usage(&self) -> usize {
        let mut done = 0;
        loop {
            let bodies: Vec<String> = {
                let mut inbox = self
                    .usage_inbox
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let take = inbox.len().min(100);
                inbox.drain(..take).collect()
            };
            if bodies.is_empty() {
                return done;
            }
            let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
            for (index, body) in bodies.iter().enumerate() {
                let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
                message.message_id = Some(index.to_string());
                message.body = Some(body.clone());
                batch.records.push(message);
            }
            let response = self.usage.handle_batch(batch, shared::unix_now()).await;
            let failed: Vec<String> = response
                .batch_item_failures
                .iter()
                .filter_map(|failure| bodies.get(failure.item_identifier.parse::<usize>().ok()?).cloned())
                .collect();
            done += bodies.len() - failed.len();
            if !failed.is_empty() {
                let mut inbox = self
                    .usage_inbox
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                inbox.extend(failed);
                return done;
            }
        }
    }
}

/// What a test-mode Stripe account of the catalog has and the simulator lacks: the meters (by
/// `event_name`) and the metered prices, at 0.1 cents a unit beyond what the plan includes.
async fn seed_meters(http: &reqwest::Client, base: &str, plans: &Catalog) -> Result<(), LocalError> {
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let request = http
            .post(format!("{base}{path}"))
            .bearer_auth("sk_test_simulator")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        async move {
            let answer = request.send().await.map_err(start_error)?;
            if !answer.status().is_success() {
                return Err(LocalError::Start(format!(
                    "the simulator refused {path}: {}",
                    answer.text().await.unwrap_or_default()
                )));
            }
            Ok(())
        }
    };
    for (key, meter) in plans.meters() {
        let formula = match meter.aggregation {
            shared::config::Aggregation::Sum => "sum",
            shared::config::Aggregation::Count => "count",
        };
        post(
            "/v1/billing/meters".into(),
            vec![
                ("display_name", key.to_owned()),
                ("event_name", meter.event_name.clone()),
                ("default_aggregation[formula]", formula.to_owned()),
            ],
        )
        .await?;
    }
    for plan_key in plans.keys() {
        let Some(plan) = plans.get(plan_key) else { continue };
        for (meter_key, allowance) in &plan.meters {
            let Some(meter) = plans.meter(meter_key) else { continue };
            for price in &allowance.prices {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("id", &price.id)
                    .append_pair("meter", &meter.event_name)
                    .append_pair("unit_amount_decimal", "0.1")
                    .append_pair("free_up_to", &allowance.included.to_string())
                    .finish();
                post(format!("/sim/prices?{query}"), Vec::new()).await?;
            }
        }
    }
    Ok(())
}

/// `POST /_dev/usage` (local runs only): one report or an array of them, queued for the
/// usage processor as the `usage` SQS queue would hold them; 202 with how many.
async fn report_usage(State(inbox): State<UsageInbox>, body: Bytes) -> Response {
    let reports: Vec<serde_json::Value> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(item @ serde_json::Value::Object(_)) => vec![item],
        _ => {
            let error = serde_json::json!({"error": "invalid_body", "message": "a usage report or an array of them"});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
    };
    let queued = reports.len();
    inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(reports.into_iter().map(|report| report.to_string()));
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "queued": queued })),
    )
        .into_response()
}

async fn webhook<Q: EventQueue>(
    State(receiver): State<Arc<WebhookReceiver<Q>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delivery = Delivery {
        method: "POST",
        signature: headers.get("stripe-signature").and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let reply = receiver.receive(delivery, shared::unix_now()).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], reply.body).into_response()
}

/// `billing dev`: serve until Ctrl-C, processing queued events every 200 ms.
pub struct Dev {
    pub delivery: DeliveryMode,
    pub payload: PayloadMode,
}

impl LocalApp for Dev {
    async fn run<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
        self,
        system: LocalSystem<S, Q>,
    ) -> Result<(), LocalError> {
        if let Some(simulator) = &system.simulator {
            simulator.set_delivery(system.delivery(self.delivery, self.payload));
            println!(
                "Events: {:?} payload over {}",
                self.payload,
                match self.delivery {
                    DeliveryMode::Webhook => "the webhook",
                    DeliveryMode::Eventbridge => "EventBridge (in process)",
                    DeliveryMode::Both => "both the webhook and EventBridge",
                }
            );
        } else if self.delivery != DeliveryMode::Webhook || self.payload != PayloadMode::Snapshot {
            return Err(LocalError::Start(
                "--delivery and --payload choose how the simulator delivers; with real Stripe, configure the destination in Stripe".into(),
            ));
        }
        serve(system).await
    }
}

async fn serve<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: LocalSystem<S, Q>,
) -> Result<(), LocalError> {
    println!(
        "Billing API and webhook on {} (caller from the X-Billing-User and X-Billing-Claims headers: dev mode only)",
        system.api_url
    );
    println!(
        "Try: curl -s -H 'X-Billing-User: alice' -X POST {}/checkout/sessions -d '{{\"plan\":\"basic\"}}'",
        system.api_url
    );
    println!(
        "Usage: cargo run -p billing -- usage report --dev {} --account alice --meter api_calls --identifier req-1",
        system.api_url
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Err(error) = system.drain().await {
                    tracing::warn!(%error, "processing queued events failed; will retry");
                }
            }
        }
    }
}
