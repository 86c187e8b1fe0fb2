//! The load + chaos run. Customers live through random subscription lives on the Stripe
//! simulator. Every event it emitted is then signed and POSTed to the webhook on 127.0.0.1,
//! some twice, all shuffled. The webhook enqueues into the in-process queue, and the events and
//! payment-failed processors drain it the way the SQS triggers do: a failed message comes back
//! after a visibility timeout, and after `max_receives` receives it goes to the dead-letter
//! list. Meanwhile the store, the queue, the notifier and Stripe all fail a share of their
//! calls. After the drain every accepted event must be completed or dead-lettered. Then the
//! outage ends, as an operator's fix would end it, the dead letters are redriven (`billing
//! redrive`'s copy path), and the result is checked against the simulator: every accepted
//! event completed in the ledger, every subscription as Stripe has it, every entitlement and
//! dunning episode consistent with that.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use shared::config::{Catalog, EventBridgeSettings};
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::entitlement::EntitlementView;
use shared::eventbridge::{EventBridgeReceiver, Verdict};
use shared::notify::MemoryNotifier;
use shared::processing::EventHandler;
use shared::processing::batch::sqs_event;
use shared::queue::{EventQueue, MemoryQueue, OutboundMessage, QueueName, ReceivedMessage};
use shared::store::{Access, AccountId, BillingStore, DunningStage, LedgerState, MemoryStore};
use shared::stripe::signature::sign;
use shared::stripe::{RetryPolicy, SignatureVerifier, StripeClient};
use shared::sync::Syncer;
use shared::webhook::{Delivery, WebhookReceiver};
use stripe_simulator::{Faults, Simulator};

use crate::faults::{FaultPlan, FlakyNotifier, FlakyQueue, FlakyStore};
use crate::lifecycle::PLANS;

const SECRET: &str = "whsec_chaos";
const GRACE_DAYS: u32 = 14;
/// The ledger's lease runs to the next second; a failed message is visible again only after it
/// has expired, as with SQS's visibility timeout (≥ the function timeout) in production.
const LEASE_SECS: i64 = 1;
const VISIBILITY: Duration = Duration::from_millis(2100);
/// A Stripe call gives up after this; the simulator's slow answers come later than that.
const STRIPE_DEADLINE: Duration = Duration::from_millis(800);
const SLOW_ANSWER: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub customers: usize,
    /// Stop generating once the simulator has emitted this many events (the last step may
    /// emit a few more).
    pub events: usize,
    /// Share of events delivered a second time.
    pub duplicate_rate: f64,
    /// Share of calls to each dependency (store, queue, notifier, Stripe) that fail.
    pub fault_rate: f64,
    /// SQS's `maxReceiveCount`: receives before a failing message is dead-lettered.
    pub max_receives: u32,
    /// The run fails rather than go on past this.
    pub time_limit: Duration,
    /// How events arrive.
    pub arrival: Arrival,
}

/// How the chaos run delivers events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrival {
    /// Snapshot events, signed, to the webhook.
    #[default]
    Webhook,
    /// Each event as a snapshot or as its thin twin (drawn once per event), and each copy of
    /// it to the webhook or through the EventBridge receiver (drawn per copy): the four ways
    /// Stripe can deliver, mixed in one run.
    Mixed,
}

#[derive(Debug, Default, Serialize)]
pub struct FaultCounts {
    pub store: u64,
    pub queue: u64,
    pub notifier: u64,
    pub stripe: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    pub customers: usize,
    pub events: usize,
    /// POSTs to the webhook: every event, the duplicates, and the retries after a 5xx.
    pub deliveries: usize,
    /// Distinct events the webhook answered 200 for.
    pub accepted: usize,
    /// Duplicate deliveries the webhook acknowledged; the queue's deduplication and the ledger
    /// absorbed them.
    pub duplicates_absorbed: usize,
    /// Deliveries answered 5xx (the queue failed) and sent again, as Stripe does.
    pub webhook_retries: usize,
    pub faults: FaultCounts,
    /// Messages a processor failed, received again after the visibility timeout.
    pub processing_retries: usize,
    pub dead_lettered: usize,
    pub redriven: usize,
    /// Accepted events neither completed nor dead-lettered after the drain: lost.
    pub lost: usize,
    pub ledger_mismatches: usize,
    pub state_mismatches: usize,
    /// Processed messages whose delete failed: seen again, acknowledged by the ledger.
    pub redelivered_after_delete: usize,
    pub emails: usize,
    /// Emails identical to one sent before: only a store failure between a send and its record
    /// can cause one (README, Reliability).
    pub duplicate_emails: usize,
    /// `billing.entitlement_changed` messages published.
    pub announcements: usize,
    pub wall_secs: f64,
    pub events_per_sec: f64,
    /// What did not match, for the first few mismatches.
    pub examples: Vec<String>,
}

