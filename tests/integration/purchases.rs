//! One-time purchases end to end: `POST /checkout/sessions {"product": …}` against the offline
//! simulator over HTTP, the customer paying in the simulator, refunding and disputing there,
//! and the events the simulator recorded (`GET /v1/events`, as Stripe sends them) processed
//! by the events processor on DynamoDB (moto) — in reverse order too.
//!
//! Expected values come from outside the code under test: the amounts Stripe charged are read
//! from the simulator's payment intents (2000 per unit, its price), and the entitlement after
//! each step is written by hand from `infra/catalog.example.json` and this decision table
//! (Stripe's docs for each event):
//!
//! | event                                              | purchase                  |
//! |----------------------------------------------------|---------------------------|
//! | `checkout.session.completed`, `payment_status=paid` | granted                  |
//! | `checkout.session.completed`, `unpaid` (delayed)   | nothing yet               |
//! | `checkout.session.async_payment_succeeded`         | granted                   |
//! | `charge.refunded`, `refunded: true` (in full)      | taken back                |
//! | `charge.refunded`, `refunded: false` (partial)     | stays                     |
//! | `charge.dispute.closed`, `status: lost`            | taken back                |
//! | `charge.dispute.closed`, `status: won`             | stays                     |

use billing_tests::shop::Shop;
use serde_json::{Value, json};

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn credit_packs_and_a_lifetime_deal_are_granted_and_taken_back_on_a_full_refund_or_a_lost_dispute() {
    let shop = Shop::open().await;

    // Three credit packs: one payment of three units.
    let credits = shop.checkout(json!({"product": "credits_1000", "quantity": 3})).await;
    let session = shop.session(&credits).await;
    assert_eq!(session["mode"], "payment");
    assert_eq!(session["metadata"]["product"], "credits_1000");
    shop.sim(&format!("checkout/{credits}/complete")).await;
    let paid = shop.new_events().await;
    assert_eq!(types(&paid), ["checkout.session.completed"]);
    let intent = shop.session(&credits).await["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment = shop
        .stripe(reqwest::Method::GET, &format!("/v1/payment_intents/{intent}"), &[])
        .await;
    assert_eq!(
        (payment["status"].as_str(), payment["amount"].as_i64()),
        (Some("succeeded"), Some(6000))
    );
    assert_eq!(payment["metadata"]["product"], "credits_1000");
    shop.process_ok(&paid).await;
    let me = shop.me().await;
    // A credit pack grants credits, not access.
    assert_eq!(
        (me["credits"].as_u64(), me["access"].as_str()),
        (Some(3000), Some("none"))
    );
    assert_eq!(me["products"], json!(["credits_1000"]));

    // A lifetime deal: access for good, its features and limits.
    let lifetime = shop.checkout(json!({"product": "lifetime"})).await;
    shop.sim(&format!("checkout/{lifetime}/complete")).await;
    shop.process_ok(&shop.new_events().await).await;
    let me = shop.me().await;
    assert_eq!(me["access"], "active");
    assert_eq!(me["access_until"], Value::Null);
    assert_eq!(me["plan"], Value::Null, "a purchase is not a plan");
    assert_eq!(me["features"], json!(["api", "reports"]));
    assert_eq!(me["limits"], json!({"projects": 20}));
    assert_eq!(me["credits"], 3000);
    let kinds: Vec<(&str, &str)> = me["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds.len(), 2, "{me}");
    billing_tests::openapi::assert_matches("EntitlementView", &me);
    assert!(kinds.contains(&("purchase", "lifetime")) && kinds.contains(&("purchase", "credits_1000")));

    // A partial refund of the credits leaves them; the lifetime deal refunded in full is gone.
    let lifetime_intent = shop.session(&lifetime).await["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    shop.stripe(
        reqwest::Method::POST,
        "/v1/refunds",
        &[("payment_intent", &intent), ("amount", "1000")],
    )
    .await;
    shop.stripe(
        reqwest::Method::POST,
        "/v1/refunds",
        &[("payment_intent", &lifetime_intent)],
    )
    .await;
    let refunds = shop.new_events().await;
    assert_eq!(
        types(&refunds),
        ["charge.refunded", "refund.created", "charge.refunded", "refund.created"]
    );
    assert_eq!(refunds[0]["data"]["object"]["refunded"], false);
    assert_eq!(refunds[2]["data"]["object"]["refunded"], true);
    shop.process_ok(&refunds).await;
    let me = shop.me().await;
    assert_eq!(
        (me["access"].as_str(), me["credits"].as_u64()),
        (Some("none"), Some(3000))
    );
    assert_eq!(me["features"], json!([]));
    assert_eq!(me["products"], json!(["credits_1000"]));

    // The credits' charge is disputed and the dispute lost: the credits are taken back.
    let charge = shop.charge_of(&intent).await;
    shop.sim(&format!("charges/{charge}/dispute?status=lost")).await;
    let disputed = shop.new_events().await;
    assert_eq!(types(&disputed), ["charge.dispute.created", "charge.dispute.closed"]);
    shop.process_ok(&disputed).await;
    let me = shop.me().await;
    assert_eq!((me["credits"].as_u64(), me["products"].clone()), (Some(0), json!([])));
}

#[tokio::test]
async fn a_refund_processed_before_its_payment_still_wins_and_a_won_dispute_changes_nothing() {
    let shop = Shop::open().await;
    let lifetime = shop.checkout(json!({"product": "lifetime", "currency": "eur"})).await;
    shop.sim(&format!("checkout/{lifetime}/complete")).await;
    let intent = shop.session(&lifetime).await["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    shop.stripe(reqwest::Method::POST, "/v1/refunds", &[("payment_intent", &intent)])
        .await;
    let mut events = shop.new_events().await;
    assert_eq!(
        types(&events),
        ["checkout.session.completed", "charge.refunded", "refund.created"]
    );
    events.reverse();
    shop.process_ok(&events).await;
    let me = shop.me().await;
    assert_eq!(
        (me["access"].as_str(), me["products"].clone()),
        (Some("none"), json!([]))
    );

    // A second deal, disputed and won: it stays.
    let again = shop.checkout(json!({"product": "lifetime"})).await;
    shop.sim(&format!("checkout/{again}/complete")).await;
    let intent = shop.session(&again).await["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    let charge = shop.charge_of(&intent).await;
    shop.sim(&format!("charges/{charge}/dispute?status=won")).await;
    shop.process_ok(&shop.new_events().await).await;
    assert_eq!(shop.me().await["products"], json!(["lifetime"]));
}

#[tokio::test]
async fn a_delayed_payment_grants_only_when_it_succeeds() {
    let shop = Shop::open().await;
    let pack = shop.checkout(json!({"product": "credits_1000"})).await;
    shop.sim(&format!("checkout/{pack}/complete?delayed=true")).await;
    let completed = shop.new_events().await;
    assert_eq!(completed[0]["data"]["object"]["payment_status"], "unpaid");
    shop.process_ok(&completed).await;
    assert_eq!(
        shop.me().await["credits"],
        0,
        "a bank debit still processing grants nothing"
    );

    shop.sim(&format!("checkout/{pack}/async_payment?outcome=succeeded"))
        .await;
    let settled = shop.new_events().await;
    assert_eq!(types(&settled), ["checkout.session.async_payment_succeeded"]);
    shop.process_ok(&settled).await;
    assert_eq!(shop.me().await["credits"], 1000);

    // Another one whose debit fails: nothing more.
    let failing = shop.checkout(json!({"product": "credits_1000"})).await;
    shop.sim(&format!("checkout/{failing}/complete?delayed=true")).await;
    shop.sim(&format!("checkout/{failing}/async_payment?outcome=failed"))
        .await;
    let events = shop.new_events().await;
    assert_eq!(
        types(&events),
        ["checkout.session.completed", "checkout.session.async_payment_failed"]
    );
    shop.process_ok(&events).await;
    assert_eq!(shop.me().await["credits"], 1000);
}

#[tokio::test]
async fn product_checkouts_refuse_what_a_payment_cannot_carry() {
    let shop = Shop::open().await;
    let cases = [
        (json!({"product": "gold_bars"}), 400, "unknown_product"),
        (json!({"product": "lifetime", "quantity": 2}), 400, "invalid_quantity"),
        (
            json!({"product": "credits_1000", "quantity": 11}),
            400,
            "invalid_quantity",
        ),
        (
            json!({"product": "credits_1000", "currency": "eur"}),
            400,
            "unknown_price",
        ),
        (json!({"product": "lifetime", "seats": 2}), 400, "invalid_for_product"),
        (
            json!({"product": "lifetime", "interval": "year"}),
            400,
            "invalid_for_product",
        ),
        (
            json!({"product": "lifetime", "promotion_code": "LAUNCH20"}),
            400,
            "promotion_codes_not_allowed",
        ),
        (json!({"plan": "team", "product": "lifetime"}), 400, "plan_or_product"),
        (json!({}), 400, "plan_or_product"),
    ];
    for (body, status, code) in cases {
        let answer = shop.call("POST", "/checkout/sessions", body.clone()).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // None of them reached Stripe.
    assert!(shop.new_events().await.is_empty());
    let customers = shop
        .stripe(reqwest::Method::GET, "/v1/checkout/sessions?limit=100", &[])
        .await;
    assert_eq!(customers["data"], json!([]));
}
