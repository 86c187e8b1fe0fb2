//! In Lambda the Stripe secrets live in AWS Secrets Manager, not in plain environment
//! variables, and in two secrets, so that each function can be allowed to read only the one it
//! uses: the internet-facing webhook receiver holds the signing secret(s) and never the API key.
//!
//! A secret is re-read at most [`MAX_AGE`] after the last read, and sooner when a caller asks
//! (Stripe answered 401, no configured secret signed a delivery), at most ten times per window.
//! Rotating a secret is therefore a `PutSecretValue`, never a redeploy.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::{ConfigError, Env, invalid};

/// The longest a secret is used without being read again.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// After a failed re-read the old value is kept and the read tried again this much later, so
/// a Secrets Manager outage costs one slow request per interval, not every request.
const RETRY_FAILED_READ: Duration = Duration::from_secs(10);

/// The longest a re-read may take before the previous value is kept.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The two secrets, each with the variable naming its Secrets Manager ARN and the key of its
/// value in the secret's JSON object (or the variable holding it directly, for local runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeSecret {
    /// `rk_…` (recommended) or `sk_…`: every function that calls Stripe.
    ApiKey,
    /// `whsec_…`, comma-separated during a rotation: the webhook receiver only.
    WebhookSigning,
}

impl StripeSecret {
    pub const fn arn_var(self) -> &'static str {
        match self {
            StripeSecret::ApiKey => "STRIPE_API_KEY_SECRET_ARN",
            StripeSecret::WebhookSigning => "STRIPE_WEBHOOK_SECRET_ARN",
        }
    }

    pub const fn key(self) -> &'static str {
        match self {
            StripeSecret::ApiKey => "STRIPE_SECRET_KEY",
            StripeSecret::WebhookSigning => "STRIPE_WEBHOOK_SECRET",
        }
    }
}

/// Where a secret's text comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// The environment variable itself (local runs and tests); it never changes.
    Env(Option<SecretString>),
    /// A Secrets Manager secret, read again when the cached value is older than `max_age`.
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        arn: String,
        max_age: Duration,
    },
}

impl SecretSource {
    /// The secret's ARN variable when set (Secrets Manager, `BILLING_SECRETS_MAX_AGE_SECS` at
    /// most 300), else the plain variable.
    pub fn from_env(env: &Env, secret: StripeSecret, sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        match env.get(secret.arn_var()) {
            Some(arn) => {
                let seconds = env
                    .parse_u64("BILLING_SECRETS_MAX_AGE_SECS")?
                    .unwrap_or(MAX_AGE.as_secs());
                if seconds == 0 || seconds > MAX_AGE.as_secs() {
                    return Err(invalid(
                        "BILLING_SECRETS_MAX_AGE_SECS",
                        "expected 1 to 300 seconds: a rotated secret must be picked up within 5 minutes",
                    ));
                }
                Ok(SecretSource::SecretsManager {
                    client: aws_sdk_secretsmanager::Client::new(sdk),
                    arn: arn.trim().to_owned(),
                    max_age: Duration::from_secs(seconds),
                })
            }
            None => Ok(SecretSource::Env(
                env.get(secret.key()).map(|value| SecretString::from(value.to_owned())),
            )),
        }
    }

    fn max_age(&self) -> Option<Duration> {
        match self {
            SecretSource::Env(_) => None,
            SecretSource::SecretsManager { max_age, .. } => Some(*max_age),
        }
    }

    async fn read(&self, secret: StripeSecret) -> Result<Option<SecretString>, ConfigError> {
        match self {
            SecretSource::Env(value) => Ok(value.clone()),
            SecretSource::SecretsManager { client, arn, .. } => {
                let output = client.get_secret_value().secret_id(arn).send().await.map_err(|error| {
                    ConfigError::Secrets(aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())
                })?;
                value_in_secret(secret, output.secret_string().unwrap_or_default())
            }
        }
    }
}

