//! The billing API through API Gateway events, against the Stripe stand-in and moto.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use billing_tests::api::{APP_BASE_URL, TestApi, spawn_api, spawn_api_with_limits};
use billing_tests::lifecycle::subscription_state;
use billing_tests::stripe_standin::StripeStandIn;
use billing_tests::{aws, fixtures, unique};
use serde_json::json;
use shared::store::{AccountId, BillingStore, ItemRecord, MemoryStore, WriteRule};
use shared::stripe::SubscriptionStatus;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

pub(crate) fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

pub(crate) fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(crate) fn posts_to<'a>(requests: &'a [Request], route: &str) -> Vec<&'a Request> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == route)
        .collect()
}

/// Like Stripe: one object per idempotency key, a fresh one for each new key.
pub(crate) async fn stripe_with_idempotent_creates() -> StripeStandIn {
    with_idempotent_creates(StripeStandIn::start().await).await
}

/// Mounts idempotent creates (and empty lists, at a lower priority) on `stripe`.
async fn with_idempotent_creates(stripe: StripeStandIn) -> StripeStandIn {
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(|request: &Request| {
            let key = request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            ResponseTemplate::new(200).set_body_json(fixtures::customer(&format!("cus_{:x}", fxhash(key))))
        })
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(|request: &Request| {
            let key = request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            let mut session = fixtures::checkout_session(&format!("cs_test_{:x}", fxhash(key)));
            session["url"] = json!("https://checkout.stripe.com/c/pay/cs_test");
            ResponseTemplate::new(200).set_body_json(session)
        })
        .mount(&stripe.server)
        .await;
    stripe.serve_empty_lists().await;
    stripe
}

fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3)
    })
}

pub(crate) async fn seed_subscription<S: BillingStore>(
    api: &TestApi<S>,
    user: &str,
    price: &str,
    cancel_at_period_end: bool,
) -> (String, String) {
    let (customer, subscription) = (unique("cus_"), unique("sub_"));
    api.store
        .link_customer(&AccountId::parse(user).unwrap(), &customer)
        .await
        .unwrap();
    let mut record =
        billing_tests::store_conformance::subscription(&customer, &subscription, 1, SubscriptionStatus::Active);
    record.price_id = Some(price.into());
    record.plan = None;
    record.items = vec![ItemRecord {
        price_id: price.into(),
        quantity: Some(1),
    }];
    record.cancel_at_period_end = cancel_at_period_end;
    record.current_period_end = Some(billing_tests::lifecycle::PERIOD_END);
    api.store.put_subscription(&record, WriteRule::IfNewer).await.unwrap();
    (customer, subscription)
}

