//! Subscription schedules: made from a subscription, their phases set, released; a phase that
//! starts at a period's end changes the subscription's items then
//! (https://docs.stripe.com/billing/subscriptions/subscription-schedules).

use serde_json::{Value, json};

use super::{ApiError, ApiResult, Sim, fixture, found, integer, not_found, public, text};

/// A phase of an update's `phases[]`, as the schedule shows it.
fn read_phase(at: usize, phase: &Value, currency: &Value) -> Result<Value, ApiError> {
    let param = |field: &str| format!("phases[{at}][{field}]");
    let items = phase["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err(
            ApiError::invalid(format!("Missing required param: {}.", param("items")))
                .with_code("parameter_missing")
                .with_param(param("items")),
        );
    }
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let price = text(&item["price"]).ok_or_else(|| {
                ApiError::invalid("Each phase item needs a price.")
                    .with_param(format!("phases[{at}][items][{index}][price]"))
            })?;
            let quantity = integer(&item["quantity"], &format!("phases[{at}][items][{index}][quantity]"))?.unwrap_or(1);
            Ok(
                json!({"price": price, "quantity": quantity, "discounts": [], "metadata": {}, "tax_rates": [],
                "billing_thresholds": null, "plan": price}),
            )
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut shown = fixture("subscription_schedule")["phases"][0].clone();
    shown["items"] = Value::Array(items);
    shown["currency"] = currency.clone();
    shown["start_date"] = json!(integer(&phase["start_date"], &param("start_date"))?);
    shown["end_date"] = json!(integer(&phase["end_date"], &param("end_date"))?);
    shown["metadata"] = phase.get("metadata").cloned().unwrap_or_else(|| json!({}));
    shown["discounts"] = phase["discounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|discount| {
            json!({"coupon": discount.get("coupon"), "discount": discount.get("discount"),
                "promotion_code": discount.get("promotion_code")})
        })
        .collect();
    shown["proration_behavior"] = phase
        .get("proration_behavior")
        .cloned()
        .unwrap_or(json!("create_prorations"));
    Ok(shown)
}

