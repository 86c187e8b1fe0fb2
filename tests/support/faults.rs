//! Fault injection for the ports: each wrapper fails a share of calls to the store, the queue
//! or the notifier. Half of the injected failures happen before the call and half after it. An
//! "after" failure is the ambiguous kind a network gives: the write happened, but the caller
//! hears an error. Notifier faults are only "before" faults: an email that was sent cannot be
//! un-sent, and no email API offers an idempotency key, so an ambiguous send is a duplicate
//! email by nature, not a defect to hunt.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use shared::notify::{AppEvent, DunningEmail, Notifier, NotifyError, Publisher};
use shared::queue::{EventQueue, OutboundMessage, QueueError, QueueName, ReceivedMessage};
use shared::store::{
    AccountId, BillingStore, DunningRecord, Entitlement, LedgerClaim, LedgerState, LinkOutcome, PurchaseRecord,
    StoreError, SubscriptionRecord, SubscriptionSample, WriteOutcome, WriteRule,
};

/// The failure rate and the count of what was injected, shared by the wrappers of one run.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// The rate's `f64` bits, so an outage can end mid-run.
    rate: AtomicU64,
    before: AtomicU64,
    after: AtomicU64,
    pause: Mutex<Option<Pause>>,
}

/// A call that stops at a named point until the test lets it go: interleavings made on purpose.
#[derive(Debug)]
struct Pause {
    at: &'static str,
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

#[derive(Clone, Copy)]
enum When {
    Before,
    After,
}

impl FaultPlan {
    pub fn new(rate: f64) -> Self {
        Self {
            rate: AtomicU64::new(rate.to_bits()),
            ..Self::default()
        }
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The next call that reaches `at` (a store method's name) stops there: the first channel
    /// says it arrived, sending on the second lets it go on. One pause at a time.
    pub fn pause_at(&self, at: &'static str) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached, arrived) = oneshot::channel();
        let (go, resume) = oneshot::channel();
        *self.pause.lock().unwrap() = Some(Pause { at, reached, resume });
        (arrived, go)
    }

    async fn checkpoint(&self, point: &'static str) {
        let pause = {
            let mut armed = self.pause.lock().unwrap();
            match armed.as_ref() {
                Some(pause) if pause.at == point => armed.take(),
                _ => None,
            }
        };
        if let Some(pause) = pause {
            let _ = pause.reached.send(());
            let _ = pause.resume.await;
        }
    }

    pub fn injected(&self) -> u64 {
        self.before.load(Ordering::Relaxed) + self.after.load(Ordering::Relaxed)
    }

    fn draw(&self, ambiguous: bool) -> Option<When> {
        if fastrand::f64() >= f64::from_bits(self.rate.load(Ordering::Relaxed)) {
            return None;
        }
        if ambiguous && fastrand::bool() {
            self.after.fetch_add(1, Ordering::Relaxed);
            Some(When::After)
        } else {
            self.before.fetch_add(1, Ordering::Relaxed);
            Some(When::Before)
        }
    }

    /// Runs `call` unless a fault comes first; an "after" fault runs it, then fails.
    async fn around<T, E>(
        &self,
        ambiguous: bool,
        fail: impl FnOnce() -> E,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match self.draw(ambiguous) {
            None => call.await,
            Some(When::Before) => Err(fail()),
            Some(When::After) => {
                let _ = call.await;
                Err(fail())
            }
        }
    }
}

fn store_fault() -> StoreError {
    StoreError::Backend("injected fault".into())
}

type Res<T> = Result<T, StoreError>;

pub struct FlakyStore<S> {
    pub inner: S,
    pub plan: Arc<FaultPlan>,
}

impl<S: BillingStore> BillingStore for FlakyStore<S> {
    async fn link_customer(&self, user: &AccountId, customer_id: &str) -> Res<LinkOutcome> {
        self.plan
            .around(true, store_fault, self.inner.link_customer(user, customer_id))
            .await
    }
    async fn unlink_customer(&self, user: &AccountId, customer_id: &str) -> Res<bool> {
        self.plan
            .around(true, store_fault, self.inner.unlink_customer(user, customer_id))
            .await
    }
    async fn put_checkout_session(&self, session_id: &str, user: &AccountId, expires_at: i64) -> Res<()> {
        self.plan
            .around(
                true,
                store_fault,
                self.inner.put_checkout_session(session_id, user, expires_at),
            )
            .await
    }
    async fn checkout_session_account(&self, session_id: &str) -> Res<Option<AccountId>> {
        self.plan
            .around(false, store_fault, self.inner.checkout_session_account(session_id))
            .await
    }
    async fn customer_of_account(&self, user: &AccountId) -> Res<Option<String>> {
        self.plan
            .around(false, store_fault, self.inner.customer_of_account(user))
            .await
    }
    async fn account_of_customer(&self, customer_id: &str) -> Res<Option<AccountId>> {
        self.plan
            .around(false, store_fault, self.inner.account_of_customer(customer_id))
            .await
    }
    async fn put_subscription(&self, record: &SubscriptionRecord, rule: WriteRule) -> Res<WriteOutcome> {
        self.plan
            .around(true, store_fault, self.inner.put_subscription(record, rule))
            .await
    }
    async fn get_subscription(&self, customer_id: &str, subscription_id: &str) -> Res<Option<SubscriptionRecord>> {
        self.plan
            .around(
                false,
                store_fault,
                self.inner.get_subscription(customer_id, subscription_id),
            )
            .await
    }
    async fn subscriptions_of_customer(&self, customer_id: &str) -> Res<Vec<SubscriptionRecord>> {
        self.plan.checkpoint("subscriptions_of_customer").await;
        self.plan
            .around(false, store_fault, self.inner.subscriptions_of_customer(customer_id))
            .await
    }
    async fn count_request(&self, key: &str, window_start: i64, expires_at: i64) -> Res<u64> {
        self.plan
            .around(
                true,
                store_fault,
                self.inner.count_request(key, window_start, expires_at),
            )
            .await
    }
    async fn sample_subscriptions(&self, limit: usize) -> Res<SubscriptionSample> {
        self.plan
            .around(false, store_fault, self.inner.sample_subscriptions(limit))
            .await
    }
    async fn put_entitlement(&self, entitlement: &Entitlement) -> Res<WriteOutcome> {
        self.plan.checkpoint("put_entitlement").await;
        self.plan
            .around(true, store_fault, self.inner.put_entitlement(entitlement))
            .await
    }
    async fn get_entitlement(&self, user: &AccountId) -> Res<Option<Entitlement>> {
        self.plan.checkpoint("get_entitlement").await;
        self.plan
            .around(false, store_fault, self.inner.get_entitlement(user))
            .await
    }
    async fn mark_announced(&self, user: &AccountId, version: u64) -> Res<()> {
        self.plan
            .around(true, store_fault, self.inner.mark_announced(user, version))
            .await
    }
    async fn claim_event(&self, event_id: &str, now: i64, lease_until: i64) -> Res<LedgerClaim> {
        self.plan
            .around(true, store_fault, self.inner.claim_event(event_id, now, lease_until))
            .await
    }
    async fn complete_event(&self, event_id: &str, token: &str, expires_at: i64) -> Res<()> {
        self.plan
            .around(
                true,
                store_fault,
                self.inner.complete_event(event_id, token, expires_at),
            )
            .await
    }
    async fn release_event(&self, event_id: &str, token: &str) -> Res<()> {
        self.plan
            .around(true, store_fault, self.inner.release_event(event_id, token))
            .await
    }
    async fn event_state(&self, event_id: &str) -> Res<Option<LedgerState>> {
        self.plan
            .around(false, store_fault, self.inner.event_state(event_id))
            .await
    }
    async fn put_dunning(&self, record: &DunningRecord) -> Res<WriteOutcome> {
        self.plan
            .around(true, store_fault, self.inner.put_dunning(record))
            .await
    }
    async fn get_dunning(&self, customer_id: &str, invoice_id: &str) -> Res<Option<DunningRecord>> {
        self.plan
            .around(false, store_fault, self.inner.get_dunning(customer_id, invoice_id))
            .await
    }
    async fn dunning_of_customer(&self, customer_id: &str) -> Res<Vec<DunningRecord>> {
        self.plan.checkpoint("dunning_of_customer").await;
        self.plan
            .around(false, store_fault, self.inner.dunning_of_customer(customer_id))
            .await
    }
    async fn put_purchase(&self, record: &PurchaseRecord) -> Res<()> {
        self.plan
            .around(true, store_fault, self.inner.put_purchase(record))
            .await
    }
    async fn purchases_of_customer(&self, customer_id: &str) -> Res<Vec<PurchaseRecord>> {
        self.plan
            .around(false, store_fault, self.inner.purchases_of_customer(customer_id))
            .await
    }
    async fn get_cursor(&self, name: &str) -> Res<Option<i64>> {
        self.plan.around(false, store_fault, self.inner.get_cursor(name)).await
    }
    async fn set_cursor(&self, name: &str, expected: Option<i64>, value: i64) -> Res<bool> {
        self.plan
            .around(true, store_fault, self.inner.set_cursor(name, expected, value))
            .await
    }
}

pub struct FlakyQueue<Q> {
    pub inner: Q,
    pub plan: Arc<FaultPlan>,
}

impl<Q: EventQueue> EventQueue for FlakyQueue<Q> {
    async fn send(&self, queue: QueueName, message: &OutboundMessage<'_>) -> Result<(), QueueError> {
        let fail = || QueueError::Send {
            queue: queue.as_str(),
            reason: "injected fault".into(),
        };
        self.plan.around(true, fail, self.inner.send(queue, message)).await
    }

    async fn receive(&self, queue: QueueName, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        let fail = || QueueError::Receive {
            queue: queue.as_str(),
            reason: "injected fault".into(),
        };
        // Only "before": messages a lost receive took come back after SQS's visibility timeout,
        // which the in-process queue does not have (the SQS adapter's tests cover SQS).
        self.plan.around(false, fail, self.inner.receive(queue, max)).await
    }

    async fn delete(&self, queue: QueueName, receipt_handle: &str) -> Result<(), QueueError> {
        let fail = || QueueError::Delete {
            queue: queue.as_str(),
            reason: "injected fault".into(),
        };
        self.plan
            .around(true, fail, self.inner.delete(queue, receipt_handle))
            .await
    }
}

pub struct FlakyNotifier<N> {
    pub inner: N,
    pub plan: Arc<FaultPlan>,
}

impl<N: Notifier> Notifier for FlakyNotifier<N> {
    async fn send_email(&self, email: &DunningEmail) -> Result<(), NotifyError> {
        let fail = || NotifyError::Email("injected fault".into());
        self.plan.around(false, fail, self.inner.send_email(email)).await
    }
}

impl<N: Notifier> Publisher for FlakyNotifier<N> {
    async fn publish<E: AppEvent>(&self, event: &E) -> Result<(), NotifyError> {
        let fail = || NotifyError::Publish("injected fault".into());
        self.plan.around(false, fail, self.inner.publish(event)).await
    }
}
