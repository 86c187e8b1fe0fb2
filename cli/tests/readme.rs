//! The README's claims that can drift from the code are checked here.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md")
}

/// The list to paste into Stripe's dashboard is the routing table's, verbatim.
#[test]
fn the_readme_lists_exactly_the_routed_event_types() {
    let output = Command::new(env!("CARGO_BIN_EXE_billing"))
        .arg("event-types")
        .output()
        .expect("run billing event-types");
    let printed = String::from_utf8(output.stdout).unwrap();
    let readme = readme();
    let start = readme.find("<!-- event-types -->").expect("marker") + "<!-- event-types -->".len();
    let block = &readme[start..readme[start..].find("<!-- /event-types -->").expect("end marker") + start];
    let listed: Vec<&str> = block
        .lines()
        .map(|l| l.trim().trim_matches('`'))
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .collect();
    assert_eq!(listed, printed.lines().collect::<Vec<_>>());
}

/// Every variable of the configuration contract the code reads is documented.
#[test]
fn the_readme_documents_every_configuration_variable() {
    let readme = readme();
    for variable in [
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_SECRETS_ARN",
        "STRIPE_API_BASE",
        "STRIPE_WEBHOOK_TOLERANCE_SECS",
        "STRIPE_DEADLINE_SECS",
        "BILLING_TABLE",
        "EVENTS_QUEUE_URL",
        "PAYMENT_FAILED_QUEUE_URL",
        "BILLING_PLANS",
        "APP_BASE_URL",
        "DUNNING_GRACE_DAYS",
        "DUNNING_NOTIFY_FIRST_FAILURE",
        "DUNNING_MAX_NOTIFICATIONS",
        "BILLING_NOTIFY_FROM",
        "BILLING_EVENTS_TOPIC_ARN",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(
            readme.contains(&format!("`{variable}`")),
            "{variable} is not documented in README.md"
        );
    }
}
