//! Failed-payment processing: grace, one notification per attempt, recovery in either order.
//! SES and SNS run on moto; Stripe is the stand-in.

use std::sync::Arc;

use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::{Value, json};
use shared::config::Catalog;
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::entitlement::EntitlementView;
use shared::notify::{AwsNotifier, MemoryNotifier};
use shared::processing::{EventHandler, Outcome, ProcessError};
use shared::store::{Access, AccountId, BillingStore, DunningStage, LedgerState, MemoryStore};
use shared::sync::Syncer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const NOW: i64 = 1_763_900_000;
const LEASE: i64 = NOW + 60;
const FROM: &str = "billing@example.com";

struct Case {
    user: AccountId,
    customer: String,
    subscription: String,
    invoice: String,
    email: String,
}

fn case() -> Case {
    let tag = unique("");
    Case {
        user: AccountId::parse(&format!("user-{tag}")).unwrap(),
        customer: format!("cus_{tag}"),
        subscription: format!("sub_{tag}"),
        invoice: format!("in_{tag}"),
        email: format!("{tag}@customer.example"),
    }
}

fn syncer<S: BillingStore>(store: S, stripe: &StripeStandIn) -> Syncer<S> {
    Syncer {
        store,
        stripe: stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 7,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    }
}

fn recording<S: BillingStore>(store: S, stripe: &StripeStandIn) -> DunningProcessor<S, MemoryNotifier> {
    DunningProcessor {
        syncer: syncer(store, stripe),
        notifier: MemoryNotifier::new(),
        policy: DunningPolicy::default(),
    }
}

fn invoice(case: &Case, status: &str, attempt: u32) -> Value {
    let mut invoice = fixtures::invoice(&case.invoice, &case.customer, &case.subscription, status);
    invoice["attempt_count"] = json!(attempt);
    invoice["amount_due"] = json!(2000);
    invoice["amount_remaining"] = json!(if status == "paid" { 0 } else { 2000 });
    invoice["currency"] = json!("usd");
    invoice["next_payment_attempt"] = json!(NOW + 3 * 86_400);
    invoice["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/{}", case.invoice));
    invoice["customer_email"] = json!(case.email);
    invoice["payments"] = json!({"object": "list", "has_more": false, "data": [{"payment": {"type": "payment_intent",
        "payment_intent": {"id": "pi_1", "object": "payment_intent", "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}}}}]});
    invoice
}

/// What Stripe says now: the invoice and the subscription it belongs to.
async fn stripe_state(
    stripe: &StripeStandIn,
    case: &Case,
    invoice_status: &str,
    subscription_status: &str,
    priority: u8,
) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{}", case.invoice)))
        .respond_with(ResponseTemplate::new(200).set_body_json(invoice(case, invoice_status, 1)))
        .with_priority(priority)
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{}", case.subscription)))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription_state(
            &case.subscription,
            &case.customer,
            "price_pro",
            subscription_status,
            false,
        )))
        .with_priority(priority)
        .mount(&stripe.server)
        .await;
}

fn event(case: &Case, id: &str, event_type: &str, created: i64, invoice_status: &str) -> String {
    serde_json::to_string(&fixtures::event(
        id,
        event_type,
        created,
        invoice(case, invoice_status, 1),
    ))
    .unwrap()
}

async fn sent_emails(to: &str) -> Vec<Value> {
    let dump = moto_state().await;
    dump["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d == to))
        })
        .collect()
}

