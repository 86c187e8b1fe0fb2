//! The catalog (`BILLING_CATALOG`, or `BILLING_PLANS` in its short form): the server-side
//! allowlist of what can be bought. Clients name a plan, an add-on, an interval and a currency;
//! only this catalog turns them into Stripe prices, and only its prices grant anything.
//!
//! The full form (a complete example is `infra/catalog.example.json`):
//!
//! ```json
//! {"plans": {"team": {"features": ["reports"], "limits": {"projects": 50},
//!                     "seats": {"min": 2, "max": 100}, "addons": ["sso"],
//!                     "trial_days": 14, "allow_promotion_codes": true,
//!                     "prices": [{"id": "price_team_m", "interval": "month", "currency": "usd"},
//!                                {"id": "price_team_y", "interval": "year", "currency": "usd"}]}},
//!  "addons": {"sso": {"features": ["sso"],
//!                     "prices": [{"id": "price_sso_m", "interval": "month", "currency": "usd"},
//!                                {"id": "price_sso_y", "interval": "year", "currency": "usd"}]}},
//!  "limits": {"projects": "sum"}}
//! ```
//!
//! Usage-based plans add `meters` (Stripe meters by `event_name`) and, per plan, what each
//! includes per period, whether use stops there (`hard`) or goes on (`soft`), and the metered
//! prices that bill it:
//!
//! ```json
//! {"meters": {"api_calls": {"event_name": "api_call", "aggregation": "count"}},
//!  "plans": {"api": {"prices": [{"id": "price_api_m", "interval": "month", "currency": "usd"}],
//!                    "meters": {"api_calls": {"included": 100000, "limit": "soft",
//!                               "prices": [{"id": "price_api_calls_m", "interval": "month", "currency": "usd"}]}}}}}
//! ```
//!
//! The short form, `{"pro": {"price_id": "price_123", "features": [...], "trial_days": 14,
//! "allow_promotion_codes": true}}`, is a plan with one price of unstated interval and currency.
//! Errors name the path of what is wrong: `plans.team.prices[1].currency: ...`.
//!
//! JSON only: the YAML crate most projects used (serde_yaml) is archived and unmaintained, and
//! no successor is yet as widely kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Env, invalid};

/// How a limit granted by several items (a plan and its add-ons, two subscriptions) combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitRule {
    /// The largest grant counts (the default): two plans do not add up.
    Max,
    /// Grants add up: an add-on of 10 projects on a plan of 50 is 60.
    Sum,
}

/// The limit that counts a seat-based plan's quantity; summed unless the catalog says otherwise.
pub const SEATS_LIMIT: &str = "seats";

/// Stripe's recurring intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub const fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

/// A three-letter ISO currency code in lower case, as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a three-letter lower-case ISO currency code (usd, eur, ...)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One Stripe price of a plan or add-on. The short form's single price states neither
/// interval nor currency; it is chosen only when the request names neither.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub interval: Option<Interval>,
    #[serde(default)]
    pub currency: Option<Currency>,
}

impl Price {
    fn describe(&self) -> String {
        match (&self.interval, &self.currency) {
            (Some(interval), Some(currency)) => format!("{}/{currency}", interval.as_str()),
            (Some(interval), None) => interval.as_str().to_owned(),
            (None, Some(currency)) => currency.to_string(),
            (None, None) => "the default price".to_owned(),
        }
    }
}

/// A seat-based plan's quantity range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatRange {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub prices: Vec<Price>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    #[serde(default)]
    pub trial_days: Option<u32>,
    #[serde(default)]
    pub allow_promotion_codes: bool,
    /// Set for a plan sold per seat: the subscription item's quantity is the seat count.
    #[serde(default)]
    pub seats: Option<SeatRange>,
    /// The add-ons this plan may carry.
    #[serde(default)]
    pub addons: Vec<String>,
    /// Promotion codes `POST /checkout/sessions` accepts for this plan, by customer-facing
    /// code (`LAUNCH20`, case-insensitive as on Stripe) or id (`promo_...`). Empty: any
    /// promotion code if `allow_promotion_codes`, else none.
    #[serde(default)]
    pub promotion_codes: Vec<String>,
    /// Coupon ids `POST /checkout/sessions` accepts for this plan.
    #[serde(default)]
    pub coupons: Vec<String>,
    /// Where the plan stands among the others: a change to a lower tier is a downgrade,
    /// which `downgrades` may hold until the period ends. Plans without a tier change at once.
    #[serde(default)]
    pub tier: Option<u32>,
    /// What the plan includes of each metered quantity, and its metered prices.
    #[serde(default)]
    pub meters: BTreeMap<String, PlanMeter>,
}

/// How Stripe aggregates a meter's events over a billing period (the meter's
/// `default_aggregation.formula`). `last` is not offered: its value is not a running total, so
/// neither batching nor a local counter applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The values add up (tokens, GB, minutes): events may be summed before sending.
    #[default]
    Sum,
    /// Each event counts one whatever its value (API calls): every event is sent.
    Count,
}