/// The secret's value: a JSON object's `key` entry (`{"STRIPE_SECRET_KEY":"rk_…"}`), or the
/// whole text when it is not JSON. Empty means not set. Errors never contain the text.
fn value_in_secret(secret: StripeSecret, text: &str) -> Result<Option<SecretString>, ConfigError> {
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok((!text.is_empty()).then(|| SecretString::from(text.to_owned())));
    }
    let values: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| ConfigError::Secrets("the secret is not a JSON object of strings".into()))?;
    match values.get(secret.key()) {
        Some(serde_json::Value::String(value)) if !value.trim().is_empty() => {
            Ok(Some(SecretString::from(value.trim().to_owned())))
        }
        Some(serde_json::Value::String(_)) | None => Ok(None),
        Some(_) => Err(ConfigError::Secrets(format!(
            "{} in the secret must be a string",
            secret.key()
        ))),
    }
}

fn fingerprint(text: Option<&SecretString>) -> Option<[u8; 32]> {
    use sha2::Digest;
    text.map(|text| sha2::Sha256::digest(text.expose_secret().as_bytes()).into())
}

/// What a secret's text becomes (a key, a set of verifiers); an error names the variable and
/// never the value.
pub type Parse<T> = Box<dyn Fn(Option<&SecretString>) -> Result<T, ConfigError> + Send + Sync>;

/// A value built from a secret, rebuilt whenever the secret's text changes.
pub struct Rotating<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Rotating<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<T> {
    secret: StripeSecret,
    source: SecretSource,
    parse: Parse<T>,
    cached: RwLock<Cached<T>>,
    /// One read at a time: callers that find the value stale together wait for one read.
    reading: tokio::sync::Mutex<()>,
}

struct Cached<T> {
    value: Arc<T>,
    /// A digest of the text, to tell whether a read changed it without keeping the text.
    fingerprint: Option<[u8; 32]>,
    /// When the value is due to be read again.
    due: Instant,
    /// The last read attempt, successful or not: forced re-reads are limited from it, so a
    /// failing Secrets Manager is not asked again for every unsigned delivery.
    attempted_at: Instant,
}

