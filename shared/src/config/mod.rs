//! The configuration contract, read once at start. Each function asks only for the parts it
//! uses, and a missing or invalid variable fails start-up with a message naming it.

mod accounts;
mod catalog;
mod env;
mod limits;
mod secrets;

use std::num::NonZeroU64;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use accounts::{AccountSettings, AdminRoles, DEFAULT_ACCOUNT_CLAIM};
pub use catalog::{
    Addon, Aggregation, Allowance, Catalog, Currency, DowngradePolicy, Interval, LimitKind, LimitRule, Meter, Offer,
    Plan, PlanMeter, Price, Product, SEATS_LIMIT, SeatRange, valid_code,
};
pub use env::Env;
pub use limits::{RateLimits, RouteClass, WINDOW_SECS as RATE_WINDOW_SECS};
pub use secrets::{Rotating, SecretSource, StripeSecret};

use crate::stripe::client::{DEFAULT_API_BASE, RetryPolicy};
use crate::stripe::signature::DEFAULT_TOLERANCE_SECS;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("invalid value for {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("could not load secrets from AWS Secrets Manager: {0}")]
    Secrets(String),
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// What the Stripe client needs besides its key, which comes from [`StripeSecret::ApiKey`].
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_base: Url,
    pub retry: RetryPolicy,
}

impl StripeSettings {
    /// The API key as read from its secret or variable: required, `rk_…` or `sk_…`.
    pub fn api_key(text: Option<&SecretString>) -> Result<SecretString, ConfigError> {
        let key = text.ok_or(ConfigError::Missing("STRIPE_SECRET_KEY"))?;
        let value = key.expose_secret();
        if !(value.starts_with("sk_") || value.starts_with("rk_")) {
            return Err(invalid(
                "STRIPE_SECRET_KEY",
                "expected a restricted (rk_...) or secret (sk_...) key",
            ));
        }
        Ok(key.clone())
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_base = env.get("STRIPE_API_BASE").unwrap_or(DEFAULT_API_BASE);
        let api_base = Url::parse(api_base).map_err(|error| invalid("STRIPE_API_BASE", error.to_string()))?;
        if !matches!(api_base.scheme(), "https" | "http") {
            return Err(invalid("STRIPE_API_BASE", "must be an http(s) URL"));
        }
        let mut retry = RetryPolicy::default();
        if let Some(seconds) = env.parse_u64("STRIPE_DEADLINE_SECS")? {
            retry.deadline = Duration::from_secs(seconds.max(1));
        }
        Ok(Self { api_base, retry })
    }
}

/// What the webhook receiver needs besides its signing secrets, which come from
/// [`StripeSecret::WebhookSigning`]. The secrets may be absent: the receiver then refuses every
/// delivery with a 500 (fail closed) instead of refusing to start, so the misconfiguration is
/// visible in Stripe's dashboard and in the logs, and Stripe keeps retrying until it is fixed.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub tolerance_secs: NonZeroU64,
}

impl WebhookSettings {
    /// The signing secrets as read: a comma-separated list (the new and the old one during a
    /// rotation), each `whsec_…`; empty when not set.
    pub fn signing_secrets(text: Option<&SecretString>) -> Result<Vec<SecretString>, ConfigError> {
        let Some(text) = text else {
            return Ok(Vec::new());
        };
        text.expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(|secret| {
                if secret.starts_with("whsec_") {
                    Ok(SecretString::from(secret.to_owned()))
                } else {
                    Err(invalid(
                        "STRIPE_WEBHOOK_SECRET",
                        "each comma-separated entry must start with whsec_",
                    ))
                }
            })
            .collect()
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let tolerance = env
            .parse_u64("STRIPE_WEBHOOK_TOLERANCE_SECS")?
            .unwrap_or(DEFAULT_TOLERANCE_SECS);
        let tolerance_secs = NonZeroU64::new(tolerance).ok_or_else(|| {
            invalid(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                "0 would disable replay protection; use a positive number of seconds",
            )
        })?;
        Ok(Self { tolerance_secs })
    }
}

/// What the EventBridge receiver checks an envelope against: `BILLING_EVENTBRIDGE_ACCOUNT`
/// (the AWS account the partner event bus is in; required) and `BILLING_EVENTBRIDGE_SOURCE`
/// (the partner event source, `aws.partner/stripe.com/ed_…`; when unset any Stripe partner
/// source of that account is taken).
#[derive(Debug, Clone)]
pub struct EventBridgeSettings {
    pub account: String,
    pub source: Option<String>,
}

impl EventBridgeSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let account = env.require("BILLING_EVENTBRIDGE_ACCOUNT")?.trim().to_owned();
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "BILLING_EVENTBRIDGE_ACCOUNT",
                "expected a 12-digit AWS account id",
            ));
        }
        let source = env
            .get("BILLING_EVENTBRIDGE_SOURCE")
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some(source) = source {
            if !source.starts_with(crate::eventbridge::STRIPE_SOURCE_PREFIX) {
                return Err(invalid(
                    "BILLING_EVENTBRIDGE_SOURCE",
                    "expected Stripe's partner event source, aws.partner/stripe.com/ed_…",
                ));
            }
        }
        Ok(Self {
            account,
            source: source.map(str::to_owned),
        })
    }
}

/// The two FIFO queues the webhook routes to.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub events_url: String,
    pub payment_failed_url: String,
}

impl QueueSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let events_url = env.require("EVENTS_QUEUE_URL")?.to_owned();
        let payment_failed_url = env.require("PAYMENT_FAILED_QUEUE_URL")?.to_owned();
        for (var, url) in [
            ("EVENTS_QUEUE_URL", &events_url),
            ("PAYMENT_FAILED_QUEUE_URL", &payment_failed_url),
        ] {
            if !url.ends_with(".fifo") {
                return Err(invalid(var, "must be the URL of a FIFO queue (ending in .fifo)"));
            }
        }
        Ok(Self {
            events_url,
            payment_failed_url,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub table: String,
}

impl StoreSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            table: env.require("BILLING_TABLE")?.to_owned(),
        })
    }
}

