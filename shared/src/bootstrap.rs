//! Start-up helpers the function `main`s share: each builds its clients once, here, and hands
//! them to a handler. Nothing here touches the network except the Secrets Manager read.

use crate::config::{ConfigError, Env, PlanCatalog, StoreSettings, StripeSettings, load_secrets_overlay};
use crate::entitlement::DEFAULT_GRACE_DAYS;
use crate::notify::{NoAppEvents, SnsPublisher};
use crate::store::DynamoStore;
use crate::stripe::StripeClient;
use crate::sync::{SyncPolicy, Syncer};

/// What every function reads first: the AWS configuration Lambda's environment describes, and
/// that environment with the Stripe secrets laid over it.
pub async fn start() -> Result<(aws_config::SdkConfig, Env), ConfigError> {
    let env = Env::from_process();
    let sdk = crate::aws::lambda_sdk_config(&env)?;
    let env = with_stripe_secrets(env, &sdk).await?;
    Ok((sdk, env))
}

/// `env` with the Stripe secrets from Secrets Manager laid over it, when `STRIPE_SECRETS_ARN`
/// is set.
pub async fn with_stripe_secrets(env: Env, sdk: &aws_config::SdkConfig) -> Result<Env, ConfigError> {
    let overlay = load_secrets_overlay(&env, &aws_sdk_secretsmanager::Client::new(sdk)).await?;
    Ok(env.with_overlay(overlay))
}

pub fn stripe_client(env: &Env) -> Result<StripeClient, ConfigError> {
    let settings = StripeSettings::from_env(env)?;
    Ok(StripeClient::lazy(
        settings.api_base,
        settings.secret_key,
        settings.retry,
    ))
}

pub fn dynamo_store(sdk: &aws_config::SdkConfig, env: &Env) -> Result<DynamoStore, ConfigError> {
    Ok(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        StoreSettings::from_env(env)?.table,
    ))
}

/// `DUNNING_GRACE_DAYS`: access after a failed payment when the dunning record sets no deadline.
pub fn grace_days(env: &Env) -> Result<u32, ConfigError> {
    let days = env
        .parse_u64("DUNNING_GRACE_DAYS")?
        .unwrap_or(u64::from(DEFAULT_GRACE_DAYS));
    u32::try_from(days).map_err(|_| ConfigError::Invalid {
        var: "DUNNING_GRACE_DAYS",
        reason: "too large".into(),
    })
}

/// The lease on an event lasts as long as the invocation can run, plus a margin for clock
/// differences; after that a redelivery may take the event over.
pub fn lease_until(deadline_epoch_ms: u64) -> i64 {
    i64::try_from(deadline_epoch_ms / 1000).unwrap_or(i64::MAX - 5) + 5
}

/// The sync core the events and payment-failed processors and the API share, on DynamoDB.
pub fn syncer(sdk: &aws_config::SdkConfig, env: &Env) -> Result<Syncer<DynamoStore>, ConfigError> {
    Ok(Syncer {
        store: dynamo_store(sdk, env)?,
        stripe: stripe_client(env)?,
        plans: PlanCatalog::from_env(env)?,
        grace_days: grace_days(env)?,
        policy: SyncPolicy::from_env(env)?,
        app_events: NoAppEvents,
    })
}

/// The events processor's sync core: it also tells the app (SNS, `BILLING_EVENTS_TOPIC_ARN`)
/// when it cancels and refunds a duplicate subscription.
pub fn events_syncer(sdk: &aws_config::SdkConfig, env: &Env) -> Result<Syncer<DynamoStore, SnsPublisher>, ConfigError> {
    let Syncer {
        store,
        stripe,
        plans,
        grace_days,
        policy,
        app_events: NoAppEvents,
    } = syncer(sdk, env)?;
    Ok(Syncer {
        store,
        stripe,
        plans,
        grace_days,
        policy,
        app_events: SnsPublisher::new(
            aws_sdk_sns::Client::new(sdk),
            env.require("BILLING_EVENTS_TOPIC_ARN")?.to_owned(),
        ),
    })
}
