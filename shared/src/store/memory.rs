//! The in-memory store: the same contract as DynamoDB, for unit tests, benchmarks and
//! `billing dev`. Every method is one critical section, like one conditional write.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::usage::{AccountUsage, Commit, CommitOutcome, CounterKey, RecordedUsage, UsageCounter, UsageLedger};

#[derive(Debug)]
enum Ledger {
    InProgress { token: String, lease_until: i64 },
    Completed,
}

#[derive(Default)]
struct State {
    customer_by_user: HashMap<String, String>,
    user_by_customer: HashMap<String, AccountId>,
    subscriptions: HashMap<(String, String), SubscriptionRecord>,
    entitlements: HashMap<String, Entitlement>,
    ledger: HashMap<String, Ledger>,
    dunning: HashMap<(String, String), DunningRecord>,
    purchases: HashMap<(String, String), PurchaseRecord>,
    cursors: HashMap<String, i64>,
    checkout_sessions: HashMap<String, AccountId>,
    /// Per key: the window the count is in, and the count.
    request_counts: HashMap<String, (i64, u64)>,
    usage_ids: HashMap<String, RecordedUsage>,
    usage_counters: HashMap<CounterKey, UsageCounter>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }
}

fn sorted<T: Clone, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut items: Vec<T> = items.collect();
    items.sort_by_key(key);
    items
}

impl BillingStore for MemoryStore {
    async fn link_customer(&self, account: &AccountId, customer_id: &str) -> Res<LinkOutcome> {
        Ok(self.with(|state| {
            if let Some(existing) = state.customer_by_user.get(account.as_str()) {
                return LinkOutcome::AlreadyLinked(existing.clone());
            }
            if let Some(owner) = state.user_by_customer.get(customer_id) {
                return LinkOutcome::CustomerTaken(owner.clone());
            }
            state
                .customer_by_user
                .insert(account.as_str().to_owned(), customer_id.to_owned());
            state.user_by_customer.insert(customer_id.to_owned(), account.clone());
            LinkOutcome::Linked
        }))
    }

    async fn unlink_customer(&self, account: &AccountId, customer_id: &str) -> Res<bool> {
        Ok(self.with(|state| {
            if state.customer_by_user.get(account.as_str()).map(String::as_str) != Some(customer_id) {
                return false;
            }
            state.customer_by_user.remove(account.as_str());
            state.user_by_customer.remove(customer_id);
            true
        }))
    }

    async fn put_checkout_session(&self, session_id: &str, account: &AccountId, _expires_at: i64) -> Res<()> {
        self.with(|state| state.checkout_sessions.insert(session_id.to_owned(), account.clone()));
        Ok(())
    }

    async fn checkout_session_account(&self, session_id: &str) -> Res<Option<AccountId>> {
        Ok(self.with(|state| state.checkout_sessions.get(session_id).cloned()))
    }

    async fn customer_of_account(&self, account: &AccountId) -> Res<Option<String>> {
        Ok(self.with(|state| state.customer_by_user.get(account.as_str()).cloned()))
    }

    async fn account_of_customer(&self, customer_id: &str) -> Res<Option<AccountId>> {
        Ok(self.with(|state| state.user_by_customer.get(customer_id).cloned()))
    }

    async fn put_subscription(&self, record: &SubscriptionRecord, rule: WriteRule) -> Res<WriteOutcome> {
        Ok(self.with(|state| {
            let key = (record.customer_id.clone(), record.subscription_id.clone());
            let allowed = match (state.subscriptions.get(&key), rule) {
                (None, _) => true,
                (Some(stored), WriteRule::IfNewer) => stored.watermark < record.watermark,
                (Some(stored), WriteRule::IfNotOlder) => stored.watermark <= record.watermark,
            };
            if !allowed {
                return WriteOutcome::Stale;
            }
            let mut record = record.clone();
            record.past_due_since = past_due_since(state.subscriptions.get(&key), &record);
            state.subscriptions.insert(key, record);
            WriteOutcome::Written
        }))
    }

    async fn get_subscription(&self, customer_id: &str, subscription_id: &str) -> Res<Option<SubscriptionRecord>> {
        Ok(self.with(|state| {
            state
                .subscriptions
                .get(&(customer_id.to_owned(), subscription_id.to_owned()))
                .cloned()
        }))
    }

