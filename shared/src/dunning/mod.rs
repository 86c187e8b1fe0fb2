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

pub use email::render_email;

/// Policy knobs (environment): `DUNNING_NOTIFY_FIRST_FAILURE` (default true: email from the
/// first failure; false: from the second, as Stripe's first retry often succeeds) and
/// `DUNNING_MAX_NOTIFICATIONS` (default 4: no email after that attempt). The grace period is
/// the syncer's `DUNNING_GRACE_DAYS`. App events are published for every attempt regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DunningPolicy {
    pub notify_first_failure: bool,
    pub max_notifications: u32,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            notify_first_failure: true,
            max_notifications: 4,
        }
    }
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

    pub fn should_email(&self, attempt: u32, action_required: bool) -> bool {
        let wanted = action_required || attempt > 1 || self.notify_first_failure;
        wanted && attempt <= self.max_notifications
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
        assert!(default.should_email(1, false) && default.should_email(4, false) && !default.should_email(5, false));
        let quiet_first = DunningPolicy {
            notify_first_failure: false,
            max_notifications: 2,
        };
        assert!(!quiet_first.should_email(1, false));
        assert!(
            quiet_first.should_email(1, true),
            "authentication requests always go out"
        );
        assert!(quiet_first.should_email(2, false) && !quiet_first.should_email(3, false));
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
}
