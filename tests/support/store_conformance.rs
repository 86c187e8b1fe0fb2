//! The one store contract. `MemoryStore` runs it in every test run; `DynamoStore` runs it
//! against moto. Each check uses fresh ids, so checks can share one store.

use std::sync::Arc;

use shared::store::*;
use shared::stripe::SubscriptionStatus;

use crate::unique;

pub async fn run<S: BillingStore + 'static>(store: Arc<S>) {
    customer_links_are_one_per_user(&*store).await;
    concurrent_first_links_converge(store.clone()).await;
    stale_subscription_writes_are_refused(&*store).await;
    subscriptions_are_listed_per_customer(&*store).await;
    subscriptions_can_be_sampled(&*store).await;
    entitlements_round_trip(&*store).await;
    deleted_customers_unlink(&*store).await;
    checkout_sessions_remember_their_user(&*store).await;
    past_due_spells_keep_their_start(&*store).await;
    ledger_leases_complete_and_release(&*store).await;
    expired_leases_can_be_taken_over(&*store).await;
    concurrent_claims_have_one_winner(store.clone()).await;
    dunning_records_round_trip(&*store).await;
    purchases_merge_in_any_order(&*store).await;
    cursors_compare_and_set(&*store).await;
    concurrent_requests_are_counted_once_each(store.clone()).await;
}

/// A refund processed before the payment it refunds, and a payment recorded twice: what the
/// record knows only grows, and a revoked purchase stays revoked.
async fn purchases_merge_in_any_order<S: BillingStore>(store: &S) {
    let customer = unique("cus_");
    let (refunded, kept) = (unique("pi_a"), unique("pi_b"));
    let paid = |intent: &str, product: &str, quantity: u32| PurchaseRecord {
        customer_id: customer.clone(),
        payment_intent_id: intent.to_owned(),
        session_id: Some(format!("cs_{intent}")),
        product: Some(product.to_owned()),
        quantity,
        paid_at: Some(100),
        revoked: None,
        revoked_at: None,
    };
    let revocation = PurchaseRecord {
        customer_id: customer.clone(),
        payment_intent_id: refunded.clone(),
        session_id: None,
        product: None,
        quantity: 0,
        paid_at: None,
        revoked: Some(Revocation::Refunded),
        revoked_at: Some(200),
    };
    store.put_purchase(&revocation).await.unwrap();
    store.put_purchase(&paid(&refunded, "lifetime", 1)).await.unwrap();
    store.put_purchase(&paid(&kept, "credits_1000", 3)).await.unwrap();
    // A redelivery with other values (a later retry's clock) changes nothing.
    let mut again = paid(&kept, "credits_1000", 3);
    again.paid_at = Some(150);
    store.put_purchase(&again).await.unwrap();
    let mut stored = store.purchases_of_customer(&customer).await.unwrap();
    stored.sort_by(|a, b| a.payment_intent_id.cmp(&b.payment_intent_id));
    let expected_refunded = PurchaseRecord {
        session_id: Some(format!("cs_{refunded}")),
        product: Some("lifetime".into()),
        quantity: 1,
        paid_at: Some(100),
        ..revocation.clone()
    };
    assert_eq!(stored, vec![expected_refunded, paid(&kept, "credits_1000", 3)]);
    assert!(!stored[0].grants() && stored[1].grants());
    assert!(store.purchases_of_customer(&unique("cus_")).await.unwrap().is_empty());
}

/// 20 concurrent requests in one window get the counts 1..=20, each once: no two callers
/// see the same count, so none slips past a limit. Another window or key starts at 1.
async fn concurrent_requests_are_counted_once_each<S: BillingStore + 'static>(store: Arc<S>) {
    let key = unique("sessions#user-");
    let calls = (0..20).map(|_| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.count_request(&key, 1_800_000_000, 1_800_000_120).await.unwrap() }
    });
    let mut counts = futures_join_all(calls).await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        store.count_request(&key, 1_800_000_060, 1_800_000_180).await.unwrap(),
        1
    );
    let other = unique("sync#user-");
    assert_eq!(
        store.count_request(&other, 1_800_000_060, 1_800_000_180).await.unwrap(),
        1
    );
}

