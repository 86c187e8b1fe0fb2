//! One place that sets up logging. In Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set) every
//! line is JSON for CloudWatch Logs Insights; locally it is human-readable. What is logged is
//! ids, types and counts — never request bodies, emails, names or secrets.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // `try_init` fails only if a subscriber is already set (tests, embedding): keep that one.
    let _ = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.try_init()
    };
}