impl ChaosReport {
    pub fn mismatches(&self) -> usize {
        self.lost + self.ledger_mismatches + self.state_mismatches
    }

    fn mismatch(&mut self, ledger: bool, what: String) {
        if ledger {
            self.ledger_mismatches += 1;
        } else {
            self.state_mismatches += 1;
        }
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    pub fn summary(&self) -> String {
        let f = &self.faults;
        format!(
            "customers {}, events {}, deliveries {} ({} accepted, {} duplicates absorbed, {} retried after a 5xx)\n\
             faults injected: {} (store {}, queue {}, notifier {}, Stripe {}); processing retries {}\n\
             dead-lettered {}, redriven {}; redelivered after a failed delete {}; emails {} ({} duplicates); \
             entitlement changes announced {}\n\
             final mismatches: {} (lost {}, ledger {}, state {})\n\
             wall time {:.1} s, {:.0} events/s",
            self.customers,
            self.events,
            self.deliveries,
            self.accepted,
            self.duplicates_absorbed,
            self.webhook_retries,
            f.store + f.queue + f.notifier + f.stripe,
            f.store,
            f.queue,
            f.notifier,
            f.stripe,
            self.processing_retries,
            self.dead_lettered,
            self.redriven,
            self.redelivered_after_delete,
            self.emails,
            self.duplicate_emails,
            self.announcements,
            self.mismatches(),
            self.lost,
            self.ledger_mismatches,
            self.state_mismatches,
            self.wall_secs,
            self.events_per_sec,
        )
    }
}

type Store = Arc<FlakyStore<Arc<MemoryStore>>>;
type Queue = Arc<FlakyQueue<Arc<MemoryQueue>>>;

/// The system under test, on its fault-injecting adapters.
struct System {
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    flaky_queue: Queue,
    events: Syncer<Store, FlakyNotifier<Arc<MemoryNotifier>>>,
    dunning: DunningProcessor<Store, FlakyNotifier<Arc<MemoryNotifier>>>,
    notifier: Arc<MemoryNotifier>,
    plans: Catalog,
    webhook_url: String,
    eventbridge: EventBridgeReceiver<Queue>,
    fault_plans: [Arc<FaultPlan>; 3],
}

const PARTNER_SOURCE: &str = "aws.partner/stripe.com/ed_test_chaos";
const ACCOUNT: &str = "000000000000";

/// One customer's simulated life.
struct Customer {
    user: AccountId,
    customer_id: String,
    subscription_id: String,
    open_invoice: Option<String>,
    ended: bool,
}

struct Sim {
    simulator: Simulator,
    http: reqwest::Client,
}

impl Sim {
    async fn call(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(format!("{}{path}", self.simulator.base_url))
            .header("Authorization", "Bearer sk_test_chaos")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await;
        answer(path, response).await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.simulator.base_url))
            .header("Authorization", "Bearer sk_test_chaos")
            .send()
            .await;
        answer(path, response).await
    }
}

/// The simulator's JSON answer, or what went wrong with `path`.
async fn answer(path: &str, response: reqwest::Result<reqwest::Response>) -> Result<Value, String> {
    let response = response.map_err(|e| format!("{path}: {e}"))?;
    let status = response.status();
    let value: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {value}"));
    }
    Ok(value)
}

fn text(value: &Value, at: &str) -> Result<String, String> {
    value
        .pointer(at)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {at} in {value}"))
}

