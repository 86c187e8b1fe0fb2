//! Failed-payment processing (the `payment-failed` queue): records the dunning episode per
//! invoice, moves access to grace, and tells the customer and the app — once per attempt.
//! Recovery comes through the events processor: `invoice.paid` closes the episode.

mod email;
mod invoice_payment_failed;

use crate::config::{ConfigError, Env};
use crate::notify::Notifier;
use crate::processing::{EventHandler, Outcome, ProcessError};
use crate::routing::{EventKind, Handler};
use crate::store::BillingStore;
use crate::stripe::Event;
use crate::sync::Syncer;

pub use email::{EmailContext, render_email};

/// Policy knobs (environment):
///
/// - `DUNNING_NOTIFY_FIRST_FAILURE` (default true: email from the first failure; false: from
///   the second, as Stripe's first retry often succeeds).
/// - `DUNNING_MAX_NOTIFICATIONS` (default 8): no "payment failed" email for a retry after that
///   attempt. 8 because Stripe's recommended Smart Retries policy makes up to 8 tries
///   (<https://docs.stripe.com/billing/revenue-recovery/smart-retries>), so a lower cap would
///   silence the last ones. The cap never silences the final attempt (the invoice's
///   `next_payment_attempt` is null: Stripe will not retry, and the customer must learn that
///   access ends at the grace deadline) nor a 3-D Secure "confirm your payment" email (the
///   payment cannot succeed without the customer).
///
/// The grace period is the syncer's `DUNNING_GRACE_DAYS`. App events are published for every
/// attempt regardless, the action-required one apart from the failure one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DunningPolicy {
    pub notify_first_failure: bool,
    pub max_notifications: u32,
}

/// Stripe's Smart Retries recommendation: up to 8 tries.
pub const DEFAULT_MAX_NOTIFICATIONS: u32 = 8;

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            notify_first_failure: true,
            max_notifications: DEFAULT_MAX_NOTIFICATIONS,
        }
    }
}

/// What kind of notice an attempt calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A failed attempt Stripe will retry (`next_payment_attempt` set).
    Retrying,
    /// A failed attempt after which Stripe will not retry (`next_payment_attempt` null).
    FinalAttempt,
    /// The customer must authenticate (3-D Secure) for the attempt to go through.
    ActionRequired,
}

impl DunningPolicy {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut policy = Self::default();
        if let Some(value) = env.get("DUNNING_NOTIFY_FIRST_FAILURE") {
            policy.notify_first_failure = match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "DUNNING_NOTIFY_FIRST_FAILURE",
                        reason: "expected true or false".into(),
                    });
                }
            };
        }
        if let Some(max) = env.parse_u64("DUNNING_MAX_NOTIFICATIONS")? {
            policy.max_notifications = u32::try_from(max).unwrap_or(u32::MAX);
        }
        Ok(policy)
    }

    pub fn should_email(&self, attempt: u32, notice: Notice) -> bool {
        match notice {
            Notice::ActionRequired | Notice::FinalAttempt => true,
            Notice::Retrying => (attempt > 1 || self.notify_first_failure) && attempt <= self.max_notifications,
        }
    }
}

pub struct DunningProcessor<S, N> {
    pub syncer: Syncer<S>,
    pub notifier: N,
    pub policy: DunningPolicy,
}

impl<S: BillingStore, N: Notifier> EventHandler for DunningProcessor<S, N> {
    type Store = S;

    fn store(&self) -> &S {
        &self.syncer.store
    }

    fn stripe(&self) -> &crate::stripe::StripeClient {
        &self.syncer.stripe
    }

    fn handles(&self, handler: Handler) -> bool {
        handler == Handler::Dunning
    }

    async fn apply(&self, kind: EventKind, event: &Event) -> Result<Outcome, ProcessError> {
        invoice_payment_failed::apply(self, kind, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_knobs() {
        let default = DunningPolicy::default();
        assert_eq!(default.max_notifications, 8, "Smart Retries' recommended 8 tries");
        assert!((1..=8).all(|attempt| default.should_email(attempt, Notice::Retrying)));
        assert!(!default.should_email(9, Notice::Retrying));
        let quiet_first = DunningPolicy {
            notify_first_failure: false,
            max_notifications: 2,
        };
        assert!(!quiet_first.should_email(1, Notice::Retrying));
        assert!(
            quiet_first.should_email(1, Notice::ActionRequired),
            "authentication requests always go out"
        );
        assert!(quiet_first.should_email(2, Notice::Retrying) && !quiet_first.should_email(3, Notice::Retrying));
        let env = Env::from_pairs([
            ("DUNNING_NOTIFY_FIRST_FAILURE", "false"),
            ("DUNNING_MAX_NOTIFICATIONS", "3"),
        ]);
        assert_eq!(
            DunningPolicy::from_env(&env).unwrap(),
            DunningPolicy {
                notify_first_failure: false,
                max_notifications: 3
            }
        );
        assert!(DunningPolicy::from_env(&Env::from_pairs([("DUNNING_NOTIFY_FIRST_FAILURE", "maybe")])).is_err());
    }

    #[test]
    fn the_cap_never_silences_the_final_attempt_nor_an_authentication_request() {
        for policy in [
            DunningPolicy::default(),
            DunningPolicy {
                notify_first_failure: false,
                max_notifications: 0,
            },
        ] {
            for attempt in [1, 4, 5, 9, 20] {
                assert!(
                    policy.should_email(attempt, Notice::FinalAttempt),
                    "{policy:?} {attempt}"
                );
                assert!(
                    policy.should_email(attempt, Notice::ActionRequired),
                    "{policy:?} {attempt}"
                );
            }
        }
    }

    #[test]
    fn stored_records_without_the_action_counters_still_parse() {
        // A record as the previous release stored it (no action-required counters).
        let stored = serde_json::json!({
            "invoice_id": "in_1", "customer_id": "cus_1", "subscription_id": "sub_1",
            "stage": "retrying", "attempt_count": 2, "next_payment_attempt": null,
            "failure_code": null, "decline_code": null, "hosted_invoice_url": null,
            "grace_until": 1_900_000_000, "watermark": 5, "emailed_attempt": 2, "published_attempt": 2
        });
        let record: crate::store::DunningRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(
            (
                record.emailed_attempt,
                record.emailed_action_attempt,
                record.published_action_attempt
            ),
            (2, 0, 0)
        );
    }
}
