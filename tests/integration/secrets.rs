//! Secrets Manager loading, against moto's Secrets Manager.

use billing_tests::{aws, unique};
use secrecy::ExposeSecret;
use shared::config::{Env, StripeSettings, WebhookSettings, load_secrets_overlay};

#[tokio::test]
async fn stripe_secrets_come_from_secrets_manager_and_win_over_the_environment() {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let name = unique("stripe-");
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(r#"{"STRIPE_SECRET_KEY":"sk_test_from_secret","STRIPE_WEBHOOK_SECRET":"whsec_a,whsec_b"}"#)
        .send()
        .await
        .unwrap();
    let env = Env::from_pairs([
        ("STRIPE_SECRETS_ARN", created.arn().unwrap()),
        ("STRIPE_SECRET_KEY", "sk_test_env"),
    ]);
    let overlay = load_secrets_overlay(&env, &client).await.unwrap();
    let env = env.with_overlay(overlay);
    assert_eq!(
        StripeSettings::from_env(&env).unwrap().secret_key.expose_secret(),
        "sk_test_from_secret"
    );
    assert_eq!(WebhookSettings::from_env(&env).unwrap().secrets.len(), 2);
}

#[tokio::test]
async fn a_missing_secret_fails_start_up_with_a_clear_error() {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let env = Env::from_pairs([(
        "STRIPE_SECRETS_ARN",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
    )]);
    let error = load_secrets_overlay(&env, &client).await.unwrap_err().to_string();
    assert!(error.contains("Secrets Manager"), "{error}");
}
