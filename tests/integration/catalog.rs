//! The catalog through the billing API against the offline simulator over HTTP: prices chosen
//! by interval and currency, seats, add-ons and plan changes between intervals. Expected
//! Stripe state is read back from the simulator (its own record of each subscription), and
//! expected entitlements are written from `infra/catalog.example.json` by hand.

use std::sync::Arc;

use billing_tests::api::{TestApi, spawn_api_with};
use billing_tests::shop::simulated_stripe;
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
        let (simulator, stripe) = simulated_stripe("sk_test_catalog").await;
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

    /// The account's one subscription as the simulator has it.
    async fn subscription(&self) -> Value {
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
        subscriptions[0].clone()
    }

    /// The one subscription of the account's customer, as Stripe (the simulator) has it:
    /// its items as (price, quantity).
    async fn items(&self) -> Vec<(String, u64)> {
        let mut items: Vec<(String, u64)> = self.subscription().await["items"]["data"]
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
    billing_tests::openapi::assert_matches("EntitlementView", &projects.body);

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
    let mut me = shop.api.call_as("GET", "/billing/me", member.clone(), "").await;
    // `GET /billing/me` adds this period's usage to the entitlement the change answered.
    assert_eq!(me.body["usage"]["api_calls"]["included"], 100_000);
    me.body.as_object_mut().unwrap().remove("usage");
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

impl Shop {
    async fn sim(&self, action: &str) -> Value {
        let answer = self
            .http
            .post(format!("{}/sim/{action}", self.simulator.base_url))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        let answer: Value = answer.json().await.unwrap();
        answer["result"].clone()
    }
}

/// Team allows promotion code LAUNCH20 and coupon PARTNER10 (`infra/catalog.example.json`);
/// what Stripe's session carries is read back from the simulator.
#[tokio::test]
async fn promotion_codes_by_code_or_id_and_coupons_are_taken_only_where_the_plan_lists_them() {
    let shop = Shop::open().await;
    let launch = shop.sim("promotion_codes?code=LAUNCH20&coupon=L20").await;
    let launch_id = launch["id"].as_str().unwrap().to_owned();
    let other = shop.sim("promotion_codes?code=OTHER5&coupon=O5").await;
    shop.sim("promotion_codes?code=RETIRED&coupon=R1&active=false").await;
    shop.sim("coupons?id=PARTNER10").await;
    shop.sim("coupons?id=FRIENDS").await;

    let team = |discount: Value| {
        let mut body = json!({"plan": "team", "seats": 2});
        body.as_object_mut()
            .unwrap()
            .extend(discount.as_object().unwrap().clone());
        body
    };
    // Typed in another case, or given by id: the same allowed code.
    for given in [
        json!({"promotion_code": "launch20"}),
        json!({"promotion_code": launch_id}),
    ] {
        let created = shop.post("/checkout/sessions", team(given.clone())).await;
        assert_eq!(created.status, 201, "{given}: {}", created.body);
        let session = shop
            .stripe(&format!(
                "/v1/checkout/sessions/{}",
                created.body["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(session["discounts"], json!([{"promotion_code": launch_id}]), "{given}");
    }
    let coupon = shop
        .post("/checkout/sessions", team(json!({"coupon": "PARTNER10"})))
        .await;
    assert_eq!(coupon.status, 201, "{}", coupon.body);
    let session = shop
        .stripe(&format!(
            "/v1/checkout/sessions/{}",
            coupon.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(session["discounts"], json!([{"coupon": "PARTNER10"}]));

    for (discount, code) in [
        (json!({"promotion_code": "OTHER5"}), "promotion_code_not_allowed"),
        (json!({"promotion_code": other["id"]}), "promotion_code_not_allowed"),
        (json!({"promotion_code": "RETIRED"}), "unknown_promotion_code"),
        (json!({"promotion_code": "NEVER"}), "unknown_promotion_code"),
        (json!({"promotion_code": "promo_nosuch"}), "unknown_promotion_code"),
        (json!({"promotion_code": "LAUNCH 20"}), "invalid_promotion_code"),
        (json!({"coupon": "FRIENDS"}), "coupon_not_allowed"),
        (
            json!({"coupon": "PARTNER10", "promotion_code": "LAUNCH20"}),
            "one_discount_only",
        ),
    ] {
        let answer = shop.post("/checkout/sessions", team(discount.clone())).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(code)),
            "{discount}: {}",
            answer.body
        );
    }
    let starter = shop
        .post(
            "/checkout/sessions",
            json!({"plan": "starter", "promotion_code": "LAUNCH20"}),
        )
        .await;
    assert_eq!(starter.body["error"], "promotion_codes_not_allowed");
}

#[tokio::test]
async fn automatic_tax_is_a_catalog_switch_that_turns_on_stripe_tax_at_checkout() {
    let (simulator, stripe) = simulated_stripe("sk_test_catalog").await;
    let mut catalog: Value = serde_json::from_str(CATALOG).unwrap();
    let http = reqwest::Client::new();
    let mut enabled = Vec::new();
    for tax in [false, true] {
        catalog["automatic_tax"] = json!(tax);
        let api = spawn_api_with(
            Arc::new(shared::store::MemoryStore::new()),
            stripe.clone(),
            RateLimits::UNLIMITED,
            AccountSettings::default(),
            Catalog::parse(&catalog.to_string()).unwrap(),
        );
        for body in [json!({"plan": "starter"}), json!({"product": "lifetime"})] {
            let created = api
                .call("POST", "/checkout/sessions", Some(&unique("user-")), &body.to_string())
                .await;
            // The simulator checks every parameter against Stripe's spec: 201 means Stripe
            // would take the tax, address and tax id collection parameters as sent.
            assert_eq!(created.status, 201, "{}", created.body);
            let session: Value = http
                .get(format!(
                    "{}/v1/checkout/sessions/{}",
                    simulator.base_url,
                    created.body["id"].as_str().unwrap()
                ))
                .bearer_auth("sk_test_catalog")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            enabled.push(session["automatic_tax"]["enabled"].as_bool());
        }
    }
    assert_eq!(enabled, [Some(false), Some(false), Some(true), Some(true)]);
}

/// `GET /billing/invoices` pages through the customer's invoices as the simulator has them.
#[tokio::test]
async fn the_billing_page_lists_the_accounts_invoices_a_page_at_a_time() {
    let shop = Shop::open().await;
    let none = shop.api.call_as("GET", "/billing/invoices", shop.admin(), "").await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body, json!({"data": [], "has_more": false, "next": null}));

    shop.buy(json!({"plan": "team", "seats": 5})).await;
    let customer = shop
        .api
        .store
        .customer_of_account(&shared::store::AccountId::parse(&shop.org).unwrap())
        .await
        .unwrap()
        .unwrap();
    let subscription = shop.stripe(&format!("/v1/subscriptions?customer={customer}")).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    shop.sim(&format!("subscriptions/{subscription}/end_period")).await;
    let stripe_says = shop.stripe(&format!("/v1/invoices?customer={customer}")).await;
    let expected: Vec<Value> = stripe_says["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|invoice| {
            json!({
                "id": invoice["id"], "number": invoice["number"], "status": invoice["status"],
                "total": invoice["total"], "amount_due": invoice["amount_due"],
                "amount_paid": invoice["amount_paid"], "currency": invoice["currency"],
                "created": invoice["created"], "hosted_invoice_url": invoice["hosted_invoice_url"],
                "invoice_pdf": invoice["invoice_pdf"],
            })
        })
        .collect();
    assert_eq!(expected.len(), 2, "the first invoice and the renewal's: {stripe_says}");
    assert_eq!(expected[1]["total"], 10_000, "5 seats at the simulator's 2000");

    // A member reads them too; one a page, newest first, then the older one.
    let member = json!({"sub": "user_member", "org_id": shop.org, "org_role": "member"});
    let first = shop
        .api
        .call_as("GET", "/billing/invoices?limit=1", member.clone(), "")
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["data"], json!([expected[0]]));
    assert_eq!(first.body["has_more"], true);
    assert_eq!(first.body["next"], expected[0]["id"]);
    billing_tests::openapi::assert_matches("InvoicePage", &first.body);
    let next = format!(
        "/billing/invoices?limit=1&starting_after={}",
        first.body["next"].as_str().unwrap()
    );
    let second = shop.api.call_as("GET", &next, member, "").await;
    assert_eq!(second.body["data"], json!([expected[1]]));
    assert_eq!(
        (second.body["has_more"].as_bool(), second.body["next"].clone()),
        (Some(false), Value::Null)
    );

    for query in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "starting_after=cus_1",
        "customer=cus_other",
    ] {
        let answer = shop
            .api
            .call_as("GET", &format!("/billing/invoices?{query}"), shop.admin(), "")
            .await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {}",
            answer.body
        );
    }
}