impl<T> Rotating<T> {
    /// A value that never changes (tests, and the CLI's in-process runs). It is never read, so
    /// the secret it names in logs is only a label.
    pub fn fixed(value: T) -> Self {
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                secret: StripeSecret::ApiKey,
                source: SecretSource::Env(None),
                parse: Box::new(|_| Err(ConfigError::Secrets("a fixed value is never read again".into()))),
                cached: RwLock::new(Cached {
                    value: Arc::new(value),
                    fingerprint: None,
                    due: now,
                    attempted_at: now,
                }),
                reading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Reads the secret once; a failed first read fails start-up.
    pub async fn load(secret: StripeSecret, source: SecretSource, parse: Parse<T>) -> Result<Self, ConfigError> {
        let text = source.read(secret).await?;
        let value = parse(text.as_ref())?;
        let now = Instant::now();
        let due = source.max_age().map_or(now, |age| now + age);
        Ok(Self {
            inner: Arc::new(Inner {
                secret,
                source,
                parse,
                cached: RwLock::new(Cached {
                    value: Arc::new(value),
                    fingerprint: fingerprint(text.as_ref()),
                    due,
                    attempted_at: now,
                }),
                reading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The value as last read, without reading again (for what a rotation cannot change, such
    /// as the key's mode).
    pub fn cached(&self) -> Arc<T> {
        Arc::clone(&self.lock_read().value)
    }

    /// The value, read again first when it is older than its maximum age.
    pub async fn current(&self) -> Arc<T> {
        let Some(max_age) = self.inner.source.max_age() else {
            return self.cached();
        };
        if Instant::now() < self.lock_read().due {
            return self.cached();
        }
        let _reading = self.inner.reading.lock().await;
        // Another caller may have read it while this one waited.
        if Instant::now() >= self.lock_read().due {
            self.reread(max_age).await;
        }
        self.cached()
    }

    /// Reads again now because `used` looks out of date (Stripe refused the key, no secret
    /// signed a delivery), unless the last attempt was less than a tenth of the maximum age ago,
    /// so that a flood of bad requests costs at most ten reads per window. Returns the value to
    /// retry with when it is not `used`: one another caller already read, or this read's.
    pub async fn reread_if_changed(&self, used: &Arc<T>) -> Option<Arc<T>> {
        let max_age = self.inner.source.max_age()?;
        let _reading = self.inner.reading.lock().await;
        let (fresh, attempted_at) = {
            let cached = self.lock_read();
            (Arc::clone(&cached.value), cached.attempted_at)
        };
        if !Arc::ptr_eq(&fresh, used) {
            return Some(fresh);
        }
        if attempted_at.elapsed() < max_age / 10 {
            return None;
        }
        let before = self.lock_read().fingerprint;
        self.reread(max_age).await;
        let cached = self.lock_read();
        (cached.fingerprint != before).then(|| Arc::clone(&cached.value))
    }

    async fn reread(&self, max_age: Duration) {
        let inner = &self.inner;
        // Bounded, and by the invocation's deadline too: a hanging Secrets Manager must not
        // hold a request (and every caller waiting on the lock) past its time.
        let limit = crate::deadline::Deadline::current()
            .map_or(READ_TIMEOUT, |deadline| deadline.remaining().min(READ_TIMEOUT));
        let result = match tokio::time::timeout(limit, inner.source.read(inner.secret)).await {
            Ok(Ok(text)) => (inner.parse)(text.as_ref()).map(|value| (text, value)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ConfigError::Secrets(format!("no answer within {limit:?}"))),
        };
        let now = Instant::now();
        let mut cached = inner.cached.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((text, value)) => {
                let fingerprint = fingerprint(text.as_ref());
                if fingerprint != cached.fingerprint {
                    tracing::info!(
                        secret = inner.secret.key(),
                        "secret changed in Secrets Manager; now in use"
                    );
                }
                *cached = Cached {
                    value: Arc::new(value),
                    fingerprint,
                    due: now + max_age,
                    attempted_at: now,
                };
            }
            Err(error) => {
                // Keep what works: a value that verified deliveries a minute ago is better than
                // refusing them all because Secrets Manager hiccupped.
                tracing::warn!(secret = inner.secret.key(), %error, "could not read the secret again; keeping the previous value");
                cached.due = now + RETRY_FAILED_READ.min(max_age);
                cached.attempted_at = now;
            }
        }
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Cached<T>> {
        self.inner
            .cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T> From<T> for Rotating<T> {
    fn from(value: T) -> Self {
        Rotating::fixed(value)
    }
}

impl<T> std::fmt::Debug for Rotating<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotating")
            .field("secret", &self.inner.secret.key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_key_of_its_secret_only() {
        let text = r#"{"STRIPE_SECRET_KEY":"rk_test_1","STRIPE_WEBHOOK_SECRET":"","OTHER":"x"}"#;
        let key = value_in_secret(StripeSecret::ApiKey, text).unwrap().unwrap();
        assert_eq!(key.expose_secret(), "rk_test_1");
        assert!(value_in_secret(StripeSecret::WebhookSigning, text).unwrap().is_none());
        let plain = value_in_secret(StripeSecret::WebhookSigning, " whsec_a,whsec_b\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.expose_secret(), "whsec_a,whsec_b");
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let error = value_in_secret(StripeSecret::ApiKey, "{sk_live_leaky")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("sk_live_leaky"), "{error}");
        assert!(value_in_secret(StripeSecret::ApiKey, r#"{"STRIPE_SECRET_KEY":5}"#).is_err());
    }

    #[test]
    fn max_age_is_capped_at_five_minutes() {
        let sdk = aws_config::SdkConfig::builder().build();
        for (value, ok) in [("300", true), ("1", true), ("301", false), ("0", false)] {
            let env = Env::from_pairs([
                (
                    "STRIPE_API_KEY_SECRET_ARN",
                    "arn:aws:secretsmanager:us-east-1:1:secret:k",
                ),
                ("BILLING_SECRETS_MAX_AGE_SECS", value),
            ]);
            assert_eq!(
                SecretSource::from_env(&env, StripeSecret::ApiKey, &sdk).is_ok(),
                ok,
                "{value}"
            );
        }
    }
}
