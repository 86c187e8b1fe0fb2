//! The operator commands, run as an operator runs them: the real `billing` binary, configured
//! only through the environment, against DynamoDB and SQS on moto and a Stripe stand-in.

mod common;

use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::queue_conformance::drain;
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use common::{Run, run};
use serde_json::{Value, json};
use shared::config::{Catalog, QueueSettings};
use shared::queue::{QueueName, SqsQueue};
use shared::reconcile::CURSOR;
use shared::store::{AccountId, BillingStore, DynamoStore, LedgerClaim, WriteRule};
use shared::stripe::Subscription;
use shared::sync::Syncer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

struct Deployment {
    store: DynamoStore,
    table: String,
    settings: QueueSettings,
    queue: SqsQueue,
    sqs: aws_sdk_sqs::Client,
    stripe: StripeStandIn,
}

impl Deployment {
    async fn start() -> Self {
        let store = aws::fresh_store().await;
        let (sqs, settings, queue) = aws::fresh_queues().await;
        Self {
            table: store.table().to_owned(),
            store,
            settings,
            queue,
            sqs,
            stripe: StripeStandIn::start().await,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BILLING_TABLE", self.table.clone()),
            ("EVENTS_QUEUE_URL", self.settings.events_url.clone()),
            ("PAYMENT_FAILED_QUEUE_URL", self.settings.payment_failed_url.clone()),
            ("STRIPE_SECRET_KEY", "sk_test_operator".into()),
            ("STRIPE_API_BASE", self.stripe.server.uri()),
            ("BILLING_PLANS", PLANS.into()),
        ]
    }

    async fn billing(&self, args: &[&str]) -> Run {
        run(args, &self.env()).await
    }
}

trait Report {
    fn json(&self) -> Value;
}

