//! Per-account request limits of the billing API (`BILLING_RATE_LIMITS`), one fixed window of
//! 60 s per route class. They keep one signed-in caller from spending the stage's throttle and,
//! through the routes that call Stripe, the Stripe account's rate budget that the processors'
//! reads share.

use super::{ConfigError, Env, invalid};

/// The length of a counting window.
pub const WINDOW_SECS: i64 = 60;

/// The routes, by what a call costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// The routes that write to Stripe: checkout and portal sessions, plan changes,
    /// cancellations and resumes.
    Writes,
    /// `POST /billing/sync` and `GET /billing/invoices`: a Stripe list each.
    Sync,
    /// Everything else.
    Other,
}

impl RouteClass {
    pub const fn name(self) -> &'static str {
        match self {
            RouteClass::Writes => "writes",
            RouteClass::Sync => "sync",
            RouteClass::Other => "other",
        }
    }
}

/// Requests per account and window for each class; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub writes: Option<u64>,
    pub sync: Option<u64>,
    pub other: Option<u64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            writes: Some(10),
            sync: Some(6),
            other: Some(60),
        }
    }
}

impl RateLimits {
    /// No limits (benchmarks, tests of other things).
    pub const UNLIMITED: RateLimits = RateLimits {
        writes: None,
        sync: None,
        other: None,
    };

    pub fn limit(&self, class: RouteClass) -> Option<u64> {
        match class {
            RouteClass::Writes => self.writes,
            RouteClass::Sync => self.sync,
            RouteClass::Other => self.other,
        }
    }

    /// `writes=10,sync=6,other=60` (per minute; any class left out keeps its default; 0 turns
    /// a class's limit off).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut limits = RateLimits::default();
        let Some(text) = env.get("BILLING_RATE_LIMITS") else {
            return Ok(limits);
        };
        for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| invalid("BILLING_RATE_LIMITS", format!("expected class=number, got {entry:?}")))?;
            let value: u64 = value.trim().parse().map_err(|_| {
                invalid(
                    "BILLING_RATE_LIMITS",
                    format!("{}: expected a whole number of requests per minute", name.trim()),
                )
            })?;
            let slot = match name.trim() {
                "writes" => &mut limits.writes,
                "sync" => &mut limits.sync,
                "other" => &mut limits.other,
                other => {
                    return Err(invalid(
                        "BILLING_RATE_LIMITS",
                        format!("unknown class {other:?}; the classes are writes, sync and other"),
                    ));
                }
            };
            *slot = (value > 0).then_some(value);
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(RateLimits::from_env(&Env::default()).unwrap(), RateLimits::default());
        let env = Env::from_pairs([("BILLING_RATE_LIMITS", "sync=2, other=0")]);
        let limits = RateLimits::from_env(&env).unwrap();
        assert_eq!((limits.writes, limits.sync, limits.other), (Some(10), Some(2), None));
        for bad in ["sync", "sync=x", "reads=5", "sync=-1"] {
            let env = Env::from_pairs([("BILLING_RATE_LIMITS", bad)]);
            let error = RateLimits::from_env(&env).unwrap_err().to_string();
            assert!(error.contains("BILLING_RATE_LIMITS"), "{bad}: {error}");
        }
    }
}
