//! One-time purchases and discounts: a `mode=payment` session paid at once or later (a
//! delayed method), a dispute of its charge, and the promotion codes and coupons a session
//! may name.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, ControlResult, DEFAULT_UNIT_AMOUNT, Sim, fixture, found, not_found, page, text};

impl Sim {
    /// `/sim/promotion_codes?code=LAUNCH20&coupon=SPRING&active=true`: what the dashboard
    /// creates; the coupon is created with it when it does not exist yet.
    pub(super) fn create_promotion_code(&mut self, query: &Value) -> ControlResult {
        let code = text(&query["code"]).ok_or("code is required")?;
        let coupon = text(&query["coupon"]).unwrap_or_else(|| format!("{code}_coupon"));
        let active = query["active"] != "false";
        let now = self.tick();
        let mut promotion = fixture("promotion_code");
        let id = self.id("promo");
        promotion["id"] = json!(id);
        promotion["code"] = json!(code);
        promotion["active"] = json!(active);
        promotion["created"] = json!(now);
        promotion["expires_at"] = Value::Null;
        // Since 2025-03-31 the coupon is named under `promotion` (stripe/_promotion_code.py).
        promotion["promotion"] = json!({"type": "coupon", "coupon": coupon});
        self.coupons.insert(coupon.clone());
        self.promotion_codes.insert(id.clone(), promotion.clone());
        Ok((promotion, Vec::new()))
    }

    /// `/sim/coupons?id=SPRING`.
    pub(super) fn create_coupon(&mut self, query: &Value) -> ControlResult {
        let id = text(&query["id"]).ok_or("id is required")?;
        self.coupons.insert(id.clone());
        Ok((json!({"id": id, "object": "coupon", "valid": true}), Vec::new()))
    }

    /// Filters `code` (case-insensitive, as Stripe matches codes) and `active`, newest first.
    pub(super) fn list_promotion_codes(&self, query: &Value) -> ApiResult {
        let code = query["code"].as_str();
        let matching: Vec<&Value> = self
            .promotion_codes
            .values()
            .filter(|p| code.is_none_or(|code| p["code"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(code))))
            .filter(|p| match query["active"].as_str() {
                None => true,
                Some(wanted) => p["active"] == (wanted == "true"),
            })
            .collect();
        let list = page(
            matching,
            query,
            "/v1/promotion_codes",
            &self.promotion_codes,
            "promotion_code",
        )?;
        Ok((list, Vec::new()))
    }

    pub(super) fn promotion_code(&self, id: &str) -> ApiResult {
        found(&self.promotion_codes, "promotion_code", id)
    }

