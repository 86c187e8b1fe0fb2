//! How Stripe reaches a deployed stack, and whether it does: `billing setup` wires it,
//! `billing doctor` checks it.
//!
//! Both read the stack's outputs (CloudFormation `DescribeStacks`; or a file with `--outputs`
//! where there is no CloudFormation, as on moto without the stack) and call Stripe with the
//! operator's key: `STRIPE_SECRET_KEY` when set (setup needs Webhook Endpoints write, which the
//! functions' restricted key rightly lacks), else the key in the stack's API-key secret.

mod doctor;
mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use shared::config::{ConfigError, Env};
use shared::stripe::{StripeClient, StripeError};

pub use doctor::doctor;
pub use setup::{Delivery, Payload, setup};

/// The metadata key that marks a webhook endpoint or event destination as a stack's own.
const STACK_TAG: &str = "billing_stack";
/// The key, beside `STRIPE_WEBHOOK_SECRET`, naming the endpoint whose secret is stored first.
const ENDPOINT_KEY: &str = "STRIPE_WEBHOOK_ENDPOINT";
const SIGNING_KEY: &str = "STRIPE_WEBHOOK_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("name the stack with --stack (no samconfig.toml with [default.deploy.parameters] stack_name here)")]
    NoStackName,
    #[error("CloudFormation could not describe the stack {stack}: {reason}")]
    DescribeStack { stack: String, reason: String },
    #[error("the outputs file {path} could not be read: {reason}")]
    OutputsFile { path: PathBuf, reason: String },
    #[error("the stack {stack} has no output {output}{hint}")]
    MissingOutput {
        stack: String,
        output: &'static str,
        hint: &'static str,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("Stripe refused {action}")]
    Stripe {
        action: String,
        #[source]
        source: StripeError,
    },
    #[error("Secrets Manager: {0}")]
    Secrets(String),
    #[error("{0}")]
    Usage(String),
    #[error("{failed} of {total} checks failed")]
    ChecksFailed { failed: usize, total: usize },
}

fn stripe_error(action: impl Into<String>) -> impl FnOnce(StripeError) -> WiringError {
    let action = action.into();
    move |source| WiringError::Stripe { action, source }
}

/// Which stack, and where its outputs come from.
#[derive(Debug, Clone)]
pub struct Target {
    pub stack: Option<String>,
    pub outputs: Option<PathBuf>,
}

/// The outputs of the deployed stack, by output key.
#[derive(Debug)]
pub struct StackOutputs {
    stack: String,
    values: BTreeMap<String, String>,
}

impl StackOutputs {
    async fn load(target: &Target, sdk: &aws_config::SdkConfig) -> Result<Self, WiringError> {
        let stack = match &target.stack {
            Some(stack) => stack.clone(),
            None => stack_from_samconfig(Path::new("samconfig.toml")).ok_or(WiringError::NoStackName)?,
        };
        let values = match &target.outputs {
            Some(path) => outputs_file(path)?,
            None => describe(sdk, &stack).await?,
        };
        Ok(Self { stack, values })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, output: &'static str, hint: &'static str) -> Result<&str, WiringError> {
        self.get(output).ok_or_else(|| WiringError::MissingOutput {
            stack: self.stack.clone(),
            output,
            hint,
        })
    }
}

/// `stack_name` of `[default.deploy.parameters]`, where `sam deploy --guided` saves it.
fn stack_from_samconfig(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let config: toml::Table = text.parse().ok()?;
    config
        .get("default")?
        .get("deploy")?
        .get("parameters")?
        .get("stack_name")?
        .as_str()
        .map(str::to_owned)
}

