//! Lambda entry point of the failed-payment processor (SQS `payment-failed` FIFO queue):
//! wiring only. The trigger must enable `ReportBatchItemFailures`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::dunning::{DunningPolicy, DunningProcessor};
use shared::notify::AwsNotifier;
use shared::processing::EventHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    let notifier = AwsNotifier::new(
        aws_sdk_sesv2::Client::new(&sdk),
        aws_sdk_sns::Client::new(&sdk),
        env.require("BILLING_NOTIFY_FROM")?.to_owned(),
        env.require("BILLING_EVENTS_TOPIC_ARN")?.to_owned(),
    );
    let processor = DunningProcessor {
        syncer: bootstrap::syncer(&sdk, &env).await?,
        notifier,
        policy: DunningPolicy::from_env(&env)?,
    };
    let processor = &processor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let lease_until = bootstrap::lease_until(event.context.deadline);
        let deadline = bootstrap::invocation_deadline(event.context.deadline);
        let batch = processor.handle_batch(event.payload, shared::unix_now(), lease_until);
        let response: SqsBatchResponse = deadline.scope(batch).await?;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