#[tokio::test]
async fn checkout_creates_the_customer_then_a_session_from_the_catalog() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(aws::fresh_store().await), &stripe);
    let user = unique("user-");

    let answer = api
        .call(
            "POST",
            "/checkout/sessions",
            Some(&user),
            r#"{"plan":"pro","quantity":2,"success_path":"/welcome?x=1"}"#,
        )
        .await;

    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(answer.body["id"].as_str().unwrap().starts_with("cs_test_"));
    assert_eq!(answer.body["url"], "https://checkout.stripe.com/c/pay/cs_test");
    let requests = stripe.requests().await;
    let customer_post = posts_to(&requests, "/v1/customers");
    assert_eq!(customer_post.len(), 1);
    assert_eq!(
        customer_post[0].headers.get("idempotency-key").unwrap(),
        &format!("customer-{user}-0")
    );
    let customer = api
        .store
        .customer_of_account(&AccountId::parse(&user).unwrap())
        .await
        .unwrap()
        .expect("linked");
    let session = form(posts_to(&requests, "/v1/checkout/sessions")[0]);
    assert_eq!(field(&session, "customer"), Some(customer.as_str()));
    assert_eq!(field(&session, "mode"), Some("subscription"));
    assert_eq!(field(&session, "client_reference_id"), Some(user.as_str()));
    assert_eq!(
        field(&session, "line_items[0][price]"),
        Some("price_pro"),
        "price from the catalog, never the client"
    );
    assert_eq!(field(&session, "line_items[0][quantity]"), Some("2"));
    assert_eq!(field(&session, "metadata[account_id]"), Some(user.as_str()));
    assert_eq!(field(&session, "subscription_data[metadata][plan]"), Some("pro"));
    assert_eq!(field(&session, "subscription_data[trial_period_days]"), Some("14"));
    assert_eq!(field(&session, "allow_promotion_codes"), Some("true"));
    assert_eq!(
        field(&session, "success_url"),
        Some(format!("{APP_BASE_URL}/welcome?x=1&session_id={{CHECKOUT_SESSION_ID}}").as_str())
    );
    assert_eq!(
        field(&session, "cancel_url"),
        Some(format!("{APP_BASE_URL}/billing").as_str())
    );
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn invalid_checkouts_are_refused_before_any_stripe_call() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let cases = [
        (r#"{"plan":"enterprise"}"#, "unknown_plan"),
        (r#"{"plan":"price_pro"}"#, "unknown_plan"),
        (r#"{"plan":"pro","price":"price_cheap"}"#, "invalid_body"),
        (r#"{"plan":"pro","quantity":0}"#, "invalid_quantity"),
        (r#"{"plan":"pro","quantity":-1}"#, "invalid_body"),
        (r#"{"plan":"pro","quantity":"2"}"#, "invalid_body"),
        (
            r#"{"plan":"basic","promotion_code":"promo_1"}"#,
            "promotion_codes_not_allowed",
        ),
        (r#"{"plan":"pro","promotion_code":"SUM MER"}"#, "invalid_promotion_code"),
        (r#"{"plan":"pro","coupon":"FRIENDS"}"#, "coupon_not_allowed"),
        (r#"{"plan":"pro","promotion_code":"promo_"}"#, "invalid_promotion_code"),
        (r#"["pro", 2]"#, "invalid_body"),
        (
            r#"{"plan":"pro","success_path":"https://evil.example"}"#,
            "invalid_redirect_path",
        ),
        (
            r#"{"plan":"pro","success_path":"//evil.example"}"#,
            "invalid_redirect_path",
        ),
        (
            r#"{"plan":"pro","cancel_path":"/\\evil.example"}"#,
            "invalid_redirect_path",
        ),
        (
            r#"{"plan":"pro","cancel_path":"/%2F%2Fevil.example"}"#,
            "invalid_redirect_path",
        ),
        (r#"{"plan":"pro","success_path":"/\u0000x"}"#, "invalid_redirect_path"),
        ("{not json", "invalid_body"),
        ("[]", "invalid_body"),
        // No body at all names neither a plan nor a product.
        ("", "plan_or_product"),
    ];
    for (body, code) in cases {
        let answer = api.call("POST", "/checkout/sessions", Some("user-1"), body).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    assert!(stripe.requests().await.is_empty(), "no Stripe call for invalid input");
}

#[tokio::test]
async fn a_user_with_a_live_subscription_is_sent_to_change_or_portal() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    seed_subscription(&api, "user-live", "price_basic", false).await;

    let answer = api
        .call("POST", "/checkout/sessions", Some("user-live"), r#"{"plan":"pro"}"#)
        .await;

    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (409, Some("subscription_exists"))
    );
    assert!(answer.body["hint"].as_str().unwrap().contains("/subscription/change"));
    assert!(stripe.requests().await.is_empty());
}

#[tokio::test]
async fn a_double_submit_with_one_idempotency_key_returns_the_same_session() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let headers = json!({"idempotency-key": "click-42"});
    let first = api
        .call_with(
            "POST",
            "/checkout/sessions",
            Some("user-dbl"),
            headers.clone(),
            r#"{"plan":"basic"}"#,
        )
        .await;
    let second = api
        .call_with(
            "POST",
            "/checkout/sessions",
            Some("user-dbl"),
            headers,
            r#"{"plan":"basic"}"#,
        )
        .await;
    let other = api
        .call_with(
            "POST",
            "/checkout/sessions",
            Some("user-dbl"),
            json!({"idempotency-key": "click-43"}),
            r#"{"plan":"basic"}"#,
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_ne!(first.body["id"], other.body["id"]);
}

#[tokio::test]
async fn concurrent_first_checkouts_by_one_user_create_one_customer() {
    // A stand-in that ignores idempotency keys and creates a new customer per request: only
    // the conditional link in DynamoDB can then keep the user on one customer.
    let stripe = StripeStandIn::start().await;
    let created = Arc::new(AtomicUsize::new(0));
    let counter = created.clone();
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(fixtures::customer(&format!("cus_race{n}")))
        })
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixtures::checkout_session("cs_race")))
        .mount(&stripe.server)
        .await;
    stripe.serve_empty_lists().await;
    let api = Arc::new(spawn_api(Arc::new(aws::fresh_store().await), &stripe));
    let user = unique("user-race-");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (api, user) = (api.clone(), user.clone());
        tasks.spawn(async move {
            api.call("POST", "/checkout/sessions", Some(&user), r#"{"plan":"pro"}"#)
                .await
                .status
        });
    }
    assert!(tasks.join_all().await.iter().all(|status| *status == 201));

    let linked = api
        .store
        .customer_of_account(&AccountId::parse(&user).unwrap())
        .await
        .unwrap()
        .unwrap();
    let requests = stripe.requests().await;
    let sessions = posts_to(&requests, "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 8);
    for session in sessions {
        assert_eq!(
            field(&form(session), "customer"),
            Some(linked.as_str()),
            "every session uses the one linked customer"
        );
    }
    assert!(
        posts_to(&requests, "/v1/customers")
            .iter()
            .all(|r| r.headers.get("idempotency-key").unwrap() == &format!("customer-{user}-0"))
    );
}

#[tokio::test]
async fn portal_sessions_need_a_customer_and_return_to_the_app() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixtures::portal_session("cus_x")))
        .mount(&stripe.server)
        .await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);

    let none = api.call("POST", "/portal/sessions", Some("user-portal"), "").await;
    assert_eq!((none.status, none.body["error"].as_str()), (404, Some("no_customer")));

    let (customer, _) = seed_subscription(&api, "user-portal", "price_pro", false).await;
    let answer = api
        .call(
            "POST",
            "/portal/sessions",
            Some("user-portal"),
            r#"{"return_path":"/settings/billing"}"#,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["url"].as_str().unwrap().starts_with("https://"));
    let requests = stripe.requests().await;
    let sent = form(posts_to(&requests, "/v1/billing_portal/sessions")[0]);
    assert_eq!(field(&sent, "customer"), Some(customer.as_str()));
    assert_eq!(
        field(&sent, "return_url"),
        Some(format!("{APP_BASE_URL}/settings/billing").as_str())
    );
    let evil = api
        .call(
            "POST",
            "/portal/sessions",
            Some("user-portal"),
            r#"{"return_path":"//evil.example"}"#,
        )
        .await;
    assert_eq!(evil.status, 400);
    stripe.assert_requests_valid().await;
}

/// Serves one subscription; updates and cancellations answer with the changed object.
async fn serve_subscription_changes(stripe: &StripeStandIn, subscription: &str, customer: &str, price: &str) {
    let current = subscription_state(subscription, customer, price, "active", false);
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{subscription}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(current.clone()))
        .mount(&stripe.server)
        .await;
    let (sub_id, cus_id) = (subscription.to_owned(), customer.to_owned());
    Mock::given(method("POST"))
        .and(path(format!("/v1/subscriptions/{subscription}")))
        .respond_with(move |request: &Request| {
            let sent = form(request);
            let price = field(&sent, "items[0][price]").unwrap_or("price_basic");
            let cancelling = field(&sent, "cancel_at_period_end") == Some("true");
            ResponseTemplate::new(200).set_body_json(subscription_state(&sub_id, &cus_id, price, "active", cancelling))
        })
        .mount(&stripe.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/v1/subscriptions/{subscription}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription_state(
            subscription,
            customer,
            price,
            "canceled",
            false,
        )))
        .mount(&stripe.server)
        .await;
}

#[tokio::test]
async fn plan_changes_cancellations_and_resumes_return_the_new_view() {
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(aws::fresh_store().await), &stripe);
    let user = unique("user-self-");
    let (customer, subscription) = seed_subscription(&api, &user, "price_basic", false).await;
    serve_subscription_changes(&stripe, &subscription, &customer, "price_basic").await;

    let same = api
        .call("POST", "/subscription/change", Some(&user), r#"{"plan":"basic"}"#)
        .await;
    assert_eq!(
        (same.status, same.body["error"].as_str()),
        (409, Some("already_on_plan"))
    );
    let resume = api.call("POST", "/subscription/resume", Some(&user), "").await;
    assert_eq!(
        (resume.status, resume.body["error"].as_str()),
        (409, Some("not_cancelling"))
    );

    let changed = api
        .call("POST", "/subscription/change", Some(&user), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        (changed.body["plan"].as_str(), changed.body["access"].as_str()),
        (Some("pro"), Some("active"))
    );
    assert_eq!(changed.body["features"], json!(["api", "reports"]));
    let requests = stripe.requests().await;
    let update = form(posts_to(&requests, &format!("/v1/subscriptions/{subscription}"))[0]);
    assert_eq!(field(&update, "proration_behavior"), Some("create_prorations"));
    assert_eq!(field(&update, "items[0][price]"), Some("price_pro"));
    assert!(field(&update, "items[0][id]").is_some_and(|id| id.starts_with("si_")));

    let cancelling = api
        .call("POST", "/subscription/cancel", Some(&user), r#"{"at_period_end":true}"#)
        .await;
    assert_eq!(cancelling.status, 200, "{}", cancelling.body);
    assert_eq!(cancelling.body["cancel_at_period_end"], true);
    assert_eq!(cancelling.body["access"], "active");
    assert_eq!(cancelling.body["access_until"], billing_tests::lifecycle::PERIOD_END);
    let again = api
        .call("POST", "/subscription/cancel", Some(&user), r#"{"at_period_end":true}"#)
        .await;
    assert_eq!(again.status, 409);

    let resumed = api.call("POST", "/subscription/resume", Some(&user), "").await;
    assert_eq!(
        (resumed.status, resumed.body["cancel_at_period_end"].as_bool()),
        (200, Some(false)),
        "{}",
        resumed.body
    );

    let ended = api
        .call(
            "POST",
            "/subscription/cancel",
            Some(&user),
            r#"{"at_period_end":false}"#,
        )
        .await;
    assert_eq!(
        (ended.status, ended.body["access"].as_str()),
        (200, Some("none")),
        "{}",
        ended.body
    );
    let after = api
        .call("POST", "/subscription/change", Some(&user), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(
        (after.status, after.body["error"].as_str()),
        (409, Some("no_subscription"))
    );
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn billing_me_reads_the_store_and_sync_reads_stripe() {
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(aws::fresh_store().await), &stripe);
    let user = unique("user-me-");

    let empty = api.call("GET", "/billing/me", Some(&user), "").await;
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.body,
        json!({"plan": null, "status": null, "access": "none", "access_until": null, "features": [],
        "limits": {}, "addons": [], "credits": 0, "products": [], "sources": [],
        "cancel_at_period_end": false, "current_period_end": null})
    );
    assert_eq!(api.call("POST", "/billing/sync", Some(&user), "").await.status, 404);

    let customer = unique("cus_");
    api.store
        .link_customer(&AccountId::parse(&user).unwrap(), &customer)
        .await
        .unwrap();
    let list = json!({"object": "list", "has_more": false, "data": [subscription_state(&unique("sub_"), &customer, "price_pro", "trialing", false)]});
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list))
        .mount(&stripe.server)
        .await;

    let synced = api.call("POST", "/billing/sync", Some(&user), "").await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    assert_eq!(
        (synced.body["status"].as_str(), synced.body["access"].as_str()),
        (Some("trialing"), Some("active"))
    );
    let read = api.call("GET", "/billing/me", Some(&user), "").await;
    assert_eq!(read.body, synced.body, "the read is served from DynamoDB alone");
    assert_eq!(stripe.requests().await.len(), 1);
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn stripe_failures_become_an_opaque_502() {
    let stripe = StripeStandIn::start().await;
    Mock::given(path_regex(".*"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"error": {"type": "invalid_request_error", "message": "sk_test_secret leaked?"}}),
            ),
        )
        .mount(&stripe.server)
        .await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let answer = api
        .call("POST", "/checkout/sessions", Some("user-502"), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.body, json!({"error": "payment_provider_unavailable"}));
}

#[tokio::test]
async fn bad_input_on_every_route_is_a_4xx_json_error() {
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let routes = [
        ("POST", "/checkout/sessions"),
        ("POST", "/portal/sessions"),
        ("POST", "/subscription/change"),
        ("POST", "/subscription/cancel"),
        ("POST", "/subscription/resume"),
        ("GET", "/billing/me"),
        ("POST", "/billing/sync"),
    ];
    let huge = format!("{{\"plan\":\"{}\"}}", "x".repeat(checkout::MAX_BODY_BYTES));
    let ten_megabytes = format!("{{\"plan\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    for (verb, route) in routes {
        let unauthenticated = api.call(verb, route, None, "{}").await;
        assert_eq!(unauthenticated.body, json!({"error": "unauthorized"}), "{route}");
        assert_eq!(unauthenticated.status, 401, "{route}");
        // `billing dev`'s identity header is nothing to the Lambda router: only the JWT counts.
        let dev_header_only = api
            .call_with(verb, route, None, json!({"x-billing-user": "alice"}), "{}")
            .await;
        assert_eq!(dev_header_only.status, 401, "{route}");
        let wrong_method = api
            .call(
                if verb == "GET" { "DELETE" } else { "GET" },
                route,
                Some("user-bad"),
                "",
            )
            .await;
        assert_eq!(wrong_method.status, 405, "{route}");
        if verb == "GET" {
            continue; // a GET's body carries no meaning and is ignored, as HTTP says
        }
        for body in [
            "{not json",
            "[]",
            "[true]",
            "{\"unknown_field\":1}",
            "{\"plan\":[1,2]}",
            deep.as_str(),
            huge.as_str(),
            ten_megabytes.as_str(),
            "\"\\ud800\"",
        ] {
            let answer = api.call(verb, route, Some("user-bad"), body).await;
            assert!(
                (400..500).contains(&answer.status),
                "{verb} {route} with {:.40} → {}",
                body,
                answer.status
            );
            assert!(answer.body["error"].is_string(), "{route}: {}", answer.body);
        }
    }
    for bad_user in ["", "a#b", &"x".repeat(200)] {
        assert_eq!(api.call("GET", "/billing/me", Some(bad_user), "").await.status, 401);
    }
    assert_eq!(
        api.call("GET", "/nope/%2e%2e/etc", Some("user-bad"), "").await.status,
        404
    );
}

#[tokio::test]
async fn reusing_an_idempotency_key_for_another_request_is_a_409() {
    let stripe = StripeStandIn::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixtures::customer("cus_idem")))
        .mount(&stripe.server)
        .await;
    stripe.serve_empty_lists().await;
    Mock::given(method("POST")).and(path("/v1/checkout/sessions")).respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
        "type": "idempotency_error",
        "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}})))
        .mount(&stripe.server).await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let answer = api
        .call_with(
            "POST",
            "/checkout/sessions",
            Some("user-idem"),
            json!({"idempotency-key": "k1"}),
            r#"{"plan":"pro"}"#,
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    let requests = stripe.requests().await;
    let key = posts_to(&requests, "/v1/checkout/sessions")[0]
        .headers
        .get("idempotency-key")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        key.starts_with("checkout-") && key.len() <= 255 && !key.contains("user-idem"),
        "{key}"
    );
}

