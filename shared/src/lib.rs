//! The domain core of the Stripe billing backend, shared by every Lambda function and the CLI.
//!
//! Ports ([`store::BillingStore`], [`queue::EventQueue`], the Stripe client) sit beside their
//! adapters; each adapter has an in-memory twin that passes the same conformance suite.

pub mod bootstrap;
pub mod config;
pub mod dunning;
pub mod entitlement;
pub mod notify;
pub mod processing;
pub mod queue;
pub mod reconcile;
pub mod routing;
pub mod store;
pub mod stripe;
pub mod sync;
pub mod telemetry;
pub mod webhook;

/// Seconds since the Unix epoch, the unit Stripe uses for every timestamp.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

/// The AWS SDK configuration every function builds once; honours `AWS_ENDPOINT_URL` (moto).
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aws_http_client())
        .load()
        .await
}

/// The roots every AWS endpoint of the commercial and GovCloud partitions chains to.
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

/// HTTPS for the AWS clients, trusting Amazon Trust Services' roots only. The SDK's default
/// trusts the system store, and reading and parsing its ~150 certificates was the largest part
/// of a function's cold start (README, Performance). With `SSL_CERT_FILE` set (a private CA in
/// front of AWS, or the China partition) the system store is used, from that file.
fn aws_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
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
