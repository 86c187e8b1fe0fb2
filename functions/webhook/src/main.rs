//! Lambda entry point of the webhook receiver: wiring only.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::{QueueSettings, WebhookSettings};
use shared::queue::SqsQueue;
use shared::stripe::SignatureVerifier;
use shared::webhook::{WebhookReceiver, apigw};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = shared::bootstrap::start().await?;
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
