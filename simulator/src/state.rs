//! The simulator's objects and what each call or control action does to them.

mod checkout;
mod endpoints;
mod meters;
mod payments;
mod prices;
mod purchases;
mod schedules;
mod subscriptions;
pub(crate) mod thin;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::StatusCode;
use serde_json::{Value, json};

const PERIOD_SECS: i64 = 30 * 86_400;
const DEFAULT_UNIT_AMOUNT: i64 = 2000;

fn fixture(name: &str) -> Value {
    let text = match name {
        "customer" => include_str!("../../tests/fixtures/stripe/customer.json"),
        "checkout.session" => include_str!("../../tests/fixtures/stripe/checkout.session.json"),
        "subscription" => include_str!("../../tests/fixtures/stripe/subscription.json"),
        "invoice" => include_str!("../../tests/fixtures/stripe/invoice.json"),
        "price" => include_str!("../../tests/fixtures/stripe/price.json"),
        "billing_portal.session" => include_str!("../../tests/fixtures/stripe/billing_portal.session.json"),
        "refund" => include_str!("../../tests/fixtures/stripe/refund.json"),
        "charge" => include_str!("../../tests/fixtures/stripe/charge.json"),
        "payment_intent" => include_str!("../../tests/fixtures/stripe/payment_intent.json"),
        "invoice_payment" => include_str!("../../tests/fixtures/stripe/invoice_payment.json"),
        "dispute" => include_str!("../../tests/fixtures/stripe/dispute.json"),
        "promotion_code" => include_str!("../../tests/fixtures/stripe/promotion_code.json"),
        "subscription_schedule" => include_str!("../../tests/fixtures/stripe/subscription_schedule.json"),
        _ => include_str!("../../tests/fixtures/stripe/event.json"),
    };
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A refused API call, in the parts of Stripe's error shape the simulator fills in.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The error's `type`: `invalid_request_error` unless set.
    pub kind: &'static str,
    pub message: String,
    pub code: Option<&'static str>,
    pub param: Option<String>,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            code: None,
            param: None,
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }
}

type ApiResult = Result<(Value, Vec<Value>), ApiError>;
type ControlResult = Result<(Value, Vec<Value>), String>;

pub struct Sim {
    base_url: String,
    /// Ids are unique across simulator runs, as Stripe's are: a run against a DynamoDB table
    /// or SQS queue that outlived an earlier run must not meet that run's event ids in the
    /// ledger or in FIFO deduplication.
    run: String,
    seq: u64,
    clock: i64,
    /// Each action one second after the previous one (see [`Sim::step_clock`]).
    stepping: bool,
    /// A deleted customer stays here in its deleted form, which GET answers as Stripe does.
    customers: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    payment_intents: BTreeMap<String, Value>,
    charges: BTreeMap<String, Value>,
    refunds: BTreeMap<String, Value>,
    webhook_endpoints: BTreeMap<String, Value>,
    event_destinations: BTreeMap<String, Value>,
    promotion_codes: BTreeMap<String, Value>,
    disputes: BTreeMap<String, Value>,
    schedules: BTreeMap<String, Value>,
    /// Per subscription: proration lines of changes made, billed on its next invoice.
    pending_prorations: BTreeMap<String, Vec<Value>>,
    coupons: BTreeSet<String>,
    /// Snapshot events, and the thin-only ones (see [`thin`]), in the order they happened.
    events: Vec<Value>,
    idempotent: HashMap<String, Value>,
    /// Prices created through `/v1/prices` or `/sim/prices`; any other price id is the
    /// default price.
    prices: BTreeMap<String, Value>,
    /// Billing meters, usage and the v2 meter event sessions.
    metering: meters::Metering,
}

/// Stripe's answer for an id it does not know (`resource_missing`).
fn not_found(what: &str, id: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: format!("No such {what}: '{id}'"),
        code: Some("resource_missing"),
        param: None,
    }
}

