//! The usage ledger's contract, run on every adapter (memory and DynamoDB on moto): what a
//! commit writes, that a repeat writes nothing, that of two concurrent commits of one
//! identifier exactly one wins, and that confirming a send takes it out of the pending set.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::store::{AccountId, BillingStore};
use shared::usage::{Commit, CommitOutcome, CounterKey, PendingSend, UsageLedger};

use crate::unique;

fn commit(account: &AccountId, ids: &[&str], amount: f64, send: &str) -> Commit {
    let pending = PendingSend {
        customer_id: "cus_1".into(),
        event_name: "api_call".into(),
        value: amount,
        timestamp: 1_800_000_000,
        committed_at: 1_800_000_000,
    };
    Commit {
        counter: CounterKey {
            account: account.clone(),
            meter: "api_calls".into(),
            period_start: 1_799_000_000,
        },
        identifiers: ids.iter().map(|id| ((*id).to_owned(), send.to_owned())).collect(),
        amount,
        sends: BTreeMap::from([(send.to_owned(), pending)]),
        expired: Vec::new(),
        identifiers_expire_at: 1_900_000_000,
        counter_expires_at: 1_900_000_000,
    }
}

/// `isolated`: the backend isolates concurrent transactions. moto does not — a cancelled
/// transaction restores a copy of the whole table taken before it, undoing what concurrent
/// requests wrote meanwhile — so on moto the race is not run (DynamoDB's transactions are
/// serializable; the memory twin's commit is one critical section).
pub async fn run<S: BillingStore + UsageLedger + 'static>(store: Arc<S>, isolated: bool) {
    commits_add_up_and_repeats_are_free(&*store).await;
    if isolated {
        concurrent_commits_of_one_identifier_have_one_winner(store).await;
    }
}

async fn commits_add_up_and_repeats_are_free<S: BillingStore + UsageLedger>(store: &S) {
    let account = AccountId::parse(&unique("acct-")).unwrap();
    let (a, b, c) = (unique("id-"), unique("id-"), unique("id-"));
    assert_eq!(store.account_usage(&account).await.unwrap().counters, vec![]);
    let first = commit(&account, &[&a, &b], 2.5, "send-1");
    assert_eq!(store.commit(&first).await.unwrap(), CommitOutcome::Committed);
    // A commit naming a recorded identifier writes nothing, not even its new ones.
    let repeat = commit(&account, &[&c, &a], 7.0, "send-2");
    assert_eq!(
        store.commit(&repeat).await.unwrap(),
        CommitOutcome::Taken(vec![a.clone()])
    );
    let usage = store.account_usage(&account).await.unwrap();
    assert_eq!(usage.counters.len(), 1);
    let counter = &usage.counters[0];
    assert_eq!(
        (counter.meter.as_str(), counter.period_start),
        ("api_calls", 1_799_000_000)
    );
    assert_eq!((counter.used, counter.events), (2.5, 2));
    assert_eq!(counter.pending.keys().collect::<Vec<_>>(), ["send-1"]);
    assert_eq!(counter.pending["send-1"].value, 2.5);
    let recorded = store.recorded(&[&a, &b, &c]).await.unwrap();
    assert_eq!(recorded.len(), 2, "c was never committed");
    assert_eq!(recorded[&a].send, "send-1");
    assert_eq!(recorded[&b].counter, first.counter);
    // A second commit to the same counter adds to it; confirming takes sends out of pending.
    assert_eq!(
        store.commit(&commit(&account, &[&c], 1.0, "send-3")).await.unwrap(),
        CommitOutcome::Committed
    );
    store.confirm(&first.counter, &["send-1"]).await.unwrap();
    let counter = store.account_usage(&account).await.unwrap().counters.remove(0);
    assert_eq!((counter.used, counter.events), (3.5, 3));
    assert_eq!(counter.pending.keys().collect::<Vec<_>>(), ["send-3"]);
    // A commit clears the sends it gives up.
    let mut clearing = commit(&account, &[&unique("id-")], 1.0, "send-4");
    clearing.expired = vec!["send-3".into()];
    assert_eq!(store.commit(&clearing).await.unwrap(), CommitOutcome::Committed);
    let counter = store.account_usage(&account).await.unwrap().counters.remove(0);
    assert_eq!(counter.pending.keys().collect::<Vec<_>>(), ["send-4"]);
    // The customer link and the entitlement come with the counters, in the same read.
    assert_eq!(store.account_usage(&account).await.unwrap().customer_id, None);
    store.link_customer(&account, &unique("cus_")).await.unwrap();
    assert!(store.account_usage(&account).await.unwrap().customer_id.is_some());
    let mut entitlement = shared::entitlement::nothing(&account);
    entitlement.version = 1;
    store.put_entitlement(&entitlement).await.unwrap();
    let usage = store.account_usage(&account).await.unwrap();
    assert_eq!(usage.entitlement.map(|e| e.version), Some(1));
    assert_eq!(usage.counters.len(), 1);
    assert!(usage.customer_id.is_some());
}

async fn concurrent_commits_of_one_identifier_have_one_winner<S: BillingStore + UsageLedger + 'static>(store: Arc<S>) {
    let account = AccountId::parse(&unique("acct-")).unwrap();
    let shared_id = unique("id-");
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (store, account, id) = (store.clone(), account.clone(), shared_id.clone());
            tokio::spawn(async move {
                let own = unique("id-");
                store
                    .commit(&commit(&account, &[&id, &own], 1.0, &format!("send-{n}")))
                    .await
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        // A commit that lost the race is Taken, or (DynamoDB) cancelled by the concurrent
        // transaction: never both written.
        if let Ok(CommitOutcome::Committed) = task.await.unwrap() {
            committed += 1;
        }
    }
    assert_eq!(committed, 1);
    let counter = store.account_usage(&account).await.unwrap().counters.remove(0);
    assert_eq!(
        (counter.used, counter.events),
        (1.0, 2),
        "one commit of two identifiers, 1.0 in all"
    );
}
