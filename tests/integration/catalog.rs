//! The catalog through the billing API against the offline simulator over HTTP: prices chosen
//! by interval and currency, seats, add-ons and plan changes between intervals. Expected
//! Stripe state is read back from the simulator (its own record of each subscription), and
//! expected entitlements are written from `infra/catalog.example.json` by hand.

use std::sync::Arc;

use billing_tests::api::{TestApi, spawn_api_with};
use billing_tests::{aws, unique};
use serde_json::{Value, json};
use shared::config::{AccountSettings, Catalog, Env, RateLimits};
use shared::store::{BillingStore, DynamoStore};
use stripe_simulator::Simulator;

const CATALOG: &str = include_str!("../../infra/catalog.example.json");

struct Shop {
    api: TestApi<DynamoStore>,
    simulator: Simulator,
    http: reqwest::Client,
    org: String,
}

impl Shop {
    async fn open() -> Self {
        let simulator = Simulator::start(0, stripe_simulator::Delivery::default())
            .await
            .unwrap();
        let stripe = shared::stripe::StripeClient::new(
            reqwest::Client::new(),
            url::Url::parse(&simulator.base_url).unwrap(),
            secrecy::SecretString::from("sk_test_catalog".to_owned()),
            Default::default(),
        );
        let accounts = AccountSettings::from_env(&Env::from_pairs([
            ("BILLING_ACCOUNT_CLAIM", "org_id"),
            ("BILLING_ROLE_CLAIM", "org_role"),
            ("BILLING_ADMIN_ROLES", "admin"),
        ]))
        .unwrap();
        let api = spawn_api_with(
            Arc::new(aws::fresh_store().await),
            stripe,
            RateLimits::UNLIMITED,
            accounts,
            Catalog::parse(CATALOG).unwrap(),
        );
        Self {
            api,
            simulator,
            http: reqwest::Client::new(),
            org: unique("org_"),
        }
    }

    fn admin(&self) -> Value {
        json!({"sub": "user_admin", "org_id": self.org, "org_role": "admin"})
    }

    async fn post(&self, path: &str, body: Value) -> billing_tests::api::Answer {
        self.api.call_as("POST", path, self.admin(), &body.to_string()).await
    }

    /// The simulator's own record of a Stripe object.
    async fn stripe(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.simulator.base_url))
            .bearer_auth("sk_test_catalog")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Checkout, paid in the simulator, then synced as the app does on return.
    async fn buy(&self, request: Value) -> Value {
        let created = self.post("/checkout/sessions", request).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let session = created.body["id"].as_str().unwrap();
        let paid = self
            .http
            .post(format!("{}/sim/checkout/{session}/complete", self.simulator.base_url))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success(), "{}", paid.text().await.unwrap());
        let synced = self.post("/billing/sync", json!({})).await;
        assert_eq!(synced.status, 200, "{}", synced.body);
        synced.body
    }

    /// The one subscription of the account's customer, as Stripe (the simulator) has it:
    /// its items as (price, quantity).
    async fn items(&self) -> Vec<(String, u64)> {
        let customer = self
            .api
            .store
            .customer_of_account(&shared::store::AccountId::parse(&self.org).unwrap())
            .await
            .unwrap()
            .unwrap();
        let list = self.stripe(&format!("/v1/subscriptions?customer={customer}")).await;
        let subscriptions = list["data"].as_array().unwrap();
        assert_eq!(subscriptions.len(), 1, "{list}");
        let mut items: Vec<(String, u64)> = subscriptions[0]["items"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                (
                    item["price"]["id"].as_str().unwrap().to_owned(),
                    item["quantity"].as_u64().unwrap(),
                )
            })
            .collect();
        items.sort();
        items
    }
}

fn owned(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut items: Vec<(String, u64)> = items.iter().map(|(p, q)| ((*p).to_owned(), *q)).collect();
    items.sort();
    items
}

