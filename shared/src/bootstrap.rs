//! Start-up helpers the function `main`s share: each builds its clients once, here, and hands
//! them to a handler. Nothing here touches the network except the Secrets Manager reads, and
//! each function reads only the secret it uses: [`api_key`] or [`webhook_verifier`].

use secrecy::SecretString;

use crate::config::{
    Catalog, ConfigError, Env, Rotating, SecretSource, StoreSettings, StripeSecret, StripeSettings, WebhookSettings,
};
use crate::entitlement::DEFAULT_GRACE_DAYS;
use crate::notify::{NoAppEvents, SnsPublisher};
use crate::store::DynamoStore;
use crate::stripe::{SignatureVerifier, StripeClient};
use crate::sync::{SyncPolicy, Syncer};

/// What every function reads first: the AWS configuration Lambda's environment describes, and
/// that environment.
pub fn start() -> Result<(aws_config::SdkConfig, Env), ConfigError> {
    let env = Env::from_process();
    let sdk = crate::aws::lambda_sdk_config(&env)?;
    Ok((sdk, env))
}

/// The Stripe API key: from the secret `STRIPE_API_KEY_SECRET_ARN` names (read again within
/// 300 s), else `STRIPE_SECRET_KEY` (local runs).
pub async fn api_key(sdk: &aws_config::SdkConfig, env: &Env) -> Result<Rotating<SecretString>, ConfigError> {
    let source = SecretSource::from_env(env, StripeSecret::ApiKey, sdk)?;
    Rotating::load(StripeSecret::ApiKey, source, Box::new(StripeSettings::api_key)).await
}

/// The webhook's verifier: signing secrets from the secret `STRIPE_WEBHOOK_SECRET_ARN` names
/// (read again within 300 s, and when no secret signed a delivery), else
/// `STRIPE_WEBHOOK_SECRET` (local runs).
pub async fn webhook_verifier(
    sdk: &aws_config::SdkConfig,
    env: &Env,
) -> Result<Rotating<SignatureVerifier>, ConfigError> {
    let tolerance = WebhookSettings::from_env(env)?.tolerance_secs;
    let source = SecretSource::from_env(env, StripeSecret::WebhookSigning, sdk)?;
    Rotating::load(
        StripeSecret::WebhookSigning,
        source,
        Box::new(move |text| {
            Ok(SignatureVerifier::new(
                &WebhookSettings::signing_secrets(text)?,
                tolerance,
            ))
        }),
    )
    .await
}

pub async fn stripe_client(sdk: &aws_config::SdkConfig, env: &Env) -> Result<StripeClient, ConfigError> {
    let settings = StripeSettings::from_env(env)?;
    Ok(StripeClient::lazy(
        settings.api_base,
        api_key(sdk, env).await?,
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

/// The time kept at the end of an invocation to answer Lambda and flush the logs.
pub const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The deadline the handler works to: Lambda's (the context's epoch milliseconds) less
/// [`ANSWER_MARGIN`].
pub fn invocation_deadline(deadline_epoch_ms: u64) -> crate::deadline::Deadline {
    crate::deadline::Deadline::from_lambda(deadline_epoch_ms, crate::deadline::epoch_ms_now(), ANSWER_MARGIN)
}

/// The lease on an event lasts as long as the invocation can run, plus a margin for clock
/// differences; after that a redelivery may take the event over.
pub fn lease_until(deadline_epoch_ms: u64) -> i64 {
    i64::try_from(deadline_epoch_ms / 1000).unwrap_or(i64::MAX - 5) + 5
}

/// The sync core the events and payment-failed processors and the API share, on DynamoDB.
pub async fn syncer(sdk: &aws_config::SdkConfig, env: &Env) -> Result<Syncer<DynamoStore>, ConfigError> {
    Ok(Syncer {
        store: dynamo_store(sdk, env)?,
        stripe: stripe_client(sdk, env).await?,
        plans: Catalog::from_env(env)?,
        grace_days: grace_days(env)?,
        policy: SyncPolicy::from_env(env)?,
        app_events: NoAppEvents,
    })
}

/// The events processor's sync core: it also tells the app (SNS, `BILLING_EVENTS_TOPIC_ARN`)
/// when it cancels and refunds a duplicate subscription.
pub async fn events_syncer(
    sdk: &aws_config::SdkConfig,
    env: &Env,
) -> Result<Syncer<DynamoStore, SnsPublisher>, ConfigError> {
    let Syncer {
        store,
        stripe,
        plans,
        grace_days,
        policy,
        app_events: NoAppEvents,
    } = syncer(sdk, env).await?;
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
