//! Lambda entry point of the events processor (SQS `events` FIFO queue): wiring only.
//! The trigger must enable `ReportBatchItemFailures`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::config::PlanCatalog;
use shared::processing::EventHandler;
use shared::sync::Syncer;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sdk = shared::aws_sdk_config().await;
    let env = bootstrap::environment(&sdk).await?;
    let syncer = Syncer {
        store: bootstrap::dynamo_store(&sdk, &env)?,
        stripe: bootstrap::stripe_client(&env)?,
        plans: PlanCatalog::from_env(&env)?,
        grace_days: bootstrap::grace_days(&env)?,
    };
    let syncer = &syncer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let lease_until = bootstrap::lease_until(event.context.deadline);
        let response: SqsBatchResponse = syncer
            .handle_batch(event.payload, shared::unix_now(), lease_until)
            .await?;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
