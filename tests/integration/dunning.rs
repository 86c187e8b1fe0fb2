//! Failed-payment processing: grace, one notification per attempt, recovery in either order.
//! SES and SNS run on moto; Stripe is the stand-in.

use std::sync::Arc;

use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::{Value, json};
use shared::config::PlanCatalog;
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::entitlement::EntitlementView;
use shared::notify::{AwsNotifier, MemoryNotifier};
use shared::processing::{EventHandler, Outcome, ProcessError};
use shared::store::{Access, BillingStore, DunningStage, LedgerState, MemoryStore, UserId};
use shared::sync::Syncer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const NOW: i64 = 1_763_900_000;
const LEASE: i64 = NOW + 60;
const FROM: &str = "billing@example.com";

struct Case {
    user: UserId,
    customer: String,
    subscription: String,
    invoice: String,
    email: String,
}

fn case() -> Case {
    let tag = unique("");
    Case {
        user: UserId::parse(&format!("user-{tag}")).unwrap(),
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
        plans: PlanCatalog::parse(PLANS).unwrap(),
        grace_days: 7,
        policy: Default::default(),
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
    let dump: Value = reqwest::get(format!("{}/moto-api/data.json", aws::endpoint().await))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

/// The AWS notifier on moto, with a queue subscribed to the app-events topic.
async fn moto_notifier(verify_sender: bool) -> (AwsNotifier, aws_sdk_sqs::Client, String, aws_sdk_sesv2::Client) {
    let sdk = aws::sdk_config().await;
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    if verify_sender {
        ses.create_email_identity().email_identity(FROM).send().await.unwrap();
    }
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic = sns
        .create_topic()
        .name(unique("app-events-"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name(unique("app-subscriber-"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        queue.rsplit('/').next().unwrap()
    );
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    (AwsNotifier::new(ses.clone(), sns, FROM.into(), topic), sqs, queue, ses)
}

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
        .map(|m| serde_json::from_str(m.body.as_deref().unwrap()).unwrap())
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
    let events = app_events(&sqs, &queue).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "billing.payment_failed");
    assert_eq!(events[0]["user_id"], c.user.as_str());
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