/// Two tabs: the second session expires the first, so only one can be paid.
#[tokio::test]
async fn opening_checkout_expires_the_users_other_open_sessions() {
    let stripe = StripeStandIn::start().await;
    // Opened before the new one, which has the fixture's `created`.
    let mut first_tab = fixtures::checkout_session("cs_test_first_tab");
    first_tab["created"] = json!(1_234_567_830);
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "url": "/v1/checkout/sessions",
            "has_more": false, "data": [first_tab]})),
        )
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions/cs_test_first_tab/expire"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixtures::checkout_session("cs_test_first_tab")))
        .mount(&stripe.server)
        .await;
    let stripe = with_idempotent_creates(stripe).await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let user = unique("user-");

    let answer = api
        .call("POST", "/checkout/sessions", Some(&user), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let requests = stripe.requests().await;
    assert_eq!(
        posts_to(&requests, "/v1/checkout/sessions/cs_test_first_tab/expire").len(),
        1
    );
    let listed = requests
        .iter()
        .find(|r| r.method.as_str() == "GET" && r.url.path() == "/v1/checkout/sessions")
        .expect("open sessions listed");
    let query: Vec<(String, String)> = listed.url.query_pairs().into_owned().collect();
    assert!(query.contains(&("status".into(), "open".into())), "{query:?}");
    let new_id = answer.body["id"].as_str().unwrap();
    assert!(
        posts_to(&requests, &format!("/v1/checkout/sessions/{new_id}/expire")).is_empty(),
        "the new session stays open"
    );
    assert_eq!(
        api.store.checkout_session_account(new_id).await.unwrap(),
        Some(AccountId::parse(&user).unwrap()),
        "the session is recorded as ours before its URL is handed out"
    );
    stripe.assert_requests_valid().await;
}

