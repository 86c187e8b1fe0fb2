//! A realistic subscription lifecycle as Stripe emits it (see the Stripe CLI trigger recipes):
//! checkout completed → subscription created → invoice paid → plan upgraded → set to cancel
//! at period end → deleted. Objects are Stripe's official fixtures, re-identified.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::{Value, json};

use shared::store::{AccountId, BillingStore};

use crate::fixtures;

pub const T0: i64 = 1_763_000_000;
/// Far ahead of any clock the tests run on, so access never lapses by accident.
pub const PERIOD_END: i64 = 4_102_444_800;
pub const PLANS: &str = r#"{"basic":{"price_id":"price_basic","features":["reports"]},
  "pro":{"price_id":"price_pro","features":["reports","api"],"trial_days":14,"allow_promotion_codes":true}}"#;

pub struct Lifecycle {
    pub user: String,
    /// The checkout session the lifecycle starts with, as the checkout API created it.
    pub session: String,
    pub customer: String,
    pub subscription: String,
    /// `(event JSON, created)` in the order Stripe created them.
    pub events: Vec<Value>,
    /// What `GET /v1/subscriptions/{id}` answers once all of it happened.
    pub final_subscription: Value,
}

pub fn subscription_state(id: &str, customer: &str, price: &str, status: &str, cancel_at_period_end: bool) -> Value {
    let mut sub = fixtures::subscription(id, customer, price, status);
    sub["cancel_at_period_end"] = json!(cancel_at_period_end);
    sub["items"]["data"][0]["current_period_end"] = json!(PERIOD_END);
    sub
}

impl Lifecycle {
    /// The full lifecycle ending in deletion.
    pub fn to_deletion(tag: &str) -> Self {
        let (user, customer, sub) = (format!("user-{tag}"), format!("cus_{tag}"), format!("sub_{tag}"));
        let mut session = fixtures::checkout_session(&format!("cs_{tag}"));
        session["client_reference_id"] = json!(user);
        session["customer"] = json!(customer);
        session["subscription"] = json!(sub);
        session["mode"] = json!("subscription");
        let deleted = subscription_state(&sub, &customer, "price_pro", "canceled", true);
        let events = vec![
            fixtures::event(&format!("evt_{tag}_1"), "checkout.session.completed", T0, session),
            fixtures::event(
                &format!("evt_{tag}_2"),
                "customer.subscription.created",
                T0 + 1,
                subscription_state(&sub, &customer, "price_basic", "active", false),
            ),
            fixtures::event(
                &format!("evt_{tag}_3"),
                "invoice.paid",
                T0 + 2,
                fixtures::invoice(&format!("in_{tag}"), &customer, &sub, "paid"),
            ),
            fixtures::event(
                &format!("evt_{tag}_4"),
                "customer.subscription.updated",
                T0 + 3,
                subscription_state(&sub, &customer, "price_pro", "active", false),
            ),
            fixtures::event(
                &format!("evt_{tag}_5"),
                "customer.subscription.updated",
                T0 + 4,
                subscription_state(&sub, &customer, "price_pro", "active", true),
            ),
            fixtures::event(
                &format!("evt_{tag}_6"),
                "customer.subscription.deleted",
                T0 + 5,
                deleted.clone(),
            ),
        ];
        Self {
            user,
            session: format!("cs_{tag}"),
            customer,
            subscription: sub,
            events,
            final_subscription: deleted,
        }
    }

    /// Records the session as the checkout API does when it creates one: only such sessions
    /// link a customer to a user.
    pub async fn record_session<S: BillingStore>(&self, store: &S) {
        let user = AccountId::parse(&self.user).expect("lifecycle user id");
        store
            .put_checkout_session(&self.session, &user, PERIOD_END)
            .await
            .expect("session recorded");
    }

    /// Ends active and set to cancel, with the last two updates in the same second, so their
    /// order can only be known by asking Stripe.
    pub fn with_tie(tag: &str) -> Self {
        let mut lifecycle = Self::to_deletion(tag);
        lifecycle.events.pop();
        lifecycle.events[4]["created"] = json!(T0 + 3);
        lifecycle.final_subscription = lifecycle.events[4]["data"]["object"].clone();
        lifecycle
    }
}

/// An SQS event as Lambda delivers a batch from a FIFO queue.
pub fn sqs_batch(messages: &[(String, &str, String)]) -> SqsEvent {
    let records = messages
        .iter()
        .map(|(id, group, body)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(id.clone());
            message.body = Some(body.clone());
            message.attributes.insert("MessageGroupId".into(), (*group).to_owned());
            message
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    event
}
