//! Lambda entry point of the billing API: wiring only.

use checkout::{AppState, IdentitySource, router};
use shared::bootstrap;
use shared::config::{AppSettings, PlanCatalog};
use shared::sync::Syncer;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let sdk = shared::aws_sdk_config().await;
    let env = bootstrap::environment(&sdk).await?;
    let state = AppState {
        syncer: Syncer {
            store: bootstrap::dynamo_store(&sdk, &env)?,
            stripe: bootstrap::stripe_client(&env)?,
            plans: PlanCatalog::from_env(&env)?,
            grace_days: bootstrap::grace_days(&env)?,
        },
        app_base_url: AppSettings::from_env(&env)?.base_url,
        identity: IdentitySource::ApiGatewayJwt,
    };
    lambda_http::run(router(state)).await
}
