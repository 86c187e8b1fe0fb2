//! Prices made through `POST /v1/prices` (and the `/sim/prices` control): licensed or metered,
//! per unit or in tiers, and what a quantity of one costs.
//!
//! As Stripe does (https://docs.stripe.com/products-prices/pricing-models,
//! https://docs.stripe.com/billing/subscriptions/decimal-amounts): `unit_amount_decimal` is in
//! the minor unit with at most 12 decimal places and `unit_amount` is null unless it is a whole
//! number; a metered price is backed by a meter (`recurring[meter]`, required since Basil); a
//! tiered price has `tiers` (shown only when expanded) whose last `up_to` is `inf`; the amount
//! of an invoice line is rounded to the minor unit, half up, once per line.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, ControlResult, Sim, expands, fixture, integer, not_found, text};

/// Decimal amounts in units of 10⁻¹² of the minor unit (Stripe's 12 decimal places).
const SCALE: i128 = 1_000_000_000_000;
/// Quantities in units of 10⁻⁶ (a meter's aggregated value may be fractional).
const QUANTITY_SCALE: i128 = 1_000_000;

/// A non-negative decimal string of the minor unit (`"0.5"`, `"2000"`), scaled by 10¹².
pub(super) fn decimal(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) || fraction.len() > 12 {
        return None;
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<12}").parse().ok()?
    };
    whole.checked_mul(SCALE)?.checked_add(fraction)
}

/// A scaled decimal as Stripe shows it: `"0.5"`, `"2000"`.
fn decimal_text(scaled: i128) -> String {
    let (whole, fraction) = (scaled / SCALE, scaled % SCALE);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:012}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// `unit_amount` or `unit_amount_decimal` (at most one) under `at` (`""` or `tiers[0]`), scaled.
fn unit_amount(params: &Value, at: &str) -> Result<Option<i128>, ApiError> {
    let name = |field: &str| {
        if at.is_empty() {
            field.to_owned()
        } else {
            format!("{at}[{field}]")
        }
    };
    let whole = integer(&params["unit_amount"], &name("unit_amount"))?;
    let exact = params["unit_amount_decimal"].as_str();
    match (whole, exact) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!(
            "You may only specify one of these parameters: {}, {}.",
            name("unit_amount"),
            name("unit_amount_decimal")
        ))),
        (Some(amount), None) if amount < 0 => {
            Err(ApiError::invalid("The amount must be a positive integer or 0.").with_param(name("unit_amount")))
        }
        (Some(amount), None) => Ok(Some(i128::from(amount) * SCALE)),
        (None, Some(exact)) => decimal(exact).map(Some).ok_or_else(|| {
            ApiError::invalid(format!("Invalid decimal: {exact}")).with_param(name("unit_amount_decimal"))
        }),
        (None, None) => Ok(None),
    }
}

/// One tier as stored: `up_to` (None: `inf`), per-unit and flat amounts, scaled.
struct Tier {
    up_to: Option<i128>,
    unit: i128,
    flat: i128,
}

fn read_tiers(params: &Value) -> Result<Vec<Value>, ApiError> {
    let entries = params["tiers"].as_array().cloned().unwrap_or_default();
    let mut tiers = Vec::new();
    let mut previous: Option<i64> = None;
    for (at, entry) in entries.iter().enumerate() {
        let param = format!("tiers[{at}]");
        let up_to = match entry["up_to"].as_str() {
            Some("inf") => None,
            _ => {
                let up_to = integer(&entry["up_to"], &format!("{param}[up_to]"))?.ok_or_else(|| {
                    ApiError::invalid(format!("Missing required param: {param}[up_to]."))
                        .with_code("parameter_missing")
                        .with_param(format!("{param}[up_to]"))
                })?;
                if up_to < 1 || previous.is_some_and(|before| up_to <= before) {
                    return Err(ApiError::invalid("Tiers must be in increasing order of `up_to`.")
                        .with_param(format!("{param}[up_to]")));
                }
                previous = Some(up_to);
                Some(up_to)
            }
        };
        if up_to.is_none() && at + 1 != entries.len() {
            return Err(ApiError::invalid("Only the last tier may have `up_to` set to `inf`.")
                .with_param(format!("{param}[up_to]")));
        }
        let unit = unit_amount(entry, &param)?;
        let flat_whole = integer(&entry["flat_amount"], &format!("{param}[flat_amount]"))?;
        let flat = match (flat_whole, entry["flat_amount_decimal"].as_str()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "You may only specify one of these parameters: {param}[flat_amount], {param}[flat_amount_decimal]."
                )));
            }
            (Some(amount), None) => Some(i128::from(amount.max(0)) * SCALE),
            (None, Some(exact)) => Some(decimal(exact).ok_or_else(|| {
                ApiError::invalid(format!("Invalid decimal: {exact}"))
                    .with_param(format!("{param}[flat_amount_decimal]"))
            })?),
            (None, None) => None,
        };
        tiers.push(tier_object(up_to, unit, flat));
    }
    if entries.is_empty() {
        return Err(ApiError::invalid("Tiered prices need `tiers`.").with_param("tiers"));
    }
    if tiers.last().is_some_and(|last| !last["up_to"].is_null()) {
        return Err(ApiError::invalid("The last tier must have `up_to` set to `inf`.")
            .with_param(format!("tiers[{}][up_to]", entries.len() - 1)));
    }
    Ok(tiers)
}

