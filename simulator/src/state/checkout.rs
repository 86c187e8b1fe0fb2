//! Checkout sessions: create, retrieve, list, expire, and the customer completing one.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, ControlResult, DEFAULT_UNIT_AMOUNT, Sim, fixture, not_found, page, public, text};

/// A session lasts 24 hours unless `expires_at` says otherwise (Stripe's default).
const SESSION_SECS: i64 = 86_400;

/// The session's line items as (price, quantity), in their order.
pub(super) fn lines(session: &Value) -> Vec<(String, u64)> {
    let lines: Vec<(String, u64)> = session["_simulated_lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let quantity = line["quantity"].as_str().and_then(|q| q.parse().ok()).unwrap_or(1);
            (text(&line["price"]).unwrap_or_default(), quantity)
        })
        .collect();
    if lines.is_empty() {
        vec![(String::new(), 1)]
    } else {
        lines
    }
}

impl Sim {
    pub(super) fn create_session(&mut self, params: &Value) -> ApiResult {
        let customer = text(&params["customer"])
            .ok_or_else(|| ApiError::invalid("customer is required here").with_param("customer"))?;
        // A deleted customer is gone for new objects: Stripe answers "No such customer"
        // (resource_missing) as for an unknown id; only GET still shows its deleted form.
        if !self.live_customer(&customer) {
            return Err(not_found("customer", &customer).with_param("customer"));
        }
        self.check_discounts(params)?;
        // A metered price's usage comes from its meter: Checkout refuses a quantity for it.
        for (at, line) in params["line_items"].as_array().into_iter().flatten().enumerate() {
            let price = self.price(line["price"].as_str().unwrap_or_default());
            if super::prices::metered(&price) && !line["quantity"].is_null() {
                return Err(super::subscriptions::metered_quantity(&format!(
                    "line_items[{at}][quantity]"
                )));
            }
        }
        let now = self.now();
        let mut session = fixture("checkout.session");
        let id = self.id("cs_test");
        session["id"] = json!(id);
        session["url"] = json!(format!("{}/sim/checkout/{id}", self.base_url));
        session["status"] = json!("open");
        session["payment_status"] = json!("unpaid");
        session["mode"] = params["mode"].clone();
        session["customer"] = json!(customer);
        session["client_reference_id"] = params["client_reference_id"].clone();
        session["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        session["success_url"] = params["success_url"].clone();
        session["cancel_url"] = params["cancel_url"].clone();
        session["created"] = json!(now);
        session["expires_at"] = params["expires_at"]
            .as_str()
            .and_then(|at| at.parse::<i64>().ok())
            .map_or(json!(now + SESSION_SECS), |at| json!(at));
        session["subscription"] = Value::Null;
        session["invoice"] = Value::Null;
        session["payment_intent"] = Value::Null;
        session["automatic_tax"] = json!({"enabled": params["automatic_tax"]["enabled"] == "true",
            "liability": null, "provider": null, "status": null});
        session["discounts"] = params.get("discounts").cloned().unwrap_or_else(|| json!([]));
        session["_simulated_payment_intent_data"] = params["payment_intent_data"].clone();
        session["_simulated_lines"] = params["line_items"].clone();
        session["_simulated_subscription_data"] = params["subscription_data"].clone();
        // What is due now: the licensed lines; a metered one is billed for its usage later.
        let amount: i64 = lines(&session)
            .iter()
            .map(|(price, quantity)| (self.price(price), *quantity))
            .filter(|(price, _)| !super::prices::metered(price))
            .map(|(price, quantity)| price["unit_amount"].as_i64().unwrap_or(DEFAULT_UNIT_AMOUNT) * quantity as i64)
            .sum();
        session["currency"] = json!("usd");
        session["amount_subtotal"] = json!(amount);
        session["amount_total"] = json!(amount);
        self.sessions.insert(id, session.clone());
        Ok((public(&session), Vec::new()))
    }

    /// Filters `customer`, `status` and `subscription`, newest first.
    pub(super) fn list_sessions(&self, query: &Value) -> ApiResult {
        let matching: Vec<&Value> = self
            .sessions
            .values()
            .filter(|s| query["customer"].is_null() || s["customer"] == query["customer"])
            .filter(|s| query["status"].is_null() || s["status"] == query["status"])
            .filter(|s| query["subscription"].is_null() || s["subscription"] == query["subscription"])
            .collect();
        let list = page(
            matching,
            query,
            "/v1/checkout/sessions",
            &self.sessions,
            "checkout.session",
        )?;
        Ok((list, Vec::new()))
    }

    /// "A Checkout Session can be expired when it is in one of these statuses: open", else
    /// an error (https://docs.stripe.com/api/checkout/sessions/expire).
    pub(super) fn expire_session(&mut self, id: &str) -> ApiResult {
        let mut session = self
            .sessions
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("checkout.session", id))?;
        if session["status"] != "open" {
            return Err(ApiError::invalid(format!(
                "Only Checkout Sessions with a status of `open` can be expired; {id} has status `{}`.",
                session["status"].as_str().unwrap_or_default()
            )));
        }
        let now = self.tick();
        session["status"] = json!("expired");
        session["url"] = Value::Null;
        self.sessions.insert(id.to_owned(), session.clone());
        let event = self.event("checkout.session.expired", &session, now);
        Ok((public(&session), vec![event]))
    }

    /// The customer pays: in subscription mode, one subscription with an item per line item
    /// and its paid invoice; in payment mode, a payment (`delayed`: still processing).
    pub(super) fn complete_checkout(&mut self, id: &str, delayed: bool) -> ControlResult {
        let mut session = self
            .sessions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no checkout session {id}"))?;
        if session["status"] != "open" {
            return Err(format!("checkout session {id} is not open"));
        }
        let customer = text(&session["customer"]).unwrap_or_default();
        if !self.live_customer(&customer) {
            return Err(format!("customer {customer} of checkout session {id} is deleted"));
        }
        let now = self.tick();
        if session["mode"] == "payment" {
            return self.complete_payment(session, delayed, now);
        }
        let data = session["_simulated_subscription_data"].clone();
        let trial = data["trial_period_days"].as_str().and_then(|d| d.parse().ok());
        let metadata = data.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let mut sub = self.new_subscription(&customer, &lines(&session), metadata, trial, now);
        // The session's discount becomes the subscription's (a `di_` discount object's id).
        let discounts: Vec<Value> = session["discounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|_| json!(self.id("di")))
            .collect();
        sub["discounts"] = Value::Array(discounts);
        let invoice = self.new_invoice(&sub, "paid", now);
        sub["latest_invoice"] = invoice["id"].clone();
        self.subscriptions
            .insert(text(&sub["id"]).unwrap_or_default(), sub.clone());
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        session["subscription"] = sub["id"].clone();
        session["invoice"] = invoice["id"].clone();
        session["url"] = Value::Null;
        self.sessions.insert(id.to_owned(), session.clone());
        let mut events = vec![self.event("customer.subscription.created", &sub, now)];
        events.extend(self.paid_events(&invoice, now));
        events.push(self.event("checkout.session.completed", &session, now));
        Ok((json!({"subscription": sub["id"], "invoice": invoice["id"]}), events))
    }
}
