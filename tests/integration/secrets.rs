//! The Stripe secrets in AWS Secrets Manager (moto): each function reads only its own, and a
//! rotation is picked up by a running handler without a restart. Signatures come from Stripe's
//! official Python SDK; which key the simulator accepts is the simulator's own record.

use std::time::{Duration, Instant};

use billing_tests::oracle::signature_header as official_header;
use billing_tests::{aws, fixtures, unique};
use serde_json::json;
use shared::bootstrap;
use shared::config::Env;
use shared::queue::MemoryQueue;
use shared::stripe::StripeError;
use shared::webhook::{Delivery, WebhookReceiver};
use stripe_simulator::Simulator;

/// An ARN no secret has: a function that tried to read it would fail to start.
const NO_SUCH_SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:not-yours";

async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await)
}

async fn create_secret(value: &str) -> String {
    let created = secrets_client()
        .await
        .create_secret()
        .name(unique("stripe-"))
        .secret_string(value)
        .send()
        .await
        .unwrap();
    created.arn().unwrap().to_owned()
}

async fn put_secret(arn: &str, value: &str) {
    secrets_client()
        .await
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

fn event_body() -> String {
    let invoice = fixtures::invoice(&unique("in_"), &unique("cus_"), &unique("sub_"), "open");
    serde_json::to_string(&fixtures::event(
        &unique("evt_"),
        "invoice.paid",
        shared::unix_now(),
        invoice,
    ))
    .unwrap()
}

async fn deliver(receiver: &WebhookReceiver<MemoryQueue>, secret: &str) -> u16 {
    let body = event_body();
    let now = shared::unix_now();
    let header = official_header(&body, secret, now);
    let delivery = Delivery {
        method: "POST",
        signature: Some(&header),
        body: body.as_bytes(),
    };
    receiver.receive(delivery, now).await.status
}

#[tokio::test]
async fn the_webhook_starts_with_only_the_signing_secret_and_never_reads_the_api_key() {
    let sdk = aws::sdk_config().await;
    let arn = create_secret(r#"{"STRIPE_WEBHOOK_SECRET":"whsec_only_this"}"#).await;
    // The webhook's environment as the template gives it: its own secret's ARN. The API key's
    // variable pointing at a secret it may not read proves the path never asks for it.
    let env = Env::from_pairs([
        ("STRIPE_WEBHOOK_SECRET_ARN", arn.as_str()),
        ("STRIPE_API_KEY_SECRET_ARN", NO_SUCH_SECRET),
    ]);
    let verifier = bootstrap::webhook_verifier(&sdk, &env).await.unwrap();
    let receiver = WebhookReceiver::new(verifier, MemoryQueue::new());
    assert_eq!(deliver(&receiver, "whsec_only_this").await, 200);
    // A signing secret Secrets Manager cannot give fails start-up: no receiver, never a 2xx.
    let unreadable = Env::from_pairs([("STRIPE_WEBHOOK_SECRET_ARN", NO_SUCH_SECRET)]);
    assert!(bootstrap::webhook_verifier(&sdk, &unreadable).await.is_err());

    // The API key path reads only its own secret, and a missing one fails start-up clearly.
    let error = bootstrap::api_key(&sdk, &env).await.unwrap_err().to_string();
    assert!(error.contains("Secrets Manager"), "{error}");
    let key_arn = create_secret(r#"{"STRIPE_SECRET_KEY":"rk_test_restricted"}"#).await;
    let env = Env::from_pairs([
        ("STRIPE_API_KEY_SECRET_ARN", key_arn.as_str()),
        ("STRIPE_WEBHOOK_SECRET_ARN", NO_SUCH_SECRET),
    ]);
    let client = bootstrap::stripe_client(&sdk, &env).await.unwrap();
    assert_eq!(client.livemode(), Some(false));
    // A secret without the key is a clear start-up error naming the key, never its value.
    let empty = create_secret("{}").await;
    let env = Env::from_pairs([("STRIPE_API_KEY_SECRET_ARN", empty.as_str())]);
    let error = bootstrap::api_key(&sdk, &env).await.unwrap_err().to_string();
    assert!(error.contains("STRIPE_SECRET_KEY"), "{error}");
}

#[tokio::test]
async fn a_rolled_signing_secret_is_accepted_without_a_restart_and_the_old_one_during_the_overlap() {
    let sdk = aws::sdk_config().await;
    let arn = create_secret(r#"{"STRIPE_WEBHOOK_SECRET":"whsec_old_one"}"#).await;
    let env = Env::from_pairs([
        ("STRIPE_WEBHOOK_SECRET_ARN", arn.as_str()),
        ("BILLING_SECRETS_MAX_AGE_SECS", "2"),
    ]);
    let receiver = WebhookReceiver::new(
        bootstrap::webhook_verifier(&sdk, &env).await.unwrap(),
        MemoryQueue::new(),
    );
    assert_eq!(deliver(&receiver, "whsec_old_one").await, 200);
    assert_eq!(deliver(&receiver, "whsec_new_one").await, 400, "not yet rolled");

    // Rolled in the dashboard with an overlap: Stripe signs with the new secret, the old one
    // stays valid for a while, and the operator stores both.
    put_secret(&arn, r#"{"STRIPE_WEBHOOK_SECRET":"whsec_new_one,whsec_old_one"}"#).await;
    // A delivery no held secret signed makes the receiver read the secret again (at most once
    // per tenth of the window), so the new secret is accepted well before the 2 s window ends.
    // Polled rather than slept once: on a loaded machine moto's answer may take a while.
    let rolled = Instant::now();
    let mut status = deliver(&receiver, "whsec_new_one").await;
    while status != 200 && rolled.elapsed() < Duration::from_millis(1_500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = deliver(&receiver, "whsec_new_one").await;
    }
    assert_eq!(status, 200, "the new secret, same process, within 1.5 s");
    assert_eq!(
        deliver(&receiver, "whsec_old_one").await,
        200,
        "the old one, during the overlap"
    );

    // The overlap ends: within one window the old secret is refused.
    put_secret(&arn, r#"{"STRIPE_WEBHOOK_SECRET":"whsec_new_one"}"#).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(deliver(&receiver, "whsec_old_one").await, 400);
    assert_eq!(deliver(&receiver, "whsec_new_one").await, 200);
}

#[tokio::test]
async fn a_rolled_api_key_is_picked_up_on_the_401_without_a_restart() {
    let sdk = aws::sdk_config().await;
    let simulator = Simulator::start(0, stripe_simulator::Delivery::default())
        .await
        .unwrap();
    simulator.set_api_keys(Some(vec!["rk_test_first".into()]));
    let arn = create_secret(r#"{"STRIPE_SECRET_KEY":"rk_test_first"}"#).await;
    let env = Env::from_pairs([
        ("STRIPE_API_KEY_SECRET_ARN", arn.as_str()),
        ("STRIPE_API_BASE", simulator.base_url.as_str()),
        ("BILLING_SECRETS_MAX_AGE_SECS", "2"),
    ]);
    let client = bootstrap::stripe_client(&sdk, &env).await.unwrap();
    let params = json!({"metadata": {"user_id": "u1"}});
    client.create_customer(&params, &unique("idem-")).await.unwrap();

    // The key is rolled: Stripe accepts only the new one.
    simulator.set_api_keys(Some(vec!["rk_test_second".into()]));
    let error = client.create_customer(&params, &unique("idem-")).await.unwrap_err();
    assert!(
        matches!(&error, StripeError::Api(api) if api.status == 401),
        "the secret still holds the old key: {error:?}"
    );
    put_secret(&arn, r#"{"STRIPE_SECRET_KEY":"rk_test_second"}"#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.create_customer(&params, &unique("idem-")).await.unwrap();
}