/// moto's whole state as JSON. moto serialises every backend for this while other tests keep
/// writing to them, and now and then answers with an error instead: ask again.
async fn moto_state() -> Value {
    let url = format!("{}/moto-api/data.json", aws::endpoint().await);
    for _ in 0..20 {
        let answer = reqwest::get(&url).await.unwrap();
        if let Ok(dump) = answer.json::<Value>().await {
            return dump;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("moto's state dump kept failing")
}

/// The AWS notifier on moto, with a queue subscribed to the app-events topic.
async fn moto_notifier(verify_sender: bool) -> (AwsNotifier, aws_sdk_sqs::Client, String, aws_sdk_sesv2::Client) {
    let sdk = aws::sdk_config().await;
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    if verify_sender {
        ses.create_email_identity().email_identity(FROM).send().await.unwrap();
    }
    let (sns, topic, sqs, queue) = aws::subscribed_topic().await;
    (AwsNotifier::new(ses.clone(), sns, FROM.into(), topic), sqs, queue, ses)
}

/// The `billing.payment_failed` messages on the subscribed queue (entitlement changes, also
/// published there, are another test's business).
async fn app_events(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Value> {
    let output = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    output
        .messages
        .unwrap_or_default()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.body.as_deref().unwrap()).unwrap())
        .filter(|event| event["type"] == "billing.payment_failed")
        .collect()
}

async fn linked<S: BillingStore>(store: &S, case: &Case) {
    store.link_customer(&case.user, &case.customer).await.unwrap();
}

#[tokio::test]
async fn a_failure_moves_to_grace_and_notifies_once_by_email_and_app_event() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let (notifier, sqs, queue, _) = moto_notifier(true).await;
    let processor = DunningProcessor {
        syncer: syncer(aws::fresh_store().await, &stripe),
        notifier,
        policy: DunningPolicy::default(),
    };
    linked(&processor.syncer.store, &c).await;
    let failed = event(&c, &unique("evt_"), "invoice.payment_failed", NOW, "open");

    assert_eq!(
        processor.handle_message(&failed, NOW, LEASE).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        processor.handle_message(&failed, NOW, LEASE).await.unwrap(),
        Outcome::Duplicate
    );

    let entitlement = processor.syncer.store.get_entitlement(&c.user).await.unwrap().unwrap();
    assert_eq!(entitlement.access, Access::Grace);
    assert_eq!(
        entitlement.access_until,
        Some(NOW + 7 * 86_400),
        "grace deadline stored"
    );
    let record = processor
        .syncer
        .store
        .get_dunning(&c.customer, &c.invoice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.stage, record.attempt_count), (DunningStage::Retrying, 1));
    assert_eq!(record.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(record.next_payment_attempt, Some(NOW + 3 * 86_400));

    let emails = sent_emails(&c.email).await;
    assert_eq!(emails.len(), 1, "one email, even though the event came twice");
    assert_eq!(emails[0]["subject"], "Your payment failed");
    let body = emails[0]["body"].as_str().unwrap();
    assert!(
        body.contains("20.00 USD")
            && body.contains("attempt 1")
            && body.contains(&format!("https://invoice.stripe.com/i/{}", c.invoice)),
        "{body}"
    );
    assert!(body.contains("try again on"), "{body}");
    assert!(
        body.ends_with("Your access continues in the meantime, until Sun, 30 Nov 2025 12:13:20 GMT."),
        "grace deadline NOW + 7 days, as a date: {body}"
    );
    let events = app_events(&sqs, &queue).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "billing.payment_failed");
    assert_eq!(events[0]["account_id"], c.user.as_str());
    assert_eq!(events[0]["invoice_id"], c.invoice.as_str());
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn sca_asks_the_customer_to_authenticate_on_the_hosted_page() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let processor = recording(MemoryStore::new(), &stripe);
    linked(&processor.syncer.store, &c).await;

    processor
        .handle_message(
            &event(&c, "evt_sca", "invoice.payment_action_required", NOW, "open"),
            NOW,
            LEASE,
        )
        .await
        .unwrap();

    let emails = processor.notifier.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].subject, "Action required: confirm your payment");
    assert!(emails[0].body.contains(&format!(
        "Confirm the payment here: https://invoice.stripe.com/i/{}",
        c.invoice
    )));
    assert!(processor.notifier.events()[0].action_required);
    let record = processor
        .syncer
        .store
        .get_dunning(&c.customer, &c.invoice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.stage, DunningStage::ActionRequired);
}