async fn futures_join_all<F: std::future::Future<Output = u64> + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<u64> {
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

pub fn subscription(customer: &str, id: &str, watermark: i64, status: SubscriptionStatus) -> SubscriptionRecord {
    SubscriptionRecord {
        subscription_id: id.to_owned(),
        customer_id: customer.to_owned(),
        status,
        price_id: Some("price_pro".into()),
        plan: Some("pro".into()),
        quantity: Some(1),
        items: vec![ItemRecord {
            price_id: "price_pro".into(),
            quantity: Some(1),
        }],
        cancel_at_period_end: false,
        cancel_at: None,
        pause_collection: None,
        current_period_start: Some(1_897_408_000),
        current_period_end: Some(1_900_000_000),
        trial_end: None,
        ended_at: None,
        latest_invoice: None,
        created: 1_897_408_000,
        past_due_since: None,
        schedule: None,
        watermark,
    }
}

async fn customer_links_are_one_per_user<S: BillingStore>(store: &S) {
    let user = AccountId::parse(&unique("user-")).unwrap();
    let (first, second) = (unique("cus_"), unique("cus_"));
    assert_eq!(store.customer_of_account(&user).await.unwrap(), None);
    assert_eq!(store.link_customer(&user, &first).await.unwrap(), LinkOutcome::Linked);
    assert_eq!(
        store.link_customer(&user, &second).await.unwrap(),
        LinkOutcome::AlreadyLinked(first.clone())
    );
    assert_eq!(store.customer_of_account(&user).await.unwrap(), Some(first.clone()));
    assert_eq!(store.account_of_customer(&first).await.unwrap(), Some(user));
    assert_eq!(store.account_of_customer(&second).await.unwrap(), None);
}

async fn concurrent_first_links_converge<S: BillingStore + 'static>(store: Arc<S>) {
    let user = AccountId::parse(&unique("user-")).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, user) = (store.clone(), user.clone());
        tasks.spawn(async move { store.link_customer(&user, &unique("cus_")).await.unwrap() });
    }
    let outcomes = tasks.join_all().await;
    assert_eq!(
        outcomes.iter().filter(|o| **o == LinkOutcome::Linked).count(),
        1,
        "{outcomes:?}"
    );
    let winner = store.customer_of_account(&user).await.unwrap().unwrap();
    for outcome in outcomes {
        if let LinkOutcome::AlreadyLinked(existing) = outcome {
            assert_eq!(existing, winner);
        }
    }
}

async fn stale_subscription_writes_are_refused<S: BillingStore>(store: &S) {
    let (customer, id) = (unique("cus_"), unique("sub_"));
    let v10 = subscription(&customer, &id, 10, SubscriptionStatus::Active);
    let v5 = subscription(&customer, &id, 5, SubscriptionStatus::Canceled);
    let mut v10_tie = subscription(&customer, &id, 10, SubscriptionStatus::PastDue);
    assert_eq!(
        store.put_subscription(&v10, WriteRule::IfNewer).await.unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        store.put_subscription(&v5, WriteRule::IfNewer).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        store.put_subscription(&v5, WriteRule::IfNotOlder).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        store.put_subscription(&v10_tie, WriteRule::IfNewer).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(store.get_subscription(&customer, &id).await.unwrap(), Some(v10));
    assert_eq!(
        store.put_subscription(&v10_tie, WriteRule::IfNotOlder).await.unwrap(),
        WriteOutcome::Written
    );
    // The store stamps the start of the past_due spell it has just seen begin.
    v10_tie.past_due_since = Some(10);
    assert_eq!(store.get_subscription(&customer, &id).await.unwrap(), Some(v10_tie));
}

/// The sample is drawn from subscriptions only (never links, ledger or dunning items), holds
/// no repeats, respects the limit and varies between draws.
async fn subscriptions_can_be_sampled<S: BillingStore>(store: &S) {
    let customer = unique("cus_");
    for id in ["sub_x", "sub_y", "sub_z"] {
        store
            .put_subscription(
                &subscription(&customer, id, 1, SubscriptionStatus::Active),
                WriteRule::IfNewer,
            )
            .await
            .unwrap();
    }
    // Other kinds of items beside them (earlier checks stored customer links too).
    store.claim_event(&unique("evt_"), 1, 2).await.unwrap();
    let key = |r: &SubscriptionRecord| (r.customer_id.clone(), r.subscription_id.clone());
    let everything = store.sample_subscriptions(usize::MAX).await.unwrap().records;
    let all: std::collections::HashSet<_> = everything.iter().map(key).collect();
    assert_eq!(all.len(), everything.len(), "no record twice");
    for id in ["sub_x", "sub_y", "sub_z"] {
        assert!(
            all.contains(&(customer.clone(), id.to_owned())),
            "{id} missing from the full sample"
        );
    }
    assert!(everything.iter().all(|r| r.subscription_id.starts_with("sub_")));

    let two = store.sample_subscriptions(2).await.unwrap().records;
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|r| all.contains(&key(r))));
    assert_ne!(key(&two[0]), key(&two[1]));
    assert!(store.sample_subscriptions(0).await.unwrap().records.is_empty());

    let mut drawn = std::collections::HashSet::new();
    for _ in 0..40 {
        drawn.extend(store.sample_subscriptions(1).await.unwrap().records.iter().map(key));
    }
    assert!(
        drawn.len() > 1,
        "40 draws of one from {} records all gave the same",
        all.len()
    );
}