/// A JSON object of output key to value, or the list `aws cloudformation describe-stacks
/// --query 'Stacks[0].Outputs'` prints (`[{"OutputKey": …, "OutputValue": …}]`).
fn outputs_file(path: &Path) -> Result<BTreeMap<String, String>, WiringError> {
    let failed = |reason: String| WiringError::OutputsFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|error| failed(error.to_string()))?;
    let pairs: Vec<(String, String)> = match json {
        Value::Object(map) => map
            .into_iter()
            .filter_map(|(key, value)| value.as_str().map(|v| (key, v.to_owned())))
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(|entry| {
                Some((
                    entry["OutputKey"].as_str()?.to_owned(),
                    entry["OutputValue"].as_str()?.to_owned(),
                ))
            })
            .collect(),
        _ => {
            return Err(failed(
                "expected an object of output values or a list of OutputKey/OutputValue".into(),
            ));
        }
    };
    Ok(pairs.into_iter().collect())
}

async fn describe(sdk: &aws_config::SdkConfig, stack: &str) -> Result<BTreeMap<String, String>, WiringError> {
    let failed = |reason: String| WiringError::DescribeStack {
        stack: stack.to_owned(),
        reason,
    };
    let answer = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|error| failed(aws_sdk_cloudformation::error::DisplayErrorContext(error).to_string()))?;
    let described = answer.stacks().first().ok_or_else(|| failed("no such stack".into()))?;
    Ok(described
        .outputs()
        .iter()
        .filter_map(|output| Some((output.output_key()?.to_owned(), output.output_value()?.to_owned())))
        .collect())
}

/// What both commands act with: the stack's outputs, AWS clients and the Stripe client.
pub struct Wiring {
    outputs: StackOutputs,
    sdk: aws_config::SdkConfig,
    env: Env,
    stripe: StripeClient,
}

impl Wiring {
    pub async fn load(target: &Target) -> Result<Self, WiringError> {
        let sdk = shared::aws::default_sdk_config().await;
        let outputs = StackOutputs::load(target, &sdk).await?;
        let mut overlay = std::collections::HashMap::new();
        for (variable, output) in [
            ("BILLING_TABLE", "BillingTableName"),
            ("EVENTS_QUEUE_URL", "EventsQueueUrl"),
            ("PAYMENT_FAILED_QUEUE_URL", "PaymentFailedQueueUrl"),
        ] {
            if let Some(value) = outputs.get(output) {
                overlay.insert(variable.to_owned(), value.to_owned());
            }
        }
        let process = Env::from_process();
        // The operator's own key wins over the functions' restricted one.
        if process.get("STRIPE_SECRET_KEY").is_none()
            && let Some(arn) = outputs.get("StripeApiKeySecretArn")
        {
            overlay.insert("STRIPE_API_KEY_SECRET_ARN".to_owned(), arn.to_owned());
        }
        let env = process.with_overlay(overlay);
        let stripe = shared::bootstrap::stripe_client(&sdk, &env).await?;
        Ok(Self {
            outputs,
            sdk,
            env,
            stripe,
        })
    }

    fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }

    /// The stored webhook signing secret: its JSON document (other keys kept as they are).
    async fn read_signing(&self, arn: &str) -> Result<StoredSigning, WiringError> {
        let answer = self
            .secrets()
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|error| {
                WiringError::Secrets(aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())
            })?;
        let text = answer.secret_string().unwrap_or("{}");
        let document = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(WiringError::Secrets(format!(
                    "the secret {arn} is not a JSON object; expected {{\"{SIGNING_KEY}\":\"whsec_…\"}}"
                )));
            }
        };
        Ok(StoredSigning { document })
    }

    async fn write_signing(&self, arn: &str, stored: &StoredSigning) -> Result<(), WiringError> {
        let text = SecretString::from(Value::Object(stored.document.clone()).to_string());
        self.secrets()
            .put_secret_value()
            .secret_id(arn)
            .secret_string(text.expose_secret())
            .send()
            .await
            .map_err(|error| {
                WiringError::Secrets(aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())
            })?;
        Ok(())
    }
}

/// The webhook secret's document: `STRIPE_WEBHOOK_SECRET` (`whsec_new,whsec_old`) and
/// `STRIPE_WEBHOOK_ENDPOINT` (the endpoint the first secret belongs to).
struct StoredSigning {
    document: Map<String, Value>,
}