/// A trial once per user: not after a trial stored for them, nor when Stripe shows the
/// customer already had a subscription.
#[tokio::test]
async fn a_trial_is_offered_once() {
    let trial_of = |requests: &[Request]| {
        let session = form(posts_to(requests, "/v1/checkout/sessions")[0]);
        field(&session, "subscription_data[trial_period_days]").map(str::to_owned)
    };

    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let user = AccountId::parse(&unique("user-")).unwrap();
    let mut used = shared::entitlement::nothing(&user);
    used.trial_used = true;
    used.version = 1;
    api.store.put_entitlement(&used).await.unwrap();
    let answer = api
        .call("POST", "/checkout/sessions", Some(user.as_str()), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(trial_of(&stripe.requests().await), None, "trial already used");

    let stripe = StripeStandIn::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "url": "/v1/subscriptions",
            "has_more": false, "data": [subscription_state("sub_before", "cus_x", "price_pro", "canceled", false)]})),
        )
        .with_priority(1)
        .mount(&stripe.server)
        .await;
    let stripe = with_idempotent_creates(stripe).await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let answer = api
        .call(
            "POST",
            "/checkout/sessions",
            Some(&unique("user-")),
            r#"{"plan":"pro"}"#,
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        trial_of(&stripe.requests().await),
        None,
        "the customer had a subscription in Stripe"
    );
}