pub async fn run(config: &ChaosConfig) -> Result<ChaosReport, String> {
    let started = Instant::now();
    let sim = Sim {
        simulator: Simulator::start(0, stripe_simulator::Delivery::default())
            .await
            .map_err(|e| e.to_string())?,
        http: reqwest::Client::new(),
    };
    // Actions a second apart: the processors must order a subscription's events by their own
    // `created`, not settle same-second ties by reading Stripe's (final) state.
    sim.simulator.step_clock();
    let system = start_system(&sim, config.fault_rate).await?;
    let mut report = ChaosReport {
        customers: config.customers,
        ..ChaosReport::default()
    };

    let customers = simulate_lives(&sim, &system, config).await?;
    let events = match config.arrival {
        Arrival::Webhook => all_events(&sim).await?,
        Arrival::Mixed => some_thin(all_events(&sim).await?, &all_thin_events(&sim).await?)?,
    };
    report.events = events.len();
    sim.simulator.set_faults(Faults {
        rate: config.fault_rate,
        slow: SLOW_ANSWER,
    });

    deliver(&system, &events, config, &mut report).await?;
    let deadline = started + config.time_limit;
    let dead = drain(&system, config, deadline, &mut report).await?;
    report.dead_lettered = dead.len();
    report.lost = lost(&system.store, &events, &dead).await?;

    sim.simulator.set_faults(Faults::default());
    for plan in &system.fault_plans {
        plan.set_rate(0.0);
    }
    for (queue, message) in &dead {
        redrive(&system.queue, *queue, message).await?;
        report.redriven += 1;
    }
    let still_dead = drain(&system, config, deadline, &mut report).await?;
    if !still_dead.is_empty() {
        return Err(format!(
            "{} messages failed again with no fault injected",
            still_dead.len()
        ));
    }
    let [store_faults, queue_faults, notifier_faults] = &system.fault_plans;
    report.faults = FaultCounts {
        store: store_faults.injected(),
        queue: queue_faults.injected(),
        notifier: notifier_faults.injected(),
        stripe: sim.simulator.faults_injected(),
    };

    verify(&sim, &system, &customers, &events, &mut report).await?;
    let emails = system.notifier.emails();
    let distinct: HashSet<(&str, &str, &str)> = emails
        .iter()
        .map(|e| (e.to.as_str(), e.subject.as_str(), e.body.as_str()))
        .collect();
    report.emails = emails.len();
    report.duplicate_emails = emails.len() - distinct.len();
    report.wall_secs = started.elapsed().as_secs_f64();
    report.events_per_sec = report.events as f64 / report.wall_secs.max(f64::EPSILON);
    Ok(report)
}

async fn start_system(sim: &Sim, fault_rate: f64) -> Result<System, String> {
    let fault_plans = [(); 3].map(|_| Arc::new(FaultPlan::new(fault_rate)));
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let notifier = Arc::new(MemoryNotifier::new());
    let flaky_store: Store = Arc::new(FlakyStore {
        inner: store.clone(),
        plan: fault_plans[0].clone(),
    });
    let flaky_queue: Queue = Arc::new(FlakyQueue {
        inner: queue.clone(),
        plan: fault_plans[1].clone(),
    });
    let base = url::Url::parse(&sim.simulator.base_url).map_err(|e| e.to_string())?;
    let retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        deadline: STRIPE_DEADLINE,
    };
    let stripe = StripeClient::lazy(base, SecretString::from("sk_test_chaos"), retry);
    let plans = Catalog::parse(PLANS)?;
    let syncer = || Syncer {
        store: flaky_store.clone(),
        stripe: stripe.clone(),
        plans: plans.clone(),
        grace_days: GRACE_DAYS,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let tolerance = NonZeroU64::new(300).ok_or("a zero tolerance")?;
    let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], tolerance);
    let receiver = Arc::new(WebhookReceiver::new(verifier, flaky_queue.clone()));
    let app = Router::new()
        .route("/webhooks/stripe", post(webhook))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;
    let webhook_url = format!(
        "http://{}/webhooks/stripe",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let eventbridge = EventBridgeReceiver::new(
        EventBridgeSettings {
            account: ACCOUNT.into(),
            source: Some(PARTNER_SOURCE.into()),
        },
        flaky_queue.clone(),
    );
    // Both processors tell the app, as deployed: the events processor through its topic, the
    // payment-failed one through its notifier.
    let events = Syncer {
        store: flaky_store.clone(),
        stripe: stripe.clone(),
        plans: plans.clone(),
        grace_days: GRACE_DAYS,
        policy: Default::default(),
        app_events: FlakyNotifier {
            inner: notifier.clone(),
            plan: fault_plans[2].clone(),
        },
    };
    Ok(System {
        events,
        dunning: DunningProcessor {
            syncer: syncer(),
            notifier: FlakyNotifier {
                inner: notifier.clone(),
                plan: fault_plans[2].clone(),
            },
            policy: DunningPolicy::default(),
        },
        store,
        queue,
        flaky_queue,
        notifier,
        plans,
        webhook_url,
        eventbridge,
        fault_plans,
    })
}

