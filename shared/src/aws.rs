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

/// A function's configuration, from the variables Lambda sets for every function.
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
        .retry_config(RetryConfig::standard())
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build());
    if let Some(url) = env.get("AWS_ENDPOINT_URL").filter(|url| !url.is_empty()) {
        config = config.endpoint_url(url);
    }
    Ok(config.build())
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
        .unwrap_or_default();
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