    async fn subscriptions_of_customer(&self, customer_id: &str) -> Res<Vec<SubscriptionRecord>> {
        Ok(self.with(|state| {
            let records = state
                .subscriptions
                .values()
                .filter(|r| r.customer_id == customer_id)
                .cloned();
            sorted(records, |r| r.subscription_id.clone())
        }))
    }

    async fn sample_subscriptions(&self, limit: usize) -> Res<SubscriptionSample> {
        Ok(self.with(|state| {
            let mut sample = Reservoir::new(limit);
            let budget = sample_read_budget(limit);
            // A random start, then in order, like DynamoDB's random segment.
            let mut records: Vec<&SubscriptionRecord> = state.subscriptions.values().collect();
            records.sort_by(|a, b| (&a.customer_id, &a.subscription_id).cmp(&(&b.customer_id, &b.subscription_id)));
            let start = fastrand::usize(..records.len().max(1));
            let read = records.len().min(budget);
            for record in records.iter().cycle().skip(start).take(read) {
                sample.offer((*record).clone());
            }
            SubscriptionSample {
                records: sample.into_items(),
                items_read: read,
            }
        }))
    }

    async fn put_entitlement(&self, entitlement: &Entitlement) -> Res<WriteOutcome> {
        Ok(self.with(|state| {
            let stored = state
                .entitlements
                .get(entitlement.account_id.as_str())
                .map_or(0, |e| e.version);
            if stored.checked_add(1) != Some(entitlement.version) {
                return WriteOutcome::Stale;
            }
            state
                .entitlements
                .insert(entitlement.account_id.as_str().to_owned(), entitlement.clone());
            WriteOutcome::Written
        }))
    }

    async fn get_entitlement(&self, account: &AccountId) -> Res<Option<Entitlement>> {
        Ok(self.with(|state| state.entitlements.get(account.as_str()).cloned()))
    }

    async fn mark_announced(&self, account: &AccountId, version: u64) -> Res<()> {
        self.with(|state| {
            if let Some(stored) = state.entitlements.get_mut(account.as_str()) {
                if stored.version == version {
                    stored.announced_version = version;
                }
            }
        });
        Ok(())
    }

    async fn claim_event(&self, event_id: &str, now: i64, lease_until: i64) -> Res<LedgerClaim> {
        Ok(self.with(|state| match state.ledger.get(event_id) {
            Some(Ledger::Completed) => LedgerClaim::Completed,
            Some(Ledger::InProgress { lease_until: held, .. }) if *held >= now => {
                LedgerClaim::Busy { lease_until: *held }
            }
            _ => {
                let token = uuid::Uuid::new_v4().to_string();
                state.ledger.insert(
                    event_id.to_owned(),
                    Ledger::InProgress {
                        token: token.clone(),
                        lease_until,
                    },
                );
                LedgerClaim::Acquired { token }
            }
        }))
    }

    async fn complete_event(&self, event_id: &str, token: &str, _expires_at: i64) -> Res<()> {
        self.with(|state| match state.ledger.get(event_id) {
            Some(Ledger::InProgress { token: held, .. }) if held == token => {
                state.ledger.insert(event_id.to_owned(), Ledger::Completed);
                Ok(())
            }
            _ => Err(StoreError::LeaseLost(event_id.to_owned())),
        })
    }

    async fn release_event(&self, event_id: &str, token: &str) -> Res<()> {
        self.with(|state| match state.ledger.get(event_id) {
            Some(Ledger::InProgress { token: held, .. }) if held == token => {
                state.ledger.remove(event_id);
                Ok(())
            }
            _ => Err(StoreError::LeaseLost(event_id.to_owned())),
        })
    }

    async fn event_state(&self, event_id: &str) -> Res<Option<LedgerState>> {
        Ok(self.with(|state| {
            state.ledger.get(event_id).map(|entry| match entry {
                Ledger::Completed => LedgerState::Completed,
                Ledger::InProgress { lease_until, .. } => LedgerState::InProgress {
                    lease_until: *lease_until,
                },
            })
        }))
    }

    async fn put_dunning(&self, record: &DunningRecord) -> Res<WriteOutcome> {
        Ok(self.with(|state| {
            let key = (record.customer_id.clone(), record.invoice_id.clone());
            let reopens = record.stage != DunningStage::Closed
                && state
                    .dunning
                    .get(&key)
                    .is_some_and(|stored| stored.stage == DunningStage::Closed);
            if reopens {
                return WriteOutcome::Stale;
            }
            state.dunning.insert(key, record.clone());
            WriteOutcome::Written
        }))
    }

