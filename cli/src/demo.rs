//! `billing demo`: a subscription's whole life, through the public HTTP API (as a SaaS
//! dashboard calls it) and the simulator's control endpoints (as a customer and a bank act),
//! once with orderly delivery, then duplicated and shuffled in each of Stripe's ways (snapshot and thin
//! payloads, webhook and EventBridge), then as real customers behave, then as a team buys.
//! Accounts are organisations (`org_id`), and only `admin`/`owner` members change billing.

use serde_json::{Value, json};

use shared::config::{AccountSettings, Env};
use shared::store::BillingStore;

use crate::local::{DeliveryMode, LocalApp, LocalError, LocalQueue, LocalSystem, PayloadMode};

struct Walk<'a, S, Q> {
    system: &'a LocalSystem<S, Q>,
    http: reqwest::Client,
    user: String,
    /// The member's further claims (`X-Billing-Claims`); by default the user is the owner of
    /// an organisation of their own.
    claims: Option<Value>,
    simulator: String,
    step: usize,
}

fn failed(message: impl Into<String>) -> LocalError {
    LocalError::Step(message.into())
}

impl<'a, S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue> Walk<'a, S, Q> {
    fn new(system: &'a LocalSystem<S, Q>, user: String) -> Result<Self, LocalError> {
        let simulator = system
            .simulator
            .as_ref()
            .ok_or_else(|| failed("the demo runs against the simulator: unset STRIPE_SECRET_KEY"))?;
        Ok(Self {
            system,
            http: reqwest::Client::new(),
            user,
            claims: None,
            simulator: simulator.base_url.clone(),
            step: 0,
        })
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Value) -> Result<(u16, Value), LocalError> {
        let claims = self
            .claims
            .clone()
            .unwrap_or_else(|| json!({"org_id": self.user, "org_role": "owner"}));
        let response = self
            .http
            .request(method, format!("{}{path}", self.system.api_url))
            .header("X-Billing-User", &self.user)
            .header("X-Billing-Claims", claims.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.map_err(|e| failed(e.to_string()))?))
    }

    async fn bank(&self, action: &str) -> Result<Value, LocalError> {
        let answer = self.bank_before_the_webhook(action).await?;
        self.system.drain().await?;
        Ok(answer)
    }

    /// A customer or bank action whose events are delivered but not yet processed: what the
    /// app sees while its queue is behind.
    async fn bank_before_the_webhook(&self, action: &str) -> Result<Value, LocalError> {
        let url = format!("{}/sim/{action}", self.simulator);
        self.http
            .post(url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?
            .json()
            .await
            .map_err(|e| failed(e.to_string()))
    }

    /// What Stripe (the simulator) holds, read through its API.
    async fn stripe(&self, path: &str) -> Result<Value, LocalError> {
        self.http
            .get(format!("{}{path}", self.simulator))
            .bearer_auth("sk_test_demo")
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?
            .json()
            .await
            .map_err(|e| failed(e.to_string()))
    }

    async fn checkout(&self, plan: &str) -> Result<String, LocalError> {
        let (status, session) = self
            .api(reqwest::Method::POST, "/checkout/sessions", json!({ "plan": plan }))
            .await?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| failed(format!("checkout answered {status}: {session}")))
    }

    async fn me(&self) -> Result<Value, LocalError> {
        Ok(self.api(reqwest::Method::GET, "/billing/me", Value::Null).await?.1)
    }

    fn check(&mut self, what: &str, view: &Value, expected: &[(&str, Value)]) -> Result<(), LocalError> {
        self.step += 1;
        for (field, want) in expected {
            if view[*field] != *want {
                return Err(failed(format!(
                    "step {} ({what}): expected {field} = {want}, got {view}",
                    self.step
                )));
            }
        }
        let shown: Vec<String> = expected
            .iter()
            .map(|(field, value)| format!("{field}={value}"))
            .collect();
        println!("  {:>2}. {what:<46} {}", self.step, shown.join(" "));
        Ok(())
    }
}

