//! Stripe's official example objects (copied from stripe/openapi's fixtures3.json; see
//! tests/fixtures/extract.py), re-identified per test, and events built around them.

use serde_json::{Value, json};

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

pub fn customer(id: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/customer.json"));
    value["id"] = json!(id);
    value
}

pub fn checkout_session(id: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/checkout.session.json"));
    value["id"] = json!(id);
    value
}

pub fn portal_session(customer: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/billing_portal.session.json"));
    value["customer"] = json!(customer);
    value
}

pub fn price(id: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/price.json"));
    value["id"] = json!(id);
    value
}

pub fn subscription(id: &str, customer: &str, price_id: &str, status: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/subscription.json"));
    value["id"] = json!(id);
    value["customer"] = json!(customer);
    value["status"] = json!(status);
    value["cancel_at_period_end"] = json!(false);
    // The official example sets every optional field; a plain subscription has none of these.
    for unset in [
        "cancel_at",
        "canceled_at",
        "pause_collection",
        "trial_start",
        "trial_end",
        "ended_at",
    ] {
        value[unset] = Value::Null;
    }
    value["items"]["data"][0]["price"] = price(price_id);
    value["items"]["data"][0]["subscription"] = json!(id);
    value
}

pub fn invoice(id: &str, customer: &str, subscription: &str, status: &str) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/invoice.json"));
    value["id"] = json!(id);
    value["customer"] = json!(customer);
    value["subscription"] = json!(subscription);
    value["status"] = json!(status);
    value
}

/// An event envelope (Stripe's fixture) around `object`.
pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    let mut value = load(include_str!("../fixtures/stripe/event.json"));
    value["id"] = json!(id);
    value["type"] = json!(event_type);
    value["created"] = json!(created);
    value["api_version"] = json!(shared::stripe::API_VERSION);
    value["data"] = json!({ "object": object });
    value
}