/// A tier as `stripe.Price.Tier` shows it.
fn tier_object(up_to: Option<i64>, unit: Option<i128>, flat: Option<i128>) -> Value {
    let whole = |amount: Option<i128>| {
        amount
            .filter(|a| a % SCALE == 0)
            .and_then(|a| i64::try_from(a / SCALE).ok())
    };
    json!({
        "flat_amount": whole(flat),
        "flat_amount_decimal": flat.map(decimal_text),
        "unit_amount": whole(unit),
        "unit_amount_decimal": unit.map(decimal_text),
        "up_to": up_to,
    })
}

fn stored_tiers(price: &Value) -> Vec<Tier> {
    let scaled = |value: &Value| value.as_str().and_then(decimal).unwrap_or(0);
    price["_simulated_tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tier| Tier {
            up_to: tier["up_to"].as_i64().map(|up_to| i128::from(up_to) * QUANTITY_SCALE),
            unit: scaled(&tier["unit_amount_decimal"]),
            flat: scaled(&tier["flat_amount_decimal"]),
        })
        .collect()
}

/// Whether a price (as shown) is metered.
pub(super) fn metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// Rounds an amount in units of 10⁻¹⁸ of the minor unit to the minor unit, half up.
fn round(exact: i128) -> i64 {
    let unit = SCALE * QUANTITY_SCALE;
    let rounded = exact.saturating_add(unit / 2).div_euclid(unit);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

impl Sim {
    /// `POST /v1/prices`.
    pub(super) fn create_price(&mut self, params: &Value) -> ApiResult {
        let currency = text(&params["currency"])
            .ok_or_else(|| missing("currency"))?
            .to_ascii_lowercase();
        let product = match (text(&params["product"]), params["product_data"]["name"].as_str()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "You may only specify one of these parameters: product, product_data.",
                ));
            }
            (Some(product), None) => product,
            (None, Some(_)) => self.id("prod"),
            (None, None) => return Err(missing("product")),
        };
        let scheme = params["billing_scheme"].as_str().unwrap_or("per_unit").to_owned();
        let unit = unit_amount(params, "")?;
        let tiers = if scheme == "tiered" {
            if unit.is_some() {
                return Err(
                    ApiError::invalid("A tiered price takes its amounts from `tiers`, not `unit_amount`.")
                        .with_param("unit_amount"),
                );
            }
            if params["tiers_mode"].is_null() {
                return Err(missing("tiers_mode"));
            }
            Some(read_tiers(params)?)
        } else {
            if params.get("tiers").is_some() || params.get("tiers_mode").is_some() {
                return Err(
                    ApiError::invalid("`tiers` and `tiers_mode` require `billing_scheme=tiered`.").with_param("tiers"),
                );
            }
            if unit.is_none() && params["custom_unit_amount"].is_null() {
                return Err(missing("unit_amount"));
            }
            None
        };
        let recurring = match params.get("recurring") {
            None => Value::Null,
            Some(recurring) => self.recurring(recurring)?,
        };
        let lookup_key = text(&params["lookup_key"]);
        if let Some(key) = &lookup_key {
            let holder = self
                .prices
                .iter()
                .find(|(_, price)| price["lookup_key"] == key.as_str())
                .map(|(id, _)| id.clone());
            if let Some(holder) = holder {
                if params["transfer_lookup_key"] != "true" {
                    return Err(
                        ApiError::invalid(format!("A price (`{holder}`) already uses that lookup key."))
                            .with_param("lookup_key"),
                    );
                }
                if let Some(price) = self.prices.get_mut(&holder) {
                    price["lookup_key"] = Value::Null;
                }
            }
        }
        let id = self.id("price");
        let mut price = fixture("price");
        price["id"] = json!(id);
        price["active"] = json!(params["active"] != "false");
        price["billing_scheme"] = json!(scheme);
        price["created"] = json!(self.now());
        price["currency"] = json!(currency);
        price["custom_unit_amount"] = Value::Null;
        price["livemode"] = json!(false);
        price["lookup_key"] = json!(lookup_key);
        price["metadata"] = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
        price["nickname"] = params["nickname"].clone();
        price["product"] = json!(product);
        price["type"] = json!(if recurring.is_null() { "one_time" } else { "recurring" });
        price["recurring"] = recurring;
        price["tax_behavior"] = json!(params["tax_behavior"].as_str().unwrap_or("unspecified"));
        price["tiers_mode"] = params["tiers_mode"].clone();
        price["transform_quantity"] = Value::Null;
        price["unit_amount"] = json!(
            unit.filter(|u| u % SCALE == 0)
                .and_then(|u| i64::try_from(u / SCALE).ok())
        );
        price["unit_amount_decimal"] = json!(unit.map(decimal_text));
        if let Some(tiers) = tiers {
            price["_simulated_tiers"] = Value::Array(tiers);
        }
        self.prices.insert(id.clone(), price);
        Ok((self.show_price(&id, &json!({"expand": ["tiers"]})), Vec::new()))
    }

    /// `recurring[...]`: a metered price needs a meter that exists (Basil, 2025-03-31).
    fn recurring(&self, recurring: &Value) -> Result<Value, ApiError> {
        let usage_type = recurring["usage_type"].as_str().unwrap_or("licensed");
        let meter = text(&recurring["meter"]);
        match (usage_type, &meter) {
            ("metered", None) => {
                return Err(
                    ApiError::invalid("A metered price must be backed by a meter: set `recurring[meter]`.")
                        .with_param("recurring[meter]"),
                );
            }
            ("metered", Some(meter)) if !self.metering.meters.contains_key(meter) => {
                return Err(not_found("billing meter", meter).with_param("recurring[meter]"));
            }
            ("licensed", Some(_)) => {
                return Err(
                    ApiError::invalid("`recurring[meter]` requires `recurring[usage_type]=metered`.")
                        .with_param("recurring[meter]"),
                );
            }
            _ => {}
        }
        let interval_count = integer(&recurring["interval_count"], "recurring[interval_count]")?.unwrap_or(1);
        let trial = integer(&recurring["trial_period_days"], "recurring[trial_period_days]")?;
        Ok(json!({
            "interval": recurring["interval"].as_str().unwrap_or("month"),
            "interval_count": interval_count,
            "meter": meter,
            "trial_period_days": trial,
            "usage_type": usage_type,
        }))
    }

    /// `GET /v1/prices/{id}`; `expand[]=tiers` shows a tiered price's tiers.
    pub(super) fn show_price(&self, id: &str, query: &Value) -> Value {
        let mut price = self.price(id);
        if expands(query, "tiers") {
            if let Some(stored) = self.prices.get(id) {
                price["tiers"] = stored.get("_simulated_tiers").cloned().unwrap_or(Value::Null);
            }
        }
        price
    }

    /// `/sim/prices?id=…&meter=…&unit_amount_decimal=…[&free_up_to=N][&currency=usd][&interval=month]`:
    /// a metered monthly price under a chosen id (the catalog names fixed price ids), backed by
    /// `meter` (a meter's id or its `event_name`); with `free_up_to`, graduated tiers: the first
    /// `free_up_to` units free, the rest at `unit_amount_decimal`.
    pub(super) fn register_price(&mut self, query: &Value) -> ControlResult {
        let id = text(&query["id"]).ok_or("/sim/prices needs id")?;
        let meter = text(&query["meter"]).ok_or("/sim/prices needs meter (a meter id or event_name)")?;
        let meter = self
            .metering
            .meters
            .values()
            .find(|m| m["id"] == meter.as_str() || (m["event_name"] == meter.as_str() && m["status"] == "active"))
            .map(|m| text(&m["id"]).unwrap_or_default())
            .ok_or_else(|| format!("no meter {meter}"))?;
        let amount = text(&query["unit_amount_decimal"]).ok_or("/sim/prices needs unit_amount_decimal")?;
        let unit = decimal(&amount).ok_or_else(|| format!("unit_amount_decimal {amount} is not a decimal"))?;
        let free_up_to = match query["free_up_to"].as_str() {
            None => None,
            Some(n) => Some(
                n.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("free_up_to {n} is not a positive integer"))?,
            ),
        };
        let mut price = fixture("price");
        price["id"] = json!(id);
        price["created"] = json!(self.now());
        price["currency"] = json!(query["currency"].as_str().unwrap_or("usd").to_ascii_lowercase());
        price["custom_unit_amount"] = Value::Null;
        price["livemode"] = json!(false);
        price["lookup_key"] = Value::Null;
        price["product"] = json!(self.id("prod"));
        price["recurring"] = json!({
            "interval": query["interval"].as_str().unwrap_or("month"),
            "interval_count": 1,
            "meter": meter,
            "trial_period_days": null,
            "usage_type": "metered",
        });
        price["transform_quantity"] = Value::Null;
        match free_up_to {
            None => {
                price["billing_scheme"] = json!("per_unit");
                price["tiers_mode"] = Value::Null;
                price["unit_amount"] = json!((unit % SCALE == 0).then(|| i64::try_from(unit / SCALE).ok()).flatten());
                price["unit_amount_decimal"] = json!(decimal_text(unit));
            }
            Some(free) => {
                price["billing_scheme"] = json!("tiered");
                price["tiers_mode"] = json!("graduated");
                price["unit_amount"] = Value::Null;
                price["unit_amount_decimal"] = Value::Null;
                price["_simulated_tiers"] = json!([
                    tier_object(Some(free), Some(0), None),
                    tier_object(None, Some(unit), None)
                ]);
            }
        }
        self.prices.insert(id.clone(), price);
        Ok((self.show_price(&id, &json!({"expand": ["tiers"]})), Vec::new()))
    }

    /// What `quantity` of a price costs on one invoice line, in the minor unit: per unit, or
    /// summed over graduated tiers, or at the one volume tier the quantity falls in; rounded
    /// once, half up.
    pub(super) fn line_amount(&self, price_id: &str, quantity: f64) -> i64 {
        let quantity = (quantity.max(0.0) * QUANTITY_SCALE as f64).round() as i128;
        let price = self.price(price_id);
        let Some(stored) = self.prices.get(price_id) else {
            let unit = price["unit_amount"].as_i64().unwrap_or(super::DEFAULT_UNIT_AMOUNT);
            return round(i128::from(unit) * SCALE * quantity);
        };
        if stored["billing_scheme"] != "tiered" {
            let unit = stored["unit_amount_decimal"].as_str().and_then(decimal).unwrap_or(0);
            return round(unit.saturating_mul(quantity));
        }
        let tiers = stored_tiers(stored);
        if stored["tiers_mode"] == "volume" {
            let tier = tiers
                .iter()
                .find(|tier| tier.up_to.is_none_or(|up_to| quantity <= up_to));
            return tier.map_or(0, |tier| {
                round(
                    tier.unit
                        .saturating_mul(quantity)
                        .saturating_add(tier.flat.saturating_mul(QUANTITY_SCALE)),
                )
            });
        }
        let mut exact: i128 = 0;
        let mut lower: i128 = 0;
        for tier in &tiers {
            let upper = tier.up_to.unwrap_or(i128::MAX);
            let in_tier = quantity.min(upper) - lower;
            if in_tier > 0 {
                exact = exact
                    .saturating_add(tier.unit.saturating_mul(in_tier))
                    .saturating_add(tier.flat.saturating_mul(QUANTITY_SCALE));
            }
            lower = upper;
            if quantity <= upper {
                break;
            }
        }
        round(exact)
    }
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(format!("Missing required param: {param}."))
        .with_code("parameter_missing")
        .with_param(param)
}

/// A shown price's `unit_amount_decimal` for an invoice line's `pricing` (null when tiered).
pub(super) fn unit_amount_decimal(price: &Value) -> Value {
    price["unit_amount_decimal"].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_and_show_as_stripe_writes_them() {
        assert_eq!(decimal("0.5"), Some(SCALE / 2));
        assert_eq!(decimal("2000"), Some(2000 * SCALE));
        assert_eq!(decimal(".25"), Some(SCALE / 4));
        assert_eq!(decimal("0.0000000000001"), None, "at most 12 decimal places");
        assert_eq!(decimal("-1"), None);
        assert_eq!(decimal("1e3"), None);
        assert_eq!(decimal_text(SCALE / 2), "0.5");
        assert_eq!(decimal_text(2000 * SCALE), "2000");
    }

    #[test]
    fn a_line_rounds_half_up_once() {
        // Stripe's example: 30 × 0.05 cents = 1.5, rounded up to 2.
        assert_eq!(round(decimal("0.05").unwrap_or(0) * 30 * QUANTITY_SCALE), 2);
        assert_eq!(round(decimal("0.04").unwrap_or(0) * 30 * QUANTITY_SCALE), 1);
    }
}
