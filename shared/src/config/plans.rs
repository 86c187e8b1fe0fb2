//! The plan catalog (`BILLING_PLANS`): the server-side allowlist of what can be bought.
//! Clients name a plan key; only this catalog turns it into a Stripe price.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Env, invalid};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub price_id: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub trial_days: Option<u32>,
    #[serde(default)]
    pub allow_promotion_codes: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: BTreeMap<String, Plan>,
}

impl PlanCatalog {
    /// `BILLING_PLANS` holds the catalog inline (JSON object) or the path of a JSON file.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let value = env.require("BILLING_PLANS")?;
        let text = if value.trim_start().starts_with('{') {
            value.to_owned()
        } else {
            std::fs::read_to_string(value)
                .map_err(|error| invalid("BILLING_PLANS", format!("cannot read plan file {value:?}: {error}")))?
        };
        Self::parse(&text).map_err(|reason| invalid("BILLING_PLANS", reason))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let plans: BTreeMap<String, Plan> = serde_json::from_str(text).map_err(|error| error.to_string())?;
        if plans.is_empty() {
            return Err("the catalog has no plans".into());
        }
        let mut prices = BTreeMap::new();
        for (key, plan) in &plans {
            let key_ok = !key.is_empty()
                && key.len() <= 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !key_ok {
                return Err(format!("plan key {key:?} must be 1-64 of [a-z0-9_-]"));
            }
            if !plan.price_id.starts_with("price_") {
                return Err(format!("plan {key:?}: price_id must be a Stripe price id (price_...)"));
            }
            if let Some(other) = prices.insert(plan.price_id.as_str(), key) {
                return Err(format!(
                    "plans {other:?} and {key:?} share a price; the price must identify the plan"
                ));
            }
            if plan.trial_days.is_some_and(|days| !(1..=730).contains(&days)) {
                return Err(format!(
                    "plan {key:?}: trial_days must be between 1 and 730 (Stripe's limit)"
                ));
            }
        }
        Ok(Self { plans })
    }

    pub fn get(&self, key: &str) -> Option<&Plan> {
        self.plans.get(key)
    }

    /// Which plan a Stripe price belongs to; subscriptions are mapped back to plans this way.
    pub fn by_price(&self, price_id: &str) -> Option<(&str, &Plan)> {
        self.plans
            .iter()
            .find(|(_, plan)| plan.price_id == price_id)
            .map(|(key, plan)| (key.as_str(), plan))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"{"pro":{"price_id":"price_123","features":["reports","api"],"trial_days":14,"allow_promotion_codes":true},
                              "basic":{"price_id":"price_456"}}"#;

    #[test]
    fn parses_the_documented_shape() {
        let catalog = PlanCatalog::parse(CATALOG).unwrap();
        let pro = catalog.get("pro").unwrap();
        assert_eq!(pro.features, ["reports", "api"]);
        assert_eq!(pro.trial_days, Some(14));
        assert!(pro.allow_promotion_codes);
        assert_eq!(catalog.by_price("price_456").map(|(key, _)| key), Some("basic"));
        assert_eq!(catalog.keys().collect::<Vec<_>>(), ["basic", "pro"]);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_entries() {
        for bad in [
            r#"{"pro":{"price_id":"price_1","colour":"red"}}"#,
            r#"{"pro":{"price_id":"prod_1"}}"#,
            r#"{"Pro Plan":{"price_id":"price_1"}}"#,
            r#"{"a":{"price_id":"price_1"},"b":{"price_id":"price_1"}}"#,
            r#"{"pro":{"price_id":"price_1","trial_days":0}}"#,
            r#"{}"#,
            r#"[]"#,
        ] {
            assert!(PlanCatalog::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_inline_json_or_a_file() {
        let inline = PlanCatalog::from_env(&Env::from_pairs([("BILLING_PLANS", CATALOG)])).unwrap();
        let path = std::env::temp_dir().join(format!("plans-{}.json", std::process::id()));
        std::fs::write(&path, CATALOG).unwrap();
        let from_file = PlanCatalog::from_env(&Env::from_pairs([("BILLING_PLANS", path.to_str().unwrap())])).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(inline, from_file);
        let missing = PlanCatalog::from_env(&Env::from_pairs([("BILLING_PLANS", "/nonexistent/plans.json")]));
        assert!(missing.unwrap_err().to_string().contains("BILLING_PLANS"));
    }
}