impl Report for Run {
    fn json(&self) -> Value {
        assert!(self.ok, "billing failed:\n{}\n{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn event_ids(messages: Vec<shared::queue::ReceivedMessage>) -> Vec<String> {
    messages.into_iter().filter_map(|m| m.event_id).collect()
}

#[tokio::test]
async fn backfill_enqueues_what_the_ledger_has_not_completed() {
    let deployment = Deployment::start().await;
    let now = shared::unix_now();
    let (missed, done) = (unique("evt_"), unique("evt_"));
    let invoice = || fixtures::invoice(&unique("in_"), &unique("cus_"), &unique("sub_"), "paid");
    let events = json!({"object": "list", "url": "/v1/events", "has_more": false, "data": [
        fixtures::event(&unique("evt_"), "invoice.paid", now - 100, invoice()),
        fixtures::event(&missed, "invoice.paid", now - 400, invoice()),
        fixtures::event(&done, "invoice.paid", now - 500, invoice()),
    ]});
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(events))
        .mount(&deployment.stripe.server)
        .await;
    let LedgerClaim::Acquired { token } = deployment.store.claim_event(&done, now, now + 60).await.unwrap() else {
        panic!("fresh ledger")
    };
    deployment
        .store
        .complete_event(&done, &token, now + 3600)
        .await
        .unwrap();

    let report = deployment
        .billing(&["--json", "backfill", "--since", "2h"])
        .await
        .json();

    assert_eq!(
        (
            report["seen"].as_u64(),
            report["already_done"].as_u64(),
            report["enqueued"].as_u64(),
            report["in_flight"].as_u64()
        ),
        (Some(3), Some(1), Some(1), Some(1)),
        "the event 100 s old is left to its own delivery"
    );
    assert_eq!(
        deployment.store.get_cursor(CURSOR).await.unwrap(),
        None,
        "a backfill leaves the schedule's cursor alone"
    );
    let window_start = report["window_start"].as_i64().unwrap();
    assert!((now - 7200..=now - 7200 + 60).contains(&window_start), "{window_start}");
    assert_eq!(event_ids(drain(&deployment.queue, QueueName::Events).await), [missed]);
    let listing = deployment.stripe.requests().await;
    let created: Vec<String> = listing[0]
        .url
        .query_pairs()
        .filter(|(k, _)| k == "created[gte]")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(created, [window_start.to_string()]);
    deployment.stripe.assert_requests_valid().await;

    let human = deployment.billing(&["backfill", "--since", "2h"]).await;
    assert!(human.stdout.starts_with("Listed 3 events from"), "{}", human.stdout);
}

#[tokio::test]
async fn operations_fail_clearly_on_bad_input_or_missing_configuration() {
    let deployment = Deployment::start().await;
    let bad_since = deployment.billing(&["backfill", "--since", "last tuesday"]).await;
    assert!(!bad_since.ok);
    assert!(bad_since.stderr.contains("is not a date"), "{}", bad_since.stderr);
    let future = deployment.billing(&["backfill", "--since", "2099-01-01"]).await;
    assert!(!future.ok);
    assert!(future.stderr.contains("in the future"), "{}", future.stderr);

    let unconfigured = run(&["backfill", "--since", "1h"], &[]).await;
    assert!(!unconfigured.ok);
    assert!(
        unconfigured.stderr.contains("missing required environment variable"),
        "{}",
        unconfigured.stderr
    );

    let unknown = deployment.billing(&["inspect", "customer", "cus_nobody"]).await;
    assert!(!unknown.ok);
    assert!(unknown.stderr.contains("nothing stored"), "{}", unknown.stderr);
}

#[tokio::test]
async fn replay_enqueues_one_event_unless_it_was_completed() {
    let deployment = Deployment::start().await;
    let now = shared::unix_now();
    let (fresh, completed, unhandled) = (unique("evt_"), unique("evt_"), unique("evt_"));
    let customer = unique("cus_");
    for (id, event_type) in [
        (&fresh, "invoice.payment_failed"),
        (&completed, "invoice.paid"),
        (&unhandled, "charge.succeeded"),
    ] {
        let event = fixtures::event(
            id,
            event_type,
            now - 30,
            fixtures::invoice(&unique("in_"), &customer, &unique("sub_"), "open"),
        );
        Mock::given(method("GET"))
            .and(path(format!("/v1/events/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(event))
            .mount(&deployment.stripe.server)
            .await;
    }
    let LedgerClaim::Acquired { token } = deployment.store.claim_event(&completed, now, now + 60).await.unwrap() else {
        panic!("fresh ledger")
    };
    deployment
        .store
        .complete_event(&completed, &token, now + 3600)
        .await
        .unwrap();

    let replayed = deployment.billing(&["--json", "replay", &fresh]).await.json();
    let skipped = deployment.billing(&["--json", "replay", &completed]).await.json();
    let ignored = deployment.billing(&["--json", "replay", &unhandled]).await.json();

    assert_eq!(
        (replayed["enqueued"].as_bool(), replayed["queue"].as_str()),
        (Some(true), Some("payment-failed"))
    );
    assert_eq!(
        (skipped["enqueued"].as_bool(), skipped["already_completed"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        (ignored["enqueued"].as_bool(), ignored["queue"].as_str()),
        (Some(false), None)
    );
    let messages = drain(&deployment.queue, QueueName::PaymentFailed).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].group_id.as_deref(),
        Some(customer.as_str()),
        "ordered per customer as the webhook does"
    );
    let body: Value = serde_json::from_str(&messages[0].body).unwrap();
    assert_eq!(body["id"], json!(fresh));
    assert!(drain(&deployment.queue, QueueName::Events).await.is_empty());
    let not_found = deployment.billing(&["replay", "evt_missing"]).await;
    assert!(!not_found.ok, "{}", not_found.stdout);
    deployment.stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn inspect_prints_the_stored_model_and_access_now() {
    let deployment = Deployment::start().await;
    let (user, customer, sub) = (unique("user-"), unique("cus_"), unique("sub_"));
    let syncer = Syncer {
        store: deployment.store.clone(),
        stripe: deployment.stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let user_id = AccountId::parse(&user).unwrap();
    syncer.store.link_customer(&user_id, &customer).await.unwrap();
    let stripe_sub: Subscription =
        serde_json::from_value(subscription_state(&sub, &customer, "price_pro", "active", false)).unwrap();
    syncer
        .store
        .put_subscription(&syncer.record_of(&stripe_sub, 10), WriteRule::IfNewer)
        .await
        .unwrap();
    syncer.refresh_entitlement(&customer, None).await.unwrap();

    // `inspect user` is the name releases before accounts had: it still works.
    for by in [
        ["inspect", "account", user.as_str()],
        ["inspect", "user", user.as_str()],
        ["inspect", "customer", customer.as_str()],
    ] {
        let args: Vec<&str> = std::iter::once("--json").chain(by).collect();
        let seen = deployment.billing(&args).await.json();
        assert_eq!(seen["account"], json!(user));
        assert_eq!(seen["customer"], json!(customer));
        assert_eq!(seen["subscriptions"][0]["subscription_id"], json!(sub));
        assert_eq!(seen["access_now"]["access"], "active");
        assert_eq!(seen["access_now"]["plan"], "pro");
    }
}

#[tokio::test]
async fn drift_repairs_a_subscription_whose_event_was_lost() {
    let deployment = Deployment::start().await;
    let (customer, sub) = (unique("cus_"), unique("sub_"));
    let in_stripe = subscription_state(&sub, &customer, "price_pro", "canceled", false);
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{sub}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(&in_stripe))
        .mount(&deployment.stripe.server)
        .await;
    let mut stale = in_stripe.clone();
    stale["status"] = json!("active");
    let syncer = Syncer {
        store: deployment.store.clone(),
        stripe: deployment.stripe.client(),
        plans: Catalog::parse(PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let stale: Subscription = serde_json::from_value(stale).unwrap();
    syncer
        .store
        .put_subscription(&syncer.record_of(&stale, 10), WriteRule::IfNewer)
        .await
        .unwrap();

    let report = deployment.billing(&["--json", "drift", "--sample", "10"]).await.json();

    assert_eq!(report["checked"], 1);
    assert_eq!(report["repaired"], json!([sub]));
    let stored = syncer.store.get_subscription(&customer, &sub).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::stripe::SubscriptionStatus::Canceled);
}

/// Dead-lettered messages go back to their source queue with their group and attributes; a
/// dry run only counts them, and the DLQ ends empty.
#[tokio::test]
async fn redrive_moves_every_dead_lettered_message_back() {
    let deployment = Deployment::start().await;
    let sqs = &deployment.sqs;
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{}.fifo", unique("events-dlq-")))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sqs.set_queue_attributes()
        .queue_url(&deployment.settings.events_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let dead = SqsQueue::new(
        sqs.clone(),
        QueueSettings {
            events_url: dlq_url.clone(),
            payment_failed_url: dlq_url.clone(),
        },
    );
    let mut expected = Vec::new();
    for n in 0..13 {
        let (id, group) = (unique("evt_"), format!("cus_{}", n % 3));
        let body = json!({"id": id}).to_string();
        let message = shared::queue::OutboundMessage {
            body: &body,
            group_id: &group,
            dedup_id: &id,
            event_id: &id,
            event_type: "invoice.paid",
            livemode: false,
        };
        shared::queue::EventQueue::send(&dead, QueueName::Events, &message)
            .await
            .unwrap();
        expected.push((id, group));
    }

    let dry = deployment
        .billing(&["--json", "redrive", "--queue", "events", "--dry-run"])
        .await
        .json();
    assert_eq!((dry["waiting"].as_u64(), dry["moved"].as_u64()), (Some(13), Some(0)));
    let moved = deployment
        .billing(&["--json", "redrive", "--queue", "events"])
        .await
        .json();
    assert_eq!(moved["moved"], 13);
    let again = deployment
        .billing(&["--json", "redrive", "--queue", "events"])
        .await
        .json();
    assert_eq!((again["waiting"].as_u64(), again["moved"].as_u64()), (Some(0), Some(0)));

    let mut back: Vec<(String, String)> = drain(&deployment.queue, QueueName::Events)
        .await
        .into_iter()
        .map(|m| (m.event_id.unwrap_or_default(), m.group_id.unwrap_or_default()))
        .collect();
    back.sort();
    expected.sort();
    assert_eq!(back, expected, "every message back once, with its group and event id");
    assert!(drain(&dead, QueueName::Events).await.is_empty(), "the DLQ is empty");
}
