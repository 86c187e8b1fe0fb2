//! The reporting contract: what the app sends for each unit of use, and the checks every
//! report passes at the edge before anything is counted or sent. The JSON Schema of a report
//! is `infra/schemas/usage_event.schema.json`.

use serde::{Deserialize, Serialize};

use crate::config::{Aggregation, Catalog};
use crate::store::AccountId;

/// Stripe takes meter events whose timestamp lies "within the past 35 calendar days or up to 5
/// minutes in the future" (the meter event API reference).
pub const STRIPE_PAST_WINDOW_SECS: i64 = 35 * 86_400;
pub const STRIPE_FUTURE_WINDOW_SECS: i64 = 5 * 60;
/// The edge accepts one day less than Stripe, so a report that waits out its queue's retries
/// (minutes) or a redrive from the dead-letter queue (days at most) still lands inside Stripe's
/// window when it is sent.
pub const ACCEPTED_PAST_SECS: i64 = STRIPE_PAST_WINDOW_SECS - 86_400;
/// Stripe's limit on a meter event identifier.
pub const MAX_IDENTIFIER_LEN: usize = 100;
/// Larger values are refused: Stripe rejects values with too many digits, and a sum of such
/// values would lose units in a double.
pub const MAX_VALUE: f64 = 1e12;

/// One report of use, as the app sends it (one SQS message body, or one item of
/// `billing usage report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The billable account (the same id `GET /billing/me` is keyed by).
    pub account: String,
    /// A meter key of the catalog (`api_calls`), not Stripe's event name.
    pub meter: String,
    /// How much was used; 1 when absent. A count meter counts events whatever their value.
    #[serde(default = "one")]
    pub value: f64,
    /// Unique per unit of use, chosen by the app (a request id): a report sent twice with the
    /// same identifier counts once, here and in Stripe.
    pub identifier: Option<String>,
    /// When it was used (Unix seconds); the time the message was queued when absent.
    #[serde(default)]
    pub timestamp: Option<i64>,
}

fn one() -> f64 {
    1.0
}

/// Why a report was refused at the edge: it is counted (`UsageRejected`, by reason) and
/// never sent. No retry could make it valid, so it is not retried either.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("not a usage report: {0}")]
    Malformed(String),
    #[error("the account id is not valid (1-128 printable characters without '#')")]
    InvalidAccount,
    #[error("unknown meter {0:?}: the catalog's meters are {1}")]
    UnknownMeter(String, String),
    #[error("the value must be 0 or a finite number between 10^-9 and 10^12")]
    InvalidValue,
    #[error("an identifier is required (1-100 visible ASCII characters), so a repeat counts once")]
    MissingIdentifier,
    #[error("the identifier must be 1-100 visible ASCII characters")]
    InvalidIdentifier,
    #[error("the timestamp lies outside Stripe's window (the past 34 days to 5 minutes ahead)")]
    OutsideWindow,
}

impl Rejection {
    /// A short name for the metric's dimension.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::InvalidAccount => "invalid_account",
            Rejection::UnknownMeter(..) => "unknown_meter",
            Rejection::InvalidValue => "invalid_value",
            Rejection::MissingIdentifier => "missing_identifier",
            Rejection::InvalidIdentifier => "invalid_identifier",
            Rejection::OutsideWindow => "outside_window",
        }
    }
}

/// A report that passed every check: safe to count and to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidUsage {
    pub account: AccountId,
    pub meter: String,
    pub event_name: String,
    pub aggregation: Aggregation,
    pub value: f64,
    pub identifier: String,
    pub timestamp: i64,
}

impl ValidUsage {
    /// What the report adds to its counter: its value, or one event of a count meter.
    pub fn amount(&self) -> f64 {
        match self.aggregation {
            Aggregation::Sum => self.value,
            Aggregation::Count => 1.0,
        }
    }
}

/// The smallest non-zero value: DynamoDB's numbers stop at 10^-130 and Stripe's at a few
/// decimals; a smaller one would make its whole group fail on every receive.
pub const MIN_VALUE: f64 = 1e-9;

impl UsageEvent {
    /// One message body as a report, unchecked.
    pub fn parse(body: &str) -> Result<Self, Rejection> {
        // serde's message quotes the body's values; the line and column say enough.
        serde_json::from_str(body).map_err(|error| {
            Rejection::Malformed(format!(
                "{:?} at line {} column {}",
                error.classify(),
                error.line(),
                error.column()
            ))
        })
    }

    /// Parses and checks one message body; `queued_at` stands in for an absent timestamp.
    pub fn validate_body(body: &str, catalog: &Catalog, now: i64, queued_at: i64) -> Result<ValidUsage, Rejection> {
        Self::parse(body)?.validate(catalog, now, queued_at)
    }

    /// The identifier, if it is one a record can be keyed by.
    pub fn identifier_checked(&self) -> Result<&str, Rejection> {
        let identifier = self.identifier.as_deref().ok_or(Rejection::MissingIdentifier)?;
        let visible = |c: char| c.is_ascii_graphic();
        if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN || !identifier.chars().all(visible) {
            return Err(Rejection::InvalidIdentifier);
        }
        Ok(identifier)
    }

    pub fn validate(self, catalog: &Catalog, now: i64, queued_at: i64) -> Result<ValidUsage, Rejection> {
        let account = AccountId::parse(&self.account).map_err(|_| Rejection::InvalidAccount)?;
        let Some(meter) = catalog.meter(&self.meter) else {
            let known: Vec<&str> = catalog.meters().map(|(key, _)| key).collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(Rejection::UnknownMeter(self.meter.chars().take(64).collect(), known));
        };
        let tiny = self.value != 0.0 && self.value < MIN_VALUE;
        if !self.value.is_finite() || !(0.0..=MAX_VALUE).contains(&self.value) || tiny {
            return Err(Rejection::InvalidValue);
        }
        let identifier = self.identifier_checked()?.to_owned();
        let timestamp = self.timestamp.unwrap_or(queued_at);
        if timestamp < now - ACCEPTED_PAST_SECS || timestamp > now + STRIPE_FUTURE_WINDOW_SECS {
            return Err(Rejection::OutsideWindow);
        }
        Ok(ValidUsage {
            account,
            meter: self.meter,
            event_name: meter.event_name.clone(),
            aggregation: meter.aggregation,
            value: self.value,
            identifier,
            timestamp,
        })
    }
}