#[tokio::test]
async fn a_team_buys_yearly_seats_then_adds_seats_and_an_add_on_and_moves_to_monthly() {
    let shop = Shop::open().await;

    let bought = shop
        .buy(json!({"plan": "team", "interval": "year", "currency": "usd", "seats": 5}))
        .await;
    assert_eq!(shop.items().await, owned(&[("price_team_year_usd", 5)]));
    assert_eq!(bought["plan"], "team");
    assert_eq!(bought["access"], "active");
    assert_eq!(bought["features"], json!(["api", "exports", "reports"]));
    assert_eq!(bought["limits"], json!({"projects": 50, "seats": 5, "storage_gb": 100}));
    assert_eq!(bought["addons"], json!([]));

    let seats = shop.post("/subscription/seats", json!({"seats": 8})).await;
    assert_eq!(seats.status, 200, "{}", seats.body);
    assert_eq!(seats.body["limits"]["seats"], 8);
    assert_eq!(shop.items().await, owned(&[("price_team_year_usd", 8)]));

    let sso = shop.post("/subscription/addons", json!({"addon": "sso"})).await;
    assert_eq!(sso.status, 200, "{}", sso.body);
    let projects = shop
        .post("/subscription/addons", json!({"addon": "extra_projects"}))
        .await;
    assert_eq!(projects.status, 200, "{}", projects.body);
    assert_eq!(
        shop.items().await,
        owned(&[
            ("price_team_year_usd", 8),
            ("price_sso_year_usd", 1),
            ("price_projects_year_usd", 1)
        ]),
        "add-ons at the plan's interval and currency"
    );
    // projects are summed (50 + 25), storage takes the largest, seats stay the quantity.
    assert_eq!(
        projects.body["limits"],
        json!({"projects": 75, "seats": 8, "storage_gb": 100})
    );
    assert_eq!(projects.body["features"], json!(["api", "exports", "reports", "sso"]));
    assert_eq!(projects.body["addons"], json!(["extra_projects", "sso"]));

    // To monthly: the plan item and every add-on move to their monthly prices, seats kept.
    let monthly = shop
        .post("/subscription/change", json!({"plan": "team", "interval": "month"}))
        .await;
    assert_eq!(monthly.status, 200, "{}", monthly.body);
    assert_eq!(
        shop.items().await,
        owned(&[
            ("price_team_month_usd", 8),
            ("price_sso_month_usd", 1),
            ("price_projects_month_usd", 1)
        ])
    );
    assert_eq!(monthly.body["limits"]["seats"], 8);

    let removed = shop
        .api
        .call_as("DELETE", "/subscription/addons/sso", shop.admin(), "")
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.body["features"], json!(["api", "exports", "reports"]));
    assert_eq!(
        shop.items().await,
        owned(&[("price_team_month_usd", 8), ("price_projects_month_usd", 1)])
    );

    // What a member reads is the same one item.
    let member = json!({"sub": "user_member", "org_id": shop.org, "org_role": "member"});
    let me = shop.api.call_as("GET", "/billing/me", member.clone(), "").await;
    assert_eq!(me.body, removed.body);
    let refused = shop
        .api
        .call_as("POST", "/subscription/seats", member, r#"{"seats":9}"#)
        .await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (403, Some("billing_admin_required"))
    );
}

#[tokio::test]
async fn what_the_catalog_does_not_offer_is_refused_with_a_reason() {
    let shop = Shop::open().await;
    for (body, code) in [
        (json!({"plan": "team", "interval": "week"}), "unknown_price"),
        (
            json!({"plan": "starter", "interval": "year", "currency": "eur"}),
            "unknown_price",
        ),
        (json!({"plan": "team", "currency": "EUR"}), "invalid_body"),
        (json!({"plan": "team", "interval": "fortnight"}), "invalid_body"),
        (json!({"plan": "team", "seats": 1}), "invalid_seats"),
        (json!({"plan": "team", "seats": 201}), "invalid_seats"),
        (json!({"plan": "team", "quantity": 3}), "invalid_quantity"),
        (json!({"plan": "starter", "seats": 3}), "not_seat_based"),
        (json!({"plan": "starter", "addons": ["sso"]}), "addon_not_allowed"),
        (json!({"plan": "team", "addons": ["sso", "sso"]}), "duplicate_addon"),
        (json!({"plan": "team", "addons": ["audit"]}), "addon_not_allowed"),
    ] {
        let answer = shop.post("/checkout/sessions", body.clone()).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(code)),
            "{body}: {}",
            answer.body
        );
    }
    let offered = shop
        .post(
            "/checkout/sessions",
            json!({"plan": "starter", "interval": "year", "currency": "eur"}),
        )
        .await;
    assert!(
        offered.body["message"]
            .as_str()
            .unwrap()
            .contains("offered: month/usd, year/usd, month/eur"),
        "{}",
        offered.body
    );

    // A starter in euros: seats are its fixed limit, and it has no seats or add-ons to change.
    let bought = shop.buy(json!({"plan": "starter", "currency": "eur"})).await;
    assert_eq!(shop.items().await, owned(&[("price_starter_month_eur", 1)]));
    assert_eq!(bought["limits"], json!({"projects": 5, "seats": 1, "storage_gb": 10}));
    for (path, body, status, code) in [
        ("/subscription/seats", json!({"seats": 3}), 409, "not_seat_based"),
        (
            "/subscription/addons",
            json!({"addon": "sso"}),
            400,
            "addon_not_allowed",
        ),
        ("/subscription/addons", json!({"addon": "audit"}), 400, "unknown_addon"),
        (
            "/subscription/change",
            json!({"plan": "starter"}),
            409,
            "already_on_plan",
        ),
        // A subscription keeps its currency, and starter has no yearly price in euros.
        (
            "/subscription/change",
            json!({"plan": "starter", "interval": "year"}),
            400,
            "unknown_price",
        ),
    ] {
        let answer = shop.post(path, body.clone()).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (status, Some(code)),
            "{path} {body}: {}",
            answer.body
        );
    }
    let upgraded = shop.post("/subscription/change", json!({"plan": "team"})).await;
    assert_eq!(upgraded.status, 200, "{}", upgraded.body);
    assert_eq!(
        shop.items().await,
        owned(&[("price_team_month_eur", 2)]),
        "into the seat range's minimum, in the subscription's currency"
    );
    let twice = shop.post("/subscription/addons", json!({"addon": "sso"})).await;
    assert_eq!(twice.status, 200, "{}", twice.body);
    let again = shop.post("/subscription/addons", json!({"addon": "sso"})).await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (409, Some("addon_exists"))
    );
    let back = shop.post("/subscription/change", json!({"plan": "starter"})).await;
    assert_eq!(
        (back.status, back.body["error"].as_str()),
        (409, Some("addon_not_on_plan"))
    );
    let absent = shop
        .api
        .call_as("DELETE", "/subscription/addons/extra_projects", shop.admin(), "")
        .await;
    assert_eq!(
        (absent.status, absent.body["error"].as_str()),
        (409, Some("addon_absent"))
    );
}