/// An object by id, or Stripe's 404.
fn found(objects: &BTreeMap<String, Value>, what: &str, id: &str) -> ApiResult {
    objects
        .get(id)
        .map(|object| (public(object), Vec::new()))
        .ok_or_else(|| not_found(what, id))
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// A form integer (the spec has checked its type), or a 400 naming the parameter.
fn integer(value: &Value, param: &str) -> Result<Option<i64>, ApiError> {
    match value.as_str() {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("Invalid integer: {text}")).with_param(param)),
    }
}

/// Where an id stands in creation order: the sequence number that ends every simulator id
/// (`{prefix}_sim{run}{seq}`, the run being 8 characters).
fn seq_of(id: &str) -> u64 {
    id.rsplit_once("_sim")
        .and_then(|(_, rest)| rest.get(8..))
        .and_then(|seq| seq.parse().ok())
        .unwrap_or(0)
}

fn id_of(object: &Value) -> &str {
    object["id"].as_str().unwrap_or_default()
}

/// `limit` as Stripe reads it on every list: 10 unless given, 1 to 100.
fn limit(query: &Value) -> Result<usize, ApiError> {
    match integer(&query["limit"], "limit")? {
        None => Ok(10),
        Some(n @ 1..=100) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(format!("Invalid limit {n}: must be between 1 and 100")).with_param("limit")),
    }
}

/// One page of a Stripe list: newest first, `limit` long, after the `starting_after` object
/// (a cursor from an earlier page, which must exist) and `has_more` when a further page has
/// objects — https://docs.stripe.com/api/pagination.
fn page(
    mut matching: Vec<&Value>,
    query: &Value,
    url: &str,
    known: &BTreeMap<String, Value>,
    what: &str,
) -> Result<Value, ApiError> {
    let limit = limit(query)?;
    matching.sort_by_key(|object| Reverse(seq_of(id_of(object))));
    if let Some(after) = query["starting_after"].as_str() {
        if !known.contains_key(after) {
            return Err(not_found(what, after).with_param("starting_after"));
        }
        let cursor = seq_of(after);
        matching.retain(|object| seq_of(id_of(object)) < cursor);
    }
    let has_more = matching.len() > limit;
    let data: Vec<Value> = matching.into_iter().take(limit).map(public).collect();
    Ok(json!({"object": "list", "url": url, "has_more": has_more, "data": data}))
}

/// Whether a request asks for `field` expanded (`expand[]=field`).
fn expands(query: &Value, field: &str) -> bool {
    query["expand"]
        .as_array()
        .is_some_and(|fields| fields.iter().any(|f| f == field))
}

impl Sim {
    pub fn new(base_url: String) -> Self {
        Self {
            base_url,
            run: std::iter::repeat_with(fastrand::alphanumeric).take(8).collect(),
            seq: 0,
            clock: shared::unix_now(),
            stepping: false,
            customers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            invoices: BTreeMap::new(),
            payment_intents: BTreeMap::new(),
            charges: BTreeMap::new(),
            refunds: BTreeMap::new(),
            webhook_endpoints: BTreeMap::new(),
            event_destinations: BTreeMap::new(),
            promotion_codes: BTreeMap::new(),
            disputes: BTreeMap::new(),
            schedules: BTreeMap::new(),
            pending_prorations: BTreeMap::new(),
            coupons: BTreeSet::new(),
            events: Vec::new(),
            idempotent: HashMap::new(),
            prices: BTreeMap::new(),
            metering: meters::Metering::default(),
        }
    }