async fn subscriptions_are_listed_per_customer<S: BillingStore>(store: &S) {
    let (customer, other) = (unique("cus_"), unique("cus_"));
    for id in ["sub_b", "sub_a"] {
        store
            .put_subscription(
                &subscription(&customer, id, 1, SubscriptionStatus::Active),
                WriteRule::IfNewer,
            )
            .await
            .unwrap();
    }
    store
        .put_subscription(
            &subscription(&other, "sub_c", 1, SubscriptionStatus::Active),
            WriteRule::IfNewer,
        )
        .await
        .unwrap();
    let ids: Vec<String> = store
        .subscriptions_of_customer(&customer)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.subscription_id)
        .collect();
    assert_eq!(ids, ["sub_a", "sub_b"]);
    assert!(
        store
            .subscriptions_of_customer(&unique("cus_"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn entitlements_round_trip<S: BillingStore>(store: &S) {
    let user = AccountId::parse(&unique("user-")).unwrap();
    assert_eq!(store.get_entitlement(&user).await.unwrap(), None);
    let mut entitlement = Entitlement {
        account_id: user.clone(),
        customer_id: Some(unique("cus_")),
        subscription_id: Some(unique("sub_")),
        plan: Some("pro".into()),
        status: Some(SubscriptionStatus::Trialing),
        access: Access::Active,
        access_until: Some(1_900_000_000),
        features: vec!["reports".into(), "api".into()],
        cancel_at_period_end: true,
        current_period_end: Some(1_900_000_000),
        current_period_start: Some(1_897_000_000),
        grants: vec![
            shared::store::Grant {
                subscription_id: unique("sub_"),
                plan: Some("team".into()),
                access: Access::Active,
                access_until: None,
                features: vec!["reports".into(), "sso".into()],
                limits: [("projects".to_owned(), 60), ("seats".to_owned(), 12)].into(),
                addons: vec!["sso".into()],
                current_period_end: Some(1_900_000_000),
                product: None,
                credits: 0,
            },
            shared::store::Grant {
                subscription_id: unique("pi_"),
                plan: None,
                access: Access::None,
                access_until: None,
                features: Vec::new(),
                limits: Default::default(),
                addons: Vec::new(),
                current_period_end: None,
                product: Some("credits_1000".into()),
                credits: 3000,
            },
        ],
        trial_used: true,
        summed_limits: vec!["projects".into(), "seats".into()],
        version: 1,
        changed_version: 1,
        announced_version: 0,
    };
    assert_eq!(
        store.put_entitlement(&entitlement).await.unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(store.get_entitlement(&user).await.unwrap().as_ref(), Some(&entitlement));
    // A writer that read version 1 and a slower one that also read it: only one may write 2.
    entitlement.access = Access::None;
    entitlement.features.clear();
    entitlement.access_until = None;
    entitlement.version = 2;
    assert_eq!(
        store.put_entitlement(&entitlement).await.unwrap(),
        WriteOutcome::Written
    );
    let mut loser = entitlement.clone();
    loser.access = Access::Active;
    assert_eq!(store.put_entitlement(&loser).await.unwrap(), WriteOutcome::Stale);
    // Skipping a version is a stale read too.
    loser.version = 4;
    assert_eq!(store.put_entitlement(&loser).await.unwrap(), WriteOutcome::Stale);
    assert_eq!(store.get_entitlement(&user).await.unwrap(), Some(entitlement.clone()));
    // An announcement of version 1 came too late (version 2 is stored): nothing changes;
    // one of version 2 is recorded.
    store.mark_announced(&user, 1).await.unwrap();
    assert_eq!(store.get_entitlement(&user).await.unwrap(), Some(entitlement.clone()));
    store.mark_announced(&user, 2).await.unwrap();
    entitlement.announced_version = 2;
    assert_eq!(store.get_entitlement(&user).await.unwrap(), Some(entitlement));
    let fresh = AccountId::parse(&unique("user-")).unwrap();
    let mut first = loser.clone();
    first.account_id = fresh.clone();
    first.version = 2;
    assert_eq!(
        store.put_entitlement(&first).await.unwrap(),
        WriteOutcome::Stale,
        "nothing stored counts as version 0"
    );
}

async fn deleted_customers_unlink<S: BillingStore>(store: &S) {
    let (user, other) = (
        AccountId::parse(&unique("user-")).unwrap(),
        AccountId::parse(&unique("user-")).unwrap(),
    );
    let (first, second) = (unique("cus_"), unique("cus_"));
    assert_eq!(store.link_customer(&user, &first).await.unwrap(), LinkOutcome::Linked);
    assert_eq!(
        store.link_customer(&other, &first).await.unwrap(),
        LinkOutcome::CustomerTaken(user.clone()),
        "one customer never serves two users"
    );
    assert_eq!(store.account_of_customer(&first).await.unwrap(), Some(user.clone()));
    assert!(
        !store.unlink_customer(&user, &second).await.unwrap(),
        "not the linked customer"
    );
    assert_eq!(store.customer_of_account(&user).await.unwrap(), Some(first.clone()));
    assert!(store.unlink_customer(&user, &first).await.unwrap());
    assert_eq!(store.customer_of_account(&user).await.unwrap(), None);
    assert_eq!(store.account_of_customer(&first).await.unwrap(), None);
    assert!(!store.unlink_customer(&user, &first).await.unwrap(), "already unlinked");
    assert_eq!(store.link_customer(&user, &second).await.unwrap(), LinkOutcome::Linked);
    assert_eq!(store.account_of_customer(&second).await.unwrap(), Some(user));
}

async fn checkout_sessions_remember_their_user<S: BillingStore>(store: &S) {
    let user = AccountId::parse(&unique("user-")).unwrap();
    let session = unique("cs_test_");
    assert_eq!(store.checkout_session_account(&session).await.unwrap(), None);
    store
        .put_checkout_session(&session, &user, 1_900_000_000)
        .await
        .unwrap();
    assert_eq!(store.checkout_session_account(&session).await.unwrap(), Some(user));
}

/// The start of a past_due spell is the first write that saw it, whatever writes follow in
/// the spell, and a new spell starts afresh.
async fn past_due_spells_keep_their_start<S: BillingStore>(store: &S) {
    let (customer, id) = (unique("cus_"), unique("sub_"));
    let stored = || async { store.get_subscription(&customer, &id).await.unwrap().unwrap() };
    let write = |watermark, status| {
        let record = subscription(&customer, &id, watermark, status);
        async move { store.put_subscription(&record, WriteRule::IfNewer).await.unwrap() }
    };
    write(100, SubscriptionStatus::Active).await;
    assert_eq!(stored().await.past_due_since, None);
    write(200, SubscriptionStatus::PastDue).await;
    assert_eq!(stored().await.past_due_since, Some(200));
    write(300, SubscriptionStatus::PastDue).await;
    assert_eq!(stored().await.past_due_since, Some(200));
    write(400, SubscriptionStatus::Active).await;
    assert_eq!(stored().await.past_due_since, None);
    write(500, SubscriptionStatus::PastDue).await;
    assert_eq!(stored().await.past_due_since, Some(500));
}

async fn ledger_leases_complete_and_release<S: BillingStore>(store: &S) {
    let event = unique("evt_");
    assert_eq!(store.event_state(&event).await.unwrap(), None);
    let LedgerClaim::Acquired { token } = store.claim_event(&event, 100, 160).await.unwrap() else {
        panic!("first claim must win")
    };
    assert_eq!(
        store.claim_event(&event, 110, 170).await.unwrap(),
        LedgerClaim::Busy { lease_until: 160 }
    );
    assert_eq!(
        store.event_state(&event).await.unwrap(),
        Some(LedgerState::InProgress { lease_until: 160 })
    );
    assert!(matches!(
        store.release_event(&event, "not-the-token").await,
        Err(StoreError::LeaseLost(_))
    ));
    store.release_event(&event, &token).await.unwrap();
    assert_eq!(store.event_state(&event).await.unwrap(), None);

    let LedgerClaim::Acquired { token } = store.claim_event(&event, 120, 180).await.unwrap() else {
        panic!("a released event can be claimed again")
    };
    assert!(matches!(
        store.complete_event(&event, "not-the-token", 999).await,
        Err(StoreError::LeaseLost(_))
    ));
    store.complete_event(&event, &token, 10_000).await.unwrap();
    assert_eq!(store.event_state(&event).await.unwrap(), Some(LedgerState::Completed));
    assert_eq!(
        store.claim_event(&event, 10_000, 10_060).await.unwrap(),
        LedgerClaim::Completed
    );
}

async fn expired_leases_can_be_taken_over<S: BillingStore>(store: &S) {
    let event = unique("evt_");
    let LedgerClaim::Acquired { token: stale } = store.claim_event(&event, 100, 130).await.unwrap() else {
        panic!("first claim must win")
    };
    let LedgerClaim::Acquired { token: fresh } = store.claim_event(&event, 131, 190).await.unwrap() else {
        panic!("an expired lease must be taken over")
    };
    assert!(matches!(
        store.complete_event(&event, &stale, 999).await,
        Err(StoreError::LeaseLost(_))
    ));
    store.complete_event(&event, &fresh, 999).await.unwrap();
}

async fn concurrent_claims_have_one_winner<S: BillingStore + 'static>(store: Arc<S>) {
    let event = unique("evt_");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, event) = (store.clone(), event.clone());
        tasks.spawn(async move { store.claim_event(&event, 100, 200).await.unwrap() });
    }
    let claims = tasks.join_all().await;
    let winners = claims
        .iter()
        .filter(|c| matches!(c, LedgerClaim::Acquired { .. }))
        .count();
    assert_eq!(winners, 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, LedgerClaim::Acquired { .. } | LedgerClaim::Busy { lease_until: 200 }))
    );
}

