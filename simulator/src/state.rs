//! The simulator's objects and what each call or control action does to them.

use std::collections::{BTreeMap, HashMap};

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
        _ => include_str!("../../tests/fixtures/stripe/event.json"),
    };
    serde_json::from_str(text).unwrap_or(Value::Null)
}

type ApiResult = Result<(Value, Vec<Value>), (StatusCode, String)>;

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
    customers: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    events: Vec<Value>,
    idempotent: HashMap<String, Value>,
}

fn not_found(what: &str, id: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("No such {what}: '{id}'"))
}

/// An object by id, or Stripe's 404.
fn found(objects: &BTreeMap<String, Value>, what: &str, id: &str) -> ApiResult {
    objects
        .get(id)
        .cloned()
        .map(|object| (object, Vec::new()))
        .ok_or_else(|| not_found(what, id))
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
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
            events: Vec::new(),
            idempotent: HashMap::new(),
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
        event["data"] = json!({ "object": object });
        self.events.push(event.clone());
        event
    }

    pub fn api(&mut self, method: &str, path: &str, params: &Value, query: &Value, key: Option<&str>) -> ApiResult {
        let replay_key = key.filter(|_| method == "POST").map(|k| format!("{path}:{k}"));
        if let Some(stored) = replay_key.as_ref().and_then(|k| self.idempotent.get(k)) {
            return Ok((stored.clone(), Vec::new()));
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let result = match (method, segments.as_slice()) {
            ("POST", ["v1", "customers"]) => Ok((self.create_customer(params), Vec::new())),
            ("GET", ["v1", "customers", id]) => found(&self.customers, "customer", id),
            ("POST", ["v1", "checkout", "sessions"]) => self.create_session(params),
            ("POST", ["v1", "billing_portal", "sessions"]) => {
                let mut session = fixture("billing_portal.session");
                let customer = text(&params["customer"]).unwrap_or_default();
                session["id"] = json!(self.id("bps"));
                session["customer"] = json!(customer);
                session["return_url"] = params["return_url"].clone();
                session["url"] = json!(format!("{}/sim/portal/{customer}", self.base_url));
                Ok((session, Vec::new()))
            }
            ("GET", ["v1", "subscriptions"]) => {
                let customer = text(&query["customer"]);
                let data: Vec<Value> = self
                    .subscriptions
                    .values()
                    .filter(|s| customer.is_none() || text(&s["customer"]) == customer)
                    .cloned()
                    .collect();
                Ok((
                    json!({"object": "list", "has_more": false, "url": "/v1/subscriptions", "data": data}),
                    Vec::new(),
                ))
            }
            ("GET", ["v1", "subscriptions", id]) => found(&self.subscriptions, "subscription", id),
            ("POST", ["v1", "subscriptions", id]) => self.update_subscription(id, params),
            ("DELETE", ["v1", "subscriptions", id]) => self.end_subscription(id),
            ("GET", ["v1", "invoices", id]) => found(&self.invoices, "invoice", id),
            // Every price id exists here, as in a test-mode account holding the whole catalog.
            ("GET", ["v1", "prices", id]) => Ok((Self::price(id), Vec::new())),
            ("GET", ["v1", "events", id]) => self
                .events
                .iter()
                .find(|e| e["id"] == *id)
                .cloned()
                .map(|e| (e, Vec::new()))
                .ok_or_else(|| not_found("event", id)),
            ("GET", ["v1", "events"]) => Ok((self.list_events(query), Vec::new())),
            _ => Err((
                StatusCode::NOT_FOUND,
                format!("Unrecognized request URL ({method}: {path})"),
            )),
        };
        if let (Ok((object, _)), Some(k)) = (&result, replay_key) {
            self.idempotent.insert(k, object.clone());
        }
        result
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

    fn create_session(&mut self, params: &Value) -> ApiResult {
        let customer =
            text(&params["customer"]).ok_or((StatusCode::BAD_REQUEST, "customer is required here".to_owned()))?;
        if !self.customers.contains_key(&customer) {
            return Err(not_found("customer", &customer));
        }
        let mut session = fixture("checkout.session");
        let id = self.id("cs_test");
        session["id"] = json!(id);
        session["url"] = json!(format!("{}/sim/checkout/{id}", self.base_url));
        session["status"] = json!("open");
        session["mode"] = params["mode"].clone();
        session["customer"] = json!(customer);
        session["client_reference_id"] = params["client_reference_id"].clone();
        session["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        session["success_url"] = params["success_url"].clone();
        session["cancel_url"] = params["cancel_url"].clone();
        session["subscription"] = Value::Null;
        session["_simulated_line"] = params["line_items"][0].clone();
        session["_simulated_subscription_data"] = params["subscription_data"].clone();
        self.sessions.insert(id, session.clone());
        Ok((public(&session), Vec::new()))
    }

    fn price(id: &str) -> Value {
        let mut price = fixture("price");
        price["id"] = json!(id);
        price["unit_amount"] = json!(DEFAULT_UNIT_AMOUNT);
        price["unit_amount_decimal"] = json!(DEFAULT_UNIT_AMOUNT.to_string());
        price
    }

    fn new_subscription(
        &mut self,
        customer: &str,
        price: &str,
        quantity: u64,
        metadata: Value,
        trial_days: Option<i64>,
        now: i64,
    ) -> Value {
        let mut sub = fixture("subscription");
        let id = self.id("sub");
        let status = if trial_days.is_some() { "trialing" } else { "active" };
        let period_end = now + trial_days.map_or(PERIOD_SECS, |days| days * 86_400);
        for field in [
            "cancel_at",
            "canceled_at",
            "ended_at",
            "trial_end",
            "trial_start",
            "pending_update",
            "pause_collection",
            "schedule",
            "current_period_end",
        ] {
            sub[field] = Value::Null;
        }
        sub["id"] = json!(id);
        sub["customer"] = json!(customer);
        sub["status"] = json!(status);
        sub["cancel_at_period_end"] = json!(false);
        sub["created"] = json!(now);
        sub["start_date"] = json!(now);
        sub["metadata"] = metadata;
        if trial_days.is_some() {
            sub["trial_start"] = json!(now);
            sub["trial_end"] = json!(period_end);
        }
        let item = &mut sub["items"]["data"][0];
        item["id"] = json!(self.id("si"));
        item["price"] = Self::price(price);
        item["quantity"] = json!(quantity);
        item["subscription"] = json!(id);
        item["current_period_start"] = json!(now);
        item["current_period_end"] = json!(period_end);
        sub["items"]["url"] = json!(format!("/v1/subscription_items?subscription={id}"));
        sub
    }

    fn new_invoice(&mut self, subscription: &Value, status: &str, now: i64) -> Value {
        let mut invoice = fixture("invoice");
        let id = self.id("in");
        let quantity = subscription["items"]["data"][0]["quantity"].as_i64().unwrap_or(1);
        let amount = subscription["items"]["data"][0]["price"]["unit_amount"]
            .as_i64()
            .unwrap_or(DEFAULT_UNIT_AMOUNT)
            * quantity;
        let paid = status == "paid";
        invoice["id"] = json!(id);
        invoice["customer"] = subscription["customer"].clone();
        invoice["customer_email"] = json!(format!(
            "{}@customers.example",
            subscription["customer"].as_str().unwrap_or("customer")
        ));
        invoice["subscription"] = subscription["id"].clone();
        invoice["parent"] = json!({"type": "subscription_details", "quote_details": null, "subscription_details": {"subscription": subscription["id"], "metadata": {}}});
        invoice["status"] = json!(status);
        invoice["currency"] = json!("usd");
        invoice["amount_due"] = json!(amount);
        invoice["amount_paid"] = json!(if paid { amount } else { 0 });
        invoice["amount_remaining"] = json!(if paid { 0 } else { amount });
        invoice["attempt_count"] = json!(if paid { 1 } else { 0 });
        invoice["attempted"] = json!(true);
        invoice["next_payment_attempt"] = Value::Null;
        invoice["created"] = json!(now);
        invoice["hosted_invoice_url"] = json!(format!("{}/sim/invoices/{id}", self.base_url));
        invoice["payments"] = json!({"object": "list", "has_more": false, "data": []});
        self.invoices.insert(id, invoice.clone());
        invoice
    }

    fn update_subscription(&mut self, id: &str, params: &Value) -> ApiResult {
        let now = self.tick();
        let mut sub = found(&self.subscriptions, "subscription", id)?.0;
        if sub["status"] == "canceled" {
            return Err((
                StatusCode::BAD_REQUEST,
                "A canceled subscription can only update its cancellation_details and metadata.".into(),
            ));
        }
        if let Some(price) = params["items"][0]["price"].as_str() {
            sub["items"]["data"][0]["price"] = Self::price(price);
        }
        if let Some(flag) = params["cancel_at_period_end"].as_str() {
            sub["cancel_at_period_end"] = json!(flag == "true");
            sub["canceled_at"] = if flag == "true" { json!(now) } else { Value::Null };
        }
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            for (key, value) in metadata {
                sub["metadata"][key] = value.clone();
            }
        }
        self.subscriptions.insert(id.to_owned(), sub.clone());
        let event = self.event("customer.subscription.updated", &sub, now);
        Ok((sub, vec![event]))
    }

    fn end_subscription(&mut self, id: &str) -> ApiResult {
        let now = self.tick();
        let mut sub = found(&self.subscriptions, "subscription", id)?.0;
        sub["status"] = json!("canceled");
        sub["ended_at"] = json!(now);
        sub["canceled_at"] = json!(now);
        self.subscriptions.insert(id.to_owned(), sub.clone());
        let event = self.event("customer.subscription.deleted", &sub, now);
        Ok((sub, vec![event]))
    }

    /// A successful payment emits both of these, as `stripe trigger invoice.paid` shows.
    fn paid_events(&mut self, invoice: &Value, now: i64) -> Vec<Value> {
        vec![
            self.event("invoice.payment_succeeded", invoice, now),
            self.event("invoice.paid", invoice, now),
        ]
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
    pub fn control(&mut self, action: &str, query: &Value) -> Result<(Value, Vec<Value>), String> {
        let segments: Vec<&str> = action.split('/').collect();
        match segments.as_slice() {
            ["checkout", id, "complete"] => self.complete_checkout(id),
            ["subscriptions", id, "fail_payment"] => {
                let decline = query["decline_code"].as_str().unwrap_or("card_declined").to_owned();
                self.fail_payment(id, &decline, query["action_required"] == "true")
            }
            ["invoices", id, "pay"] => self.pay(id),
            ["subscriptions", id, "end_period"] => self.end_period(id),
            ["subscriptions", id, "cancel"] => self
                .end_subscription(id)
                .map(|(sub, events)| (json!({"subscription": sub["id"], "status": "canceled"}), events))
                .map_err(|(_, message)| message),
            ["objects", "subscriptions", id] => self
                .subscriptions
                .get(*id)
                .cloned()
                .map(|s| (s, Vec::new()))
                .ok_or_else(|| format!("no subscription {id}")),
            _ => Err(format!("unknown simulator action /sim/{action}")),
        }
    }

    fn complete_checkout(&mut self, id: &str) -> Result<(Value, Vec<Value>), String> {
        let mut session = self
            .sessions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no checkout session {id}"))?;
        if session["status"] != "open" {
            return Err(format!("checkout session {id} is not open"));
        }
        let now = self.tick();
        let customer = text(&session["customer"]).unwrap_or_default();
        let price = text(&session["_simulated_line"]["price"]).unwrap_or_default();
        let quantity = session["_simulated_line"]["quantity"]
            .as_str()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        let data = session["_simulated_subscription_data"].clone();
        let trial = data["trial_period_days"].as_str().and_then(|d| d.parse().ok());
        let metadata = data.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let mut sub = self.new_subscription(&customer, &price, quantity, metadata, trial, now);
        let invoice = self.new_invoice(&sub, "paid", now);
        sub["latest_invoice"] = invoice["id"].clone();
        self.subscriptions
            .insert(text(&sub["id"]).unwrap_or_default(), sub.clone());
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        session["subscription"] = sub["id"].clone();
        self.sessions.insert(id.to_owned(), session.clone());
        let mut events = vec![self.event("customer.subscription.created", &sub, now)];
        events.extend(self.paid_events(&invoice, now));
        events.push(self.event("checkout.session.completed", &public(&session), now));
        Ok((json!({"subscription": sub["id"], "invoice": invoice["id"]}), events))
    }

    fn fail_payment(&mut self, id: &str, decline: &str, action_required: bool) -> Result<(Value, Vec<Value>), String> {
        let mut sub = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription {id}"))?;
        let now = self.tick();
        let open = self
            .invoices
            .values()
            .find(|i| i["subscription"] == *id && i["status"] == "open")
            .cloned();
        let mut invoice = match open {
            Some(invoice) => invoice,
            None => self.new_invoice(&sub, "open", now),
        };
        let attempt = invoice["attempt_count"].as_u64().unwrap_or(0) + 1;
        invoice["attempt_count"] = json!(attempt);
        invoice["next_payment_attempt"] = json!(now + 3 * 86_400);
        let error = if action_required {
            json!({"code": "authentication_required", "decline_code": "authentication_required"})
        } else {
            json!({"code": "card_declined", "decline_code": decline})
        };
        invoice["payments"]["data"] = json!([{"object": "invoice_payment", "payment": {"type": "payment_intent",
            "payment_intent": {"id": format!("pi_sim{}{}", self.run, self.seq), "object": "payment_intent", "last_payment_error": error}}}]);
        self.invoices
            .insert(text(&invoice["id"]).unwrap_or_default(), invoice.clone());
        sub["status"] = json!("past_due");
        sub["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id.to_owned(), sub.clone());
        let failure = if action_required {
            "invoice.payment_action_required"
        } else {
            "invoice.payment_failed"
        };
        let events = vec![
            self.event(failure, &invoice, now),
            self.event("customer.subscription.updated", &sub, now),
        ];
        Ok((json!({"invoice": invoice["id"], "attempt": attempt}), events))
    }

    fn pay(&mut self, id: &str) -> Result<(Value, Vec<Value>), String> {
        let mut invoice = self
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no invoice {id}"))?;
        let now = self.tick();
        invoice["status"] = json!("paid");
        invoice["amount_paid"] = invoice["amount_due"].clone();
        invoice["amount_remaining"] = json!(0);
        invoice["next_payment_attempt"] = Value::Null;
        self.invoices.insert(id.to_owned(), invoice.clone());
        let mut events = self.paid_events(&invoice, now);
        if let Some(sub_id) = text(&invoice["subscription"]) {
            if let Some(mut sub) = self.subscriptions.get(&sub_id).cloned() {
                sub["status"] = json!("active");
                self.subscriptions.insert(sub_id, sub.clone());
                events.push(self.event("customer.subscription.updated", &sub, now));
            }
        }
        Ok((json!({"invoice": id}), events))
    }

    fn end_period(&mut self, id: &str) -> Result<(Value, Vec<Value>), String> {
        let sub = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription {id}"))?;
        if sub["cancel_at_period_end"] == true {
            let (sub, events) = self.end_subscription(id).map_err(|(_, message)| message)?;
            return Ok((json!({"subscription": sub["id"], "status": "canceled"}), events));
        }
        let now = self.tick();
        let mut renewed = sub.clone();
        renewed["status"] = json!("active");
        renewed["items"]["data"][0]["current_period_start"] = json!(now);
        renewed["items"]["data"][0]["current_period_end"] = json!(now + PERIOD_SECS);
        let invoice = self.new_invoice(&renewed, "paid", now);
        renewed["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id.to_owned(), renewed.clone());
        let mut events = self.paid_events(&invoice, now);
        events.push(self.event("customer.subscription.updated", &renewed, now));
        Ok((json!({"subscription": id, "status": "active"}), events))
    }
}

/// A session as Stripe shows it: without the simulator's private bookkeeping fields.
fn public(session: &Value) -> Value {
    let mut shown = session.clone();
    if let Some(map) = shown.as_object_mut() {
        map.retain(|key, _| !key.starts_with("_simulated"));
    }
    shown
}
