//! The time by which the current invocation (a Lambda run, an API request) must have answered.
//!
//! It is set once per invocation with [`Deadline::scope`] and read where time is spent: the
//! Stripe client ends each call by it, whatever its own per-call limit, and the batch runner
//! stops taking messages when the rest would not fit. A task-local rather than a parameter on
//! every store and Stripe method, because only those two places read it and every layer in
//! between would otherwise carry it unused.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Deadline;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// `duration` from now.
    pub fn after(duration: Duration) -> Self {
        let now = Instant::now();
        Self(
            now.checked_add(duration)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        )
    }

    /// Lambda's deadline (epoch milliseconds, from the invocation's context) less `margin`,
    /// the time kept to answer and flush logs; never in the past.
    pub fn from_lambda(deadline_epoch_ms: u64, now_epoch_ms: u64, margin: Duration) -> Self {
        let left = Duration::from_millis(deadline_epoch_ms.saturating_sub(now_epoch_ms));
        Self::after(left.saturating_sub(margin))
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Runs `future` with this deadline as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        DEADLINE.scope(self, future).await
    }

    /// The deadline of the invocation this task runs in, when one was set.
    pub fn current() -> Option<Self> {
        DEADLINE.try_with(|deadline| *deadline).ok()
    }
}

/// Milliseconds since the Unix epoch, the unit of Lambda's deadline.
pub fn epoch_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_sets_the_current_deadline() {
        assert_eq!(Deadline::current(), None);
        let deadline = Deadline::after(Duration::from_secs(5));
        let seen = deadline.scope(async { Deadline::current() }).await;
        assert_eq!(seen, Some(deadline));
    }

    #[test]
    fn lambda_deadlines_keep_the_margin_and_never_lie_in_the_past() {
        let deadline = Deadline::from_lambda(1_000_060_000, 1_000_000_000, Duration::from_secs(2));
        let remaining = deadline.remaining();
        assert!(
            remaining <= Duration::from_secs(58) && remaining > Duration::from_secs(57),
            "{remaining:?}"
        );
        assert_eq!(
            Deadline::from_lambda(5, 10, Duration::from_secs(2)).remaining(),
            Duration::ZERO
        );
        // A deadline beyond what Instant can hold saturates instead of panicking.
        let _ = Deadline::from_lambda(u64::MAX, 0, Duration::ZERO);
    }
}
