//! The two processors (events, payment-failed) consume different queues, so one customer's
//! events are not serialised between them. Each interleaving below stops the payment-failed
//! processor at one await point of its entitlement write — after reading the version, after
//! reading the subscriptions, after reading the dunning records, just before writing — while
//! the events processor applies the customer's recovery in full. Whatever the point, the
//! stored entitlement must end as the latest inputs say (the subscription is active again):
//! an unconditional write would store the grace the paused processor computed from old inputs.

use std::sync::Arc;

use billing_tests::faults::{FaultPlan, FlakyStore};
use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{fixtures, unique};
use serde_json::json;
use shared::config::Catalog;
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::notify::MemoryNotifier;
use shared::processing::{EventHandler, Outcome};
use shared::store::{Access, AccountId, BillingStore, MemoryStore};
use shared::sync::Syncer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const NOW: i64 = 1_763_900_000;

#[tokio::test]
async fn a_paused_writer_never_overwrites_a_newer_entitlement() {
    for point in [
        "get_entitlement",
        "subscriptions_of_customer",
        "dunning_of_customer",
        "put_entitlement",
    ] {
        let tag = unique("");
        let (customer, subscription, invoice_id) = (format!("cus_{tag}"), format!("sub_{tag}"), format!("in_{tag}"));
        let user = AccountId::parse(&format!("user-{tag}")).unwrap();
        // Stripe at the time of the failure: the invoice open, the subscription past_due.
        let stripe = StripeStandIn::start().await;
        let mut invoice = fixtures::invoice(&invoice_id, &customer, &subscription, "open");
        invoice["attempt_count"] = json!(1);
        invoice["customer_email"] = json!("");
        Mock::given(method("GET"))
            .and(path(format!("/v1/invoices/{invoice_id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(&invoice))
            .mount(&stripe.server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/subscriptions/{subscription}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(subscription_state(
                &subscription,
                &customer,
                "price_pro",
                "past_due",
                false,
            )))
            .mount(&stripe.server)
            .await;

        let plan = Arc::new(FaultPlan::new(0.0));
        let store = Arc::new(FlakyStore {
            inner: MemoryStore::new(),
            plan: plan.clone(),
        });
        store.link_customer(&user, &customer).await.unwrap();
        let syncer = || Syncer {
            store: store.clone(),
            stripe: stripe.client(),
            plans: Catalog::parse(PLANS).unwrap(),
            grace_days: 14,
            policy: Default::default(),
            app_events: shared::notify::NoAppEvents,
        };
        let payment_failed = Arc::new(DunningProcessor {
            syncer: syncer(),
            notifier: MemoryNotifier::new(),
            policy: DunningPolicy::default(),
        });
        let events = syncer();

        let failure = fixtures::event(&unique("evt_"), "invoice.payment_failed", NOW, invoice.clone()).to_string();
        let (arrived, go) = plan.pause_at(point);
        let paused = tokio::spawn({
            let processor = payment_failed.clone();
            async move { processor.handle_message(&failure, NOW, NOW + 60).await }
        });
        arrived.await.expect("the payment-failed processor reached the pause");

        // Meanwhile the customer pays: the events processor stores the newer, active state.
        let recovered = fixtures::event(
            &unique("evt_"),
            "customer.subscription.updated",
            NOW + 10,
            subscription_state(&subscription, &customer, "price_pro", "active", false),
        )
        .to_string();
        assert_eq!(
            events.handle_message(&recovered, NOW + 10, NOW + 70).await.unwrap(),
            Outcome::Applied
        );
        assert_eq!(
            store.get_entitlement(&user).await.unwrap().map(|e| e.access),
            Some(Access::Active),
            "{point}: the events processor's write"
        );

        go.send(()).expect("resume");
        assert_eq!(paused.await.unwrap().unwrap(), Outcome::Applied, "{point}");
        let last = store.get_entitlement(&user).await.unwrap().unwrap();
        assert_eq!(
            last.access,
            Access::Active,
            "{point}: the paused writer stored what it computed from stale inputs"
        );
    }
}
