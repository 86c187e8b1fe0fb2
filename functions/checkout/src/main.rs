//! Lambda entry point of the billing API: wiring only.

use checkout::{AppState, router};
use shared::bootstrap;
use shared::config::{AccountSettings, AppSettings, RateLimits};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let (sdk, env) = bootstrap::start()?;
    let state = AppState {
        syncer: bootstrap::syncer(&sdk, &env).await?,
        app_base_url: AppSettings::from_env(&env)?.base_url,
        accounts: AccountSettings::from_env(&env)?,
        limits: RateLimits::from_env(&env)?,
    };
    lambda_http::run(router(state)).await
}
