//! Lambda entry point of the webhook receiver: wiring only.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::config::QueueSettings;
use shared::queue::SqsQueue;
use shared::webhook::{WebhookReceiver, apigw};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    // The signing secret only: this function is on the internet and never holds the API key.
    let verifier = bootstrap::webhook_verifier(&sdk, &env).await?;
    if !verifier.cached().is_configured() {
        tracing::error!("no webhook signing secret is set: every delivery will be refused with 500");
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
