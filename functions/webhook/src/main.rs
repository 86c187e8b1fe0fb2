//! Lambda entry point of the webhook receiver: wiring only.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::{Env, QueueSettings, WebhookSettings, load_secrets_overlay};
use shared::queue::SqsQueue;
use shared::stripe::SignatureVerifier;
use shared::webhook::{WebhookReceiver, apigw};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sdk = shared::aws_sdk_config().await;
    let env = Env::from_process();
    let secrets = load_secrets_overlay(&env, &aws_sdk_secretsmanager::Client::new(&sdk)).await?;
    let env = env.with_overlay(secrets);
    let settings = WebhookSettings::from_env(&env)?;
    let verifier = SignatureVerifier::new(&settings.secrets, settings.tolerance_secs);
    if !verifier.is_configured() {
        tracing::error!("STRIPE_WEBHOOK_SECRET is not set: every delivery will be refused with 500");
    }
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), QueueSettings::from_env(&env)?);
    let receiver = WebhookReceiver::new(verifier, queue);
    let receiver = &receiver;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<ApiGatewayV2httpResponse, lambda_runtime::Error>(
                apigw::handle(receiver, &event.payload, shared::unix_now()).await,
            )
        },
    ))
    .await
}
