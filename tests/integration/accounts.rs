//! Team accounts through API Gateway events: the account is the organisation claim, only the
//! configured roles change billing, every member reads it, and the Stripe customer belongs to
//! the account. Expected requests are read back from what the Stripe stand-in received.

use std::sync::Arc;

use billing_tests::api::{TestApi, spawn_api_with};
use billing_tests::{aws, unique};
use serde_json::{Value, json};
use shared::config::{AccountSettings, Catalog, Env, RateLimits};
use shared::store::{AccountId, BillingStore, MemoryStore};

use crate::checkout::{field, form, posts_to, seed_subscription, stripe_with_idempotent_creates};

fn plans() -> Catalog {
    Catalog::parse(billing_tests::lifecycle::PLANS).unwrap()
}

/// The policy as the README documents it for Clerk-style tokens.
fn org_policy() -> AccountSettings {
    AccountSettings::from_env(&Env::from_pairs([
        ("BILLING_ACCOUNT_CLAIM", "org_id"),
        ("BILLING_ROLE_CLAIM", "org_role"),
        ("BILLING_ADMIN_ROLES", "admin,owner"),
    ]))
    .unwrap()
}

fn token(sub: &str, org: Option<&str>, role: Option<&str>) -> Value {
    let mut claims = json!({"sub": sub, "iss": "https://auth.example.com/"});
    if let Some(org) = org {
        claims["org_id"] = json!(org);
    }
    if let Some(role) = role {
        claims["org_role"] = json!(role);
    }
    claims
}

