//! Lambda entry point of the events processor (SQS `events` FIFO queue): wiring only.
//! The trigger must enable `ReportBatchItemFailures`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::processing::EventHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    let syncer = bootstrap::events_syncer(&sdk, &env).await?;
    let syncer = &syncer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let lease_until = bootstrap::lease_until(event.context.deadline);
        let deadline = bootstrap::invocation_deadline(event.context.deadline);
        let batch = syncer.handle_batch(event.payload, shared::unix_now(), lease_until);
        let response: SqsBatchResponse = deadline.scope(batch).await?;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
