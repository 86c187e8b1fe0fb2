//! Subscriptions: created by checkout, updated, listed, renewed and canceled.

use serde_json::{Value, json};

use super::prices::metered;
use super::{ApiError, ApiResult, ControlResult, PERIOD_SECS, Sim, fixture, found, integer, not_found, page, text};

/// One entry of an update's `items[]`, as Stripe reads it.
struct ItemChange<'a> {
    at: usize,
    id: Option<&'a str>,
    price: Option<&'a str>,
    quantity: Option<u64>,
    deleted: bool,
}

impl<'a> ItemChange<'a> {
    fn read(at: usize, entry: &'a Value) -> Result<Self, ApiError> {
        let quantity = integer(&entry["quantity"], &format!("items[{at}][quantity]"))?
            .map(|q| {
                u64::try_from(q)
                    .map_err(|_| ApiError::invalid("Invalid quantity").with_param(format!("items[{at}][quantity]")))
            })
            .transpose()?;
        Ok(Self {
            at,
            id: entry["id"].as_str(),
            price: entry["price"].as_str(),
            quantity,
            deleted: entry["deleted"] == "true",
        })
    }

    fn param(&self, field: &str) -> String {
        format!("items[{}][{field}]", self.at)
    }
}

/// The end of the subscription's current period: the latest of its items'.
fn period_end(sub: &Value) -> Option<i64> {
    sub["items"]["data"]
        .as_array()?
        .iter()
        .filter_map(|item| item["current_period_end"].as_i64())
        .max()
}

/// `""` clears a field; anything else is the new value.
fn cleared(value: &Value) -> bool {
    value == ""
}

impl Sim {
    pub(super) fn new_subscription(
        &mut self,
        customer: &str,
        lines: &[(String, u64)],
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
            "latest_invoice",
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
        let items: Vec<Value> = lines
            .iter()
            .map(|(price, quantity)| self.new_item(&id, price, *quantity, now, period_end))
            .collect();
        set_items(&mut sub, items);
        sub["items"]["url"] = json!(format!("/v1/subscription_items?subscription={id}"));
        sub
    }

