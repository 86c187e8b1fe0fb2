//! Invoices and how they are paid: payment intents, charges, failed attempts and refunds.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, ControlResult, Sim, expands, fixture, found, integer, not_found, page, text};

/// A failed attempt as `/sim/subscriptions/{id}/fail_payment` describes it.
pub struct Failure {
    pub decline: String,
    /// The bank asks for authentication (SCA) instead of declining.
    pub action_required: bool,
    /// The last attempt Stripe's retry schedule makes: no `next_payment_attempt`.
    pub last: bool,
}

/// The subscription an invoice bills (`parent.subscription_details.subscription`), or null.
fn subscription_of(invoice: &Value) -> &Value {
    &invoice["parent"]["subscription_details"]["subscription"]
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

impl Sim {
    pub(super) fn new_invoice(&mut self, subscription: &Value, status: &str, now: i64) -> Value {
        let mut invoice = fixture("invoice");
        let id = self.id("in");
        // The period's items, after the prorations of changes made since the last invoice.
        let mut lines = text(&subscription["id"])
            .and_then(|sub| self.pending_prorations.remove(&sub))
            .unwrap_or_default();
        // Metered items bill the usage a renewal measured; an item without any yet (as on the
        // first invoice) has a line of no usage for its period, as Stripe shows it.
        let usage = text(&subscription["id"])
            .map(|sub| self.take_usage(&sub))
            .unwrap_or_default();
        let billed = |item: &Value| {
            usage
                .iter()
                .any(|line| line["parent"]["subscription_item_details"]["subscription_item"] == item["id"])
        };
        let period_start = subscription["items"]["data"][0]["current_period_start"]
            .as_i64()
            .unwrap_or(now);
        let period_end = subscription["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap_or(now);
        for item in subscription["items"]["data"].as_array().into_iter().flatten() {
            if super::prices::metered(&item["price"]) {
                if !billed(item) {
                    let description = format!("{} × 0 (usage)", item["price"]["id"].as_str().unwrap_or_default());
                    let mut line =
                        super::subscriptions::preview_line(item, 0, description, false, period_start, period_end);
                    line["quantity"] = json!(0);
                    lines.push(line);
                }
                continue;
            }
            let description = format!(
                "{} × {}",
                item["price"]["id"].as_str().unwrap_or_default(),
                item["quantity"]
            );
            let amount = super::subscriptions::item_amount(item);
            lines.push(super::subscriptions::preview_line(
                item,
                amount,
                description,
                false,
                period_start,
                period_end,
            ));
        }
        lines.extend(usage);
        for line in &mut lines {
            line["id"] = json!(self.id("il"));
        }
        // A credit larger than the charges is not paid out: nothing is due.
        let amount: i64 = lines
            .iter()
            .filter_map(|line| line["amount"].as_i64())
            .sum::<i64>()
            .max(0);
        invoice["lines"] =
            json!({"object": "list", "has_more": false, "url": format!("/v1/invoices/{id}/lines"), "data": lines});
        let paid = status == "paid";
        invoice["id"] = json!(id);
        invoice["customer"] = subscription["customer"].clone();
        invoice["customer_email"] = json!(format!(
            "{}@customers.example",
            subscription["customer"].as_str().unwrap_or("customer")
        ));
        // Since 2025-03-31 the subscription is named only here, with a snapshot of its metadata.
        invoice["parent"] = json!({"type": "subscription_details", "quote_details": null,
            "subscription_details": {"subscription": subscription["id"], "metadata": subscription["metadata"]}});
        invoice["status"] = json!(status);
        invoice["currency"] = json!("usd");
        invoice["amount_due"] = json!(amount);
        invoice["total"] = json!(amount);
        invoice["subtotal"] = json!(amount);
        invoice["amount_paid"] = json!(0);
        invoice["amount_remaining"] = json!(amount);
        invoice["attempt_count"] = json!(0);
        invoice["attempted"] = json!(matches!(status, "paid" | "open"));
        invoice["next_payment_attempt"] = Value::Null;
        invoice["created"] = json!(now);
        invoice["hosted_invoice_url"] = json!(format!("{}/sim/invoices/{id}", self.base_url));
        invoice["invoice_pdf"] = json!(format!("{}/sim/invoices/{id}/pdf", self.base_url));
        // A draft has no number; finalizing gives the next one of the account's sequence.
        invoice["number"] = if status == "draft" {
            Value::Null
        } else {
            json!(format!("SIM-{:06}", self.invoices.len() + 1))
        };
        invoice["status_transitions"] = json!({"finalized_at": if status == "draft" { Value::Null } else { json!(now) },
            "marked_uncollectible_at": null, "paid_at": null, "voided_at": null});
        invoice["payments"] = json!({"object": "list", "has_more": false, "data": [], "url": format!("/v1/invoice_payments?invoice={id}")});
        match status {
            "void" => invoice["status_transitions"]["voided_at"] = json!(now),
            "uncollectible" => invoice["status_transitions"]["marked_uncollectible_at"] = json!(now),
            _ => {}
        }
        if paid {
            self.record_payment(&mut invoice, now);
        }
        self.invoices.insert(id, invoice.clone());
        invoice
    }

    /// The invoice's payment intent, created with its `payments` entry on the first attempt:
    /// Stripe retries an invoice with the same payment intent.
    fn invoice_intent(&mut self, invoice: &mut Value, now: i64) -> String {
        let existing = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str();
        if let Some(id) = existing.filter(|id| self.payment_intents.contains_key(*id)) {
            return id.to_owned();
        }
        let amount = invoice["amount_due"].as_i64().unwrap_or(0);
        let mut intent = self.new_intent(&invoice["customer"], amount, now);
        let id = text(&intent["id"]).unwrap_or_default();
        intent["description"] = json!("Subscription update");
        intent["status"] = json!("requires_payment_method");
        self.payment_intents.insert(id.clone(), intent);
        let mut payment = fixture("invoice_payment");
        payment["id"] = json!(self.id("inpay"));
        payment["invoice"] = invoice["id"].clone();
        payment["amount_requested"] = invoice["amount_due"].clone();
        payment["amount_paid"] = Value::Null;
        payment["currency"] = json!("usd");
        payment["created"] = json!(now);
        payment["livemode"] = json!(false);
        payment["status"] = json!("open");
        payment["payment"] = json!({"type": "payment_intent", "payment_intent": id});
        payment["status_transitions"] = json!({"canceled_at": null, "paid_at": null});
        invoice["payments"]["data"] = json!([payment]);
        id
    }

    /// A payment intent of `amount` for `customer`, nothing attempted yet; the caller sets
    /// its status and stores it.
    pub(super) fn new_intent(&mut self, customer: &Value, amount: i64, now: i64) -> Value {
        let id = self.id("pi");
        let mut intent = fixture("payment_intent");
        for field in [
            "canceled_at",
            "last_payment_error",
            "latest_charge",
            "next_action",
            "processing",
            "source",
        ] {
            intent[field] = Value::Null;
        }
        intent["id"] = json!(id);
        intent["amount"] = json!(amount);
        intent["amount_received"] = json!(0);
        intent["currency"] = json!("usd");
        intent["customer"] = customer.clone();
        intent["created"] = json!(now);
        intent["client_secret"] = json!(format!("{id}_secret_sim"));
        intent
    }

    /// A successful payment: the invoice's payment intent succeeds with a new charge.
    fn record_payment(&mut self, invoice: &mut Value, now: i64) {
        let intent_id = self.invoice_intent(invoice, now);
        let amount = invoice["amount_due"].as_i64().unwrap_or(0);
        let charge = self.new_charge(&intent_id, &invoice["customer"], amount, now);
        if let Some(intent) = self.payment_intents.get_mut(&intent_id) {
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            intent["latest_charge"] = json!(charge);
            intent["last_payment_error"] = Value::Null;
            intent["next_action"] = Value::Null;
        }
        let payment = &mut invoice["payments"]["data"][0];
        payment["status"] = json!("paid");
        payment["amount_paid"] = json!(amount);
        payment["status_transitions"]["paid_at"] = json!(now);
        invoice["status"] = json!("paid");
        invoice["amount_paid"] = json!(amount);
        invoice["amount_remaining"] = json!(0);
        invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
        invoice["attempted"] = json!(true);
        invoice["next_payment_attempt"] = Value::Null;
        invoice["status_transitions"]["paid_at"] = json!(now);
    }

    pub(super) fn new_charge(&mut self, intent: &str, customer: &Value, amount: i64, now: i64) -> String {
        let id = self.id("ch");
        let mut charge = fixture("charge");
        for field in [
            "balance_transaction",
            "description",
            "receipt_url",
            "source",
            "transfer_data",
        ] {
            charge[field] = Value::Null;
        }
        charge["id"] = json!(id);
        charge["amount"] = json!(amount);
        charge["amount_captured"] = json!(amount);
        charge["amount_refunded"] = json!(0);
        charge["captured"] = json!(true);
        charge["created"] = json!(now);
        charge["currency"] = json!("usd");
        charge["customer"] = customer.clone();
        charge["livemode"] = json!(false);
        charge["paid"] = json!(true);
        charge["payment_intent"] = json!(intent);
        charge["refunded"] = json!(false);
        charge["refunds"] =
            json!({"object": "list", "has_more": false, "data": [], "url": format!("/v1/charges/{id}/refunds")});
        charge["status"] = json!("succeeded");
        self.charges.insert(id.clone(), charge);
        id
    }

    /// A successful payment emits both of these, as `stripe trigger invoice.paid` shows.
    pub(super) fn paid_events(&mut self, invoice: &Value, now: i64) -> Vec<Value> {
        vec![
            self.event("invoice.payment_succeeded", invoice, now),
            self.event("invoice.paid", invoice, now),
        ]
    }

    /// An invoice; `expand[]=payments.data.payment.payment_intent` inlines the intents, which
    /// carry the last attempt's error.
    pub(super) fn show_invoice(&self, id: &str, query: &Value) -> ApiResult {
        let mut invoice = found(&self.invoices, "invoice", id)?.0;
        if expands(query, "payments.data.payment.payment_intent") {
            for payment in invoice["payments"]["data"].as_array_mut().into_iter().flatten() {
                let intent = payment["payment"]["payment_intent"]
                    .as_str()
                    .and_then(|intent| self.payment_intents.get(intent))
                    .cloned();
                if let Some(intent) = intent {
                    payment["payment"]["payment_intent"] = intent;
                }
            }
        }
        Ok((invoice, Vec::new()))
    }

    /// Filters `customer`, `subscription` and `status`, newest first.
    pub(super) fn list_invoices(&self, query: &Value) -> ApiResult {
        let matching: Vec<&Value> = self
            .invoices
            .values()
            .filter(|i| query["customer"].is_null() || i["customer"] == query["customer"])
            .filter(|i| query["subscription"].is_null() || *subscription_of(i) == query["subscription"])
            .filter(|i| query["status"].is_null() || i["status"] == query["status"])
            .collect();
        let list = page(matching, query, "/v1/invoices", &self.invoices, "invoice")?;
        Ok((list, Vec::new()))
    }

    /// `void` or `uncollectible`. Stripe voids a finalized invoice that is not paid (open or
    /// uncollectible) and marks only an open one uncollectible
    /// (https://docs.stripe.com/invoicing/overview#invoice-statuses); a paid one is a 400.
    pub(super) fn close_invoice(&mut self, id: &str, to: &str) -> ApiResult {
        let mut invoice = self.invoices.get(id).cloned().ok_or_else(|| not_found("invoice", id))?;
        let status = invoice["status"].as_str().unwrap_or_default().to_owned();
        let (allowed, event_type, stamp) = match to {
            "void" => (
                matches!(status.as_str(), "open" | "uncollectible"),
                "invoice.voided",
                "voided_at",
            ),
            _ => (
                status == "open",
                "invoice.marked_uncollectible",
                "marked_uncollectible_at",
            ),
        };
        if !allowed {
            let verb = if to == "void" { "void" } else { "mark uncollectible" };
            return Err(ApiError::invalid(format!(
                "You can only {verb} an open invoice; invoice {id} is {status}."
            )));
        }
        let now = self.tick();
        invoice["status"] = json!(to);
        invoice["next_payment_attempt"] = Value::Null;
        invoice["status_transitions"][stamp] = json!(now);
        if to == "void" {
            self.cancel_intent(&invoice, now);
        }
        self.invoices.insert(id.to_owned(), invoice.clone());
        let event = self.event(event_type, &invoice, now);
        Ok((invoice, vec![event]))
    }

    /// Voiding an invoice cancels its unpaid payment intent.
    fn cancel_intent(&mut self, invoice: &Value, now: i64) {
        let Some(id) = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str() else {
            return;
        };
        if let Some(intent) = self.payment_intents.get_mut(id) {
            intent["status"] = json!("canceled");
            intent["canceled_at"] = json!(now);
            intent["cancellation_reason"] = json!("void_invoice");
        }
    }

    /// A refund of a succeeded payment intent's charge (or of a charge), in full unless
    /// `amount` says less; never more than remains unrefunded.
    pub(super) fn create_refund(&mut self, params: &Value) -> ApiResult {
        let charge_id = self.refundable_charge(params)?;
        let mut charge = self
            .charges
            .get(&charge_id)
            .cloned()
            .ok_or_else(|| not_found("charge", &charge_id))?;
        let total = charge["amount"].as_i64().unwrap_or(0);
        let remaining = total - charge["amount_refunded"].as_i64().unwrap_or(0);
        if remaining <= 0 {
            return Err(
                ApiError::invalid(format!("Charge {charge_id} has already been refunded."))
                    .with_code("charge_already_refunded"),
            );
        }
        let amount = integer(&params["amount"], "amount")?.unwrap_or(remaining);
        if amount <= 0 {
            return Err(ApiError::invalid("Refund amount must be a positive integer.").with_param("amount"));
        }
        if amount > remaining {
            return Err(ApiError::invalid(format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                dollars(amount),
                dollars(remaining)
            ))
            .with_param("amount"));
        }
        let now = self.tick();
        let mut refund = fixture("refund");
        let id = self.id("re");
        refund["id"] = json!(id);
        refund["amount"] = json!(amount);
        refund["charge"] = json!(charge_id);
        refund["payment_intent"] = charge["payment_intent"].clone();
        refund["customer"] = charge["customer"].clone();
        refund["currency"] = json!("usd");
        refund["created"] = json!(now);
        refund["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        refund["reason"] = params.get("reason").cloned().unwrap_or(Value::Null);
        refund["status"] = json!("succeeded");
        self.refunds.insert(id, refund.clone());
        let refunded = total - remaining + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == total);
        if let Some(list) = charge["refunds"]["data"].as_array_mut() {
            list.insert(0, refund.clone());
        }
        self.charges.insert(charge_id, charge.clone());
        let events = vec![
            self.event("charge.refunded", &charge, now),
            self.event("refund.created", &refund, now),
        ];
        Ok((refund, events))
    }

    /// The charge a refund request names, directly or through its payment intent.
    fn refundable_charge(&self, params: &Value) -> Result<String, ApiError> {
        if let Some(id) = params["payment_intent"].as_str() {
            let intent = self
                .payment_intents
                .get(id)
                .ok_or_else(|| not_found("payment_intent", id).with_param("payment_intent"))?;
            return text(&intent["latest_charge"])
                .filter(|_| intent["status"] == "succeeded")
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "This PaymentIntent ({id}) does not have a successful charge to refund."
                    ))
                    .with_param("payment_intent")
                });
        }
        match params["charge"].as_str() {
            Some(id) if self.charges.contains_key(id) => Ok(id.to_owned()),
            Some(id) => Err(not_found("charge", id).with_param("charge")),
            None => Err(ApiError::invalid(
                "One of the following params should be provided for this request: payment_intent or charge.",
            )
            .with_code("parameter_missing")),
        }
    }

    /// Filters `payment_intent` and `charge`, newest first.
    pub(super) fn list_refunds(&self, query: &Value) -> ApiResult {
        let matching: Vec<&Value> = self
            .refunds
            .values()
            .filter(|r| query["payment_intent"].is_null() || r["payment_intent"] == query["payment_intent"])
            .filter(|r| query["charge"].is_null() || r["charge"] == query["charge"])
            .collect();
        let list = page(matching, query, "/v1/refunds", &self.refunds, "refund")?;
        Ok((list, Vec::new()))
    }

    /// A renewal attempt fails. An attempt that needs authentication (SCA) is still a failed
    /// attempt: real Stripe emits `invoice.payment_failed` and, for the same attempt,
    /// `invoice.payment_action_required` (the events of
    /// https://docs.stripe.com/billing/subscriptions/webhooks). After the last attempt of the
    /// retry schedule `next_payment_attempt` is null.
    pub(super) fn fail_payment(&mut self, id: &str, failure: &Failure) -> ControlResult {
        let mut sub = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription {id}"))?;
        let now = self.tick();
        let open = self
            .invoices
            .values()
            .find(|i| *subscription_of(i) == *id && i["status"] == "open")
            .cloned();
        let mut invoice = match open {
            Some(invoice) => invoice,
            None => {
                // The renewal attempt bills the period's metered usage.
                self.bill_usage(&sub, now);
                self.new_invoice(&sub, "open", now)
            }
        };
        let attempt = invoice["attempt_count"].as_u64().unwrap_or(0) + 1;
        invoice["attempt_count"] = json!(attempt);
        invoice["attempted"] = json!(true);
        invoice["next_payment_attempt"] = if failure.last {
            Value::Null
        } else {
            json!(now + 3 * 86_400)
        };
        self.record_failure(&mut invoice, failure, now);
        self.invoices
            .insert(text(&invoice["id"]).unwrap_or_default(), invoice.clone());
        sub["status"] = json!("past_due");
        sub["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id.to_owned(), sub.clone());
        let mut events = vec![self.event("invoice.payment_failed", &invoice, now)];
        if failure.action_required {
            events.push(self.event("invoice.payment_action_required", &invoice, now));
        }
        events.push(self.event("customer.subscription.updated", &sub, now));
        Ok((json!({"invoice": invoice["id"], "attempt": attempt}), events))
    }

    /// The attempt's error lands on the invoice's payment intent, as with Stripe.
    fn record_failure(&mut self, invoice: &mut Value, failure: &Failure, now: i64) {
        let intent_id = self.invoice_intent(invoice, now);
        let (error, status, next_action) = if failure.action_required {
            (
                json!({"type": "card_error", "code": "authentication_required", "decline_code": "authentication_required",
                    "message": "Your card was declined. This transaction requires authentication."}),
                "requires_action",
                json!({"type": "use_stripe_sdk"}),
            )
        } else {
            (
                json!({"type": "card_error", "code": "card_declined", "decline_code": failure.decline,
                    "message": "Your card was declined."}),
                "requires_payment_method",
                Value::Null,
            )
        };
        if let Some(intent) = self.payment_intents.get_mut(&intent_id) {
            intent["status"] = json!(status);
            intent["last_payment_error"] = error;
            intent["next_action"] = next_action;
        }
    }

    /// The customer pays an open (or uncollectible) invoice; a paid or void one cannot be paid.
    pub(super) fn pay(&mut self, id: &str) -> ControlResult {
        let mut invoice = self
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no invoice {id}"))?;
        if matches!(invoice["status"].as_str(), Some("paid" | "void")) {
            return Err(format!("invoice {id} is {} and cannot be paid", invoice["status"]));
        }
        let now = self.tick();
        self.record_payment(&mut invoice, now);
        self.invoices.insert(id.to_owned(), invoice.clone());
        let mut events = self.paid_events(&invoice, now);
        if let Some(sub_id) = text(subscription_of(&invoice)) {
            if let Some(mut sub) = self.subscriptions.get(&sub_id).cloned() {
                sub["status"] = json!("active");
                self.subscriptions.insert(sub_id, sub.clone());
                events.push(self.event("customer.subscription.updated", &sub, now));
            }
        }
        Ok((json!({"invoice": id}), events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_show_cents() {
        assert_eq!(dollars(2000), "$20.00");
        assert_eq!(dollars(505), "$5.05");
    }

    #[test]
    fn public_hides_bookkeeping() {
        assert_eq!(
            super::super::public(&json!({"id": "x", "_simulated_lines": []})),
            json!({"id": "x"})
        );
    }
}
