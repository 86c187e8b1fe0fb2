//! In Lambda the Stripe secrets live in AWS Secrets Manager, not in plain environment
//! variables. `STRIPE_SECRETS_ARN` names a secret whose value is a JSON object with
//! `STRIPE_SECRET_KEY` and/or `STRIPE_WEBHOOK_SECRET`; it is read once, at init.

use std::collections::HashMap;

use super::{ConfigError, Env};

const SECRET_KEYS: [&str; 2] = ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"];

/// Returns the secret's values to overlay on the environment, or nothing when no ARN is set.
pub async fn load_secrets_overlay(
    env: &Env,
    client: &aws_sdk_secretsmanager::Client,
) -> Result<HashMap<String, String>, ConfigError> {
    let Some(arn) = env.get("STRIPE_SECRETS_ARN") else {
        return Ok(HashMap::new());
    };
    let output =
        client.get_secret_value().secret_id(arn).send().await.map_err(|error| {
            ConfigError::Secrets(aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())
        })?;
    let text = output.secret_string().unwrap_or_default();
    parse_secret(text)
}

fn parse_secret(text: &str) -> Result<HashMap<String, String>, ConfigError> {
    let values: HashMap<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| ConfigError::Secrets("the secret is not a JSON object of strings".into()))?;
    let mut overlay = HashMap::new();
    for key in SECRET_KEYS {
        match values.get(key) {
            Some(serde_json::Value::String(value)) if !value.is_empty() => {
                overlay.insert(key.to_owned(), value.clone());
            }
            Some(serde_json::Value::String(_)) | None => {}
            Some(_) => return Err(ConfigError::Secrets(format!("{key} in the secret must be a string"))),
        }
    }
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_the_known_keys() {
        let overlay =
            parse_secret(r#"{"STRIPE_SECRET_KEY":"sk_test_1","STRIPE_WEBHOOK_SECRET":"","OTHER":"x"}"#).unwrap();
        assert_eq!(overlay.len(), 1);
        assert_eq!(overlay["STRIPE_SECRET_KEY"], "sk_test_1");
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let error = parse_secret("sk_live_leaky").unwrap_err().to_string();
        assert!(!error.contains("sk_live_leaky"));
        assert!(parse_secret(r#"{"STRIPE_SECRET_KEY":5}"#).is_err());
    }
}