async fn dunning_records_round_trip<S: BillingStore>(store: &S) {
    let customer = unique("cus_");
    let mut record = DunningRecord {
        invoice_id: "in_1".into(),
        customer_id: customer.clone(),
        subscription_id: Some("sub_1".into()),
        stage: DunningStage::Retrying,
        attempt_count: 1,
        next_payment_attempt: Some(1_900_000_000),
        failure_code: Some("card_declined".into()),
        decline_code: Some("insufficient_funds".into()),
        hosted_invoice_url: Some("https://invoice.stripe.com/i/x".into()),
        grace_until: Some(1_900_500_000),
        watermark: 7,
        emailed_attempt: 1,
        published_attempt: 0,
        emailed_action_attempt: 0,
        published_action_attempt: 0,
    };
    assert_eq!(store.put_dunning(&record).await.unwrap(), WriteOutcome::Written);
    record.stage = DunningStage::Closed;
    assert_eq!(store.put_dunning(&record).await.unwrap(), WriteOutcome::Written);
    let mut reopened = record.clone();
    reopened.stage = DunningStage::Retrying;
    assert_eq!(
        store.put_dunning(&reopened).await.unwrap(),
        WriteOutcome::Stale,
        "a closed episode is never reopened"
    );
    assert_eq!(
        store.get_dunning(&customer, "in_1").await.unwrap().as_ref(),
        Some(&record)
    );
    assert_eq!(store.dunning_of_customer(&customer).await.unwrap(), vec![record]);
    assert_eq!(store.get_dunning(&customer, "in_2").await.unwrap(), None);
}

async fn cursors_compare_and_set<S: BillingStore>(store: &S) {
    let name = unique("cursor-");
    assert_eq!(store.get_cursor(&name).await.unwrap(), None);
    assert!(!store.set_cursor(&name, Some(1), 5).await.unwrap());
    assert!(store.set_cursor(&name, None, 5).await.unwrap());
    assert!(!store.set_cursor(&name, None, 6).await.unwrap());
    assert!(!store.set_cursor(&name, Some(4), 6).await.unwrap());
    assert!(store.set_cursor(&name, Some(5), 9).await.unwrap());
    assert_eq!(store.get_cursor(&name).await.unwrap(), Some(9));
}