impl Sim {
    /// `from_subscription`: a schedule whose one phase is the subscription as it is, to the end
    /// of its period. A subscription has at most one schedule.
    pub(super) fn create_schedule(&mut self, params: &Value) -> ApiResult {
        let sub_id = text(&params["from_subscription"]).ok_or_else(|| {
            ApiError::invalid("The simulator makes schedules from_subscription only.").with_param("from_subscription")
        })?;
        let sub = found(&self.subscriptions, "subscription", &sub_id)?.0;
        if !sub["schedule"].is_null() {
            return Err(ApiError::invalid(format!(
                "You cannot migrate a subscription that is already attached to a schedule: `{}`.",
                sub["schedule"].as_str().unwrap_or_default()
            ))
            .with_param("from_subscription"));
        }
        let now = self.tick();
        let first = &sub["items"]["data"][0];
        let (start, end) = (
            first["current_period_start"].clone(),
            first["current_period_end"].clone(),
        );
        let items: Vec<Value> = sub["items"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| json!({"price": item["price"]["id"], "quantity": item["quantity"]}))
            .collect();
        let phase = read_phase(
            0,
            &json!({"items": items, "start_date": start.to_string(), "end_date": end.to_string()}),
            &json!("usd"),
        )
        .map_err(|error| ApiError::invalid(error.message))?;
        let mut schedule = fixture("subscription_schedule");
        let id = self.id("sub_sched");
        schedule["id"] = json!(id);
        schedule["created"] = json!(now);
        schedule["customer"] = sub["customer"].clone();
        schedule["subscription"] = json!(sub_id);
        schedule["status"] = json!("active");
        schedule["end_behavior"] = json!("release");
        schedule["canceled_at"] = Value::Null;
        schedule["completed_at"] = Value::Null;
        schedule["released_at"] = Value::Null;
        schedule["released_subscription"] = Value::Null;
        schedule["current_phase"] = json!({"start_date": start, "end_date": end});
        schedule["phases"] = json!([phase]);
        schedule["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        self.schedules.insert(id.clone(), schedule.clone());
        let mut sub = sub;
        sub["schedule"] = json!(id);
        self.subscriptions.insert(sub_id, sub.clone());
        let events = vec![
            self.event("subscription_schedule.created", &schedule, now),
            self.event("customer.subscription.updated", &sub, now),
        ];
        Ok((public(&schedule), events))
    }

    /// New `phases` (and `end_behavior`): the current phase must keep its start.
    pub(super) fn update_schedule(&mut self, id: &str, params: &Value) -> ApiResult {
        let mut schedule = found(&self.schedules, "subscription_schedule", id)?.0;
        if schedule["status"] != "active" && schedule["status"] != "not_started" {
            return Err(ApiError::invalid(format!(
                "You cannot update a subscription schedule that is {}.",
                schedule["status"].as_str().unwrap_or_default()
            )));
        }
        let now = self.tick();
        if let Some(phases) = params["phases"].as_array() {
            let currency = schedule["phases"][0]["currency"].clone();
            let phases = phases
                .iter()
                .enumerate()
                .map(|(at, phase)| read_phase(at, phase, &currency))
                .collect::<Result<Vec<_>, ApiError>>()?;
            if phases.first().map(|phase| &phase["start_date"]) != Some(&schedule["current_phase"]["start_date"]) {
                return Err(
                    ApiError::invalid("You can not modify the start date of the current phase.")
                        .with_param("phases[0][start_date]"),
                );
            }
            let mut phases = phases;
            // A phase without an end runs to the next one's start; each next one starts where
            // the previous one ends.
            for at in 1..phases.len() {
                let previous_end = phases[at - 1]["end_date"].clone();
                if previous_end.is_null() {
                    return Err(ApiError::invalid("Every phase but the last needs an end_date.")
                        .with_param(format!("phases[{}][end_date]", at - 1)));
                }
                phases[at]["start_date"] = previous_end;
            }
            // The last phase without an end lasts one period (Stripe's default duration: one
            // interval of its prices).
            if let Some(last) = phases.last_mut() {
                if last["end_date"].is_null() {
                    last["end_date"] = json!(last["start_date"].as_i64().unwrap_or_default() + super::PERIOD_SECS);
                }
            }
            schedule["current_phase"]["end_date"] = phases[0]["end_date"].clone();
            schedule["phases"] = Value::Array(phases);
        }
        if let Some(behavior) = params.get("end_behavior") {
            schedule["end_behavior"] = behavior.clone();
        }
        self.schedules.insert(id.to_owned(), schedule.clone());
        let event = self.event("subscription_schedule.updated", &schedule, now);
        Ok((public(&schedule), vec![event]))
    }

    /// The subscription goes on as it is, without the schedule.
    pub(super) fn release_schedule(&mut self, id: &str) -> ApiResult {
        let mut schedule = found(&self.schedules, "subscription_schedule", id)?.0;
        if schedule["status"] != "active" && schedule["status"] != "not_started" {
            return Err(ApiError::invalid(format!(
                "You cannot release a subscription schedule that is currently in the `{}` status.",
                schedule["status"].as_str().unwrap_or_default()
            )));
        }
        let now = self.tick();
        let events = self.released(&mut schedule, now);
        Ok((public(&schedule), events))
    }

    fn released(&mut self, schedule: &mut Value, now: i64) -> Vec<Value> {
        let sub_id = text(&schedule["subscription"]).unwrap_or_default();
        let mut events = vec![self.mark_released(schedule, now)];
        if let Some(mut sub) = self.subscriptions.get(&sub_id).cloned() {
            sub["schedule"] = Value::Null;
            self.subscriptions.insert(sub_id, sub.clone());
            events.push(self.event("customer.subscription.updated", &sub, now));
        }
        events
    }

    /// The schedule lets its subscription go: stored released, and its event.
    fn mark_released(&mut self, schedule: &mut Value, now: i64) -> Value {
        let sub_id = text(&schedule["subscription"]).unwrap_or_default();
        schedule["status"] = json!("released");
        schedule["released_at"] = json!(now);
        schedule["released_subscription"] = json!(sub_id);
        schedule["subscription"] = Value::Null;
        schedule["current_phase"] = Value::Null;
        self.schedules
            .insert(text(&schedule["id"]).unwrap_or_default(), schedule.clone());
        self.event("subscription_schedule.released", schedule, now)
    }

    /// At a period's end: the schedule's phase that starts then sets the subscription's items
    /// and metadata; when its last phase ends instead, a `release` schedule lets the
    /// subscription go on as it is (Stripe keeps the schedule through its last phase).
    /// Returns the events, with `sub` changed in place.
    pub(super) fn next_phase(&mut self, sub: &mut Value, period_end: i64, now: i64) -> Vec<Value> {
        let Some(id) = text(&sub["schedule"]) else {
            return Vec::new();
        };
        let Some(mut schedule) = self.schedules.get(&id).cloned() else {
            return Vec::new();
        };
        let phases = schedule["phases"].as_array().cloned().unwrap_or_default();
        let sub_id = text(&sub["id"]).unwrap_or_default();
        let Some(phase) = phases
            .iter()
            .find(|phase| phase["start_date"].as_i64() == Some(period_end))
        else {
            // The simulator's periods run from each renewal, so the last phase is known by its
            // place, not by comparing its dates with the period's.
            let current = &schedule["current_phase"]["start_date"];
            let in_last = phases.last().is_some_and(|last| last["start_date"] == *current);
            if in_last && schedule["end_behavior"] == "release" {
                // The renewal stores `sub` with its own update event.
                sub["schedule"] = Value::Null;
                return vec![self.mark_released(&mut schedule, now)];
            }
            return Vec::new();
        };
        let end = phase["end_date"].as_i64().unwrap_or(now + super::PERIOD_SECS);
        let items: Vec<Value> = phase["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let price = item["price"].as_str().unwrap_or_default().to_owned();
                let quantity = item["quantity"].as_u64().unwrap_or(1);
                self.new_item(&sub_id, &price, quantity, now, end.max(now + 1))
            })
            .collect();
        sub["items"]["data"] = Value::Array(items);
        if let Some(metadata) = phase["metadata"].as_object() {
            for (key, value) in metadata {
                sub["metadata"][key] = value.clone();
            }
        }
        schedule["current_phase"] = json!({"start_date": phase["start_date"], "end_date": phase["end_date"]});
        self.schedules.insert(id, schedule.clone());
        vec![self.event("subscription_schedule.updated", &schedule, now)]
    }

    pub(super) fn schedule(&self, id: &str) -> ApiResult {
        self.schedules
            .get(id)
            .map(|schedule| (public(schedule), Vec::new()))
            .ok_or_else(|| not_found("subscription_schedule", id))
    }
}