#[tokio::test]
async fn failure_then_payment_restores_access_and_closes_dunning() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let store = Arc::new(aws::fresh_store().await);
    let processor = recording(store.clone(), &stripe);
    let events = syncer(store.clone(), &stripe);
    linked(&*store, &c).await;

    processor
        .handle_message(&event(&c, "evt_f1", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();
    assert_eq!(
        store.get_entitlement(&c.user).await.unwrap().unwrap().access,
        Access::Grace
    );

    stripe_state(&stripe, &c, "paid", "active", 1).await;
    events
        .handle_message(&event(&c, "evt_p1", "invoice.paid", NOW + 60, "paid"), NOW, LEASE)
        .await
        .unwrap();

    let entitlement = store.get_entitlement(&c.user).await.unwrap().unwrap();
    assert_eq!((entitlement.access, entitlement.access_until), (Access::Active, None));
    assert_eq!(
        store.get_dunning(&c.customer, &c.invoice).await.unwrap().unwrap().stage,
        DunningStage::Closed
    );
}

#[tokio::test]
async fn a_late_failure_after_payment_does_not_bring_grace_back() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "paid", "active", 5).await;
    let store = Arc::new(MemoryStore::new());
    let processor = recording(store.clone(), &stripe);
    let events = syncer(store.clone(), &stripe);
    linked(&*store, &c).await;

    events
        .handle_message(&event(&c, "evt_p2", "invoice.paid", NOW + 60, "paid"), NOW, LEASE)
        .await
        .unwrap();
    processor
        .handle_message(&event(&c, "evt_f2", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();

    assert_eq!(
        store.get_entitlement(&c.user).await.unwrap().unwrap().access,
        Access::Active
    );
    assert!(
        store.get_dunning(&c.customer, &c.invoice).await.unwrap().is_none(),
        "no episode opened"
    );
    assert!(processor.notifier.emails().is_empty() && processor.notifier.events().is_empty());
}

#[tokio::test]
async fn grace_ends_at_its_deadline_and_deletion_ends_access() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let store = Arc::new(MemoryStore::new());
    let processor = recording(store.clone(), &stripe);
    linked(&*store, &c).await;
    processor
        .handle_message(&event(&c, "evt_f3", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();

    let entitlement = store.get_entitlement(&c.user).await.unwrap().unwrap();
    let deadline = entitlement.access_until.unwrap();
    assert_eq!(EntitlementView::at(&entitlement, deadline - 1).access, Access::Grace);
    assert_eq!(
        EntitlementView::at(&entitlement, deadline).access,
        Access::None,
        "no job needed: decided at read time"
    );

    let deleted = subscription_state(&c.subscription, &c.customer, "price_pro", "canceled", false);
    let events = syncer(store.clone(), &stripe);
    let event = fixtures::event("evt_del", "customer.subscription.deleted", NOW + 120, deleted);
    events
        .handle_message(&serde_json::to_string(&event).unwrap(), NOW, LEASE)
        .await
        .unwrap();
    assert_eq!(
        store.get_entitlement(&c.user).await.unwrap().unwrap().access,
        Access::None
    );
}

#[tokio::test]
async fn a_stripe_failure_leaves_nothing_half_written_and_the_retry_completes() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{}", c.invoice)))
        .respond_with(ResponseTemplate::new(500).insert_header("Stripe-Should-Retry", "false"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let processor = recording(MemoryStore::new(), &stripe);
    linked(&processor.syncer.store, &c).await;
    let failed = event(&c, "evt_f4", "invoice.payment_failed", NOW, "open");

    assert!(matches!(
        processor.handle_message(&failed, NOW, LEASE).await,
        Err(ProcessError::Stripe(_))
    ));
    assert_eq!(
        processor.syncer.store.event_state("evt_f4").await.unwrap(),
        None,
        "lease released"
    );
    assert!(
        processor
            .syncer
            .store
            .get_dunning(&c.customer, &c.invoice)
            .await
            .unwrap()
            .is_none()
    );
    assert!(processor.notifier.emails().is_empty());

    assert_eq!(
        processor.handle_message(&failed, NOW, LEASE).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(processor.notifier.emails().len(), 1);
    assert_eq!(
        processor.syncer.store.event_state("evt_f4").await.unwrap(),
        Some(LedgerState::Completed)
    );
}

#[tokio::test]
async fn an_email_failure_is_retried_without_duplicating_what_was_sent() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let (notifier, sqs, queue, ses) = moto_notifier(false).await;
    let unverified = format!("{}@example.com", unique("sender-"));
    let notifier_unverified = AwsNotifier::new(
        ses.clone(),
        aws_sdk_sns::Client::new(&aws::sdk_config().await),
        unverified.clone(),
        String::new(),
    );
    let store = Arc::new(MemoryStore::new());
    linked(&*store, &c).await;
    let failed = event(&c, "evt_f5", "invoice.payment_failed", NOW, "open");

    let broken = DunningProcessor {
        syncer: syncer(store.clone(), &stripe),
        notifier: notifier_unverified,
        policy: DunningPolicy::default(),
    };
    assert!(
        matches!(
            broken.handle_message(&failed, NOW, LEASE).await,
            Err(ProcessError::Notify(_))
        ),
        "SES refuses an unverified sender"
    );
    assert_eq!(
        store.get_entitlement(&c.user).await.unwrap().unwrap().access,
        Access::Grace,
        "state is applied even though mail failed"
    );
    assert_eq!(
        store.event_state("evt_f5").await.unwrap(),
        None,
        "released for the retry"
    );

    ses.create_email_identity().email_identity(FROM).send().await.unwrap();
    let fixed = DunningProcessor {
        syncer: syncer(store.clone(), &stripe),
        notifier,
        policy: DunningPolicy::default(),
    };
    assert_eq!(
        fixed.handle_message(&failed, NOW, LEASE).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        fixed.handle_message(&failed, NOW, LEASE).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(sent_emails(&c.email).await.len(), 1);
    assert_eq!(app_events(&sqs, &queue).await.len(), 1);
}

/// Stripe's re-read of the invoice, changed by `patch` (mounted above `stripe_state`'s).
async fn stripe_invoice(stripe: &StripeStandIn, case: &Case, patch: Value, priority: u8) {
    let mut body = invoice(case, "open", 1);
    if let (Some(body), Some(patch)) = (body.as_object_mut(), patch.as_object()) {
        body.extend(patch.clone());
    }
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{}", case.invoice)))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .with_priority(priority)
        .mount(&stripe.server)
        .await;
}

async fn dunning_record<S: BillingStore>(store: &S, case: &Case) -> shared::store::DunningRecord {
    store.get_dunning(&case.customer, &case.invoice).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_failure_processed_after_payment_closes_the_open_episode_and_sends_nothing() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let store = Arc::new(aws::fresh_store().await);
    let processor = recording(store.clone(), &stripe);
    linked(&*store, &c).await;
    processor
        .handle_message(&event(&c, "evt_s1", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();
    assert_eq!(dunning_record(&*store, &c).await.stage, DunningStage::Retrying);
    assert_eq!(processor.notifier.emails().len(), 1);

    // The customer pays; the next failure (and an SCA request) arrive before `invoice.paid`.
    stripe_state(&stripe, &c, "paid", "active", 1).await;
    for (id, event_type, created) in [
        ("evt_s2", "invoice.payment_failed", NOW + 60),
        ("evt_s3", "invoice.payment_action_required", NOW + 30),
    ] {
        assert_eq!(
            processor
                .handle_message(&event(&c, id, event_type, created, "open"), NOW, LEASE)
                .await
                .unwrap(),
            Outcome::Applied
        );
    }

    let record = dunning_record(&*store, &c).await;
    assert_eq!(
        (record.stage, record.watermark),
        (DunningStage::Closed, NOW + 60),
        "closed by the settled re-read, watermark moved to the newest event"
    );
    let entitlement = store.get_entitlement(&c.user).await.unwrap().unwrap();
    assert_eq!((entitlement.access, entitlement.access_until), (Access::Active, None));
    assert_eq!(processor.notifier.emails().len(), 1, "nothing sent after payment");
    assert_eq!(processor.notifier.events().len(), 1, "nothing published after payment");
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn sca_sends_the_failure_and_the_confirmation_for_one_attempt_in_either_order() {
    for order in [
        ["invoice.payment_failed", "invoice.payment_action_required"],
        ["invoice.payment_action_required", "invoice.payment_failed"],
    ] {
        let stripe = StripeStandIn::start().await;
        let c = case();
        stripe_state(&stripe, &c, "open", "past_due", 5).await;
        let processor = recording(MemoryStore::new(), &stripe);
        linked(&processor.syncer.store, &c).await;
        let messages: Vec<String> = order
            .iter()
            .enumerate()
            .map(|(i, event_type)| event(&c, &format!("evt_sca{i}"), event_type, NOW + i as i64, "open"))
            .collect();
        for message in &messages {
            assert_eq!(
                processor.handle_message(message, NOW, LEASE).await.unwrap(),
                Outcome::Applied
            );
        }
        for message in &messages {
            assert_eq!(
                processor.handle_message(message, NOW, LEASE).await.unwrap(),
                Outcome::Duplicate,
                "{order:?}"
            );
        }

        let emails = processor.notifier.emails();
        assert_eq!(emails.len(), 2, "{order:?}: both notices for attempt 1");
        let confirm = emails
            .iter()
            .find(|e| e.subject == "Action required: confirm your payment")
            .unwrap_or_else(|| panic!("{order:?}: no confirmation email"));
        assert!(
            confirm.body.contains(&format!(
                "Confirm the payment here: https://invoice.stripe.com/i/{}",
                c.invoice
            )),
            "{}",
            confirm.body
        );
        assert!(emails.iter().any(|e| e.subject == "Your payment failed"), "{order:?}");
        let events = processor.notifier.events();
        assert_eq!(events.len(), 2, "{order:?}");
        assert!(events.iter().all(|e| e.attempt == 1));
        assert!(events.iter().any(|e| e.action_required) && events.iter().any(|e| !e.action_required));
        let record = dunning_record(&processor.syncer.store, &c).await;
        assert_eq!(record.stage, DunningStage::ActionRequired, "{order:?}");
        assert_eq!(
            (
                record.emailed_attempt,
                record.emailed_action_attempt,
                record.published_attempt,
                record.published_action_attempt
            ),
            (1, 1, 1, 1)
        );
    }
}

#[tokio::test]
async fn smart_retries_last_attempts_are_emailed_and_the_final_one_says_access_ends() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    let processor = recording(MemoryStore::new(), &stripe);
    linked(&processor.syncer.store, &c).await;
    processor
        .handle_message(&event(&c, "evt_r1", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();
    stripe_invoice(
        &stripe,
        &c,
        json!({"attempt_count": 6, "next_payment_attempt": NOW + 3 * 86_400}),
        4,
    )
    .await;
    processor
        .handle_message(
            &event(&c, "evt_r6", "invoice.payment_failed", NOW + 86_400, "open"),
            NOW,
            LEASE,
        )
        .await
        .unwrap();
    stripe_invoice(
        &stripe,
        &c,
        json!({"attempt_count": 8, "next_payment_attempt": null}),
        3,
    )
    .await;
    processor
        .handle_message(
            &event(&c, "evt_r8", "invoice.payment_failed", NOW + 3 * 86_400, "open"),
            NOW,
            LEASE,
        )
        .await
        .unwrap();

    let emails = processor.notifier.emails();
    assert_eq!(emails.len(), 3, "attempts 1, 6 and the final 8");
    assert!(emails[1].body.contains("(attempt 6)"), "{}", emails[1].body);
    assert_eq!(
        emails[2].body,
        format!(
            "We could not collect the payment of 20.00 USD for your subscription (attempt 8).\n\n\
             This was the last automatic attempt: we will not try again.\n\n\
             Your access ends on Sun, 30 Nov 2025 12:13:20 GMT unless you pay here before then: \
             https://invoice.stripe.com/i/{}",
            c.invoice
        ),
        "grace deadline is the first failure + 7 days"
    );
    let attempts: Vec<u32> = processor.notifier.events().iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 6, 8]);
    assert_eq!(processor.notifier.events()[2].next_payment_attempt, None);

    // However low the cap, the final attempt still goes out.
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    stripe_invoice(
        &stripe,
        &c,
        json!({"attempt_count": 3, "next_payment_attempt": null}),
        4,
    )
    .await;
    let mut capped = recording(MemoryStore::new(), &stripe);
    capped.policy = DunningPolicy {
        notify_first_failure: false,
        max_notifications: 1,
    };
    linked(&capped.syncer.store, &c).await;
    capped
        .handle_message(&event(&c, "evt_c3", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();
    let emails = capped.notifier.emails();
    assert_eq!(emails.len(), 1);
    assert!(
        emails[0].body.contains("This was the last automatic attempt"),
        "{}",
        emails[0].body
    );
}

#[tokio::test]
async fn a_partially_paid_one_off_invoice_asks_for_what_remains_in_its_currency() {
    let stripe = StripeStandIn::start().await;
    let c = case();
    stripe_state(&stripe, &c, "open", "past_due", 5).await;
    stripe_invoice(
        &stripe,
        &c,
        json!({"subscription": null, "parent": null, "currency": "kwd",
            "amount_due": 12345, "amount_paid": 2345, "amount_remaining": 10000}),
        4,
    )
    .await;
    let processor = recording(MemoryStore::new(), &stripe);
    linked(&processor.syncer.store, &c).await;
    processor
        .handle_message(&event(&c, "evt_o1", "invoice.payment_failed", NOW, "open"), NOW, LEASE)
        .await
        .unwrap();

    let emails = processor.notifier.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(
        emails[0].body,
        format!(
            "We could not collect the payment of 10.000 KWD for your invoice (attempt 1).\n\n\
             Of the 12.345 KWD total, 2.345 KWD has been paid; 10.000 KWD remains.\n\n\
             We will try again on Wed, 26 Nov 2025 12:13:20 GMT.\n\n\
             To pay now or update your card: https://invoice.stripe.com/i/{}",
            c.invoice
        )
    );
    assert_eq!(dunning_record(&processor.syncer.store, &c).await.subscription_id, None);
}
