//! One place that sets up logging. In Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set) every
//! line is JSON for CloudWatch Logs Insights; locally it is human-readable. What is logged is
//! ids, types and counts — never request bodies, emails, names or secrets. Locally the log
//! goes to stderr, so a command's stdout holds only its report.
//!
//! The level is one name (`fatal`, `error`, `warn`, `info`, `debug`, `trace`, `off`) from
//! `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls) or `RUST_LOG`. A plain level
//! rather than per-module directives: directive filtering compiles patterns at start and links a
//! regex engine, measurable on every cold start.

use tracing_subscriber::filter::LevelFilter;

pub fn init() {
    init_with_default(LevelFilter::INFO);
}

/// Like [`init`], with another level when neither variable sets one (the demo keeps its output
/// to its own steps).
pub fn init_with_default(default: LevelFilter) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level_from(|name| std::env::var(name).ok()).unwrap_or(default))
        .with_target(false);
    // `try_init` fails only if a subscriber is already set (tests, embedding): keep that one.
    let _ = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

/// The first of `AWS_LAMBDA_LOG_LEVEL` and `RUST_LOG` that names a level (case-insensitive).
/// Lambda's `FATAL` is the error level here: nothing is logged above it.
fn level_from(var: impl Fn(&str) -> Option<String>) -> Option<LevelFilter> {
    ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"].into_iter().find_map(|name| {
        let value = var(name)?;
        match value.trim() {
            fatal if fatal.eq_ignore_ascii_case("fatal") => Some(LevelFilter::ERROR),
            level => level.parse().ok(),
        }
    })
}

/// Counts that an operator must see (a foreign checkout session, a refunded duplicate, a price
/// the catalog lacks). In Lambda each count is one CloudWatch Embedded Metric Format line on
/// stdout — a metric and an alarm without an API call; everywhere the process keeps a tally
/// that tests and `billing dev` read with [`count_of`].
pub fn count(metric: &'static str) {
    let mut tally = tally().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *tally.entry(metric).or_insert(0) += 1;
    drop(tally);
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        let now_ms = unix_ms();
        println!(
            r#"{{"_aws":{{"Timestamp":{now_ms},"CloudWatchMetrics":[{{"Namespace":"StripeBilling","Dimensions":[[]],"Metrics":[{{"Name":"{metric}","Unit":"Count"}}]}}]}},"{metric}":1}}"#
        );
    }
}

/// Like [`count`], with one dimension (e.g. `ApiVersion` = the version an event came in), so
/// the operator sees which value it was; the tally counts the metric over all values.
pub fn count_by(metric: &'static str, dimension: &'static str, value: &str) {
    let mut tally = tally().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *tally.entry(metric).or_insert(0) += 1;
    drop(tally);
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!("{}", emf_with_dimension(metric, dimension, value, unix_ms()));
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The value comes from outside (a payload): serialised as JSON, never spliced into it.
fn emf_with_dimension(metric: &str, dimension: &str, value: &str, now_ms: u128) -> String {
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": "StripeBilling",
                "Dimensions": [[dimension]],
                "Metrics": [{"Name": metric, "Unit": "Count"}]
            }]
        },
    });
    if let Some(fields) = line.as_object_mut() {
        fields.insert(dimension.to_owned(), value.chars().take(64).collect::<String>().into());
        fields.insert(metric.to_owned(), 1.into());
    }
    line.to_string()
}

/// How often [`count`] was called for `metric` in this process.
pub fn count_of(metric: &str) -> u64 {
    tally()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(metric)
        .copied()
        .unwrap_or(0)
}

fn tally() -> &'static std::sync::Mutex<std::collections::HashMap<&'static str, u64>> {
    static TALLY: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, u64>>> =
        std::sync::OnceLock::new();
    TALLY.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(pairs: &[(&str, &str)]) -> Option<LevelFilter> {
        level_from(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn a_dimension_value_from_a_payload_stays_a_json_string() {
        let line = emf_with_dimension("ApiVersionMismatch", "ApiVersion", "2017-08-15\",\"x\":1", 5);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["ApiVersion"], "2017-08-15\",\"x\":1");
        assert_eq!(parsed["ApiVersionMismatch"], 1);
        assert_eq!(parsed["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "ApiVersion");
        assert!(parsed.get("x").is_none());
    }

    #[test]
    fn lambdas_log_level_wins_and_a_bad_value_is_passed_over() {
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG"), ("RUST_LOG", "error")]),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "loud"), ("RUST_LOG", "warn")]),
            Some(LevelFilter::WARN)
        );
        assert_eq!(level(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]), Some(LevelFilter::ERROR));
        assert_eq!(level(&[("RUST_LOG", "shared=debug")]), None);
        assert_eq!(level(&[]), None);
    }
}