/// A usage meter: the Stripe meter's `event_name`, and its aggregation, which must match the
/// meter's in Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    pub event_name: String,
    #[serde(default)]
    pub aggregation: Aggregation,
    /// What an account without a plan that names this meter may use (a free tier); none: 0, hard.
    #[serde(default)]
    pub free: Option<Allowance>,
}

/// What happens past the included quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Use goes on and the overage is billed (a metered price) or tolerated.
    Soft,
    /// Use stops at the included quantity: the quota answers not allowed.
    Hard,
}

/// An included quantity per billing period and what happens beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    pub included: u64,
    pub limit: LimitKind,
}

impl Allowance {
    /// No allowance: nothing included, and nothing allowed.
    pub const NONE: Allowance = Allowance {
        included: 0,
        limit: LimitKind::Hard,
    };
}

/// A plan's allowance of one meter and the metered prices that bill its use (Stripe prices
/// with `recurring.usage_type=metered` on the meter), one per interval and currency of the
/// plan's prices; checkout adds the one billed like the plan price.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanMeter {
    pub included: u64,
    pub limit: LimitKind,
    #[serde(default)]
    pub prices: Vec<Price>,
}

impl PlanMeter {
    pub fn allowance(&self) -> Allowance {
        Allowance {
            included: self.included,
            limit: self.limit,
        }
    }
}

/// When a downgrade (a change to a plan of a lower `tier`) takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowngradePolicy {
    /// At the end of the period already paid for, through a subscription schedule: the
    /// customer keeps what they paid for, and nothing is refunded (the default).
    #[default]
    PeriodEnd,
    /// At once, with prorations, like an upgrade.
    Now,
}

/// A one-time purchase (Checkout `mode=payment`): a lifetime deal's features and limits, or
/// a pack of credits per unit bought. Kept until a full refund or a lost dispute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// One price per currency; one-time prices have no interval.
    pub prices: Vec<Price>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// Credits granted per unit bought.
    #[serde(default)]
    pub credits: Option<u64>,
    /// Most units one checkout may buy (default 1).
    #[serde(default = "one")]
    pub max_quantity: u32,
}

fn one() -> u32 {
    1
}

impl Product {
    pub fn price(&self, currency: Option<&Currency>) -> Result<&Price, String> {
        choose(&self.prices, None, currency)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    pub prices: Vec<Price>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

/// What a Stripe price sells, by the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer<'a> {
    Plan(&'a str, &'a Plan),
    Addon(&'a str, &'a Addon),
}

impl<'a> Offer<'a> {
    pub fn features(&self) -> &'a [String] {
        match self {
            Offer::Plan(_, plan) => &plan.features,
            Offer::Addon(_, addon) => &addon.features,
        }
    }

    pub fn limits(&self) -> &'a BTreeMap<String, u64> {
        match self {
            Offer::Plan(_, plan) => &plan.limits,
            Offer::Addon(_, addon) => &addon.limits,
        }
    }
}

/// The first price matching what the request names (`None` names nothing); the error lists
/// what there is.
fn choose<'a>(
    prices: &'a [Price],
    interval: Option<Interval>,
    currency: Option<&Currency>,
) -> Result<&'a Price, String> {
    prices
        .iter()
        .find(|price| {
            interval.is_none_or(|wanted| price.interval == Some(wanted))
                && currency.is_none_or(|wanted| price.currency.as_ref() == Some(wanted))
        })
        .ok_or_else(|| {
            let offered: Vec<String> = prices.iter().map(Price::describe).collect();
            format!(
                "no price for that interval and currency; offered: {}",
                offered.join(", ")
            )
        })
}

impl Plan {
    pub fn price(&self, interval: Option<Interval>, currency: Option<&Currency>) -> Result<&Price, String> {
        choose(&self.prices, interval, currency)
    }

    pub fn price_by_id(&self, id: &str) -> Option<&Price> {
        self.prices.iter().find(|price| price.id == id)
    }
}

impl Addon {
    /// The add-on's price billed like `plan_price`: one subscription has one interval and one
    /// currency. Validation at start makes sure every plan price that allows it has one.
    pub fn price_like(&self, plan_price: &Price) -> Result<&Price, String> {
        choose(&self.prices, plan_price.interval, plan_price.currency.as_ref())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullForm {
    plans: BTreeMap<String, Plan>,
    #[serde(default)]
    addons: BTreeMap<String, Addon>,
    #[serde(default)]
    limits: BTreeMap<String, LimitRule>,
    #[serde(default)]
    products: BTreeMap<String, Product>,
    /// Stripe Tax at checkout: tax computed from the buyer's address, which Checkout then
    /// collects, with their tax id. Off by default.
    #[serde(default)]
    automatic_tax: bool,
    #[serde(default)]
    downgrades: DowngradePolicy,
    #[serde(default)]
    meters: BTreeMap<String, Meter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortPlan {
    price_id: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    trial_days: Option<u32>,
    #[serde(default)]
    allow_promotion_codes: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    plans: BTreeMap<String, Plan>,
    addons: BTreeMap<String, Addon>,
    limit_rules: BTreeMap<String, LimitRule>,
    products: BTreeMap<String, Product>,
    automatic_tax: bool,
    downgrades: DowngradePolicy,
    meters: BTreeMap<String, Meter>,
    /// Metered price id → the meter it bills.
    metered: HashMap<String, String>,
    /// Price id → what it sells: the price identifies it.
    by_price: HashMap<String, (Sells, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sells {
    Plan,
    Addon,
    Product,
    /// A plan's metered price: it bills use and grants nothing itself.
    Metered,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A promotion code or coupon id as the API accepts it: Stripe's codes are letters and digits
/// (with `-` and `_` in ids), at most 255 characters here.
pub fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 255
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        }
    })
}

impl Catalog {
    /// `BILLING_CATALOG`, else `BILLING_PLANS` (the short form, as earlier releases read it):
    /// inline JSON (an object) or the path of a JSON file.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = if env.get("BILLING_CATALOG").is_some() {
            "BILLING_CATALOG"
        } else {
            "BILLING_PLANS"
        };
        let value = env.get(var).ok_or(ConfigError::Missing("BILLING_CATALOG"))?;
        let text = if value.trim_start().starts_with('{') {
            value.to_owned()
        } else {
            std::fs::read_to_string(value)
                .map_err(|error| invalid(var, format!("cannot read catalog file {value:?}: {error}")))?
        };
        Self::parse(&text).map_err(|reason| invalid(var, reason))
    }