/// The document's own examples match its schemas, and every route it lists is one the router
/// serves (none answers `route_not_found` or `method_not_allowed`).
#[tokio::test]
async fn the_openapi_document_describes_the_router() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../functions/checkout/openapi.yaml"
    ))
    .unwrap();
    let listed: Vec<(String, String)> = text
        .lines()
        .scan(None::<String>, |path, line| {
            if let Some(rest) = line.strip_prefix("  /") {
                *path = Some(format!("/{}", rest.trim_end_matches(':')));
                return Some(None);
            }
            let method = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'));
            Some(match (path.as_ref(), method) {
                (Some(path), Some(method @ ("get" | "post" | "delete"))) => Some((method.to_uppercase(), path.clone())),
                _ => None,
            })
        })
        .flatten()
        .collect();
    assert!(
        listed.len() >= 11 && listed.contains(&("GET".into(), "/billing/invoices".into())),
        "{listed:?}"
    );
    let shop = Shop::open().await;
    for (method, path) in &listed {
        let concrete = path.replace("{addon}", "sso");
        let answer = shop.api.call_as(method, &concrete, shop.admin(), "").await;
        let code = answer.body["error"].as_str().unwrap_or_default();
        assert!(
            !matches!(code, "route_not_found" | "method_not_allowed"),
            "{method} {path}: {}",
            answer.body
        );
    }
    let found = billing_tests::openapi::example_differences();
    assert!(
        found.is_empty(),
        "examples that contradict their schemas:\n{}",
        found.join("\n")
    );
}