async fn walk<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: &LocalSystem<S, Q>,
    user: &str,
) -> Result<Value, LocalError> {
    let mut w = Walk::new(system, user.to_owned())?;
    use reqwest::Method;

    let (status, view) = w.api(Method::GET, "/billing/me", Value::Null).await?;
    w.check(
        "user signs up: no subscription",
        &json!({"status": status, "access": view["access"]}),
        &[("status", json!(200)), ("access", json!("none"))],
    )?;

    let (status, session) = w
        .api(Method::POST, "/checkout/sessions", json!({"plan": "basic"}))
        .await?;
    let session_id = session["id"]
        .as_str()
        .ok_or_else(|| failed(format!("checkout answered {status}: {session}")))?
        .to_owned();
    w.check(
        "checkout session created",
        &json!({"status": status}),
        &[("status", json!(201))],
    )?;

    let completed = w.bank(&format!("checkout/{session_id}/complete")).await?;
    let subscription = completed["result"]["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let view = w.me().await?;
    w.check(
        "checkout completed (webhook → queue → events)",
        &view,
        &[("access", json!("active")), ("plan", json!("basic"))],
    )?;

    let (_, view) = w
        .api(Method::POST, "/subscription/change", json!({"plan": "pro"}))
        .await?;
    w.system.drain().await?;
    w.check(
        "upgraded to pro (create_prorations)",
        &view,
        &[
            ("plan", json!("pro")),
            ("features", json!(["api", "exports", "reports"])),
        ],
    )?;

    let failure = w
        .bank(&format!(
            "subscriptions/{subscription}/fail_payment?decline_code=insufficient_funds"
        ))
        .await?;
    let invoice = failure["result"]["invoice"].as_str().unwrap_or_default().to_owned();
    let view = w.me().await?;
    let emails = system
        .notifier
        .emails()
        .iter()
        .filter(|e| e.body.contains(&invoice))
        .count();
    w.check(
        "renewal payment fails: grace, one email",
        &json!({"access": view["access"], "status": view["status"], "emails": emails}),
        &[
            ("access", json!("grace")),
            ("status", json!("past_due")),
            ("emails", json!(1)),
        ],
    )?;

    w.bank(&format!("invoices/{invoice}/pay")).await?;
    let view = w.me().await?;
    w.check(
        "card fixed, invoice paid",
        &view,
        &[("access", json!("active")), ("status", json!("active"))],
    )?;

    let (_, view) = w
        .api(Method::POST, "/subscription/cancel", json!({"at_period_end": true}))
        .await?;
    w.system.drain().await?;
    w.check(
        "cancel at period end: access until then",
        &view,
        &[("access", json!("active")), ("cancel_at_period_end", json!(true))],
    )?;

    w.bank(&format!("subscriptions/{subscription}/end_period")).await?;
    let view = w.me().await?;
    w.check(
        "period ends",
        &view,
        &[("access", json!("none")), ("status", json!("canceled"))],
    )?;
    Ok(view)
}

/// What real customers do: two tabs, both tabs paid before the webhook is processed, and a
/// second checkout after a cancelled trial. Each user is fresh.
async fn real_customers<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: &LocalSystem<S, Q>,
    run_id: &str,
) -> Result<(), LocalError> {
    use reqwest::Method;
    let mut w = Walk::new(system, format!("demo-tabs-{run_id}"))?;

    let first_tab = w.checkout("basic").await?;
    // The second tab a moment later: sessions opened in the same second do not expire each
    // other (two requests at once must not cancel each other), the refund backstop covers them.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second_tab = w.checkout("basic").await?;
    let first = w.stripe(&format!("/v1/checkout/sessions/{first_tab}")).await?;
    w.check(
        "two tabs: opening the second expires the first",
        &json!({"first_tab": first["status"]}),
        &[("first_tab", json!("expired"))],
    )?;
    w.bank(&format!("checkout/{second_tab}/complete")).await?;
    let view = w.me().await?;
    w.check("the second tab is paid", &view, &[("access", json!("active"))])?;

    w.user = format!("demo-race-{run_id}");
    let first_tab = w.checkout("basic").await?;
    w.bank_before_the_webhook(&format!("checkout/{first_tab}/complete"))
        .await?;
    let second_tab = w.checkout("basic").await?;
    w.bank_before_the_webhook(&format!("checkout/{second_tab}/complete"))
        .await?;
    w.system.drain().await?;
    let session = w.stripe(&format!("/v1/checkout/sessions/{second_tab}")).await?;
    let customer = session["customer"].as_str().unwrap_or_default().to_owned();
    let live = w
        .stripe(&format!("/v1/subscriptions?customer={customer}&status=active"))
        .await?;
    let live = live["data"].as_array().map_or(0, Vec::len);
    let mut refunds = 0;
    for subscription in w
        .stripe(&format!("/v1/subscriptions?customer={customer}&status=all"))
        .await?["data"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let invoice_id = subscription["latest_invoice"].as_str().unwrap_or_default();
        let invoice = w.stripe(&format!("/v1/invoices/{invoice_id}")).await?;
        for payment in invoice["payments"]["data"].as_array().into_iter().flatten() {
            let intent = payment["payment"]["payment_intent"].as_str().unwrap_or_default();
            let listed = w.stripe(&format!("/v1/refunds?payment_intent={intent}")).await?;
            refunds += listed["data"].as_array().map_or(0, Vec::len);
        }
    }
    let view = w.me().await?;
    w.check(
        "both tabs paid before the webhook: one kept, one refunded",
        &json!({"live": live, "refunds": refunds, "access": view["access"]}),
        &[("live", json!(1)), ("refunds", json!(1)), ("access", json!("active"))],
    )?;

    w.user = format!("demo-trial-{run_id}");
    let session = w.checkout("pro").await?;
    w.bank(&format!("checkout/{session}/complete")).await?;
    let view = w.me().await?;
    w.check(
        "checkout with a 14-day trial",
        &view,
        &[("status", json!("trialing")), ("access", json!("active"))],
    )?;
    let (_, view) = w
        .api(Method::POST, "/subscription/cancel", json!({"at_period_end": false}))
        .await?;
    w.system.drain().await?;
    w.check("cancelled during the trial", &view, &[("access", json!("none"))])?;
    let session = w.checkout("pro").await?;
    w.bank(&format!("checkout/{session}/complete")).await?;
    let view = w.me().await?;
    w.check(
        "checking out again: no second trial",
        &view,
        &[("status", json!("active")), ("access", json!("active"))],
    )?;

    let deleted = w.stripe(&format!("/v1/checkout/sessions/{session}")).await?["customer"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.http
        .delete(format!("{}/v1/customers/{deleted}", w.simulator))
        .bearer_auth("sk_test_demo")
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    w.system.drain().await?;
    let view = w.me().await?;
    let session = w.checkout("basic").await?;
    let replacement = w.stripe(&format!("/v1/checkout/sessions/{session}")).await?["customer"].clone();
    w.check(
        "customer deleted in Stripe: access ends, the next checkout makes a new one",
        &json!({"access": view["access"], "new_customer": replacement != json!(deleted)}),
        &[("access", json!("none")), ("new_customer", json!(true))],
    )?;
    Ok(())
}

/// A team's billing: an admin buys team yearly for 5 seats, a member reads but may not change
/// it, the admin adds 3 seats and SSO, buys credits, and moves the team down to starter at
/// the period's end (after removing SSO, which starter does not offer).
async fn team_story<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: &LocalSystem<S, Q>,
    run_id: &str,
) -> Result<(), LocalError> {
    use reqwest::Method;
    let org = format!("demo-acme-{run_id}");
    let mut admin = Walk::new(system, format!("ann-{run_id}"))?;
    admin.claims = Some(json!({"org_id": org, "org_role": "admin", "email": "ann@acme.example", "name": "Ann"}));
    let mut member = Walk::new(system, format!("bob-{run_id}"))?;
    member.claims = Some(json!({"org_id": org, "org_role": "member"}));

    let (status, session) = admin
        .api(
            Method::POST,
            "/checkout/sessions",
            json!({"plan": "team", "interval": "year", "currency": "usd", "seats": 5}),
        )
        .await?;
    let session = session["id"]
        .as_str()
        .ok_or_else(|| failed(format!("checkout answered {status}: {session}")))?
        .to_owned();
    admin.bank(&format!("checkout/{session}/complete")).await?;
    let view = admin.me().await?;
    admin.check(
        "admin buys team yearly, 5 seats",
        &json!({"plan": view["plan"], "seats": view["limits"]["seats"], "features": view["features"]}),
        &[
            ("plan", json!("team")),
            ("seats", json!(5)),
            ("features", json!(["api", "exports", "reports"])),
        ],
    )?;

    let read = member.me().await?;
    let (refused, answer) = member
        .api(Method::POST, "/subscription/seats", json!({"seats": 9}))
        .await?;
    admin.check(
        "Bob (a member) reads it, may not change it",
        &json!({"plan": read["plan"], "change_seats": refused, "error": answer["error"]}),
        &[
            ("plan", json!("team")),
            ("change_seats", json!(403)),
            ("error", json!("billing_admin_required")),
        ],
    )?;

    let (_, view) = admin
        .api(Method::POST, "/subscription/seats", json!({"seats": 8}))
        .await?;
    system.drain().await?;
    admin.check(
        "admin adds 3 seats (prorated)",
        &json!({"seats": view["limits"]["seats"]}),
        &[("seats", json!(8))],
    )?;
    let (_, view) = admin
        .api(Method::POST, "/subscription/addons", json!({"addon": "sso"}))
        .await?;
    system.drain().await?;
    admin.check(
        "admin adds the SSO add-on",
        &json!({"addons": view["addons"], "features": view["features"]}),
        &[
            ("addons", json!(["sso"])),
            ("features", json!(["api", "exports", "reports", "sso"])),
        ],
    )?;

    let (status, pack) = admin
        .api(
            Method::POST,
            "/checkout/sessions",
            json!({"product": "credits_1000", "quantity": 2}),
        )
        .await?;
    let pack = pack["id"]
        .as_str()
        .ok_or_else(|| failed(format!("checkout answered {status}: {pack}")))?
        .to_owned();
    admin.bank(&format!("checkout/{pack}/complete")).await?;
    let view = admin.me().await?;
    admin.check(
        "admin buys two credit packs (a one-time payment)",
        &json!({"credits": view["credits"], "plan": view["plan"]}),
        &[("credits", json!(2000)), ("plan", json!("team"))],
    )?;

    let (status, answer) = admin
        .api(Method::POST, "/subscription/change", json!({"plan": "starter"}))
        .await?;
    admin.check(
        "downgrade refused while SSO is on (starter has none)",
        &json!({"status": status, "error": answer["error"]}),
        &[("status", json!(409)), ("error", json!("addon_not_on_plan"))],
    )?;
    admin
        .api(Method::DELETE, "/subscription/addons/sso", Value::Null)
        .await?;
    let (status, answer) = admin
        .api(Method::POST, "/subscription/change", json!({"plan": "starter"}))
        .await?;
    system.drain().await?;
    admin.check(
        "SSO removed; downgrade to starter waits for the period's end",
        &json!({"status": status, "plan": answer["entitlement"]["plan"], "scheduled": answer["scheduled"]["plan"]}),
        &[
            ("status", json!(202)),
            ("plan", json!("team")),
            ("scheduled", json!("starter")),
        ],
    )?;

    let subscription = admin.stripe(&format!("/v1/checkout/sessions/{session}")).await?["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    admin.bank(&format!("subscriptions/{subscription}/end_period")).await?;
    let view = admin.me().await?;
    admin.check(
        "the year ends: renewed on starter, credits kept",
        &json!({"plan": view["plan"], "seats": view["limits"]["seats"], "credits": view["credits"]}),
        &[
            ("plan", json!("starter")),
            ("seats", json!(1)),
            ("credits", json!(2000)),
        ],
    )?;
    Ok(())
}

/// An API-plan customer makes calls: counted once each (repeats too), shown against the
/// plan's 100 included (locally), and the overage billed on the renewal invoice.
async fn usage_story<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: &LocalSystem<S, Q>,
    run_id: &str,
) -> Result<(), LocalError> {
    let mut w = Walk::new(system, format!("demo-api-{run_id}"))?;
    let session = w.checkout("api").await?;
    w.bank(&format!("checkout/{session}/complete")).await?;
    let view = w.me().await?;
    w.check(
        "subscribes to the API plan: 100 calls included",
        &json!({"plan": view["plan"], "included": view["usage"]["api_calls"]["included"]}),
        &[("plan", json!("api")), ("included", json!(100))],
    )?;
    // 150 calls, 10 of them reported twice (a retrying client), through the usage queue.
    let now = shared::unix_now();
    let account = w.user.clone();
    let reports = (0..150)
        .chain(0..10)
        .map(|n| json!({"account": account, "meter": "api_calls", "identifier": format!("{account}-call-{n}"), "timestamp": now}).to_string());
    system
        .usage_inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(reports);
    system.drain().await?;
    let view = w.me().await?;
    let usage = &view["usage"]["api_calls"];
    w.check(
        "makes 150 calls (10 reported twice)",
        &json!({"used": usage["used"], "over": usage["over"], "allowed": usage["allowed"]}),
        &[("used", json!(150.0)), ("over", json!(true)), ("allowed", json!(true))],
    )?;
    let subscription = w.stripe(&format!("/v1/checkout/sessions/{session}")).await?["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.bank(&format!("subscriptions/{subscription}/end_period")).await?;
    let customer = w.stripe(&format!("/v1/subscriptions/{subscription}")).await?["customer"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let invoices = w.stripe(&format!("/v1/invoices?customer={customer}&limit=1")).await?;
    let overage = invoices["data"][0]["lines"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|line| line.to_string().contains("price_api_calls_month_usd"))
        .cloned()
        .unwrap_or_default();
    w.check(
        "the renewal bills the 50 calls over, at 0.1 cents each",
        &json!({"quantity": overage["quantity"], "amount": overage["amount"]}),
        &[("quantity", json!(150)), ("amount", json!(5))],
    )?;
    Ok(())
}

/// `billing demo`.
pub struct Demo;

impl LocalApp for Demo {
    async fn run<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
        self,
        system: LocalSystem<S, Q>,
    ) -> Result<(), LocalError> {
        run(system).await
    }

    /// Organisations, as team SaaS runs it: the account is the `org_id` claim and only admins
    /// and owners change billing.
    fn accounts(&self) -> Option<AccountSettings> {
        AccountSettings::from_env(&Env::from_pairs([
            ("BILLING_ACCOUNT_CLAIM", "org_id"),
            ("BILLING_ROLE_CLAIM", "org_role"),
            ("BILLING_ADMIN_ROLES", "admin,owner"),
        ]))
        .ok()
    }
}

async fn run<S: BillingStore + shared::usage::UsageLedger + Clone + 'static, Q: LocalQueue>(
    system: LocalSystem<S, Q>,
) -> Result<(), LocalError> {
    let simulator = system
        .simulator
        .clone()
        .ok_or_else(|| failed("the demo runs against the simulator: unset STRIPE_SECRET_KEY"))?;
    let base = system.delivery(DeliveryMode::Webhook, PayloadMode::Snapshot);

    // Fresh user ids each run: a DynamoDB table outlives the process.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let first = format!("demo-orderly-{}", &run_id[..8]);
    println!("\nPass 1 (user {first}): each event delivered once, in order");
    let orderly = walk(&system, &first).await?;

    // Period ends are wall-clock seconds and may differ between passes; the rest must not.
    let comparable = |mut view: Value| {
        view["current_period_end"] = Value::Null;
        // This period's usage window is wall-clock too.
        view["usage"] = Value::Null;
        view
    };
    let passes = [
        (
            "chaos",
            DeliveryMode::Webhook,
            PayloadMode::Snapshot,
            "snapshot events to the webhook, duplicated and shuffled, as Stripe may deliver them",
        ),
        (
            "thin",
            DeliveryMode::Webhook,
            PayloadMode::Thin,
            "thin events to the webhook, duplicated and shuffled: each object read from Stripe",
        ),
        (
            "eventbridge",
            DeliveryMode::Eventbridge,
            PayloadMode::Snapshot,
            "snapshot events through Amazon EventBridge, duplicated and shuffled",
        ),
        (
            "both",
            DeliveryMode::Both,
            PayloadMode::Thin,
            "thin events through EventBridge and the webhook at once, duplicated and shuffled",
        ),
    ];
    for (number, (tag, mode, payload, what)) in (2..).zip(passes) {
        let user = format!("demo-{tag}-{}", &run_id[..8]);
        println!("\nPass {number} (user {user}): {what}");
        simulator.set_delivery(stripe_simulator::Delivery {
            duplicates: true,
            shuffle: true,
            ..system.delivery(mode, payload)
        });
        let view = walk(&system, &user).await?;
        if comparable(orderly.clone()) != comparable(view.clone()) {
            return Err(failed(format!(
                "final states differ:\n  orderly {orderly}\n  {tag} {view}"
            )));
        }
    }
    println!("\nEvery pass reached the same final state: {orderly}");

    println!("\nPass 6: what real customers do (two tabs, a race with the webhook, a second trial)");
    simulator.set_delivery(base);
    real_customers(&system, &run_id[..8]).await?;

    println!("\nPass 7: a team buys (org acme: Ann is an admin, Bob a member)");
    team_story(&system, &run_id[..8]).await?;

    println!("\nPass 8: an API customer's usage, counted once, billed past what the plan includes");
    usage_story(&system, &run_id[..8]).await
}
