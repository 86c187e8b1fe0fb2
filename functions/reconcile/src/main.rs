//! Lambda entry point of the scheduled reconciler: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::bootstrap;
use shared::config::QueueSettings;
use shared::notify::SnsPublisher;
use shared::queue::SqsQueue;
use shared::reconcile::{EventPayload, Reconciler, drift, emf_line};
use shared::store::DynamoStore;
use shared::sync::Syncer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    // The drift check is optional: with no sample size the plan catalog is not needed either.
    // A repair that changes an entitlement is told to the app, as the events processor does.
    let drift_sample = usize::try_from(env.parse_u64("RECONCILE_DRIFT_SAMPLE")?.unwrap_or(0)).unwrap_or(usize::MAX);
    let drift_syncer = match drift_sample {
        0 => None,
        _ => Some(bootstrap::events_syncer(&sdk, &env).await?),
    };
    // One client, so the API key is read from Secrets Manager once at init and cached once.
    let stripe = match &drift_syncer {
        Some(syncer) => syncer.stripe.clone(),
        None => bootstrap::stripe_client(&sdk, &env).await?,
    };
    let reconciler = Reconciler {
        store: bootstrap::dynamo_store(&sdk, &env)?,
        queue: SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), QueueSettings::from_env(&env)?),
        stripe,
        payload: EventPayload::from_env(&env)?,
    };
    let (reconciler, drift_syncer) = (&reconciler, &drift_syncer);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let deadline = bootstrap::invocation_deadline(event.context.deadline);
        deadline.scope(pass(reconciler, drift_syncer, drift_sample)).await
    }))
    .await
}

async fn pass(
    reconciler: &Reconciler<DynamoStore, SqsQueue>,
    drift_syncer: &Option<Syncer<DynamoStore, SnsPublisher>>,
    drift_sample: usize,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let now = shared::unix_now();
    let report = reconciler.run(now, None).await?;
    let drift = match drift_syncer {
        Some(syncer) => Some(drift::check(syncer, drift_sample, now).await?),
        None => None,
    };
    // EMF goes to stdout as its own line; CloudWatch turns it into metrics.
    println!("{}", emf_line(&report, drift.as_ref(), now * 1000));
    tracing::info!(
        seen = report.seen,
        already_done = report.already_done,
        enqueued = report.enqueued,
        in_flight = report.in_flight,
        lag_seconds = report.lag_seconds,
        drift_checked = drift.as_ref().map_or(0, |d| d.checked),
        drift_repaired = drift.as_ref().map_or(0, |d| d.repaired.len()),
        "reconcile pass done"
    );
    Ok(serde_json::json!({"reconcile": report, "drift": drift}))
}