/// Every route that changes billing, with a body it would accept from an admin.
const WRITES: [(&str, &str); 5] = [
    ("/checkout/sessions", r#"{"plan":"pro"}"#),
    ("/portal/sessions", "{}"),
    ("/subscription/change", r#"{"plan":"basic"}"#),
    ("/subscription/cancel", r#"{"at_period_end":true}"#),
    ("/subscription/resume", "{}"),
];

#[tokio::test]
async fn a_token_without_the_account_claim_is_refused_with_the_claim_named() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api_with(
        Arc::new(MemoryStore::new()),
        stripe.client(),
        RateLimits::UNLIMITED,
        org_policy(),
        plans(),
    );
    let personal = token("user_1", None, Some("admin"));
    for (method, path, body) in [("GET", "/billing/me", ""), ("POST", "/billing/sync", "{}")]
        .into_iter()
        .chain(WRITES.iter().map(|(path, body)| ("POST", *path, *body)))
    {
        let answer = api.call_as(method, path, personal.clone(), body).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert_eq!(answer.body["error"], "account_claim_missing", "{path}");
        assert!(
            answer.body["message"].as_str().unwrap().contains("\"org_id\""),
            "{}",
            answer.body
        );
    }
    // An empty claim (a personal workspace in some providers) is no account either.
    let empty = api
        .call_as("GET", "/billing/me", token("user_1", Some(""), None), "")
        .await;
    assert_eq!(
        (empty.status, empty.body["error"].as_str()),
        (403, Some("account_claim_missing"))
    );
    // No authorizer context at all is still a 401, not a 403.
    let anonymous = api.call("GET", "/billing/me", None, "").await;
    assert_eq!(anonymous.status, 401);
    assert!(stripe.requests().await.is_empty(), "refused before any Stripe call");
}

#[tokio::test]
async fn members_read_the_accounts_billing_and_only_admins_change_it() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api_with(
        Arc::new(aws::fresh_store().await),
        stripe.client(),
        RateLimits::UNLIMITED,
        org_policy(),
        plans(),
    );
    let org = unique("org_");
    let (customer, _) = seed_subscription(&api, &org, "price_pro", false).await;
    store_entitlement(&api, &org, &customer).await;

    // Two people of the organisation, neither the one who bought: one account, one view.
    for member in [
        token("user_ann", Some(&org), Some("member")),
        token("user_bob", Some(&org), None),
    ] {
        let me = api.call_as("GET", "/billing/me", member.clone(), "").await;
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(
            (me.body["plan"].as_str(), me.body["access"].as_str()),
            (Some("pro"), Some("active"))
        );
        for (path, body) in WRITES {
            let answer = api.call_as("POST", path, member.clone(), body).await;
            assert_eq!(answer.status, 403, "{path}: {}", answer.body);
            assert_eq!(answer.body["error"], "billing_admin_required", "{path}");
            assert!(
                answer.body["message"].as_str().unwrap().contains("admin, owner"),
                "{}",
                answer.body
            );
        }
    }
    assert!(stripe.requests().await.is_empty(), "no member request reached Stripe");

    // An admin of another organisation sees that organisation's (empty) billing, not this one.
    let other = api
        .call_as(
            "GET",
            "/billing/me",
            token("user_eve", Some(&unique("org_")), Some("admin")),
            "",
        )
        .await;
    assert_eq!((other.status, other.body["access"].as_str()), (200, Some("none")));

    // The admin may: here, cancel at period end, which reaches Stripe.
    let admin = token("user_cy", Some(&org), Some("owner"));
    let cancel = api
        .call_as("POST", "/subscription/cancel", admin, r#"{"at_period_end":true}"#)
        .await;
    assert_ne!(cancel.status, 403, "{}", cancel.body);
    let requests = stripe.requests().await;
    assert!(
        requests.iter().any(|r| r.url.path().starts_with("/v1/subscriptions/")),
        "the admin's cancel reached Stripe"
    );
}

#[tokio::test]
async fn the_customer_belongs_to_the_account_and_carries_the_buyers_contact() {
    let stripe = stripe_with_idempotent_creates().await;
    let api = spawn_api_with(
        Arc::new(aws::fresh_store().await),
        stripe.client(),
        RateLimits::UNLIMITED,
        org_policy(),
        plans(),
    );
    let org = unique("org_");
    // API Gateway's HTTP API hands an array claim over as "[a b]".
    let mut admin = token("user_dee", Some(&org), Some("[member admin]"));
    admin["email"] = json!("dee@example.com");
    admin["name"] = json!("Dee Admin");

    let answer = api
        .call_as("POST", "/checkout/sessions", admin, r#"{"plan":"pro"}"#)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);

    let requests = stripe.requests().await;
    let customers = posts_to(&requests, "/v1/customers");
    assert_eq!(customers.len(), 1);
    let customer = form(customers[0]);
    assert_eq!(field(&customer, "metadata[account_id]"), Some(org.as_str()));
    assert_eq!(field(&customer, "email"), Some("dee@example.com"));
    assert_eq!(field(&customer, "name"), Some("Dee Admin"));
    let session = form(posts_to(&requests, "/v1/checkout/sessions")[0]);
    assert_eq!(field(&session, "client_reference_id"), Some(org.as_str()));
    assert_eq!(field(&session, "metadata[account_id]"), Some(org.as_str()));
    assert_eq!(
        field(&session, "subscription_data[metadata][account_id]"),
        Some(org.as_str())
    );
    let linked = api
        .store
        .customer_of_account(&AccountId::parse(&org).unwrap())
        .await
        .unwrap();
    assert!(linked.is_some(), "the organisation, not the person, is linked");
    let person = api
        .store
        .customer_of_account(&AccountId::parse("user_dee").unwrap())
        .await
        .unwrap();
    assert_eq!(person, None);
    stripe.assert_requests_valid().await;
}

#[tokio::test]
async fn without_a_role_policy_every_member_of_the_account_may_buy() {
    let stripe = stripe_with_idempotent_creates().await;
    let accounts = AccountSettings::from_env(&Env::from_pairs([("BILLING_ACCOUNT_CLAIM", "org_id")])).unwrap();
    let api: TestApi<MemoryStore> = spawn_api_with(
        Arc::new(MemoryStore::new()),
        stripe.client(),
        RateLimits::UNLIMITED,
        accounts,
        plans(),
    );
    let org = unique("org_");
    let answer = api
        .call_as(
            "POST",
            "/checkout/sessions",
            token("user_fay", Some(&org), Some("member")),
            r#"{"plan":"basic"}"#,
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    // No email or name in the token: the customer is created without them, not with blanks.
    let requests = stripe.requests().await;
    let customer = form(posts_to(&requests, "/v1/customers")[0]);
    assert_eq!(field(&customer, "email"), None);
    assert_eq!(field(&customer, "name"), None);
    assert_eq!(
        customers_idempotency_key(&requests),
        Some(format!("customer-{org}-0")),
        "the key of a contactless customer is the documented one"
    );
}

/// The entitlement the events processor would store for the seeded subscription.
async fn store_entitlement<S: BillingStore>(api: &TestApi<S>, account: &str, customer: &str) {
    let account = AccountId::parse(account).unwrap();
    let subscriptions = api.store.subscriptions_of_customer(customer).await.unwrap();
    let plans = plans();
    let mut entitlement = shared::entitlement::compute(&account, customer, &subscriptions, &[], &plans, 14);
    entitlement.version = 1;
    api.store.put_entitlement(&entitlement).await.unwrap();
}

fn customers_idempotency_key(requests: &[wiremock::Request]) -> Option<String> {
    posts_to(requests, "/v1/customers")
        .first()?
        .headers
        .get("idempotency-key")?
        .to_str()
        .ok()
        .map(str::to_owned)
}