    /// Either form: the full one has a `plans` object whose entries have no `price_id`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let probe: serde_json::Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let full = probe["plans"]
            .as_object()
            .is_some_and(|plans| plans.get("price_id").is_none());
        let form = if full {
            parse_json::<FullForm>(text)?
        } else {
            let short: BTreeMap<String, ShortPlan> = parse_json(text)?;
            FullForm {
                plans: short
                    .into_iter()
                    .map(|(key, plan)| {
                        let price = Price {
                            id: plan.price_id,
                            interval: None,
                            currency: None,
                        };
                        let plan = Plan {
                            prices: vec![price],
                            features: plan.features,
                            limits: BTreeMap::new(),
                            trial_days: plan.trial_days,
                            allow_promotion_codes: plan.allow_promotion_codes,
                            seats: None,
                            addons: Vec::new(),
                            promotion_codes: Vec::new(),
                            coupons: Vec::new(),
                            tier: None,
                            meters: BTreeMap::new(),
                        };
                        (key, plan)
                    })
                    .collect(),
                ..FullForm::default()
            }
        };
        Self::validated(form, if full { "plans." } else { "" })
    }

    fn validated(form: FullForm, plans_path: &str) -> Result<Self, String> {
        if form.plans.is_empty() {
            return Err("the catalog has no plans".into());
        }
        let mut by_price = HashMap::new();
        let mut claim = |path: String, price: &Price, sells: Sells, key: &str| -> Result<(), String> {
            if !price.id.starts_with("price_") || price.id.len() <= "price_".len() {
                return Err(format!("{path}.id: must be a Stripe price id (price_...)"));
            }
            if let Some((_, other)) = by_price.insert(price.id.clone(), (sells, key.to_owned())) {
                return Err(format!(
                    "{path}.id: {:?} is also a price of {other:?}; a price must identify what it sells",
                    price.id
                ));
            }
            Ok(())
        };
        let check_prices = |path: &str, prices: &[Price], full: bool| -> Result<(), String> {
            if prices.is_empty() {
                return Err(format!("{path}.prices: needs at least one price"));
            }
            let mut seen = BTreeSet::new();
            for (at, price) in prices.iter().enumerate() {
                if full && price.interval.is_none() {
                    return Err(format!(
                        "{path}.prices[{at}].interval: required (day, week, month or year)"
                    ));
                }
                if full && price.currency.is_none() {
                    return Err(format!("{path}.prices[{at}].currency: required (usd, eur, ...)"));
                }
                if !seen.insert((price.interval, price.currency.clone())) {
                    return Err(format!(
                        "{path}.prices[{at}]: a second price for {}; one price per interval and currency",
                        price.describe()
                    ));
                }
            }
            Ok(())
        };
        let check_limits = |path: &str, limits: &BTreeMap<String, u64>| -> Result<(), String> {
            match limits.keys().find(|name| !valid_key(name)) {
                Some(name) => Err(format!("{path}.limits.{name}: a limit name must be 1-64 of [a-z0-9_-]")),
                None => Ok(()),
            }
        };
        let full = !plans_path.is_empty();
        for (key, addon) in &form.addons {
            let path = format!("addons.{key}");
            if !valid_key(key) {
                return Err(format!("{path}: an add-on key must be 1-64 of [a-z0-9_-]"));
            }
            check_prices(&path, &addon.prices, true)?;
            check_limits(&path, &addon.limits)?;
            for (at, price) in addon.prices.iter().enumerate() {
                claim(format!("{path}.prices[{at}]"), price, Sells::Addon, key)?;
            }
        }
        for (key, plan) in &form.plans {
            let path = format!("{plans_path}{key}");
            if !valid_key(key) {
                return Err(format!("{path}: a plan key must be 1-64 of [a-z0-9_-]"));
            }
            check_prices(&path, &plan.prices, full)?;
            check_limits(&path, &plan.limits)?;
            for (at, price) in plan.prices.iter().enumerate() {
                claim(format!("{path}.prices[{at}]"), price, Sells::Plan, key)?;
            }
            if plan.trial_days.is_some_and(|days| !(1..=730).contains(&days)) {
                return Err(format!("{path}.trial_days: must be between 1 and 730 (Stripe's limit)"));
            }
            if let Some(seats) = plan.seats {
                if seats.min == 0 || seats.max < seats.min || seats.max > 10_000 {
                    return Err(format!("{path}.seats: needs 1 <= min <= max <= 10000"));
                }
                if plan.limits.contains_key(SEATS_LIMIT) {
                    return Err(format!(
                        "{path}.limits.seats: a seat-based plan's seats are its quantity, not a fixed limit"
                    ));
                }
            }
            for (at, code) in plan.promotion_codes.iter().enumerate() {
                if !valid_code(code) {
                    return Err(format!(
                        "{path}.promotion_codes[{at}]: a promotion code or promo_ id of 1-255 of [A-Za-z0-9_-]"
                    ));
                }
            }
            if !plan.promotion_codes.is_empty() && !plan.allow_promotion_codes {
                return Err(format!(
                    "{path}.promotion_codes: listed codes need allow_promotion_codes: true"
                ));
            }
            for (at, coupon) in plan.coupons.iter().enumerate() {
                if !valid_code(coupon) {
                    return Err(format!("{path}.coupons[{at}]: a coupon id of 1-255 of [A-Za-z0-9_-]"));
                }
            }
            for (at, name) in plan.addons.iter().enumerate() {
                let Some(addon) = form.addons.get(name) else {
                    return Err(format!("{path}.addons[{at}]: no add-on {name:?} in addons"));
                };
                for (price_at, price) in plan.prices.iter().enumerate() {
                    if addon.price_like(price).is_err() {
                        return Err(format!(
                            "{path}.prices[{price_at}]: add-on {name:?} has no price for {}, so it could not be added",
                            price.describe()
                        ));
                    }
                }
            }
        }
        let mut metered = HashMap::new();
        let mut event_names = BTreeMap::new();
        for (key, meter) in &form.meters {
            let path = format!("meters.{key}");
            if !valid_key(key) {
                return Err(format!("{path}: a meter key must be 1-64 of [a-z0-9_-]"));
            }
            let name = &meter.event_name;
            let valid_name = !name.is_empty()
                && name.len() <= 100
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !valid_name {
                return Err(format!(
                    "{path}.event_name: 1-100 of [A-Za-z0-9_.-] (Stripe's meter event names)"
                ));
            }
            if let Some(other) = event_names.insert(name.clone(), key.clone()) {
                return Err(format!(
                    "{path}.event_name: {name:?} is also the event of meter {other:?}"
                ));
            }
        }
        for (key, plan) in &form.plans {
            for (meter, allowance) in &plan.meters {
                let path = format!("{plans_path}{key}.meters.{meter}");
                if !form.meters.contains_key(meter) {
                    return Err(format!("{path}: no meter {meter:?} in meters"));
                }
                if allowance.prices.is_empty() {
                    continue;
                }
                check_prices(&path, &allowance.prices, true)?;
                for (at, price) in allowance.prices.iter().enumerate() {
                    claim(format!("{path}.prices[{at}]"), price, Sells::Metered, key)?;
                    metered.insert(price.id.clone(), meter.clone());
                }
                for (price_at, price) in plan.prices.iter().enumerate() {
                    if choose(&allowance.prices, price.interval, price.currency.as_ref()).is_err() {
                        return Err(format!(
                            "{plans_path}{key}.prices[{price_at}]: meter {meter:?} has no metered price for {}",
                            price.describe()
                        ));
                    }
                }
            }
        }
        for (key, product) in &form.products {
            let path = format!("products.{key}");
            if !valid_key(key) {
                return Err(format!("{path}: a product key must be 1-64 of [a-z0-9_-]"));
            }
            if form.plans.contains_key(key) || form.addons.contains_key(key) {
                return Err(format!("{path}: {key:?} is also a plan or add-on key"));
            }
            if product.prices.is_empty() {
                return Err(format!("{path}.prices: needs at least one price"));
            }
            let mut currencies = BTreeSet::new();
            for (at, price) in product.prices.iter().enumerate() {
                if price.interval.is_some() {
                    return Err(format!(
                        "{path}.prices[{at}].interval: a one-time product's price has no interval"
                    ));
                }
                let Some(currency) = &price.currency else {
                    return Err(format!("{path}.prices[{at}].currency: required (usd, eur, ...)"));
                };
                if !currencies.insert(currency.clone()) {
                    return Err(format!("{path}.prices[{at}]: a second price in {currency}"));
                }
                claim(format!("{path}.prices[{at}]"), price, Sells::Product, key)?;
            }
            check_limits(&path, &product.limits)?;
            if product.features.is_empty() && product.limits.is_empty() && product.credits.is_none() {
                return Err(format!("{path}: grants nothing (give features, limits or credits)"));
            }
            if product.credits == Some(0) {
                return Err(format!("{path}.credits: must be at least 1"));
            }
            if !(1..=1000).contains(&product.max_quantity) {
                return Err(format!("{path}.max_quantity: must be between 1 and 1000"));
            }
            // Credits add up per unit; limits are what one purchase grants, not per unit.
            if !product.limits.is_empty() && product.max_quantity > 1 {
                return Err(format!(
                    "{path}.max_quantity: a product with limits is bought one at a time (limits do not add up per unit)"
                ));
            }
        }
        Ok(Self {
            plans: form.plans,
            addons: form.addons,
            limit_rules: form.limits,
            products: form.products,
            automatic_tax: form.automatic_tax,
            downgrades: form.downgrades,
            meters: form.meters,
            metered,
            by_price,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Plan> {
        self.plans.get(key)
    }

    pub fn addon(&self, key: &str) -> Option<&Addon> {
        self.addons.get(key)
    }

    /// What a recurring Stripe price sells; `None` for a price the catalog does not list as
    /// a plan's or an add-on's.
    pub fn offer(&self, price_id: &str) -> Option<Offer<'_>> {
        let (sells, key) = self.by_price.get(price_id)?;
        match sells {
            Sells::Addon => {
                let (key, addon) = self.addons.get_key_value(key)?;
                Some(Offer::Addon(key, addon))
            }
            Sells::Plan => {
                let (key, plan) = self.plans.get_key_value(key)?;
                Some(Offer::Plan(key, plan))
            }
            Sells::Product | Sells::Metered => None,
        }
    }

    /// Whether the price is one of a plan's metered prices (it bills use, grants nothing).
    pub fn is_metered(&self, price_id: &str) -> bool {
        self.metered.contains_key(price_id)
    }

    /// The meter a metered price bills.
    pub fn meter_of_price(&self, price_id: &str) -> Option<&str> {
        self.metered.get(price_id).map(String::as_str)
    }

    pub fn meter(&self, key: &str) -> Option<&Meter> {
        self.meters.get(key)
    }

    pub fn meters(&self) -> impl Iterator<Item = (&str, &Meter)> {
        self.meters.iter().map(|(key, meter)| (key.as_str(), meter))
    }

    /// What an account on `plan` (none: no plan) may use of `meter` per period: the plan's
    /// allowance, else the meter's free tier, else nothing.
    pub fn allowance(&self, plan: Option<&str>, meter: &str) -> Allowance {
        let of_plan = plan
            .and_then(|key| self.get(key))
            .and_then(|plan| plan.meters.get(meter))
            .map(PlanMeter::allowance);
        of_plan
            .or_else(|| self.meter(meter).and_then(|m| m.free))
            .unwrap_or(Allowance::NONE)
    }

    /// The metered prices a subscription to `plan` at `plan_price` carries, one per meter the
    /// plan bills, billed like the plan price (validation made sure each exists).
    pub fn metered_prices<'a>(&self, plan: &'a Plan, plan_price: &Price) -> Vec<&'a Price> {
        self.metered_prices_by_meter(plan, plan_price).into_values().collect()
    }

    /// The same, by meter key.
    pub fn metered_prices_by_meter<'a>(&self, plan: &'a Plan, plan_price: &Price) -> BTreeMap<&'a str, &'a Price> {
        plan.meters
            .iter()
            .filter(|(_, allowance)| !allowance.prices.is_empty())
            .filter_map(|(meter, allowance)| {
                let price = choose(&allowance.prices, plan_price.interval, plan_price.currency.as_ref()).ok()?;
                Some((meter.as_str(), price))
            })
            .collect()
    }

    pub fn product(&self, key: &str) -> Option<&Product> {
        self.products.get(key)
    }

    pub fn product_keys(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    /// Whether moving from plan `from` to plan `to` waits for the period's end: a lower tier
    /// than now, with the `period_end` policy.
    pub fn waits_for_period_end(&self, from: &str, to: &str) -> bool {
        let tier = |key: &str| self.get(key).and_then(|plan| plan.tier);
        self.downgrades == DowngradePolicy::PeriodEnd
            && matches!((tier(from), tier(to)), (Some(from), Some(to)) if to < from)
    }

    /// Whether checkout turns on Stripe Tax (and collects the address and tax id it needs).
    pub fn automatic_tax(&self) -> bool {
        self.automatic_tax
    }

    /// Which plan a Stripe price belongs to; subscriptions are mapped back to plans this way.
    pub fn by_price(&self, price_id: &str) -> Option<(&str, &Plan)> {
        match self.offer(price_id)? {
            Offer::Plan(key, plan) => Some((key, plan)),
            Offer::Addon(..) => None,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }

    pub fn addon_keys(&self) -> impl Iterator<Item = &str> {
        self.addons.keys().map(String::as_str)
    }

    /// How `limit` combines across grants: as declared, else `seats` sums and the rest max.
    pub fn limit_rule(&self, limit: &str) -> LimitRule {
        match self.limit_rules.get(limit) {
            Some(rule) => *rule,
            None if limit == SEATS_LIMIT => LimitRule::Sum,
            None => LimitRule::Max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: &str = r#"{"pro":{"price_id":"price_123","features":["reports","api"],"trial_days":14,"allow_promotion_codes":true},
                              "basic":{"price_id":"price_456"}}"#;

    const FULL: &str = r#"{
      "plans": {
        "team": {"features": ["reports"], "limits": {"projects": 50}, "seats": {"min": 2, "max": 100},
                 "addons": ["sso"], "trial_days": 14,
                 "prices": [{"id": "price_team_m", "interval": "month", "currency": "usd"},
                            {"id": "price_team_y", "interval": "year", "currency": "usd"},
                            {"id": "price_team_m_eur", "interval": "month", "currency": "eur"}]},
        "solo": {"prices": [{"id": "price_solo_m", "interval": "month", "currency": "usd"}]}
      },
      "addons": {"sso": {"features": ["sso"], "limits": {"projects": 10},
                         "prices": [{"id": "price_sso_m", "interval": "month", "currency": "usd"},
                                    {"id": "price_sso_y", "interval": "year", "currency": "usd"},
                                    {"id": "price_sso_m_eur", "interval": "month", "currency": "eur"}]}},
      "limits": {"projects": "sum"}
    }"#;

    #[test]
    fn the_short_form_is_a_plan_with_one_unstated_price() {
        let catalog = Catalog::parse(SHORT).unwrap();
        let pro = catalog.get("pro").unwrap();
        assert_eq!(pro.features, ["reports", "api"]);
        assert_eq!(pro.trial_days, Some(14));
        assert!(pro.allow_promotion_codes);
        assert_eq!(pro.price(None, None).unwrap().id, "price_123");
        assert!(pro.price(Some(Interval::Year), None).is_err());
        assert_eq!(catalog.by_price("price_456").map(|(key, _)| key), Some("basic"));
        assert_eq!(catalog.keys().collect::<Vec<_>>(), ["basic", "pro"]);
    }

    #[test]
    fn the_full_form_chooses_prices_by_interval_and_currency() {
        let catalog = Catalog::parse(FULL).unwrap();
        let team = catalog.get("team").unwrap();
        let eur = Currency::parse("eur").unwrap();
        assert_eq!(team.price(None, None).unwrap().id, "price_team_m");
        assert_eq!(team.price(Some(Interval::Year), None).unwrap().id, "price_team_y");
        assert_eq!(team.price(None, Some(&eur)).unwrap().id, "price_team_m_eur");
        let missing = team.price(Some(Interval::Year), Some(&eur)).unwrap_err();
        assert!(missing.contains("month/usd, year/usd, month/eur"), "{missing}");
        assert_eq!(team.seats, Some(SeatRange { min: 2, max: 100 }));
        let sso = catalog.addon("sso").unwrap();
        let yearly = team.price(Some(Interval::Year), None).unwrap();
        assert_eq!(sso.price_like(yearly).unwrap().id, "price_sso_y");
        assert!(matches!(catalog.offer("price_sso_m_eur"), Some(Offer::Addon("sso", _))));
        assert!(matches!(catalog.offer("price_team_y"), Some(Offer::Plan("team", _))));
        assert_eq!(catalog.by_price("price_sso_m"), None, "an add-on is no plan");
        assert_eq!(catalog.offer("price_other"), None);
        assert_eq!(catalog.limit_rule("projects"), LimitRule::Sum);
        assert_eq!(catalog.limit_rule("seats"), LimitRule::Sum);
        assert_eq!(catalog.limit_rule("storage_gb"), LimitRule::Max);
    }

    #[test]
    fn errors_name_the_path_of_what_is_wrong() {
        let with = |from: &str, to: &str| {
            assert!(FULL.contains(from), "{from}");
            Catalog::parse(&FULL.replacen(from, to, 1)).unwrap_err()
        };
        for (from, to, expected) in [
            (
                r#""currency": "eur"}]},"#,
                r#""currency": "EUR"}]},"#,
                "plans.team.prices[2].currency: ",
            ),
            (
                r#""interval": "year", "currency": "usd"}"#,
                r#""interval": "fortnight", "currency": "usd"}"#,
                "plans.team.prices[1].interval: ",
            ),
            (
                r#"{"id": "price_team_y", "interval": "year", "currency": "usd"}"#,
                r#"{"id": "price_team_y", "currency": "usd"}"#,
                "plans.team.prices[1].interval: required",
            ),
            (
                r#""id": "price_team_y""#,
                r#""id": "price_team_m""#,
                "plans.team.prices[1].id: \"price_team_m\" is also a price of \"team\"",
            ),
            (
                r#""id": "price_sso_y""#,
                r#""id": "price_team_y""#,
                "plans.team.prices[1].id: \"price_team_y\" is also a price of \"sso\"",
            ),
            (
                r#""id": "price_solo_m""#,
                r#""id": "prod_solo""#,
                "plans.solo.prices[0].id: must be a Stripe price id",
            ),
            (
                r#""seats": {"min": 2, "max": 100}"#,
                r#""seats": {"min": 5, "max": 2}"#,
                "plans.team.seats: ",
            ),
            (
                r#""addons": ["sso"]"#,
                r#""addons": ["sso", "audit"]"#,
                "plans.team.addons[1]: no add-on \"audit\"",
            ),
            (
                r#"{"id": "price_sso_y", "interval": "year", "currency": "usd"},"#,
                "",
                "plans.team.prices[1]: add-on \"sso\" has no price for year/usd",
            ),
            (
                r#""limits": {"projects": "sum"}"#,
                r#""limits": {"projects": "add"}"#,
                "limits.projects: unknown variant `add`",
            ),
            (
                r#""trial_days": 14"#,
                r#""trial_days": 0"#,
                "plans.team.trial_days: must be between 1 and 730",
            ),
            (
                r#""limits": {"projects": 50}"#,
                r#""limits": {"seats": 5}"#,
                "plans.team.limits.seats: ",
            ),
            (
                r#""features": ["reports"],"#,
                r#""features": ["reports"], "colour": "red","#,
                "plans.team",
            ),
            (
                r#""limits": {"projects": 10}"#,
                r#""limits": {"projects": -1}"#,
                "addons.sso.limits.projects: ",
            ),
        ] {
            let error = with(from, to);
            assert!(error.starts_with(expected), "{expected} -> {error}");
        }
    }

    #[test]
    fn the_example_in_the_repository_is_valid() {
        let catalog = Catalog::parse(include_str!("../../../infra/catalog.example.json")).unwrap();
        assert_eq!(catalog.keys().collect::<Vec<_>>(), ["api", "starter", "team"]);
        assert!(catalog.is_metered("price_api_calls_month_usd"));
        assert_eq!(catalog.addon_keys().collect::<Vec<_>>(), ["extra_projects", "sso"]);
        assert_eq!(catalog.product_keys().collect::<Vec<_>>(), ["credits_1000", "lifetime"]);
        assert!(!catalog.automatic_tax());
        // A product's price sells no plan or add-on.
        assert_eq!(catalog.offer("price_lifetime_usd"), None);
        let pack = catalog.product("credits_1000").unwrap();
        assert_eq!((pack.credits, pack.max_quantity), (Some(1000), 10));
        assert_eq!(catalog.get("team").unwrap().coupons, ["PARTNER10"]);
    }

    /// Products and discounts, each wrong in one way, from the repository's example.
    #[test]
    fn products_and_discounts_are_checked_with_their_paths() {
        let example = include_str!("../../../infra/catalog.example.json");
        for (from, to, expected) in [
            (
                r#"{"id": "price_lifetime_usd", "currency": "usd"}"#,
                r#"{"id": "price_lifetime_usd", "interval": "month", "currency": "usd"}"#,
                "products.lifetime.prices[0].interval: a one-time product's price has no interval",
            ),
            (
                r#"{"id": "price_lifetime_eur", "currency": "eur"}"#,
                r#"{"id": "price_lifetime_eur", "currency": "usd"}"#,
                "products.lifetime.prices[1]: a second price in usd",
            ),
            (
                r#"{"id": "price_lifetime_eur", "currency": "eur"}"#,
                r#"{"id": "price_lifetime_eur"}"#,
                "products.lifetime.prices[1].currency: required",
            ),
            (
                r#""id": "price_credits_1000_usd""#,
                r#""id": "price_team_month_usd""#,
                "products.credits_1000.prices[0].id: \"price_team_month_usd\" is also a price of \"team\"",
            ),
            (r#""credits": 1000,"#, "", "products.credits_1000: grants nothing"),
            (
                r#""credits": 1000"#,
                r#""credits": 0"#,
                "products.credits_1000.credits: must be at least 1",
            ),
            (
                r#""max_quantity": 10"#,
                r#""max_quantity": 5000"#,
                "products.credits_1000.max_quantity: must be between 1 and 1000",
            ),
            (
                r#""lifetime": {"#,
                r#""team": {"#,
                "products.team: \"team\" is also a plan or add-on key",
            ),
            (
                r#""limits": {"projects": 20},"#,
                r#""limits": {"projects": 20}, "max_quantity": 3,"#,
                "products.lifetime.max_quantity: a product with limits is bought one at a time",
            ),
            (
                r#""promotion_codes": ["LAUNCH20"]"#,
                r#""promotion_codes": ["LAUNCH 20"]"#,
                "plans.team.promotion_codes[0]: ",
            ),
            (
                r#""coupons": ["PARTNER10"]"#,
                r#""coupons": ["PARTNER/10"]"#,
                "plans.team.coupons[0]: ",
            ),
            (
                r#""allow_promotion_codes": true,"#,
                "",
                "plans.team.promotion_codes: listed codes need allow_promotion_codes: true",
            ),
            (
                r#""automatic_tax": false"#,
                r#""automatic_tax": "yes""#,
                "automatic_tax: ",
            ),
        ] {
            assert!(example.contains(from), "{from}");
            let error = Catalog::parse(&example.replacen(from, to, 1)).unwrap_err();
            assert!(error.starts_with(expected), "{expected} -> {error}");
        }
        let taxed = example.replacen(r#""automatic_tax": false"#, r#""automatic_tax": true"#, 1);
        assert!(Catalog::parse(&taxed).unwrap().automatic_tax());
    }

    const METERED: &str = r#"{
      "meters": {"api_calls": {"event_name": "api_call", "aggregation": "count",
                               "free": {"included": 100, "limit": "hard"}},
                 "tokens": {"event_name": "llm.tokens"}},
      "plans": {
        "api": {"prices": [{"id": "price_api_m", "interval": "month", "currency": "usd"},
                           {"id": "price_api_y", "interval": "year", "currency": "usd"}],
                "meters": {"api_calls": {"included": 100000, "limit": "soft",
                                         "prices": [{"id": "price_calls_m", "interval": "month", "currency": "usd"},
                                                    {"id": "price_calls_y", "interval": "year", "currency": "usd"}]},
                           "tokens": {"included": 5000, "limit": "hard"}}},
        "solo": {"prices": [{"id": "price_solo_m", "interval": "month", "currency": "usd"}]}
      }
    }"#;

    #[test]
    fn meters_grant_allowances_and_their_prices_bill_like_the_plan() {
        let catalog = Catalog::parse(METERED).unwrap();
        assert_eq!(catalog.meter("api_calls").unwrap().aggregation, Aggregation::Count);
        assert_eq!(
            catalog.meter("tokens").unwrap().aggregation,
            Aggregation::Sum,
            "sum by default"
        );
        let soft = Allowance {
            included: 100_000,
            limit: LimitKind::Soft,
        };
        assert_eq!(catalog.allowance(Some("api"), "api_calls"), soft);
        // No plan, or a plan without the meter: the meter's free tier, else nothing.
        let free = Allowance {
            included: 100,
            limit: LimitKind::Hard,
        };
        assert_eq!(catalog.allowance(None, "api_calls"), free);
        assert_eq!(catalog.allowance(Some("solo"), "api_calls"), free);
        assert_eq!(catalog.allowance(Some("solo"), "tokens"), Allowance::NONE);
        let api = catalog.get("api").unwrap();
        let yearly = api.price_by_id("price_api_y").unwrap();
        let billed: Vec<&str> = catalog
            .metered_prices(api, yearly)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(
            billed,
            ["price_calls_y"],
            "tokens has no metered price: a hard quota only"
        );
        assert!(catalog.is_metered("price_calls_m") && !catalog.is_metered("price_api_m"));
        assert!(catalog.offer("price_calls_m").is_none() && catalog.by_price("price_calls_m").is_none());
    }

    #[test]
    fn meter_mistakes_are_named() {
        let cases = [
            (
                METERED.replace(r#""event_name": "llm.tokens""#, r#""event_name": "api_call""#),
                "meters.tokens.event_name: \"api_call\" is also the event of meter \"api_calls\"",
            ),
            (
                METERED.replace(r#""event_name": "llm.tokens""#, r#""event_name": "has space""#),
                "meters.tokens.event_name: 1-100 of",
            ),
            (
                METERED.replace(r#""tokens": {"included""#, r#""bytes": {"included""#),
                "plans.api.meters.bytes: no meter \"bytes\" in meters",
            ),
            (
                METERED.replace(r#""limit": "hard"}}}"#, r#""limit": "sometimes"}}}"#),
                "plans.api.meters.tokens.limit: unknown variant",
            ),
            (
                METERED.replace(
                    r#",
                                                    {"id": "price_calls_y", "interval": "year", "currency": "usd"}"#,
                    "",
                ),
                "plans.api.prices[1]: meter \"api_calls\" has no metered price for year/usd",
            ),
            (METERED.replace("price_calls_y", "price_api_y"), "is also a price of"),
            (
                METERED.replace(r#""aggregation": "count""#, r#""aggregation": "last""#),
                "meters.api_calls.aggregation: unknown variant `last`",
            ),
        ];
        for (text, expected) in cases {
            let error = Catalog::parse(&text).unwrap_err();
            assert!(error.contains(expected), "{error} does not contain {expected}");
        }
    }

    #[test]
    fn the_short_form_keeps_its_old_rules() {
        for bad in [
            r#"{"pro":{"price_id":"price_1","colour":"red"}}"#,
            r#"{"pro":{"price_id":"prod_1"}}"#,
            r#"{"Pro Plan":{"price_id":"price_1"}}"#,
            r#"{"a":{"price_id":"price_1"},"b":{"price_id":"price_1"}}"#,
            r#"{"pro":{"price_id":"price_1","trial_days":0}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"plans":{}}"#,
        ] {
            assert!(Catalog::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_inline_json_or_a_file_from_either_variable() {
        let inline = Catalog::from_env(&Env::from_pairs([("BILLING_PLANS", SHORT)])).unwrap();
        let path = std::env::temp_dir().join(format!("catalog-{}.json", std::process::id()));
        std::fs::write(&path, FULL).unwrap();
        let from_file = Catalog::from_env(&Env::from_pairs([
            ("BILLING_CATALOG", path.to_str().unwrap()),
            ("BILLING_PLANS", SHORT),
        ]))
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(inline, Catalog::parse(SHORT).unwrap());
        assert_eq!(from_file, Catalog::parse(FULL).unwrap(), "BILLING_CATALOG wins");
        let missing = Catalog::from_env(&Env::from_pairs([("BILLING_CATALOG", "/nonexistent/catalog.json")]));
        assert!(missing.unwrap_err().to_string().contains("BILLING_CATALOG"));
        let neither = Catalog::from_env(&Env::default()).unwrap_err().to_string();
        assert!(neither.contains("BILLING_CATALOG"), "{neither}");
    }
}
