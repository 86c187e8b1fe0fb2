//! The AWS SDK configuration. A function takes everything from the environment Lambda sets up
//! (region, the execution role's credentials, an optional `AWS_ENDPOINT_URL`): the default
//! loader's provider chain (profile files, IMDS, ECS, SSO, STS web identity) has nothing to
//! find there, yet it costs init time and binary size on every cold start. The operator CLI and
//! the tests, which run with profiles and SSO, use the default loader.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::region::Region;

use crate::config::{ConfigError, Env};

/// The roots every AWS endpoint of the commercial and GovCloud partitions chains to.
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

/// The SDK's own default, kept: a connection that takes longer is not coming.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// A function's configuration, from the variables Lambda sets for every function, and the
/// standard SDK variables a deployment may add: `AWS_ENDPOINT_URL`, `AWS_USE_FIPS_ENDPOINT`,
/// `AWS_USE_DUALSTACK_ENDPOINT`, `AWS_RETRY_MODE`, `AWS_MAX_ATTEMPTS`.
pub fn lambda_sdk_config(env: &Env) -> Result<SdkConfig, ConfigError> {
    let region = env.require("AWS_REGION")?;
    let credentials = Credentials::new(
        env.require("AWS_ACCESS_KEY_ID")?,
        env.require("AWS_SECRET_ACCESS_KEY")?,
        env.get("AWS_SESSION_TOKEN").map(str::to_owned),
        None,
        "lambda-environment",
    );
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http_client())
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .retry_config(retry_config(env)?)
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build());
    if let Some(url) = env.get("AWS_ENDPOINT_URL").filter(|url| !url.is_empty()) {
        config = config.endpoint_url(url);
    }
    if let Some(fips) = flag(env, "AWS_USE_FIPS_ENDPOINT")? {
        config = config.use_fips(fips);
    }
    if let Some(dual_stack) = flag(env, "AWS_USE_DUALSTACK_ENDPOINT")? {
        config = config.use_dual_stack(dual_stack);
    }
    Ok(config.build())
}

fn flag(env: &Env, var: &'static str) -> Result<Option<bool>, ConfigError> {
    match env.get(var).map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ConfigError::Invalid {
            var,
            reason: "expected true or false".into(),
        }),
    }
}

/// The SDK's standard retries unless `AWS_RETRY_MODE` says `adaptive`; `legacy` is the
/// standard mode in this SDK.
fn retry_config(env: &Env) -> Result<RetryConfig, ConfigError> {
    let retry = match env.get("AWS_RETRY_MODE").map(str::trim) {
        None | Some("" | "standard" | "legacy") => RetryConfig::standard(),
        Some("adaptive") => RetryConfig::adaptive(),
        Some(_) => {
            return Err(ConfigError::Invalid {
                var: "AWS_RETRY_MODE",
                reason: "expected standard, adaptive or legacy".into(),
            });
        }
    };
    Ok(match env.parse_u64("AWS_MAX_ATTEMPTS")? {
        Some(attempts) => retry.with_max_attempts(u32::try_from(attempts.max(1)).unwrap_or(u32::MAX)),
        None => retry,
    })
}

/// The default loader's configuration, with the same HTTPS client: for the CLI and the tests.
pub async fn default_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}

/// HTTPS trusting Amazon Trust Services' roots only. The SDK's default trusts the system store,
/// and reading and parsing its ~150 certificates was the largest part of a function's cold
/// start (README, Performance). With `SSL_CERT_FILE` set (a private CA in front of AWS, or the
/// China partition) the system store is used, from that file.
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust_store = match std::env::var_os("SSL_CERT_FILE") {
        Some(_) => TrustStore::default(),
        None => TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes()),
    };
    let context = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "the compiled-in AWS roots were refused; trusting the system's store");
            TlsContext::default()
        });
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    fn lambda_env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[tokio::test]
    async fn a_function_takes_region_credentials_and_endpoint_from_lambdas_environment() {
        let config = lambda_sdk_config(&lambda_env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")])).unwrap();
        let credentials = aws_credential_types::provider::ProvideCredentials::provide_credentials(
            &config.credentials_provider().unwrap(),
        )
        .await
        .unwrap();

        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(credentials.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(credentials.session_token(), Some("token"));
        assert!(config.http_client().is_some() && config.sleep_impl().is_some());
        assert_eq!(lambda_sdk_config(&lambda_env(&[])).unwrap().endpoint_url(), None);
    }

    #[test]
    fn the_standard_fips_dual_stack_and_retry_variables_are_honoured() {
        let config = lambda_sdk_config(&lambda_env(&[
            ("AWS_USE_FIPS_ENDPOINT", "true"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "TRUE"),
            ("AWS_RETRY_MODE", "adaptive"),
            ("AWS_MAX_ATTEMPTS", "7"),
        ]))
        .unwrap();
        let defaults = lambda_sdk_config(&lambda_env(&[])).unwrap();

        assert_eq!((config.use_fips(), config.use_dual_stack()), (Some(true), Some(true)));
        assert_eq!((defaults.use_fips(), defaults.use_dual_stack()), (None, None));
        let retry = config.retry_config().unwrap();
        assert_eq!(retry.max_attempts(), 7);
        assert_eq!(retry.mode(), aws_smithy_types::retry::RetryMode::Adaptive);
        assert_eq!(
            defaults.retry_config().unwrap().mode(),
            aws_smithy_types::retry::RetryMode::Standard
        );
        for (var, value) in [("AWS_USE_FIPS_ENDPOINT", "yes"), ("AWS_RETRY_MODE", "eager")] {
            let error = lambda_sdk_config(&lambda_env(&[(var, value)])).unwrap_err();
            assert!(error.to_string().contains(var), "{error}");
        }
    }

    #[test]
    fn a_missing_lambda_variable_is_named() {
        let error = lambda_sdk_config(&Env::from_pairs([("AWS_REGION", "eu-west-1")])).unwrap_err();
        assert!(error.to_string().contains("AWS_ACCESS_KEY_ID"), "{error}");
    }

    #[test]
    fn the_compiled_in_roots_are_amazon_trust_services_five_certificates() {
        let roots: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(roots.len(), 5);
    }
}