/// Where meter events go: the v2 stream's host (`STRIPE_METER_EVENTS_BASE`, Stripe's own by
/// default; the simulator's locally) and the API (`USAGE_STRIPE_API`: `v2`, the default, or
/// `v1`, one event a request, for accounts without the stream).
#[derive(Debug, Clone)]
pub struct UsageSettings {
    pub meter_events_base: Url,
    pub api: crate::stripe::meter_events::MeterApi,
    /// The usage queue (`USAGE_QUEUE_URL`), for reporters; the consumer is triggered by it.
    pub queue_url: Option<String>,
}

impl UsageSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        use crate::stripe::meter_events::{DEFAULT_METER_EVENTS_BASE, MeterApi};
        let raw = env.get("STRIPE_METER_EVENTS_BASE").unwrap_or(DEFAULT_METER_EVENTS_BASE);
        let meter_events_base =
            Url::parse(raw).map_err(|error| invalid("STRIPE_METER_EVENTS_BASE", error.to_string()))?;
        if !matches!(meter_events_base.scheme(), "https" | "http") {
            return Err(invalid("STRIPE_METER_EVENTS_BASE", "must be an http(s) URL"));
        }
        let api = match env.get("USAGE_STRIPE_API").unwrap_or("v2") {
            "v2" => MeterApi::V2,
            "v1" => MeterApi::V1,
            _ => return Err(invalid("USAGE_STRIPE_API", "must be v2 or v1")),
        };
        Ok(Self {
            meter_events_base,
            api,
            queue_url: env.get("USAGE_QUEUE_URL").map(str::to_owned),
        })
    }
}

/// The one origin that success, cancel and return URLs may point to.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub base_url: Url,
}

impl AppSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = env.require("APP_BASE_URL")?;
        let base_url = Url::parse(raw).map_err(|error| invalid("APP_BASE_URL", error.to_string()))?;
        let local = matches!(base_url.host_str(), Some("localhost" | "127.0.0.1"));
        if base_url.scheme() != "https" && !(local && base_url.scheme() == "http") {
            return Err(invalid("APP_BASE_URL", "must be https (http only for localhost)"));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() || !base_url.username().is_empty() {
            return Err(invalid(
                "APP_BASE_URL",
                "must be an origin (optionally with a path), without query, fragment or credentials",
            ));
        }
        Ok(Self { base_url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_are_a_comma_separated_list() {
        let text = SecretString::from("whsec_old, whsec_new,");
        let secrets = WebhookSettings::signing_secrets(Some(&text)).unwrap();
        let secrets: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["whsec_old", "whsec_new"]);
        assert_eq!(
            WebhookSettings::from_env(&Env::default()).unwrap().tolerance_secs.get(),
            300
        );
        let bad = SecretString::from("whsec_ok,sk_test_oops");
        let error = WebhookSettings::signing_secrets(Some(&bad)).unwrap_err().to_string();
        assert!(
            error.contains("STRIPE_WEBHOOK_SECRET") && !error.contains("oops"),
            "{error}"
        );
    }

    #[test]
    fn missing_webhook_secret_is_allowed_but_empty() {
        assert!(WebhookSettings::signing_secrets(None).unwrap().is_empty());
    }

    #[test]
    fn zero_tolerance_is_refused() {
        let env = Env::from_pairs([("STRIPE_WEBHOOK_TOLERANCE_SECS", "0")]);
        let error = WebhookSettings::from_env(&env).unwrap_err().to_string();
        assert!(error.contains("STRIPE_WEBHOOK_TOLERANCE_SECS"), "{error}");
    }

    #[test]
    fn errors_name_the_missing_variable() {
        let error = QueueSettings::from_env(&Env::from_pairs([("EVENTS_QUEUE_URL", "https://q/e.fifo")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing required environment variable PAYMENT_FAILED_QUEUE_URL"
        );
        let error = StripeSettings::api_key(None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing required environment variable STRIPE_SECRET_KEY"
        );
    }

    #[test]
    fn queues_must_be_fifo() {
        let env = Env::from_pairs([
            ("EVENTS_QUEUE_URL", "https://q/e"),
            ("PAYMENT_FAILED_QUEUE_URL", "https://q/p.fifo"),
        ]);
        assert!(
            QueueSettings::from_env(&env)
                .unwrap_err()
                .to_string()
                .contains("EVENTS_QUEUE_URL")
        );
    }

    #[test]
    fn stripe_settings_default_to_stripe() {
        assert_eq!(
            StripeSettings::from_env(&Env::default()).unwrap().api_base.as_str(),
            "https://api.stripe.com/"
        );
        for (key, ok) in [("rk_test_123", true), ("sk_test_123", true), ("pk_test_123", false)] {
            let key = SecretString::from(key);
            assert_eq!(StripeSettings::api_key(Some(&key)).is_ok(), ok);
        }
    }

    #[test]
    fn app_base_url_must_be_a_safe_origin() {
        for good in ["https://app.example.com", "http://localhost:3000"] {
            assert!(
                AppSettings::from_env(&Env::from_pairs([("APP_BASE_URL", good)])).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "http://app.example.com",
            "https://u:p@app.example.com",
            "https://app.example.com/?x=1",
            "not a url",
        ] {
            assert!(
                AppSettings::from_env(&Env::from_pairs([("APP_BASE_URL", bad)])).is_err(),
                "{bad}"
            );
        }
    }
}