async fn webhook(State(receiver): State<Arc<WebhookReceiver<Queue>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delivery = Delivery {
        method: "POST",
        signature: headers.get("stripe-signature").and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let reply = receiver.receive(delivery, shared::unix_now()).await;
    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Sign-up and checkout for every customer, then random steps of their lives (plan changes,
/// failed and recovered payments, 3-D Secure, renewals, cancellations) until about
/// `config.events` events exist. The store link is what the checkout API writes.
async fn simulate_lives(sim: &Sim, system: &System, config: &ChaosConfig) -> Result<Vec<Customer>, String> {
    let run = fastrand::u32(..);
    let mut customers = Vec::with_capacity(config.customers);
    for index in 0..config.customers {
        let user = format!("chaos-{run:08x}-{index}");
        let customer = sim.call("/v1/customers", &[("metadata[account_id]", &user)]).await?;
        let customer_id = text(&customer, "/id")?;
        let user = AccountId::parse(&user).map_err(|e| e.to_string())?;
        system
            .store
            .link_customer(&user, &customer_id)
            .await
            .map_err(|e| e.to_string())?;
        let price = if fastrand::bool() { "price_basic" } else { "price_pro" };
        let session = sim
            .call(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", &customer_id),
                    ("client_reference_id", user.as_str()),
                    ("line_items[0][price]", price),
                    ("line_items[0][quantity]", "1"),
                    ("subscription_data[metadata][user_id]", user.as_str()),
                    ("success_url", "https://app.example.com/ok"),
                    ("cancel_url", "https://app.example.com/no"),
                ],
            )
            .await?;
        let session_id = text(&session, "/id")?;
        // As the checkout API does: only sessions recorded as ours link.
        system
            .store
            .put_checkout_session(&session_id, &user, i64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let done = sim.call(&format!("/sim/checkout/{session_id}/complete"), &[]).await?;
        customers.push(Customer {
            user,
            customer_id,
            subscription_id: text(&done, "/result/subscription")?,
            open_invoice: None,
            ended: false,
        });
    }
    while sim.simulator.events_emitted() < config.events {
        let live: Vec<usize> = (0..customers.len()).filter(|&i| !customers[i].ended).collect();
        let Some(&pick) = live.get(fastrand::usize(..live.len().max(1))) else {
            break;
        };
        let customer = &mut customers[pick];
        let sub = customer.subscription_id.clone();
        match fastrand::u8(0..20) {
            0..=4 => {
                let decline = ["card_declined", "insufficient_funds", "expired_card"][fastrand::usize(..3)];
                let secure = if fastrand::u8(0..5) == 0 {
                    "&action_required=true"
                } else {
                    ""
                };
                let failed = sim
                    .call(
                        &format!("/sim/subscriptions/{sub}/fail_payment?decline_code={decline}{secure}"),
                        &[],
                    )
                    .await?;
                customer.open_invoice = Some(text(&failed, "/result/invoice")?);
            }
            5..=7 => {
                if let Some(invoice) = customer.open_invoice.take() {
                    sim.call(&format!("/sim/invoices/{invoice}/pay"), &[]).await?;
                }
            }
            8..=12 => {
                let ended = sim.call(&format!("/sim/subscriptions/{sub}/end_period"), &[]).await?;
                if ended["result"]["status"] == "canceled" {
                    customer.ended = true;
                } else {
                    customer.open_invoice = None;
                }
            }
            13..=16 => {
                let price = if fastrand::bool() { "price_basic" } else { "price_pro" };
                // A plan switch names the item it changes, as Stripe requires (without an id,
                // Stripe would add a second item).
                let current = sim.get(&format!("/sim/objects/subscriptions/{sub}")).await?;
                let item = text(&current, "/result/items/data/0/id")?;
                sim.call(
                    &format!("/v1/subscriptions/{sub}"),
                    &[("items[0][id]", item.as_str()), ("items[0][price]", price)],
                )
                .await?;
            }
            17..=18 => {
                let flag = if fastrand::bool() { "true" } else { "false" };
                sim.call(&format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", flag)])
                    .await?;
            }
            _ => {
                sim.call(&format!("/sim/subscriptions/{sub}/cancel"), &[]).await?;
                customer.ended = true;
            }
        }
    }
    Ok(customers)
}

/// Every event the simulator emitted, oldest first.
async fn all_events(sim: &Sim) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/events?limit=100&starting_after={id}"),
            None => "/v1/events?limit=100".to_owned(),
        };
        let page = sim.get(&path).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
        events.extend(data);
        if page["has_more"] != true || after.is_none() {
            break;
        }
    }
    events.reverse();
    Ok(events)
}

/// Every thin event the simulator emitted (`GET /v2/core/events`), oldest first.
async fn all_thin_events(sim: &Sim) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    let mut path = "/v2/core/events?limit=100".to_owned();
    loop {
        let page = sim.get(&path).await?;
        events.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_page_url"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    events.reverse();
    Ok(events)
}

/// Half the events replaced by their thin twin (found by its `snapshot_event`).
fn some_thin(events: Vec<Value>, thin: &[Value]) -> Result<Vec<Value>, String> {
    let twins: HashMap<&str, &Value> = thin
        .iter()
        .filter_map(|t| Some((t["snapshot_event"].as_str()?, t)))
        .collect();
    events
        .into_iter()
        .map(|event| match fastrand::bool() {
            true => Ok(event),
            false => {
                let id = text(&event, "/id")?;
                twins
                    .get(id.as_str())
                    .map(|t| (*t).clone())
                    .ok_or(format!("no thin twin of {id}"))
            }
        })
        .collect()
}

/// One copy through the EventBridge receiver: `true` when taken, `false` when it must be sent
/// again (the invocation failed, and Lambda retries it).
async fn through_eventbridge(system: &System, event: &Value) -> Result<bool, String> {
    let envelope = json!({"version": "0", "id": crate::unique("eb-"), "detail-type": event["type"],
        "source": PARTNER_SOURCE, "account": ACCOUNT, "time": "2026-12-02T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": event});
    match system.eventbridge.receive(&envelope.to_string()).await {
        Ok(Verdict::Enqueued | Verdict::Ignored) => Ok(true),
        Ok(Verdict::Refused(reason)) => Err(format!("EventBridge refused a Stripe event ({reason}): {event}")),
        Err(_) => Ok(false),
    }
}

/// Every event, some twice, shuffled, signed at sending time; a 5xx is sent again later, as
/// Stripe retries.
async fn deliver(
    system: &System,
    events: &[Value],
    config: &ChaosConfig,
    report: &mut ChaosReport,
) -> Result<(), String> {
    let mut pending: Vec<&Value> = events.iter().collect();
    pending.extend(events.iter().filter(|_| fastrand::f64() < config.duplicate_rate));
    fastrand::shuffle(&mut pending);
    let http = reqwest::Client::new();
    let mut accepted: HashSet<String> = HashSet::new();
    for _round in 0..50 {
        if pending.is_empty() {
            report.accepted = accepted.len();
            return Ok(());
        }
        let mut retry = Vec::new();
        for chunk in pending.chunks(16) {
            let mut sends = tokio::task::JoinSet::new();
            for (index, event) in chunk.iter().enumerate() {
                if config.arrival == Arrival::Mixed && fastrand::bool() {
                    report.deliveries += 1;
                    if through_eventbridge(system, event).await? {
                        if !accepted.insert(text(event, "/id")?) {
                            report.duplicates_absorbed += 1;
                        }
                    } else {
                        report.webhook_retries += 1;
                        retry.push(*event);
                    }
                    continue;
                }
                let body = event.to_string();
                let request = http
                    .post(&system.webhook_url)
                    .header("Stripe-Signature", sign(SECRET, shared::unix_now(), body.as_bytes()))
                    .header("Content-Type", "application/json")
                    .body(body);
                sends.spawn(async move { (index, request.send().await.map(|r| r.status())) });
            }
            while let Some(joined) = sends.join_next().await {
                let (index, status) = joined.map_err(|e| e.to_string())?;
                let status = status.map_err(|e| format!("webhook unreachable: {e}"))?;
                let event = chunk[index];
                report.deliveries += 1;
                if status.is_success() {
                    let id = text(event, "/id")?;
                    if !accepted.insert(id) {
                        report.duplicates_absorbed += 1;
                    }
                } else if status.is_server_error() {
                    report.webhook_retries += 1;
                    retry.push(event);
                } else {
                    return Err(format!("the webhook refused a signed event with {status}: {event}"));
                }
            }
        }
        pending = retry;
    }
    report.accepted = accepted.len();
    Err("deliveries still failing after 50 rounds".into())
}

type DeadLetter = (QueueName, ReceivedMessage);

/// Feeds both queues to their processors until both are empty; returns the dead letters.
async fn drain(
    system: &System,
    config: &ChaosConfig,
    deadline: Instant,
    report: &mut ChaosReport,
) -> Result<Vec<DeadLetter>, String> {
    let mut receives: HashMap<String, u32> = HashMap::new();
    let mut invisible: Vec<(Instant, QueueName, String)> = Vec::new();
    let mut dead = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(format!("the run passed its {:?} limit", config.time_limit));
        }
        let now = Instant::now();
        invisible.retain(|(visible_at, queue, receipt)| {
            let due = *visible_at <= now;
            if due {
                system.queue.release(*queue, receipt);
            }
            !due
        });
        let mut received_any = false;
        for name in QueueName::ALL {
            let Ok(messages) = system.flaky_queue.receive(name, 10).await else {
                continue;
            };
            if messages.is_empty() {
                continue;
            }
            received_any = true;
            let failed = process(system, name, &messages).await;
            for message in messages {
                let count = receives.entry(message.message_id.clone()).or_default();
                *count += 1;
                if failed.contains(&message.message_id) {
                    report.processing_retries += 1;
                    if *count >= config.max_receives {
                        // SQS's redrive policy moves it to the dead-letter queue.
                        let _ = system.queue.delete(name, &message.receipt_handle).await;
                        dead.push((name, message));
                    } else {
                        invisible.push((now + VISIBILITY, name, message.receipt_handle));
                    }
                } else if system.flaky_queue.delete(name, &message.receipt_handle).await.is_err() {
                    // Not deleted: SQS shows it again after the visibility timeout, and the
                    // ledger must recognise it as done.
                    report.redelivered_after_delete += 1;
                    invisible.push((now + VISIBILITY, name, message.receipt_handle));
                }
            }
        }
        let empty = QueueName::ALL.iter().all(|q| system.queue.depth(*q) == 0);
        if empty && invisible.is_empty() {
            return Ok(dead);
        }
        if !received_any {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One batch through its processor, as the SQS trigger hands it over; the ids that failed.
async fn process(system: &System, name: QueueName, messages: &[ReceivedMessage]) -> HashSet<String> {
    let batch = sqs_event(messages);
    let (now, lease_until) = (shared::unix_now(), shared::unix_now() + LEASE_SECS);
    let response = match name {
        QueueName::Events => system.events.handle_batch(batch, now, lease_until).await,
        QueueName::PaymentFailed => system.dunning.handle_batch(batch, now, lease_until).await,
    };
    match response {
        Ok(response) => response
            .batch_item_failures
            .into_iter()
            .map(|failure| failure.item_identifier)
            .collect(),
        Err(_) => messages.iter().map(|m| m.message_id.clone()).collect(),
    }
}

/// Accepted events that are neither completed in the ledger nor waiting in the dead-letter list.
async fn lost(store: &MemoryStore, events: &[Value], dead: &[DeadLetter]) -> Result<usize, String> {
    let waiting: HashSet<&str> = dead.iter().filter_map(|(_, m)| m.event_id.as_deref()).collect();
    let mut lost = 0;
    for event in events {
        let id = text(event, "/id")?;
        let done = store.event_state(&id).await.map_err(|e| e.to_string())? == Some(LedgerState::Completed);
        if !done && !waiting.contains(id.as_str()) {
            lost += 1;
        }
    }
    Ok(lost)
}

/// `billing redrive`'s copy path: back to the source queue under a fresh deduplication id.
async fn redrive(queue: &MemoryQueue, name: QueueName, message: &ReceivedMessage) -> Result<(), String> {
    let dedup = format!("redrive-{}", message.message_id);
    let outbound = OutboundMessage {
        body: &message.body,
        group_id: message.group_id.as_deref().unwrap_or_default(),
        dedup_id: &dedup,
        event_id: message.event_id.as_deref().unwrap_or_default(),
        event_type: message.event_type.as_deref().unwrap_or_default(),
        livemode: false,
    };
    queue.send(name, &outbound).await.map_err(|e| e.to_string())
}

/// The stored read model against the simulator, on the store itself (no faults).
async fn verify(
    sim: &Sim,
    system: &System,
    customers: &[Customer],
    events: &[Value],
    report: &mut ChaosReport,
) -> Result<(), String> {
    let store = &system.store;
    let announced: Vec<Value> = system
        .notifier
        .published()
        .into_iter()
        .filter(|m| m["type"] == "billing.entitlement_changed")
        .collect();
    report.announcements = announced.len();
    for event in events {
        let id = text(event, "/id")?;
        let state = store.event_state(&id).await.map_err(|e| e.to_string())?;
        if state != Some(LedgerState::Completed) {
            report.mismatch(true, format!("event {id}: ledger {state:?}"));
        }
    }
    for customer in customers {
        // The simulator's own account of the subscription is the oracle: what it says the
        // customer has, read field by field, with the access rule written from Stripe's docs
        // (active and trialing entitle, past_due is grace, the rest nothing), never the
        // production mapping or entitlement code.
        let at_stripe = sim
            .get(&format!("/sim/objects/subscriptions/{}", customer.subscription_id))
            .await?["result"]
            .clone();
        let stored = store
            .get_subscription(&customer.customer_id, &customer.subscription_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(stored) = stored else {
            report.mismatch(false, format!("{}: no subscription stored", customer.subscription_id));
            continue;
        };
        let status = at_stripe["status"].as_str().unwrap_or_default();
        let prices: Vec<&str> = at_stripe["items"]["data"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["price"]["id"].as_str()).collect())
            .unwrap_or_default();
        let stored_prices: Vec<&str> = stored.items.iter().map(|i| i.price_id.as_str()).collect();
        let stored_status = serde_json::to_value(stored.status).unwrap_or_default();
        if stored_status != status
            || stored_prices != prices
            || Some(stored.cancel_at_period_end) != at_stripe["cancel_at_period_end"].as_bool()
        {
            report.mismatch(false, format!("subscription: stored {stored:?}, Stripe {at_stripe}"));
        }
        let dunning = store
            .dunning_of_customer(&customer.customer_id)
            .await
            .map_err(|e| e.to_string())?;
        for record in &dunning {
            let invoice = sim.get(&format!("/v1/invoices/{}", record.invoice_id)).await?;
            let paid = invoice["status"] == "paid";
            if paid != (record.stage == DunningStage::Closed) {
                report.mismatch(
                    false,
                    format!(
                        "dunning {}: stage {:?}, invoice {}",
                        record.invoice_id, record.stage, invoice["status"]
                    ),
                );
            }
        }
        let want_access = match status {
            "active" | "trialing" => Access::Active,
            "past_due" => Access::Grace,
            _ => Access::None,
        };
        let mut want_features: Vec<String> = if want_access == Access::None {
            Vec::new()
        } else {
            prices
                .iter()
                .flat_map(|price| {
                    system
                        .plans
                        .by_price(price)
                        .map(|(_, plan)| plan.features.clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        want_features.sort_unstable();
        want_features.dedup();
        let have = store.get_entitlement(&customer.user).await.map_err(|e| e.to_string())?;
        let matches = have
            .as_ref()
            .is_some_and(|have| have.access == want_access && have.features == want_features);
        // The app was told the final state: nothing left unannounced, and the newest message
        // for the account shows what is stored (its view taken at the message's own time).
        if let Some(have) = &have {
            let newest = announced
                .iter()
                .filter(|m| m["account_id"] == customer.user.as_str())
                .max_by_key(|m| m["version"].as_u64());
            let told = newest.is_some_and(|m| {
                let at = m["at"].as_i64().unwrap_or_default();
                serde_json::to_value(EntitlementView::at(have, at)).ok().as_ref() == Some(&m["entitlement"])
            });
            if have.unannounced() || !told {
                report.mismatch(
                    false,
                    format!(
                        "entitlement of {}: not announced as stored ({newest:?})",
                        customer.user.as_str()
                    ),
                );
            }
        }
        if !matches {
            report.mismatch(
                false,
                format!(
                    "entitlement of {}: stored {have:?}, expected {want_access:?} with {want_features:?}",
                    customer.user.as_str()
                ),
            );
        }
    }
    Ok(())
}
