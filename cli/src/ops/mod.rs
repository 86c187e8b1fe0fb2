//! Operator commands against a deployment: the same configuration contract as the Lambdas
//! (environment variables, with the API key from Secrets Manager when
//! `STRIPE_API_KEY_SECRET_ARN` is set), so they work against AWS or against moto through
//! `AWS_ENDPOINT_URL`.

mod backfill;
mod inspect;
mod redrive;
mod replay;
mod since;
mod usage;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shared::bootstrap;
use shared::config::{ConfigError, Env, QueueSettings};
use shared::processing::ProcessError;
use shared::queue::{QueueError, SqsQueue};
use shared::reconcile::ReconcileError;
use shared::store::{DynamoStore, StoreError};
use shared::stripe::{StripeClient, StripeError};
use shared::sync::Syncer;

pub use backfill::{backfill, drift};
pub use inspect::{Subject, inspect};
pub use redrive::{Method, redrive};
pub use replay::replay;
pub use since::Since;
pub use usage::{Destination, reconcile as usage_reconcile, report as usage_report};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("the drift check failed")]
    Drift(#[from] ProcessError),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("the Stripe call failed")]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("SQS: {0}")]
    Sqs(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
}

/// The deployment the commands act on, resolved once.
pub struct Deployment {
    sdk: aws_config::SdkConfig,
    env: Env,
}

impl Deployment {
    pub async fn load() -> Result<Self, OpsError> {
        let sdk = shared::aws::default_sdk_config().await;
        let env = Env::from_process();
        Ok(Self { sdk, env })
    }

    fn store(&self) -> Result<DynamoStore, OpsError> {
        Ok(bootstrap::dynamo_store(&self.sdk, &self.env)?)
    }

    fn queue_settings(&self) -> Result<QueueSettings, OpsError> {
        Ok(QueueSettings::from_env(&self.env)?)
    }

    fn queue(&self) -> Result<SqsQueue, OpsError> {
        Ok(SqsQueue::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            self.queue_settings()?,
        ))
    }

    async fn stripe(&self) -> Result<StripeClient, OpsError> {
        Ok(bootstrap::stripe_client(&self.sdk, &self.env).await?)
    }

    /// Which listing the reconciler reads (`BILLING_EVENT_PAYLOAD`).
    fn event_payload(&self) -> Result<shared::reconcile::EventPayload, OpsError> {
        Ok(shared::reconcile::EventPayload::from_env(&self.env)?)
    }

    async fn syncer(&self) -> Result<Syncer<DynamoStore>, OpsError> {
        Ok(bootstrap::syncer(&self.sdk, &self.env).await?)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }
}

/// Human lines by default; `--json` prints the report as one JSON document for scripts.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub(crate) fn emit(&self, human: &str, report: &impl Serialize) -> Result<(), OpsError> {
        if self.json {
            let json = serde_json::to_string_pretty(report).map_err(|error| OpsError::Usage(error.to_string()))?;
            println!("{json}");
        } else {
            println!("{human}");
        }
        Ok(())
    }
}

/// A spinner on stderr for work that waits on the network; hidden when stderr is not a
/// terminal, so scripts and tests see only the report.
fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn counter(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})") {
        bar.set_style(style);
    }
    bar
}