    /// An item of `price`; a metered price's item has no quantity (its usage is billed from
    /// its meter, from now on).
    pub(super) fn new_item(&mut self, subscription: &str, price: &str, quantity: u64, start: i64, end: i64) -> Value {
        let mut item = fixture("subscription")["items"]["data"][0].clone();
        let id = self.id("si");
        item["id"] = json!(id);
        set_price(&mut item, self.price(price));
        item["quantity"] = json!(quantity);
        item["subscription"] = json!(subscription);
        item["created"] = json!(start);
        item["metadata"] = json!({});
        item["current_period_start"] = json!(start);
        item["current_period_end"] = json!(end);
        if metered(&item["price"]) {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("quantity");
            }
            let now = self.now();
            self.start_usage(&id, now);
        }
        item
    }

    /// Without `status`, "returns a list of subscriptions that have not been canceled";
    /// `all` lists every status and `ended` the canceled and incomplete_expired ones
    /// (https://docs.stripe.com/api/subscriptions/list).
    pub(super) fn list_subscriptions(&self, query: &Value) -> ApiResult {
        let status = query["status"].as_str();
        let listed = |s: &str| match status {
            None => s != "canceled",
            Some("all") => true,
            Some("ended") => matches!(s, "canceled" | "incomplete_expired"),
            Some(one) => s == one,
        };
        let has_price = |sub: &Value| {
            sub["items"]["data"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["price"]["id"] == query["price"]))
        };
        let matching: Vec<&Value> = self
            .subscriptions
            .values()
            .filter(|s| query["customer"].is_null() || s["customer"] == query["customer"])
            .filter(|s| query["price"].is_null() || has_price(s))
            .filter(|s| listed(s["status"].as_str().unwrap_or_default()))
            .collect();
        let list = page(
            matching,
            query,
            "/v1/subscriptions",
            &self.subscriptions,
            "subscription",
        )?;
        Ok((list, Vec::new()))
    }

    pub(super) fn update_subscription(&mut self, id: &str, params: &Value) -> ApiResult {
        let mut sub = found(&self.subscriptions, "subscription", id)?.0;
        if sub["status"] == "canceled" {
            return Err(ApiError::invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
        let cancellation = params.get("cancel_at_period_end").is_some() || params.get("cancel_at").is_some();
        if let Some(schedule) = sub["schedule"].as_str().filter(|_| cancellation) {
            return Err(ApiError::invalid(format!(
                "The subscription is managed by the subscription schedule `{schedule}`, and updating any cancelation behavior directly is not allowed. Please update the schedule instead."
            )));
        }
        let now = self.tick();
        if let Some(items) = params.get("items") {
            let before = sub["items"]["data"].as_array().cloned().unwrap_or_default();
            self.change_items(&mut sub, items, now)?;
            // The prorations wait as pending invoice items for the next invoice.
            if params["proration_behavior"] != "none" {
                let after = sub["items"]["data"].as_array().cloned().unwrap_or_default();
                let lines = prorations(&before, &after, now);
                self.pending_prorations.entry(id.to_owned()).or_default().extend(lines);
            }
        }
        if let Some(flag) = params["cancel_at_period_end"].as_str() {
            sub["cancel_at_period_end"] = json!(flag == "true");
            sub["canceled_at"] = if flag == "true" { json!(now) } else { Value::Null };
        }
        if let Some(at) = params.get("cancel_at") {
            let at = if cleared(at) { None } else { integer(at, "cancel_at")? };
            sub["cancel_at"] = json!(at);
            // `canceled_at` is the time of the request that scheduled the cancellation.
            sub["canceled_at"] = match (at, sub["cancel_at_period_end"] == true) {
                (Some(_), _) => json!(now),
                (None, true) => sub["canceled_at"].clone(),
                (None, false) => Value::Null,
            };
        }
        if let Some(pause) = params.get("pause_collection") {
            sub["pause_collection"] = if cleared(pause) {
                Value::Null
            } else {
                let resumes_at = integer(&pause["resumes_at"], "pause_collection[resumes_at]")?;
                json!({"behavior": pause["behavior"], "resumes_at": resumes_at})
            };
        }
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            for (key, value) in metadata {
                sub["metadata"][key] = value.clone();
            }
        }
        self.subscriptions.insert(id.to_owned(), sub.clone());
        // Pausing and resuming collection emit `customer.subscription.updated`, not
        // `.paused`/`.resumed`, which belong to pausing the subscription itself
        // (https://docs.stripe.com/billing/subscriptions/pause-payment).
        let event = self.event("customer.subscription.updated", &sub, now);
        Ok((sub, vec![event]))
    }

    /// `items[i]`: with an `id`, change (`price`, `quantity`) or remove (`deleted`) that item;
    /// without, add an item for `price` — Stripe refuses a second item of the same price.
    fn change_items(&mut self, sub: &mut Value, items: &Value, now: i64) -> Result<(), ApiError> {
        let entries = items.as_array().cloned().unwrap_or_default();
        let changes = entries
            .iter()
            .enumerate()
            .map(|(at, entry)| ItemChange::read(at, entry))
            .collect::<Result<Vec<_>, _>>()?;
        for change in changes.iter().filter(|change| change.quantity.is_some()) {
            // The price the item will have: the new one, or the item's own.
            let price = match (change.price, change.id) {
                (Some(price), _) => self.price(price),
                (None, Some(id)) => sub["items"]["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|item| item["id"] == id)
                    .map(|item| item["price"].clone())
                    .unwrap_or(Value::Null),
                (None, None) => Value::Null,
            };
            if metered(&price) {
                return Err(metered_quantity(&change.param("quantity")));
            }
        }
        let mut current = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        let sub_id = text(&sub["id"]).unwrap_or_default();
        for change in &changes {
            match change.id {
                Some(item_id) => {
                    let at = current
                        .iter()
                        .position(|item| item["id"] == item_id)
                        .ok_or_else(|| not_found("subscription_item", item_id).with_param(change.param("id")))?;
                    if change.deleted {
                        current.remove(at);
                    } else {
                        let price = change.price.map(|price| self.price(price));
                        apply(&mut current[at], change, price);
                        if metered(&current[at]["price"]) {
                            if let Some(fields) = current[at].as_object_mut() {
                                fields.remove("quantity");
                            }
                        }
                    }
                }
                None => {
                    let item = self.added_item(&sub_id, &current, change, now)?;
                    current.push(item);
                }
            }
        }
        if current.is_empty() {
            return Err(ApiError::invalid(
                "A subscription must have at least one active item; to end it, cancel the subscription.",
            )
            .with_param("items"));
        }
        set_items(sub, current);
        Ok(())
    }

    fn added_item(
        &mut self,
        sub_id: &str,
        current: &[Value],
        change: &ItemChange,
        now: i64,
    ) -> Result<Value, ApiError> {
        if change.deleted {
            return Err(ApiError::invalid("An item to delete needs its id.").with_param(change.param("id")));
        }
        let price = change.price.ok_or_else(|| {
            ApiError::invalid(format!("Missing required param: {}.", change.param("price")))
                .with_code("parameter_missing")
                .with_param(change.param("price"))
        })?;
        if current.iter().any(|item| item["price"]["id"] == price) {
            return Err(ApiError::invalid(format!(
                "Cannot add multiple subscription items with the same price: {price}"
            ))
            .with_param(change.param("price")));
        }
        let start = current
            .first()
            .and_then(|item| item["current_period_start"].as_i64())
            .unwrap_or(now);
        let end = current
            .first()
            .and_then(|item| item["current_period_end"].as_i64())
            .unwrap_or(now + PERIOD_SECS);
        Ok(self.new_item(sub_id, price, change.quantity.unwrap_or(1), start, end))
    }

    pub(super) fn end_subscription(&mut self, id: &str) -> ApiResult {
        let now = self.tick();
        self.cancel(id, now)
    }

    pub(super) fn cancel(&mut self, id: &str, now: i64) -> ApiResult {
        let mut sub = found(&self.subscriptions, "subscription", id)?.0;
        sub["status"] = json!("canceled");
        sub["ended_at"] = json!(now);
        sub["canceled_at"] = json!(now);
        self.subscriptions.insert(id.to_owned(), sub.clone());
        let event = self.event("customer.subscription.deleted", &sub, now);
        Ok((sub, vec![event]))
    }

    /// The period ends: the subscription cancels if so scheduled (`cancel_at_period_end`, or
    /// a `cancel_at` within the period), else renews with a new invoice — paid, or while
    /// collection is paused drafted, marked uncollectible or voided as `pause_collection`
    /// says (https://docs.stripe.com/billing/subscriptions/pause-payment).
    pub(super) fn end_period(&mut self, id: &str) -> ControlResult {
        let sub = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription {id}"))?;
        let cancel_due = sub["cancel_at"]
            .as_i64()
            .is_some_and(|at| period_end(&sub).is_none_or(|end| at <= end));
        if sub["cancel_at_period_end"] == true || cancel_due {
            let (sub, events) = self.end_subscription(id).map_err(|error| error.message)?;
            return Ok((json!({"subscription": sub["id"], "status": "canceled"}), events));
        }
        let now = self.tick();
        // The period's metered usage, billed in arrears on the renewal invoice.
        self.bill_usage(&sub, now);
        let mut renewed = sub.clone();
        renewed["status"] = json!("active");
        for item in renewed["items"]["data"].as_array_mut().into_iter().flatten() {
            item["current_period_start"] = json!(now);
            item["current_period_end"] = json!(now + PERIOD_SECS);
        }
        // A schedule's phase starting at this period's end sets the items the renewal bills.
        let scheduled = match period_end(&sub) {
            Some(ended) => self.next_phase(&mut renewed, ended, now),
            None => Vec::new(),
        };
        if renewed["pause_collection"]["resumes_at"]
            .as_i64()
            .is_some_and(|at| at <= now)
        {
            renewed["pause_collection"] = Value::Null;
        }
        let (status, closing) = match renewed["pause_collection"]["behavior"].as_str() {
            None => ("paid", None),
            Some("keep_as_draft") => ("draft", None),
            Some("mark_uncollectible") => ("uncollectible", Some("invoice.marked_uncollectible")),
            Some(_) => ("void", Some("invoice.voided")),
        };
        let invoice = self.new_invoice(&renewed, status, now);
        renewed["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id.to_owned(), renewed.clone());
        let mut events = scheduled;
        events.extend(if status == "paid" {
            self.paid_events(&invoice, now)
        } else {
            vec![self.event("invoice.created", &invoice, now)]
        });
        if let Some(closing) = closing {
            events.push(self.event("invoice.finalized", &invoice, now));
            events.push(self.event(closing, &invoice, now));
        }
        events.push(self.event("customer.subscription.updated", &renewed, now));
        Ok((
            json!({"subscription": id, "status": "active", "invoice": invoice["id"]}),
            events,
        ))
    }
}

fn apply(item: &mut Value, change: &ItemChange, price: Option<Value>) {
    if let Some(price) = price {
        set_price(item, price);
    }
    if let Some(quantity) = change.quantity {
        item["quantity"] = json!(quantity);
    }
}

/// The item's price, and its plan's id; a metered price's plan is metered by the same meter.
fn set_price(item: &mut Value, price: Value) {
    item["plan"]["id"] = price["id"].clone();
    if metered(&price) {
        item["plan"]["usage_type"] = json!("metered");
        item["plan"]["meter"] = price["recurring"]["meter"].clone();
        item["plan"]["amount"] = price["unit_amount"].clone();
        item["plan"]["amount_decimal"] = price["unit_amount_decimal"].clone();
        item["plan"]["billing_scheme"] = price["billing_scheme"].clone();
        item["plan"]["tiers_mode"] = price["tiers_mode"].clone();
        item["plan"]["currency"] = price["currency"].clone();
        item["plan"]["interval"] = price["recurring"]["interval"].clone();
        item["plan"]["interval_count"] = price["recurring"]["interval_count"].clone();
    }
    item["price"] = price;
}

/// Stripe refuses a quantity for a metered price: its usage comes from its meter.
pub(super) fn metered_quantity(param: &str) -> ApiError {
    ApiError::invalid("Quantity should not be specified where usage_type is `metered`. Remove quantity.")
        .with_param(param)
}

fn set_items(sub: &mut Value, items: Vec<Value>) {
    sub["items"]["has_more"] = json!(false);
    sub["items"]["data"] = Value::Array(items);
}

/// `create_prorations` (Stripe's default) for a change of items at `now`: a credit for the
/// unused time on each item changed or removed and a charge for the remaining time on each new
/// one, prorated to the second and rounded to the smallest unit
/// (https://docs.stripe.com/billing/subscriptions/prorations).
fn prorations(before: &[Value], after: &[Value], now: i64) -> Vec<Value> {
    let start = before
        .first()
        .and_then(|i| i["current_period_start"].as_i64())
        .unwrap_or(now);
    let end = before
        .first()
        .and_then(|i| i["current_period_end"].as_i64())
        .unwrap_or(now);
    let share = |amount: i64| {
        let (left, length) = ((end - now).max(0), (end - start).max(1));
        ((i128::from(amount) * i128::from(left) + i128::from(length) / 2) / i128::from(length)) as i64
    };
    let same = |a: &Value, b: &Value| {
        a["id"] == b["id"] && a["price"]["id"] == b["price"]["id"] && a["quantity"] == b["quantity"]
    };
    let mut lines = Vec::new();
    // A metered item is billed for its usage, in arrears: nothing to prorate.
    let (before, after): (Vec<&Value>, Vec<&Value>) = (
        before.iter().filter(|item| !metered(&item["price"])).collect(),
        after.iter().filter(|item| !metered(&item["price"])).collect(),
    );
    for old in before.iter().filter(|old| !after.iter().any(|new| same(old, new))) {
        let description = format!(
            "Unused time on {} × {}",
            old["price"]["id"].as_str().unwrap_or_default(),
            old["quantity"]
        );
        lines.push(preview_line(old, -share(item_amount(old)), description, true, now, end));
    }
    for new in after.iter().filter(|new| !before.iter().any(|old| same(old, new))) {
        let description = format!(
            "Remaining time on {} × {}",
            new["price"]["id"].as_str().unwrap_or_default(),
            new["quantity"]
        );
        lines.push(preview_line(new, share(item_amount(new)), description, true, now, end));
    }
    lines
}

/// What a licensed item costs for one period (a metered one costs its usage, billed apart).
pub(super) fn item_amount(item: &Value) -> i64 {
    if metered(&item["price"]) {
        return 0;
    }
    let unit = item["price"]["unit_amount"]
        .as_i64()
        .unwrap_or(super::DEFAULT_UNIT_AMOUNT);
    unit * item["quantity"].as_i64().unwrap_or(1)
}

pub(super) fn preview_line(
    item: &Value,
    amount: i64,
    description: String,
    proration: bool,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "object": "line_item",
        "livemode": false,
        "metadata": {},
        "discountable": true,
        "discounts": [],
        "amount": amount,
        "subtotal": amount,
        "currency": "usd",
        "description": description,
        "quantity": item["quantity"],
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "price_details": {"price": item["price"]["id"], "product": item["price"]["product"]}},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "proration": proration, "subscription": item["subscription"], "subscription_item": item["id"]}},
    })
}

