//! Nothing personal and no secret reaches the logs: an event full of personal data goes
//! through the webhook and the dunning processor while every log line is captured.

use std::io::Write;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use billing_tests::fixtures;
use billing_tests::lifecycle::{PLANS, subscription_state};
use billing_tests::stripe_standin::StripeStandIn;
use secrecy::SecretString;
use serde_json::json;
use shared::config::Catalog;
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::notify::MemoryNotifier;
use shared::processing::EventHandler;
use shared::queue::{MemoryQueue, QueueName};
use shared::store::{AccountId, BillingStore, MemoryStore};
use shared::stripe::signature::{SignatureVerifier, sign};
use shared::sync::Syncer;
use shared::webhook::{Delivery, WebhookReceiver};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const SECRET: &str = "whsec_never_in_logs_7f3a";
const PII: [&str; 5] = [
    "ada.lovelace@example.com",
    "Ada Lovelace",
    "12 Analytical Engine Lane",
    "+44 20 7946 0000",
    "SW1A 1AA",
];

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn personal_data_and_secrets_never_reach_the_logs() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut invoice = fixtures::invoice("in_pii", "cus_pii", "sub_pii", "open");
    invoice["customer_email"] = json!(PII[0]);
    invoice["customer_name"] = json!(PII[1]);
    invoice["customer_address"] = json!({"line1": PII[2], "city": "London", "postal_code": PII[4], "country": "GB"});
    invoice["customer_phone"] = json!(PII[3]);
    invoice["attempt_count"] = json!(1);
    let body = serde_json::to_string(&fixtures::event(
        "evt_pii",
        "invoice.payment_failed",
        1_763_900_000,
        invoice.clone(),
    ))
    .unwrap();

    let verifier = SignatureVerifier::new(&[SecretString::from(SECRET.to_owned())], NonZeroU64::new(300).unwrap());
    let receiver = WebhookReceiver::new(verifier, MemoryQueue::new());
    let now = 1_763_900_000;
    let header = sign(SECRET, now, body.as_bytes());
    assert_eq!(
        receiver
            .receive(
                Delivery {
                    method: "POST",
                    signature: Some(&header),
                    body: body.as_bytes()
                },
                now
            )
            .await
            .status,
        200
    );
    let forged = sign("whsec_wrong", now, body.as_bytes());
    assert_eq!(
        receiver
            .receive(
                Delivery {
                    method: "POST",
                    signature: Some(&forged),
                    body: body.as_bytes()
                },
                now
            )
            .await
            .status,
        400
    );
    assert_eq!(receiver.queue().depth(QueueName::PaymentFailed), 1);

    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_pii"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&invoice))
        .mount(&stripe.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_pii"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription_state(
            "sub_pii",
            "cus_pii",
            "price_pro",
            "past_due",
            false,
        )))
        .mount(&stripe.server)
        .await;
    let processor = DunningProcessor {
        syncer: Syncer {
            store: MemoryStore::new(),
            stripe: stripe.client(),
            plans: Catalog::parse(PLANS).unwrap(),
            grace_days: 14,
            policy: Default::default(),
            app_events: shared::notify::NoAppEvents,
        },
        notifier: MemoryNotifier::new(),
        policy: DunningPolicy::default(),
    };
    processor
        .syncer
        .store
        .link_customer(&AccountId::parse("user-pii").unwrap(), "cus_pii")
        .await
        .unwrap();
    processor.handle_message(&body, now, now + 60).await.unwrap();
    assert_eq!(
        processor.notifier.emails()[0].to,
        PII[0],
        "the email did go to the customer"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("evt_pii") && logs.contains("dunning recorded"),
        "the flow was logged: {logs}"
    );
    for secret in PII.iter().chain([&SECRET, &"sk_test_standin"]) {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs:\n{logs}");
    }
}