impl StoredSigning {
    fn endpoint(&self) -> Option<&str> {
        self.document.get(ENDPOINT_KEY).and_then(Value::as_str)
    }

    /// The stored secrets, in order, that look like Stripe signing secrets.
    fn secrets(&self) -> Vec<SecretString> {
        self.document
            .get(SIGNING_KEY)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|secret| secret.starts_with("whsec_"))
            .map(|secret| SecretString::from(secret.to_owned()))
            .collect()
    }

    /// The new endpoint's secret first, then the one it replaces, so deliveries the old
    /// endpoint signed keep verifying; older ones are dropped.
    fn rotate_to(&mut self, endpoint: &str, secret: &SecretString) {
        let previous = self
            .secrets()
            .into_iter()
            .find(|old| old.expose_secret() != secret.expose_secret());
        let mut value = secret.expose_secret().to_owned();
        if let Some(previous) = previous {
            value.push(',');
            value.push_str(previous.expose_secret());
        }
        self.document.insert(SIGNING_KEY.into(), Value::String(value));
        self.document
            .insert(ENDPOINT_KEY.into(), Value::String(endpoint.to_owned()));
    }
}

/// The event types the routing catalogue handles, sorted: what an endpoint must send.
fn catalogue() -> Vec<String> {
    let mut types: Vec<String> = shared::routing::handled_event_types().map(str::to_owned).collect();
    types.sort();
    types
}

fn tag(stack: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(STACK_TAG.to_owned(), stack.to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_name_is_read_from_samconfig() {
        let dir = std::env::temp_dir().join(format!("samconfig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("samconfig.toml");
        std::fs::write(
            &path,
            "version = 0.1\n[default.deploy.parameters]\nstack_name = \"acme-billing\"\n",
        )
        .unwrap();
        assert_eq!(stack_from_samconfig(&path).as_deref(), Some("acme-billing"));
        std::fs::write(&path, "version = 0.1\n").unwrap();
        assert_eq!(stack_from_samconfig(&path), None);
        // The repository's own file names the stack the README deploys.
        assert_eq!(
            stack_from_samconfig(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samconfig.toml"))).as_deref(),
            Some("stripe-billing")
        );
    }

    #[test]
    fn an_outputs_file_may_be_an_object_or_cloudformations_list() {
        let dir = std::env::temp_dir().join(format!("outputs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let object = dir.join("object.json");
        std::fs::write(&object, r#"{"WebhookUrl": "https://x.example/webhooks/stripe"}"#).unwrap();
        let list = dir.join("list.json");
        std::fs::write(
            &list,
            r#"[{"OutputKey": "WebhookUrl", "OutputValue": "https://x.example/webhooks/stripe", "Description": "d"}]"#,
        )
        .unwrap();
        for path in [object, list] {
            let outputs = outputs_file(&path).unwrap();
            assert_eq!(outputs["WebhookUrl"], "https://x.example/webhooks/stripe");
        }
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "42").unwrap();
        assert!(outputs_file(&bad).unwrap_err().to_string().contains("bad.json"));
    }

    #[test]
    fn a_rotation_keeps_the_replaced_secret_and_drops_older_ones() {
        let mut stored = StoredSigning {
            document: serde_json::from_str(r#"{"STRIPE_WEBHOOK_SECRET":"whsec_b,whsec_a","OTHER":"kept"}"#).unwrap(),
        };
        stored.rotate_to("we_2", &SecretString::from("whsec_c"));
        assert_eq!(stored.document[SIGNING_KEY], "whsec_c,whsec_b");
        assert_eq!(stored.document[ENDPOINT_KEY], "we_2");
        assert_eq!(stored.document["OTHER"], "kept");
        // From the template's empty "{}": the new secret alone.
        let mut fresh = StoredSigning { document: Map::new() };
        fresh.rotate_to("we_1", &SecretString::from("whsec_a"));
        assert_eq!(fresh.document[SIGNING_KEY], "whsec_a");
    }
}