    async fn get_dunning(&self, customer_id: &str, invoice_id: &str) -> Res<Option<DunningRecord>> {
        Ok(self.with(|state| {
            state
                .dunning
                .get(&(customer_id.to_owned(), invoice_id.to_owned()))
                .cloned()
        }))
    }

    async fn dunning_of_customer(&self, customer_id: &str) -> Res<Vec<DunningRecord>> {
        Ok(self.with(|state| {
            let records = state.dunning.values().filter(|r| r.customer_id == customer_id).cloned();
            sorted(records, |r| r.invoice_id.clone())
        }))
    }

    async fn put_purchase(&self, record: &PurchaseRecord) -> Res<()> {
        self.with(|state| {
            let key = (record.customer_id.clone(), record.payment_intent_id.clone());
            let merged = PurchaseRecord::merged(state.purchases.get(&key), record);
            state.purchases.insert(key, merged);
        });
        Ok(())
    }

    async fn purchases_of_customer(&self, customer_id: &str) -> Res<Vec<PurchaseRecord>> {
        Ok(self.with(|state| {
            let records = state
                .purchases
                .values()
                .filter(|r| r.customer_id == customer_id)
                .cloned();
            sorted(records, |r| r.payment_intent_id.clone())
        }))
    }

    async fn count_request(&self, key: &str, window_start: i64, _expires_at: i64) -> Res<u64> {
        Ok(self.with(|state| {
            let (window, count) = state.request_counts.entry(key.to_owned()).or_insert((window_start, 0));
            if *window < window_start {
                (*window, *count) = (window_start, 0);
            }
            *count += 1;
            *count
        }))
    }

    async fn get_cursor(&self, name: &str) -> Res<Option<i64>> {
        Ok(self.with(|state| state.cursors.get(name).copied()))
    }

    async fn set_cursor(&self, name: &str, expected: Option<i64>, value: i64) -> Res<bool> {
        Ok(self.with(|state| {
            if state.cursors.get(name).copied() != expected {
                return false;
            }
            state.cursors.insert(name.to_owned(), value);
            true
        }))
    }
}

impl UsageLedger for MemoryStore {
    async fn recorded(&self, identifiers: &[&str]) -> Res<HashMap<String, RecordedUsage>> {
        Ok(self.with(|state| {
            identifiers
                .iter()
                .filter_map(|id| state.usage_ids.get(*id).map(|found| ((*id).to_owned(), found.clone())))
                .collect()
        }))
    }

    async fn account_usage(&self, account: &AccountId) -> Res<AccountUsage> {
        Ok(self.with(|state| AccountUsage {
            customer_id: state.customer_by_user.get(account.as_str()).cloned(),
            entitlement: state.entitlements.get(account.as_str()).cloned(),
            counters: sorted(
                state
                    .usage_counters
                    .iter()
                    .filter(|(key, _)| key.account == *account)
                    .map(|(_, counter)| counter.clone()),
                |counter| (counter.meter.clone(), counter.period_start),
            ),
        }))
    }

    async fn commit(&self, commit: &Commit) -> Res<CommitOutcome> {
        Ok(self.with(|state| {
            let taken: Vec<String> = commit
                .identifiers
                .iter()
                .filter(|(id, _)| state.usage_ids.contains_key(id))
                .map(|(id, _)| id.clone())
                .collect();
            if !taken.is_empty() {
                return CommitOutcome::Taken(taken);
            }
            for (id, send) in &commit.identifiers {
                let recorded = RecordedUsage {
                    counter: commit.counter.clone(),
                    send: send.clone(),
                };
                state.usage_ids.insert(id.clone(), recorded);
            }
            let counter = state
                .usage_counters
                .entry(commit.counter.clone())
                .or_insert_with(|| UsageCounter {
                    meter: commit.counter.meter.clone(),
                    period_start: commit.counter.period_start,
                    used: 0.0,
                    events: 0,
                    pending: Default::default(),
                });
            counter.used += commit.amount;
            counter.events += commit.identifiers.len() as u64;
            for expired in &commit.expired {
                counter.pending.remove(expired);
            }
            counter
                .pending
                .extend(commit.sends.iter().map(|(id, send)| (id.clone(), send.clone())));
            CommitOutcome::Committed
        }))
    }

    async fn confirm(&self, counter: &CounterKey, sends: &[&str]) -> Res<()> {
        self.with(|state| {
            if let Some(counter) = state.usage_counters.get_mut(counter) {
                for send in sends {
                    counter.pending.remove(*send);
                }
            }
        });
        Ok(())
    }
}