/// The preview is Stripe's (the simulator prorates to the second, 2000 a unit a month): a
/// team of five moving to starter is credited the unused time of five seats and charged the
/// remaining time of one, then the next month at one; nothing changes until it is confirmed.
#[tokio::test]
async fn a_plan_change_is_previewed_with_stripes_prorations_before_it_is_made() {
    let shop = Shop::open().await;
    shop.buy(json!({"plan": "team", "seats": 5})).await;
    let member = json!({"sub": "user_member", "org_id": shop.org, "org_role": "member"});
    let preview = |body: &'static str| {
        let member = member.clone();
        let shop = &shop;
        async move {
            let answer = shop
                .api
                .call_as("POST", "/subscription/change/preview", member, body)
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            billing_tests::openapi::assert_matches("ChangePreview", &answer.body);
            answer.body
        }
    };
    let described = |body: &Value| -> Vec<(String, bool, i64)> {
        body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| {
                (
                    line["description"].as_str().unwrap().to_owned(),
                    line["proration"].as_bool().unwrap(),
                    line["amount"].as_i64().unwrap(),
                )
            })
            .collect()
    };

    // To yearly, same tier: now, prorated — a credit for the monthly seats' unused time, a
    // charge for the yearly ones' remaining time, then the next period.
    let yearly = preview(r#"{"plan":"team","interval":"year"}"#).await;
    assert_eq!(yearly["effective"], "now");
    let lines = described(&yearly);
    let kinds: Vec<(&str, bool)> = lines.iter().map(|(d, p, _)| (d.as_str(), *p)).collect();
    assert_eq!(
        kinds,
        [
            ("Unused time on price_team_month_usd × 5", true),
            ("Remaining time on price_team_year_usd × 5", true),
            ("price_team_year_usd × 5", false)
        ]
    );
    // Moments after checkout almost the whole month is left: within a few units of whole.
    assert!((-10_000..=-9_990).contains(&lines[0].2), "{yearly}");
    assert_eq!(lines[1].2, -lines[0].2, "the same amount, the same share of the period");
    assert_eq!(lines[2].2, 10_000);
    assert_eq!(yearly["proration_total"].as_i64(), Some(lines[0].2 + lines[1].2));
    assert_eq!(yearly["amount_due"], 10_000);

    // Down to starter (a lower tier): at the period's end, nothing prorated.
    let down = preview(r#"{"plan":"starter"}"#).await;
    assert_eq!(down["effective"], "period_end");
    assert_eq!(
        described(&down),
        [("price_starter_month_usd × 1".to_owned(), false, 2_000)]
    );
    assert_eq!(
        (down["proration_total"].as_i64(), down["amount_due"].as_i64()),
        (Some(0), Some(2_000))
    );
    assert_eq!(
        shop.items().await,
        owned(&[("price_team_month_usd", 5)]),
        "a preview changes nothing"
    );

    let same = shop.post("/subscription/change/preview", json!({"plan": "team"})).await;
    assert_eq!(
        (same.status, same.body["error"].as_str()),
        (409, Some("already_on_plan"))
    );
    let unknown = shop.post("/subscription/change/preview", json!({"plan": "gold"})).await;
    assert_eq!(unknown.body["error"], "unknown_plan");
}

/// Team is tier 2 and starter tier 1 (`infra/catalog.example.json`, `"downgrades":
/// "period_end"`): a move down waits for the period's end through a Stripe subscription
/// schedule, as the simulator records it; calling it off, an upgrade or a cancellation
/// release the schedule; at the period's end the subscription is on the lower plan.
#[tokio::test]
async fn a_downgrade_waits_for_the_period_end_and_an_upgrade_or_a_cancellation_supersedes_it() {
    let shop = Shop::open().await;
    shop.sim("promotion_codes?code=LAUNCH20&coupon=L20").await;
    shop.buy(json!({"plan": "team", "seats": 5, "promotion_code": "LAUNCH20"}))
        .await;
    let discount = shop.subscription().await["discounts"][0].clone();
    assert!(discount.is_string(), "the checkout's discount is the subscription's");
    let period_end = shop.subscription().await["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();

    let down = shop.post("/subscription/change", json!({"plan": "starter"})).await;
    assert_eq!(down.status, 202, "{}", down.body);
    assert_eq!(down.body["scheduled"], json!({"plan": "starter", "at": period_end}));
    assert_eq!(down.body["entitlement"]["plan"], "team", "paid for until then");
    billing_tests::openapi::assert_matches("ScheduledChange", &down.body);
    let sub = shop.subscription().await;
    let schedule_id = sub["schedule"].as_str().expect("a schedule manages it").to_owned();
    let schedule = shop.stripe(&format!("/v1/subscription_schedules/{schedule_id}")).await;
    assert_eq!(schedule["end_behavior"], "release");
    assert_eq!(schedule["phases"][0]["end_date"], period_end);
    assert_eq!(schedule["phases"][1]["items"][0]["price"], "price_starter_month_usd");
    assert_eq!(schedule["phases"][1]["items"][0]["quantity"], 1);
    assert_eq!(schedule["phases"][1]["proration_behavior"], "none");
    for phase in 0..2 {
        assert_eq!(
            schedule["phases"][phase]["discounts"][0]["discount"], discount,
            "the discount goes on through the schedule"
        );
    }
    assert_eq!(
        shop.items().await,
        owned(&[("price_team_month_usd", 5)]),
        "nothing changes now"
    );

    // Seats would be lost at the phase change: refused while the downgrade waits.
    let seats = shop.post("/subscription/seats", json!({"seats": 6})).await;
    assert_eq!(
        (seats.status, seats.body["error"].as_str()),
        (409, Some("change_pending"))
    );

    // Called off: the schedule lets go, the subscription stays.
    let undone = shop
        .api
        .call_as("DELETE", "/subscription/change", shop.admin(), "")
        .await;
    assert_eq!(undone.status, 200, "{}", undone.body);
    assert_eq!(
        shop.stripe(&format!("/v1/subscription_schedules/{schedule_id}")).await["status"],
        "released"
    );
    assert_eq!(shop.subscription().await["schedule"], Value::Null);
    let again = shop
        .api
        .call_as("DELETE", "/subscription/change", shop.admin(), "")
        .await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (409, Some("no_pending_change"))
    );

    // Scheduled again, then superseded by a change made at once (to yearly: same tier).
    assert_eq!(
        shop.post("/subscription/change", json!({"plan": "starter"}))
            .await
            .status,
        202
    );
    let yearly = shop
        .post("/subscription/change", json!({"plan": "team", "interval": "year"}))
        .await;
    assert_eq!(yearly.status, 200, "{}", yearly.body);
    assert_eq!(shop.subscription().await["schedule"], Value::Null);
    assert_eq!(shop.items().await, owned(&[("price_team_year_usd", 5)]));

    // Scheduled, then the period ends: the renewal is on starter, and the schedule is done.
    assert_eq!(
        shop.post("/subscription/change", json!({"plan": "starter"}))
            .await
            .status,
        202
    );
    let sub_id = shop.subscription().await["id"].as_str().unwrap().to_owned();
    shop.sim(&format!("subscriptions/{sub_id}/end_period")).await;
    assert_eq!(shop.items().await, owned(&[("price_starter_year_usd", 1)]));
    let renewed = shop.subscription().await;
    assert_eq!(renewed["metadata"]["plan"], "starter");
    let synced = shop.post("/billing/sync", json!({})).await;
    assert_eq!(synced.body["plan"], "starter");
    assert_eq!(synced.body["limits"]["seats"], 1);
    // Stripe keeps the schedule through its last phase; nothing waits any more.
    let lingering = renewed["schedule"]
        .as_str()
        .expect("kept until its last phase ends")
        .to_owned();
    let nothing = shop
        .api
        .call_as("DELETE", "/subscription/change", shop.admin(), "")
        .await;
    assert_eq!(
        (nothing.status, nothing.body["error"].as_str()),
        (409, Some("no_pending_change"))
    );
    shop.sim(&format!("subscriptions/{sub_id}/end_period")).await;
    assert_eq!(shop.subscription().await["schedule"], Value::Null);
    assert_eq!(
        shop.stripe(&format!("/v1/subscription_schedules/{lingering}")).await["status"],
        "released"
    );

    // A cancellation while a downgrade waits: the schedule is released first (Stripe refuses
    // to cancel a subscription a schedule manages).
    assert_eq!(
        shop.post("/subscription/change", json!({"plan": "team"})).await.status,
        200
    );
    assert_eq!(
        shop.post("/subscription/change", json!({"plan": "starter"}))
            .await
            .status,
        202
    );
    let cancelled = shop.post("/subscription/cancel", json!({"at_period_end": true})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let sub = shop.subscription().await;
    assert_eq!(
        (sub["schedule"].clone(), sub["cancel_at_period_end"].clone()),
        (Value::Null, json!(true))
    );
    // And no downgrade is scheduled over a pending cancellation (it would renew what ends).
    let over = shop.post("/subscription/change", json!({"plan": "starter"})).await;
    assert_eq!(
        (over.status, over.body["error"].as_str()),
        (409, Some("already_cancelling"))
    );
}

/// A trial has nothing paid for to wait out: a move down during one happens at once.
#[tokio::test]
async fn a_downgrade_during_a_trial_happens_at_once() {
    let shop = Shop::open().await;
    let bought = shop.buy(json!({"plan": "starter"})).await;
    assert_eq!(bought["status"], "trialing", "starter has a 14-day trial");
    assert_eq!(
        shop.post("/subscription/change", json!({"plan": "team"})).await.status,
        200
    );
    let down = shop.post("/subscription/change", json!({"plan": "starter"})).await;
    assert_eq!(down.status, 200, "{}", down.body);
    assert_eq!(down.body["plan"], "starter");
    assert_eq!(shop.subscription().await["schedule"], Value::Null);
}

/// Seats added mid-period are prorated onto the next invoice, as `create_prorations` does on
/// Stripe: the renewal bills 8 seats and the remaining time of 3 more (2000 a seat a month in
/// the simulator; moments after checkout almost the whole month remains).
#[tokio::test]
async fn seats_added_mid_period_are_prorated_onto_the_next_invoice() {
    let shop = Shop::open().await;
    shop.buy(json!({"plan": "team", "seats": 5})).await;
    assert_eq!(shop.post("/subscription/seats", json!({"seats": 8})).await.status, 200);
    let sub = shop.subscription().await;
    shop.sim(&format!("subscriptions/{}/end_period", sub["id"].as_str().unwrap()))
        .await;
    let invoices = shop
        .stripe(&format!("/v1/invoices?customer={}", sub["customer"].as_str().unwrap()))
        .await;
    let renewal = &invoices["data"][0];
    let lines: Vec<(bool, i64)> = renewal["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["parent"]["subscription_item_details"]["proration"] == true,
                line["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 3, "{renewal}");
    assert!(lines[0].0 && (-10_000..=-9_990).contains(&lines[0].1), "{lines:?}");
    assert!(lines[1].0 && (15_990..=16_000).contains(&lines[1].1), "{lines:?}");
    assert_eq!(lines[2], (false, 16_000), "8 seats for the new period");
    let total = renewal["total"].as_i64().unwrap();
    assert_eq!(total, lines.iter().map(|(_, amount)| amount).sum::<i64>());
    assert_eq!(renewal["amount_paid"], total);
}
