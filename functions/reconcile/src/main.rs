//! Lambda entry point of the scheduled reconciler: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::config::QueueSettings;
use shared::queue::SqsQueue;
use shared::reconcile::{Reconciler, emf_line};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sdk = shared::aws_sdk_config().await;
    let env = bootstrap::environment(&sdk).await?;
    let reconciler = Reconciler {
        store: bootstrap::dynamo_store(&sdk, &env)?,
        queue: SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), QueueSettings::from_env(&env)?),
        stripe: bootstrap::stripe_client(&env)?,
    };
    let reconciler = &reconciler;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let now = shared::unix_now();
        let report = reconciler.run(now, None).await?;
        // EMF goes to stdout as its own line; CloudWatch turns it into metrics.
        println!("{}", emf_line(&report, now * 1000));
        tracing::info!(
            seen = report.seen,
            already_done = report.already_done,
            enqueued = report.enqueued,
            lag_seconds = report.lag_seconds,
            "reconcile pass done"
        );
        Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
    }))
    .await
}
