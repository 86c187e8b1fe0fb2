//! One place that sets up logging. In Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set) every
//! line is JSON for CloudWatch Logs Insights; locally it is human-readable. What is logged is
//! ids, types and counts — never request bodies, emails, names or secrets. Locally the log
//! goes to stderr, so a command's stdout holds only its report.

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with another level when `RUST_LOG` is not set (the demo keeps its output
/// to its own steps).
pub fn init_with_default(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // `try_init` fails only if a subscriber is already set (tests, embedding): keep that one.
    let _ = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}