    pub fn events_emitted(&self) -> usize {
        self.events.len()
    }

    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_sim{}{:06}", self.run, self.seq)
    }

    /// Events carry the real second they happened in, so several share one `created`, as
    /// with Stripe; the clock never goes backwards.
    fn tick(&mut self) -> i64 {
        self.clock = self.clock.max(shared::unix_now());
        if self.stepping {
            self.clock += 1;
        }
        self.clock
    }

    /// The current second without making an action of it (for `created` of API objects).
    fn now(&self) -> i64 {
        self.clock.max(shared::unix_now())
    }

    /// From now on each action happens one second after the previous one, as when a customer's
    /// actions are spread over days: only the events of one action share a `created`. A run
    /// that makes thousands of actions in seconds then still puts them in a clear order.
    pub fn step_clock(&mut self) {
        self.stepping = true;
    }

    fn event(&mut self, event_type: &str, object: &Value, created: i64) -> Value {
        let mut event = fixture("event");
        event["id"] = json!(self.id("evt"));
        event["type"] = json!(event_type);
        event["created"] = json!(created);
        event["api_version"] = json!(shared::stripe::API_VERSION);
        event["data"] = json!({ "object": public(object) });
        self.events.push(event.clone());
        event
    }

    pub fn api(&mut self, method: &str, path: &str, params: &Value, query: &Value, key: Option<&str>) -> ApiResult {
        let replay_key = key.filter(|_| method == "POST").map(|k| format!("{path}:{k}"));
        if let Some(stored) = replay_key.as_ref().and_then(|k| self.idempotent.get(k)) {
            return Ok((stored.clone(), Vec::new()));
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let result = self.route(method, &segments, params, query);
        let result = result.unwrap_or_else(|| {
            Err(ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                message: format!("Unrecognized request URL ({method}: {path})"),
                code: None,
                param: None,
            })
        });
        if let (Ok((object, _)), Some(k)) = (&result, replay_key) {
            self.idempotent.insert(k, object.clone());
        }
        result
    }

    /// The call a method and path name, if the simulator answers it.
    fn route(&mut self, method: &str, segments: &[&str], params: &Value, query: &Value) -> Option<ApiResult> {
        Some(match (method, segments) {
            ("POST", ["v1", "customers"]) => Ok((self.create_customer(params), Vec::new())),
            ("GET", ["v1", "customers", id]) => found(&self.customers, "customer", id),
            ("DELETE", ["v1", "customers", id]) => self.delete_customer(id),
            ("POST", ["v1", "checkout", "sessions"]) => self.create_session(params),
            ("GET", ["v1", "checkout", "sessions"]) => self.list_sessions(query),
            ("GET", ["v1", "checkout", "sessions", id]) => found(&self.sessions, "checkout.session", id),
            ("POST", ["v1", "checkout", "sessions", id, "expire"]) => self.expire_session(id),
            ("POST", ["v1", "billing_portal", "sessions"]) => Ok((self.portal_session(params), Vec::new())),
            ("GET", ["v1", "subscriptions"]) => self.list_subscriptions(query),
            ("GET", ["v1", "subscriptions", id]) => found(&self.subscriptions, "subscription", id),
            ("POST", ["v1", "subscriptions", id]) => self.update_subscription(id, params),
            ("DELETE", ["v1", "subscriptions", id]) => self.end_subscription(id),
            ("GET", ["v1", "invoices"]) => self.list_invoices(query),
            ("POST", ["v1", "invoices", "create_preview"]) => self.preview_invoice(params),
            ("GET", ["v1", "invoices", id]) => self.show_invoice(id, query),
            ("POST", ["v1", "invoices", id, "void"]) => self.close_invoice(id, "void"),
            ("POST", ["v1", "invoices", id, "mark_uncollectible"]) => self.close_invoice(id, "uncollectible"),
            ("GET", ["v1", "payment_intents", id]) => found(&self.payment_intents, "payment_intent", id),
            ("GET", ["v1", "charges", id]) => found(&self.charges, "charge", id),
            ("POST", ["v1", "refunds"]) => self.create_refund(params),
            ("GET", ["v1", "refunds"]) => self.list_refunds(query),
            ("GET", ["v1", "refunds", id]) => found(&self.refunds, "refund", id),
            // Every price id exists here, as in a test-mode account holding the whole catalog.
            ("POST", ["v1", "subscription_schedules"]) => self.create_schedule(params),
            ("GET", ["v1", "subscription_schedules", id]) => self.schedule(id),
            ("POST", ["v1", "subscription_schedules", id]) => self.update_schedule(id, params),
            ("POST", ["v1", "subscription_schedules", id, "release"]) => self.release_schedule(id),
            ("GET", ["v1", "disputes", id]) => found(&self.disputes, "dispute", id),
            ("GET", ["v1", "promotion_codes"]) => self.list_promotion_codes(query),
            ("GET", ["v1", "promotion_codes", id]) => self.promotion_code(id),
            ("POST", ["v1", "prices"]) => self.create_price(params),
            ("GET", ["v1", "prices", id]) => Ok((self.show_price(id, query), Vec::new())),
            ("POST", ["v1", "billing", "meters"]) => self.create_meter(params),
            ("GET", ["v1", "billing", "meters"]) => self.list_meters(query),
            ("GET", ["v1", "billing", "meters", id]) => found(&self.metering.meters, "billing meter", id),
            ("GET", ["v1", "billing", "meters", id, "event_summaries"]) => self.event_summaries(id, query),
            ("POST", ["v1", "billing", "meter_events"]) => self.create_meter_event(params),
            ("POST", ["v2", "billing", "meter_event_session"]) => self.create_meter_event_session(params),
            ("GET", ["v1", "events", id]) => self
                .events
                .iter()
                .filter(|e| !thin::thin_only(e))
                .find(|e| e["id"] == *id)
                .cloned()
                .map(|e| (e, Vec::new()))
                .ok_or_else(|| not_found("event", id)),
            ("GET", ["v1", "events"]) => Ok((self.list_events(query), Vec::new())),
            ("GET", ["v2", "core", "events"]) => self.list_thin_events(query),
            ("GET", ["v2", "core", "events", id]) => self.thin_event(id),
            ("POST", ["v1", "webhook_endpoints"]) => self.create_webhook_endpoint(params),
            ("GET", ["v1", "webhook_endpoints"]) => self.list_webhook_endpoints(query),
            ("GET", ["v1", "webhook_endpoints", id]) => self.webhook_endpoint(id),
            ("POST", ["v1", "webhook_endpoints", id]) => self.update_webhook_endpoint(id, params),
            ("DELETE", ["v1", "webhook_endpoints", id]) => self.delete_webhook_endpoint(id),
            ("POST", ["v2", "core", "event_destinations"]) => self.create_event_destination(params),
            ("GET", ["v2", "core", "event_destinations"]) => self.list_event_destinations(),
            ("GET", ["v2", "core", "event_destinations", id]) => self.event_destination(id),
            ("POST", ["v2", "core", "event_destinations", id]) => self.update_event_destination(id, params),
            ("DELETE", ["v2", "core", "event_destinations", id]) => self.delete_event_destination(id),
            _ => return None,
        })
    }

    fn create_customer(&mut self, params: &Value) -> Value {
        let mut customer = fixture("customer");
        let id = self.id("cus");
        customer["id"] = json!(id);
        customer["email"] = json!(format!("{id}@customers.example"));
        customer["name"] = Value::Null;
        customer["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        customer["created"] = json!(self.tick());
        self.customers.insert(id, customer.clone());
        customer
    }

    /// A customer that exists and is not deleted.
    fn live_customer(&self, id: &str) -> bool {
        self.customers.get(id).is_some_and(|c| c["deleted"] != true)
    }

    /// Deleting a customer "immediately cancels any active subscriptions on the customer"
    /// (https://docs.stripe.com/api/customers/delete); Stripe then answers GET with the
    /// deleted form, and a second DELETE with "No such customer".
    fn delete_customer(&mut self, id: &str) -> ApiResult {
        if !self.live_customer(id) {
            return Err(not_found("customer", id));
        }
        let now = self.tick();
        let deleted = json!({"id": id, "object": "customer", "deleted": true});
        let live: Vec<String> = self
            .subscriptions
            .values()
            .filter(|s| s["customer"] == id && s["status"] != "canceled")
            .map(|s| id_of(s).to_owned())
            .collect();
        let mut events = Vec::new();
        for sub in live {
            events.extend(self.cancel(&sub, now)?.1);
        }
        self.customers.insert(id.to_owned(), deleted.clone());
        events.push(self.event("customer.deleted", &deleted, now));
        Ok((deleted, events))
    }

    fn portal_session(&mut self, params: &Value) -> Value {
        let mut session = fixture("billing_portal.session");
        let customer = text(&params["customer"]).unwrap_or_default();
        session["id"] = json!(self.id("bps"));
        session["customer"] = json!(customer);
        session["return_url"] = params["return_url"].clone();
        session["url"] = json!(format!("{}/sim/portal/{customer}", self.base_url));
        session
    }

    /// A price the simulator was given (`/v1/prices`, `/sim/prices`), or else the default
    /// price under that id, as in a test-mode account holding the whole catalog.
    fn price(&self, id: &str) -> Value {
        if let Some(price) = self.prices.get(id) {
            return public(price);
        }
        let mut price = fixture("price");
        price["id"] = json!(id);
        price["unit_amount"] = json!(DEFAULT_UNIT_AMOUNT);
        price["unit_amount_decimal"] = json!(DEFAULT_UNIT_AMOUNT.to_string());
        price
    }

    fn list_events(&self, query: &Value) -> Value {
        let types: Vec<&str> = query["types"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let since = query["created"]["gte"]
            .as_str()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(i64::MIN);
        let after = query["starting_after"].as_str();
        let limit = query["limit"]
            .as_str()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(10)
            .clamp(1, 100);
        let newest_first = self
            .events
            .iter()
            .rev()
            .filter(|e| !thin::thin_only(e))
            .filter(|e| e["created"].as_i64().unwrap_or(0) >= since)
            .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == *t));
        let candidates: Vec<&Value> = match after {
            Some(after) => newest_first.skip_while(|e| e["id"] != after).skip(1).collect(),
            None => newest_first.collect(),
        };
        let page: Vec<Value> = candidates.iter().take(limit).map(|e| (*e).clone()).collect();
        json!({"object": "list", "url": "/v1/events", "has_more": candidates.len() > limit, "data": page})
    }

    /// `/sim/...` control actions: what customers and banks do.
    pub fn control(&mut self, action: &str, query: &Value) -> ControlResult {
        let segments: Vec<&str> = action.split('/').collect();
        match segments.as_slice() {
            ["checkout", id, "complete"] => self.complete_checkout(id, query["delayed"] == "true"),
            ["checkout", id, "async_payment"] => self.settle_async_payment(id, query["outcome"] != "failed"),
            ["charges", id, "dispute"] => self.dispute(id, query["status"].as_str().unwrap_or("lost")),
            ["promotion_codes"] => self.create_promotion_code(query),
            ["prices"] => self.register_price(query),
            ["meter_event_sessions"] => self.set_session_ttl_control(query),
            ["coupons"] => self.create_coupon(query),
            ["subscriptions", id, "fail_payment"] => {
                let failure = payments::Failure {
                    decline: query["decline_code"].as_str().unwrap_or("card_declined").to_owned(),
                    action_required: query["action_required"] == "true",
                    last: query["final"] == "true",
                };
                self.fail_payment(id, &failure)
            }
            ["invoices", id, "pay"] => self.pay(id),
            ["subscriptions", id, "end_period"] => self.end_period(id),
            ["subscriptions", id, "cancel"] => self
                .end_subscription(id)
                .map(|(sub, events)| (json!({"subscription": sub["id"], "status": "canceled"}), events))
                .map_err(|error| error.message),
            ["objects", "subscriptions", id] => self
                .subscriptions
                .get(*id)
                .cloned()
                .map(|s| (s, Vec::new()))
                .ok_or_else(|| format!("no subscription {id}")),
            _ => Err(format!("unknown simulator action /sim/{action}")),
        }
    }
}

/// An object as Stripe shows it: without the simulator's private bookkeeping fields.
fn public(object: &Value) -> Value {
    let mut shown = object.clone();
    if let Some(map) = shown.as_object_mut() {
        map.retain(|key, _| !key.starts_with("_simulated"));
    }
    shown
}