/// After `customer.deleted`, the next checkout creates and links a new customer instead of
/// failing on the deleted one; the trial stays used.
#[tokio::test]
async fn a_deleted_customer_is_replaced_at_the_next_checkout() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let user = unique("user-");
    let first = api
        .call("POST", "/checkout/sessions", Some(&user), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let user_id = AccountId::parse(&user).unwrap();
    let deleted = api.store.customer_of_account(&user_id).await.unwrap().expect("linked");

    let syncer = shared::sync::Syncer {
        store: api.store.clone(),
        stripe: stripe.client(),
        plans: shared::config::Catalog::parse(billing_tests::lifecycle::PLANS).unwrap(),
        grace_days: 14,
        policy: Default::default(),
        app_events: shared::notify::NoAppEvents,
    };
    let event = fixtures::event(
        &unique("evt_"),
        "customer.deleted",
        1_763_000_000,
        json!({"id": deleted, "object": "customer", "deleted": true}),
    );
    use shared::processing::EventHandler;
    assert_eq!(
        syncer
            .handle_message(&event.to_string(), 1_763_000_000, 1_763_000_060)
            .await
            .unwrap(),
        shared::processing::Outcome::Applied
    );
    assert_eq!(api.store.customer_of_account(&user_id).await.unwrap(), None, "unlinked");
    assert_eq!(api.store.account_of_customer(&deleted).await.unwrap(), None);

    let second = api
        .call("POST", "/checkout/sessions", Some(&user), r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let replacement = api
        .store
        .customer_of_account(&user_id)
        .await
        .unwrap()
        .expect("relinked");
    assert_ne!(replacement, deleted, "a new customer, not the deleted one");
    let keys: Vec<String> = posts_to(&stripe.requests().await, "/v1/customers")
        .iter()
        .map(|r| r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(
        keys[0], keys[1],
        "a new key, or Stripe would replay the deleted customer"
    );
}

/// A subscription ending on a date (`cancel_at`, the portal's "cancel on date") is cancelling:
/// resume clears the date, and access runs until it meanwhile.
#[tokio::test]
async fn an_end_date_counts_as_cancelling_and_resume_clears_it() {
    let stripe = StripeStandIn::start().await;
    let api = spawn_api(Arc::new(MemoryStore::new()), &stripe);
    let user = unique("user-date-");
    let (customer, subscription) = seed_subscription(&api, &user, "price_basic", false).await;
    serve_subscription_changes(&stripe, &subscription, &customer, "price_basic").await;
    let mut dated = api
        .store
        .get_subscription(&customer, &subscription)
        .await
        .unwrap()
        .unwrap();
    dated.cancel_at = Some(billing_tests::lifecycle::PERIOD_END - 86_400);
    dated.watermark = 2;
    api.store.put_subscription(&dated, WriteRule::IfNewer).await.unwrap();

    let cancel = api
        .call("POST", "/subscription/cancel", Some(&user), r#"{"at_period_end":true}"#)
        .await;
    assert_eq!(
        (cancel.status, cancel.body["error"].as_str()),
        (409, Some("already_cancelling"))
    );
    let resumed = api.call("POST", "/subscription/resume", Some(&user), "").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let requests = stripe.requests().await;
    let update = form(posts_to(&requests, &format!("/v1/subscriptions/{subscription}"))[0]);
    assert_eq!(field(&update, "cancel_at"), Some(""), "the end date is cleared");
    assert_eq!(field(&update, "cancel_at_period_end"), Some("false"));
    stripe.assert_requests_valid().await;
}

/// The documented defaults (10 Stripe-writing calls, 6 syncs, 60 others per account and minute),
/// counted in DynamoDB (moto): the call over the limit is a 429 with `Retry-After` and no
/// Stripe call; another account is not affected.
#[tokio::test]
async fn an_account_over_its_rate_limit_gets_429_with_retry_after_and_costs_no_stripe_call() {
    let stripe = stripe_with_idempotent_creates().await;
    let limits = shared::config::RateLimits::default();
    let api = spawn_api_with_limits(Arc::new(aws::fresh_store().await), &stripe, limits);
    let (heavy, other) = (unique("user-heavy-"), unique("user-other-"));
    // The windows are the clock's minutes: start well inside one, so every call below counts
    // in the same window.
    let into_minute = shared::unix_now().rem_euclid(60);
    if into_minute > 40 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - into_minute as u64)).await;
    }
    // Invalid bodies: each call is counted (identity and limit come first) yet makes no
    // Stripe call, so the limit is seen apart from Stripe's answers.
    for call in 1..=10 {
        let answer = api.call("POST", "/checkout/sessions", Some(&heavy), "[]").await;
        assert_eq!(answer.status, 400, "call {call} is within the limit");
    }
    // The portal and plan changes share the budget of the routes that write to Stripe: the
    // 11th such call of the minute is refused.
    let refused = api.call("POST", "/portal/sessions", Some(&heavy), "{}").await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "rate_limited");
    assert_eq!(refused.body["limit"], "writes");
    let refused = api.call("POST", "/subscription/cancel", Some(&heavy), "{}").await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    let retry_after: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        stripe.requests().await.is_empty(),
        "no Stripe call for a refused request"
    );

    // Other classes and other accounts have their own budgets.
    assert_eq!(api.call("GET", "/billing/me", Some(&heavy), "").await.status, 200);
    assert_eq!(
        api.call("POST", "/checkout/sessions", Some(&other), "[]").await.status,
        400
    );
    stripe.serve_empty_lists().await;
    let mut sync_statuses = Vec::new();
    for _ in 0..7 {
        sync_statuses.push(api.call("POST", "/billing/sync", Some(&other), "").await.status);
    }
    assert_eq!(
        sync_statuses.iter().filter(|status| **status == 429).count(),
        1,
        "{sync_statuses:?}"
    );
    assert_eq!(sync_statuses.last(), Some(&429));
}