    /// A session's `discounts[0]` must name a coupon or an active promotion code that exists,
    /// else Stripe refuses the session.
    pub(super) fn check_discounts(&self, params: &Value) -> Result<(), ApiError> {
        for discount in params["discounts"].as_array().into_iter().flatten() {
            if let Some(coupon) = discount["coupon"].as_str() {
                if !self.coupons.contains(coupon) {
                    return Err(not_found("coupon", coupon).with_param("discounts[0][coupon]"));
                }
            }
            if let Some(id) = discount["promotion_code"].as_str() {
                match self.promotion_codes.get(id) {
                    Some(promotion) if promotion["active"] == true => {}
                    Some(_) => {
                        return Err(ApiError::invalid(format!("The promotion code {id} is inactive."))
                            .with_param("discounts[0][promotion_code]"));
                    }
                    None => {
                        return Err(not_found("promotion_code", id).with_param("discounts[0][promotion_code]"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A payment-mode session is paid: its payment intent and charge, and
    /// `checkout.session.completed`. With a delayed method (`delayed`) the session completes
    /// unpaid and the payment is still processing; `settle_async_payment` ends it.
    pub(super) fn complete_payment(&mut self, mut session: Value, delayed: bool, now: i64) -> ControlResult {
        let id = text(&session["id"]).unwrap_or_default();
        let amount: i64 = super::checkout::lines(&session)
            .iter()
            .map(|(_, quantity)| DEFAULT_UNIT_AMOUNT * *quantity as i64)
            .sum();
        let mut intent = self.new_intent(&session["customer"], amount, now);
        let intent_id = text(&intent["id"]).unwrap_or_default();
        intent["description"] = Value::Null;
        intent["metadata"] = session["_simulated_payment_intent_data"]["metadata"].clone();
        if intent["metadata"].is_null() {
            intent["metadata"] = json!({});
        }
        intent["status"] = json!("processing");
        self.payment_intents.insert(intent_id.clone(), intent);
        session["status"] = json!("complete");
        session["payment_intent"] = json!(intent_id);
        session["url"] = Value::Null;
        session["payment_status"] = json!("unpaid");
        if !delayed {
            self.settle_intent(&intent_id, &session["customer"], amount, now);
            session["payment_status"] = json!("paid");
        }
        self.sessions.insert(id, session.clone());
        let event = self.event("checkout.session.completed", &session, now);
        Ok((json!({"payment_intent": intent_id}), vec![event]))
    }

    fn settle_intent(&mut self, intent_id: &str, customer: &Value, amount: i64, now: i64) {
        let charge = self.new_charge(intent_id, customer, amount, now);
        if let Some(intent) = self.payment_intents.get_mut(intent_id) {
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            intent["latest_charge"] = json!(charge);
        }
    }

    /// `/sim/checkout/{id}/async_payment?outcome=succeeded|failed`: a delayed payment (a bank
    /// debit) of a completed, unpaid session settles, days later.
    pub(super) fn settle_async_payment(&mut self, id: &str, succeeded: bool) -> ControlResult {
        let mut session = self
            .sessions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no checkout session {id}"))?;
        if session["status"] != "complete" || session["payment_status"] != "unpaid" {
            return Err(format!("checkout session {id} has no payment processing"));
        }
        let intent_id = text(&session["payment_intent"]).ok_or_else(|| format!("session {id} has no payment"))?;
        let amount = self
            .payment_intents
            .get(&intent_id)
            .and_then(|intent| intent["amount"].as_i64())
            .unwrap_or(0);
        let now = self.tick();
        let event_type = if succeeded {
            self.settle_intent(&intent_id, &session["customer"], amount, now);
            session["payment_status"] = json!("paid");
            "checkout.session.async_payment_succeeded"
        } else {
            if let Some(intent) = self.payment_intents.get_mut(&intent_id) {
                intent["status"] = json!("requires_payment_method");
            }
            "checkout.session.async_payment_failed"
        };
        self.sessions.insert(id.to_owned(), session.clone());
        let event = self.event(event_type, &session, now);
        Ok((json!({"payment_intent": intent_id}), vec![event]))
    }

    /// `/sim/charges/{id}/dispute?status=lost|won`: the cardholder disputes the charge and the
    /// bank decides; Stripe sends `charge.dispute.created` then `charge.dispute.closed`.
    pub(super) fn dispute(&mut self, charge_id: &str, outcome: &str) -> ControlResult {
        if !matches!(outcome, "lost" | "won") {
            return Err(format!("status must be lost or won, not {outcome:?}"));
        }
        let mut charge = self
            .charges
            .get(charge_id)
            .cloned()
            .ok_or_else(|| format!("no charge {charge_id}"))?;
        if charge["disputed"] == true {
            return Err(format!("charge {charge_id} is already disputed"));
        }
        let now = self.tick();
        let mut dispute = fixture("dispute");
        dispute["id"] = json!(self.id("dp"));
        dispute["amount"] = charge["amount"].clone();
        dispute["charge"] = json!(charge_id);
        dispute["payment_intent"] = charge["payment_intent"].clone();
        dispute["currency"] = json!("usd");
        dispute["created"] = json!(now);
        dispute["livemode"] = json!(false);
        dispute["reason"] = json!("fraudulent");
        dispute["is_charge_refundable"] = json!(false);
        dispute["status"] = json!("needs_response");
        charge["disputed"] = json!(true);
        self.charges.insert(charge_id.to_owned(), charge);
        let created = self.event("charge.dispute.created", &dispute, now);
        let closed_at = self.tick();
        dispute["status"] = json!(outcome);
        self.disputes
            .insert(text(&dispute["id"]).unwrap_or_default(), dispute.clone());
        let closed = self.event("charge.dispute.closed", &dispute, closed_at);
        Ok((
            json!({"dispute": dispute["id"], "status": outcome}),
            vec![created, closed],
        ))
    }
}
