//! Lambda entry point of the usage processor (SQS `usage` standard queue): wiring only. The
//! trigger must enable `ReportBatchItemFailures`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::config::{Catalog, UsageSettings};
use shared::stripe::meter_events::StripeMeterEvents;
use shared::usage::UsageProcessor;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    let settings = UsageSettings::from_env(&env)?;
    let processor = UsageProcessor {
        ledger: bootstrap::dynamo_store(&sdk, &env)?,
        meter_events: StripeMeterEvents::new(
            bootstrap::stripe_client(&sdk, &env).await?,
            settings.meter_events_base,
            settings.api,
        ),
        catalog: Catalog::from_env(&env)?,
    };
    let processor = &processor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = bootstrap::invocation_deadline(event.context.deadline);
        let batch = processor.handle_batch(event.payload, shared::unix_now());
        let response: SqsBatchResponse = deadline.scope(batch).await;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