impl Sim {
    /// `POST /v1/invoices/create_preview` for a subscription with `subscription_details`: the
    /// invoice the change would bring — with `create_prorations` (Stripe's default) a credit
    /// for the unused time on each item changed or removed and a charge for the remaining
    /// time on each new one, prorated to the second, then the next period at the new items
    /// (https://docs.stripe.com/billing/subscriptions/prorations). Nothing is changed.
    pub(super) fn preview_invoice(&mut self, params: &Value) -> ApiResult {
        let id = text(&params["subscription"])
            .ok_or_else(|| ApiError::invalid("subscription is required here").with_param("subscription"))?;
        let sub = found(&self.subscriptions, "subscription", &id)?.0;
        if params["customer"]
            .as_str()
            .is_some_and(|customer| sub["customer"] != customer)
        {
            return Err(
                ApiError::invalid(format!("Subscription {id} does not belong to that customer."))
                    .with_param("customer"),
            );
        }
        let details = &params["subscription_details"];
        let now = match integer(&details["proration_date"], "subscription_details[proration_date]")? {
            Some(at) => at,
            None => self.now(),
        };
        let mut changed = sub.clone();
        if let Some(items) = details.get("items") {
            self.change_items(&mut changed, items, now)?;
        }
        let before = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        let after = changed["items"]["data"].as_array().cloned().unwrap_or_default();
        let end = before
            .first()
            .and_then(|i| i["current_period_end"].as_i64())
            .unwrap_or(now);
        let mut lines = if details["proration_behavior"] == "none" {
            Vec::new()
        } else {
            prorations(&before, &after, now)
        };
        for item in &after {
            // A metered item: its usage so far this period, billed in arrears.
            if metered(&item["price"]) {
                lines.extend(self.usage_so_far(&sub, item, now));
                continue;
            }
            let description = format!(
                "{} × {}",
                item["price"]["id"].as_str().unwrap_or_default(),
                item["quantity"]
            );
            lines.push(preview_line(
                item,
                item_amount(item),
                description,
                false,
                end,
                end + PERIOD_SECS,
            ));
        }
        for line in &mut lines {
            line["id"] = json!(self.id("il"));
        }
        let total: i64 = lines.iter().filter_map(|line| line["amount"].as_i64()).sum();
        let mut invoice = fixture("invoice");
        invoice["id"] = json!(format!("upcoming_{}", self.id("in")));
        invoice["customer"] = sub["customer"].clone();
        invoice["status"] = json!("draft");
        invoice["currency"] = json!("usd");
        invoice["subtotal"] = json!(total);
        invoice["total"] = json!(total);
        invoice["amount_due"] = json!(total.max(0));
        invoice["amount_paid"] = json!(0);
        invoice["amount_remaining"] = json!(total.max(0));
        invoice["created"] = json!(now);
        invoice["number"] = Value::Null;
        invoice["hosted_invoice_url"] = Value::Null;
        invoice["invoice_pdf"] = Value::Null;
        invoice["parent"] = json!({"type": "subscription_details", "quote_details": null,
            "subscription_details": {"subscription": id, "metadata": sub["metadata"]}});
        invoice["lines"] =
            json!({"object": "list", "has_more": false, "url": "/v1/invoices/upcoming/lines", "data": lines});
        Ok((invoice, Vec::new()))
    }
}
