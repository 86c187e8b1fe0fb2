//! Lambda entry point of the Amazon EventBridge receiver: wiring only. No secret is read: the
//! partner event source and IAM are this path's authentication.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::value::RawValue;
use shared::config::{Env, EventBridgeSettings, QueueSettings};
use shared::eventbridge::{EventBridgeReceiver, Verdict};
use shared::queue::SqsQueue;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let sdk = shared::aws::lambda_sdk_config(&env)?;
    let settings = EventBridgeSettings::from_env(&env)?;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), QueueSettings::from_env(&env)?);
    let receiver = EventBridgeReceiver::new(settings, queue);
    let receiver = &receiver;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| async move {
        let verdict = receiver.receive(event.payload.get()).await?;
        Ok::<&'static str, lambda_runtime::Error>(match verdict {
            Verdict::Enqueued => "enqueued",
            Verdict::Ignored => "ignored",
            Verdict::Refused(_) => "refused",
        })
    }))
    .await
}
