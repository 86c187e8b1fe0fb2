//! The entitlement decision table (`tests/fixtures/entitlement_decisions.json`): each row's
//! expected access was written by hand from Stripe's documentation of subscription states and
//! the documented policy (README, "Access"), never computed by this code. Every row runs
//! through the production path: stored records → `entitlement::compute` → the view at `now`.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::config::Catalog;
use shared::entitlement::{self, EntitlementView};
use shared::store::{AccountId, DunningRecord, SubscriptionRecord};

#[derive(Deserialize)]
struct Table {
    catalog: Value,
    grace_days: u32,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    now: i64,
    subscriptions: Vec<Value>,
    dunning: Vec<Value>,
    expected: Expected,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Expected {
    access: String,
    access_until: Option<i64>,
    plan: Option<String>,
    features: Vec<String>,
}

/// The stored form of a row's subscription, as the sync code writes it.
fn record(row: &Value) -> SubscriptionRecord {
    let items: Vec<Value> = row["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|price| json!({"price_id": price, "quantity": 1}))
        .collect();
    serde_json::from_value(json!({
        "subscription_id": row["id"],
        "customer_id": "cus_table",
        "status": row["status"],
        "price_id": row["items"][0],
        "plan": null,
        "quantity": 1,
        "items": items,
        "cancel_at_period_end": row["cancel_at_period_end"],
        "cancel_at": row["cancel_at"],
        "pause_collection": row["pause_collection"],
        "current_period_start": row["current_period_start"],
        "current_period_end": row["current_period_end"],
        "trial_end": null,
        "ended_at": null,
        "latest_invoice": row["latest_invoice"],
        "created": row["created"],
        "past_due_since": row["past_due_since"],
        "watermark": row["created"],
    }))
    .expect("subscription row")
}

fn dunning(row: &Value) -> DunningRecord {
    serde_json::from_value(json!({
        "invoice_id": row["invoice_id"],
        "customer_id": "cus_table",
        "subscription_id": row["subscription_id"],
        "stage": if row["open"] == true { "retrying" } else { "closed" },
        "attempt_count": 1,
        "next_payment_attempt": null,
        "failure_code": null,
        "decline_code": null,
        "hosted_invoice_url": null,
        "grace_until": row["grace_until"],
        "watermark": 1,
    }))
    .expect("dunning row")
}

#[test]
fn every_row_of_the_decision_table_holds() {
    let table: Table =
        serde_json::from_str(include_str!("../fixtures/entitlement_decisions.json")).expect("decision table");
    assert!(table.rows.len() >= 40, "the table must cover at least 40 cases");
    let plans = Catalog::parse(&table.catalog.to_string()).expect("catalog");
    let user = AccountId::parse("user-table").expect("user");
    let mut failures = Vec::new();
    for row in &table.rows {
        let subscriptions: Vec<SubscriptionRecord> = row.subscriptions.iter().map(record).collect();
        let records: Vec<DunningRecord> = row.dunning.iter().map(dunning).collect();
        let computed = entitlement::compute(&user, "cus_table", &subscriptions, &records, &plans, table.grace_days);
        let view = EntitlementView::at(&computed, row.now);
        let got = Expected {
            access: serde_json::to_value(view.access)
                .expect("access")
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            access_until: view.access_until,
            plan: view.plan,
            features: view.features,
        };
        if got != row.expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n  got      {got:?}",
                row.name, row.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows fail:\n{}",
        failures.len(),
        table.rows.len(),
        failures.join("\n")
    );
}
