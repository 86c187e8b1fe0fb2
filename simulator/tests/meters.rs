//! Usage-based billing over real HTTP: billing meters, meter events through v1 and the v2
//! stream, event summaries, the meter rate limit, the asynchronous error reports and the
//! renewal invoices that bill metered usage. Expected values come from what each test sends
//! and Stripe's documented semantics.

mod common;

use common::{Deliveries, form_body, webhook};
use std::num::NonZeroU64;
use std::time::Duration;

use axum::http::HeaderMap;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::stripe::SignatureVerifier;
use stripe_simulator::{Delivery, MeterRequests, Payload, Simulator};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SECRET: &str = "whsec_meters_test";
const API_KEY: &str = "sk_test_simulator";

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// A minute-aligned window around now, for summaries of events sent now.
fn around_now() -> (i64, i64) {
    let minute = shared::unix_now() / 60 * 60;
    (minute - 60, minute + 120)
}

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    deliveries: Deliveries,
}

impl Harness {
    async fn start(payload: Payload) -> Self {
        let (url, deliveries) = webhook().await;
        let delivery = Delivery {
            webhook_url: Some(url),
            webhook_secret: SECRET.into(),
            payload,
            ..Delivery::default()
        };
        Self {
            sim: Simulator::start(0, delivery).await.unwrap(),
            http: reqwest::Client::new(),
            deliveries,
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let (status, body, _) = self.post_with_headers(path, form).await;
        (status, body)
    }

    async fn post_with_headers(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value, HeaderMap) {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url))
            .header("Authorization", format!("Bearer {API_KEY}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        (status, response.json().await.unwrap(), headers)
    }

    /// A JSON POST, as v2 takes it, authenticated with `bearer`.
    async fn post_json(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value, HeaderMap) {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url))
            .header("Authorization", format!("Bearer {bearer}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        (status, response.json().await.unwrap(), headers)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.sim.base_url))
            .header("Authorization", format!("Bearer {API_KEY}"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn customer(&self) -> String {
        let (status, customer) = self.post("/v1/customers", &[("metadata[user_id]", "u1")]).await;
        assert_eq!(status, 200, "{customer}");
        customer["id"].as_str().unwrap().to_owned()
    }

    /// A meter of `event_name` with the default customer and value keys.
    async fn meter(&self, event_name: &str, formula: &str) -> String {
        let (status, meter) = self
            .post(
                "/v1/billing/meters",
                &[
                    ("display_name", event_name),
                    ("event_name", event_name),
                    ("default_aggregation[formula]", formula),
                ],
            )
            .await;
        assert_eq!(status, 200, "{meter}");
        meter["id"].as_str().unwrap().to_owned()
    }

    /// A v1 meter event of `value` for the customer (and identifier, when given).
    async fn event(&self, event_name: &str, customer: &str, value: &str, identifier: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("event_name", event_name),
            ("payload[stripe_customer_id]", customer),
            ("payload[value]", value),
        ];
        if let Some(identifier) = identifier {
            form.push(("identifier", identifier));
        }
        self.post("/v1/billing/meter_events", &form).await
    }

    /// A meter event session's authentication token.
    async fn session_token(&self) -> String {
        let (status, session, _) = self
            .post_json("/v2/billing/meter_event_session", API_KEY, &json!({}))
            .await;
        assert_eq!(status, 200, "{session}");
        session["authentication_token"].as_str().unwrap().to_owned()
    }

    async fn stream(&self, token: &str, events: Vec<Value>) -> (u16, Value, HeaderMap) {
        self.post_json("/v2/billing/meter_event_stream", token, &json!({"events": events}))
            .await
    }

    /// The aggregate of one summary over `[start, end)` for the customer.
    async fn summed(&self, meter: &str, customer: &str, (start, end): (i64, i64)) -> Value {
        let (status, list) = self
            .get(&format!(
                "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}&end_time={end}"
            ))
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        list["data"][0]["aggregated_value"].clone()
    }

    /// Every delivered event so far, oldest first, each checked against the webhook secret.
    fn delivered(&self) -> Vec<Value> {
        let verifier = SignatureVerifier::new(&[SecretString::from(SECRET)], NonZeroU64::new(300).unwrap());
        let deliveries = self.deliveries.lock().unwrap();
        deliveries
            .iter()
            .map(|(signature, body)| {
                verifier
                    .verify(signature.as_deref(), body, shared::unix_now())
                    .expect("every delivery is signed with the webhook secret");
                serde_json::from_slice(body).unwrap()
            })
            .collect()
    }
}

fn stream_event(event_name: &str, customer: &str, value: &str, identifier: &str) -> Value {
    json!({
        "event_name": event_name,
        "identifier": identifier,
        "payload": {"stripe_customer_id": customer, "value": value},
        "timestamp": rfc3339(shared::unix_now()),
    })
}

#[tokio::test]
async fn meters_are_created_listed_and_retrieved() {
    let h = Harness::start(Payload::Snapshot).await;
    let (status, first) = h
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "API calls"),
                ("event_name", "api_call"),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert!(first_id.starts_with("mtr_"), "{first_id}");
    assert_eq!(first["object"], "billing.meter");
    assert_eq!(first["status"], "active");
    assert_eq!(first["livemode"], false);
    assert_eq!(first["display_name"], "API calls");
    assert_eq!(first["event_name"], "api_call");
    assert_eq!(first["default_aggregation"], json!({"formula": "sum"}));
    assert_eq!(
        first["customer_mapping"],
        json!({"event_payload_key": "stripe_customer_id", "type": "by_id"}),
        "Stripe's default customer mapping"
    );
    assert_eq!(first["value_settings"], json!({"event_payload_key": "value"}));
    assert_eq!(first["event_time_window"], Value::Null);
    assert_eq!(first["status_transitions"], json!({"deactivated_at": null}));

    let (status, second) = h
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Tokens"),
                ("event_name", "tokens"),
                ("default_aggregation[formula]", "last"),
                ("customer_mapping[event_payload_key]", "account"),
                ("customer_mapping[type]", "by_id"),
                ("value_settings[event_payload_key]", "tokens"),
                ("event_time_window", "hour"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["customer_mapping"]["event_payload_key"], "account");
    assert_eq!(second["value_settings"]["event_payload_key"], "tokens");
    assert_eq!(second["event_time_window"], "hour");

    let (status, page) = h.get("/v1/billing/meters?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(page["url"], "/v1/billing/meters");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], second["id"], "newest first");
    let (_, rest) = h
        .get(&format!(
            "/v1/billing/meters?limit=1&starting_after={}",
            second["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest["data"][0]["id"], first_id.as_str());
    assert_eq!(rest["has_more"], false);
    let (_, active) = h.get("/v1/billing/meters?status=inactive").await;
    assert_eq!(active["data"], json!([]));

    let (status, got) = h.get(&format!("/v1/billing/meters/{first_id}")).await;
    assert_eq!((status, got), (200, first));
    let (status, missing) = h.get("/v1/billing/meters/mtr_nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");

    let (status, duplicate) = h
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Again"),
                ("event_name", "api_call"),
                ("default_aggregation[formula]", "count"),
            ],
        )
        .await;
    assert_eq!(status, 400, "one active meter per event_name: {duplicate}");
    assert_eq!(duplicate["error"]["param"], "event_name");
    let (status, refused) = h
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "x"),
                ("event_name", "x"),
                ("default_aggregation[formula]", "max"),
            ],
        )
        .await;
    assert_eq!(status, 400, "max is no formula: {refused}");
    let (status, refused) = h
        .post(
            "/v1/billing/meters",
            &[("event_name", "y"), ("default_aggregation[formula]", "sum")],
        )
        .await;
    assert_eq!(status, 400, "display_name is required: {refused}");
    assert_eq!(refused["error"]["code"], "parameter_missing");
}

#[tokio::test]
async fn a_repeated_identifier_is_accepted_and_counted_once() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let (status, event) = h.event("api_call", &customer, "5", Some("req-1")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["object"], "billing.meter_event");
    assert_eq!(event["event_name"], "api_call");
    assert_eq!(event["identifier"], "req-1");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["payload"], json!({"stripe_customer_id": customer, "value": "5"}));
    let sent_at = event["timestamp"].as_i64().unwrap();
    assert!(
        (sent_at - shared::unix_now()).abs() <= 2,
        "the timestamp defaults to now"
    );
    let (status, again) = h.event("api_call", &customer, "5", Some("req-1")).await;
    assert_eq!(status, 200, "a retry is accepted: {again}");
    assert_eq!(again["identifier"], "req-1");
    let (status, generated) = h.event("api_call", &customer, "7", None).await;
    assert_eq!(status, 200, "{generated}");
    let identifier = generated["identifier"].as_str().unwrap();
    assert!(!identifier.is_empty() && identifier != "req-1");

    assert_eq!(
        h.summed(&meter, &customer, around_now()).await,
        json!(12),
        "5 once, and 7"
    );
    assert_eq!(
        h.sim.meter_requests(),
        MeterRequests {
            v1: 3,
            v2: 0,
            rate_limited: 0,
            events_accepted: 3,
            events_recorded: 2
        }
    );
}

#[tokio::test]
async fn timestamps_outside_stripes_window_are_refused() {
    let h = Harness::start(Payload::Snapshot).await;
    h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let now = shared::unix_now();
    for (timestamp, why) in [
        (now - 36 * 86_400, "more than 35 days ago"),
        (now + 10 * 60, "more than 5 minutes ahead"),
    ] {
        let timestamp = timestamp.to_string();
        let (status, refused) = h
            .post(
                "/v1/billing/meter_events",
                &[
                    ("event_name", "api_call"),
                    ("payload[stripe_customer_id]", &customer),
                    ("payload[value]", "1"),
                    ("timestamp", &timestamp),
                ],
            )
            .await;
        assert_eq!(status, 400, "{why}: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
        assert_eq!(refused["error"]["param"], "timestamp", "{why}");
    }
    let within = (now - 34 * 86_400).to_string();
    let (status, taken) = h
        .post(
            "/v1/billing/meter_events",
            &[
                ("event_name", "api_call"),
                ("payload[stripe_customer_id]", &customer),
                ("payload[value]", "1"),
                ("timestamp", &within),
            ],
        )
        .await;
    assert_eq!(status, 200, "34 days ago is within the window: {taken}");
    let long = "x".repeat(101);
    let (status, refused) = h.event("api_call", &customer, "1", Some(&long)).await;
    assert_eq!(status, 400, "an identifier has at most 100 characters: {refused}");
    assert_eq!(h.sim.meter_requests().events_recorded, 1, "only the one taken");
}

#[tokio::test]
async fn the_v2_stream_takes_events_with_a_session_token_and_dedups_with_v1() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let (status, session, _) = h
        .post_json("/v2/billing/meter_event_session", API_KEY, &json!({}))
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["object"], "v2.billing.meter_event_session");
    assert!(session["id"].as_str().unwrap().starts_with("mes_"), "{session}");
    assert_eq!(session["livemode"], false);
    let created = OffsetDateTime::parse(session["created"].as_str().unwrap(), &Rfc3339).unwrap();
    let expires = OffsetDateTime::parse(session["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(
        (expires - created).whole_seconds(),
        15 * 60,
        "Stripe's sessions last 15 minutes"
    );
    let token = session["authentication_token"].as_str().unwrap();

    let (status, answer, _) = h
        .stream(
            token,
            vec![
                stream_event("api_call", &customer, "10", "s-1"),
                stream_event("api_call", &customer, "20", "s-2"),
                stream_event("api_call", &customer, "30", "s-3"),
                stream_event("api_call", &customer, "1000", "s-1"),
            ],
        )
        .await;
    assert_eq!((status, answer), (200, json!({})));
    // v1 and v2 share one identifier space.
    let (status, _) = h.event("api_call", &customer, "1000", Some("s-2")).await;
    assert_eq!(status, 200);
    let (status, _) = h.event("api_call", &customer, "4", Some("v1-only")).await;
    assert_eq!(status, 200);
    assert_eq!(h.summed(&meter, &customer, around_now()).await, json!(10 + 20 + 30 + 4));
    let counts = h.sim.meter_requests();
    assert_eq!((counts.v1, counts.v2), (2, 1));
    assert_eq!((counts.events_accepted, counts.events_recorded), (6, 4));

    // Hourly: one summary per hour, newest first; the window must be hour-aligned.
    let hour = shared::unix_now() / 3_600 * 3_600;
    let (start, end) = (hour - 3_600, hour + 3_600);
    let (status, hourly) = h
        .get(&format!(
            "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}&end_time={end}&value_grouping_window=hour"
        ))
        .await;
    assert_eq!(status, 200, "{hourly}");
    let summaries = hourly["data"].as_array().unwrap();
    assert_eq!(summaries.len(), 2, "{hourly}");
    assert_eq!(summaries[0]["start_time"], hour);
    assert_eq!(summaries[0]["end_time"], hour + 3_600);
    // Events sent a moment before the hour turned fall in the earlier window.
    let total = summaries[0]["aggregated_value"].as_f64().unwrap() + summaries[1]["aggregated_value"].as_f64().unwrap();
    assert_eq!(total, 64.0);
    assert_eq!(summaries[0]["object"], "billing.meter_event_summary");
    assert_eq!(summaries[0]["meter"], meter.as_str());
    assert_eq!(summaries[0]["livemode"], false);
    assert!(summaries[0]["id"].is_string());
    let (minute_start, minute_end) = around_now();
    let (status, refused) = h
        .get(&format!(
            "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={}&end_time={minute_end}",
            minute_start + 30
        ))
        .await;
    assert_eq!(status, 400, "start_time must be minute-aligned: {refused}");
    assert_eq!(refused["error"]["param"], "start_time");
    if minute_start % 3_600 != 0 {
        let (status, refused) = h
            .get(&format!(
                "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={minute_start}&end_time={end}&value_grouping_window=hour"
            ))
            .await;
        assert_eq!(status, 400, "hourly windows are hour-aligned: {refused}");
    }
    let (status, refused) = h
        .get(&format!(
            "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={start}"
        ))
        .await;
    assert_eq!(status, 400, "end_time is required: {refused}");
}

#[tokio::test]
async fn the_stream_refuses_api_keys_unknown_and_expired_tokens() {
    let h = Harness::start(Payload::Snapshot).await;
    h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let events = || {
        vec![stream_event(
            "api_call",
            &customer,
            "1",
            &format!("e-{}", fastrand::u64(..)),
        )]
    };
    let (status, refused, _) = h.stream(API_KEY, events()).await;
    assert_eq!(
        status, 401,
        "the stream takes a session token, not an API key: {refused}"
    );
    let (status, refused, _) = h.stream("not-a-token", events()).await;
    assert_eq!(status, 401, "{refused}");

    let (status, set) = h.post("/sim/meter_event_sessions?ttl_secs=0", &[]).await;
    assert_eq!(status, 200, "{set}");
    let expired = h.session_token().await;
    let (status, refused, _) = h.stream(&expired, events()).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "billing_meter_event_session_expired");
    assert_eq!(refused["error"]["type"], "temporary_session_expired");

    h.sim.set_meter_event_session_ttl(Duration::from_secs(60));
    // With only some API keys accepted, the session is made with one of them and the stream
    // still authenticates with the session's token.
    h.sim.set_api_keys(Some(vec![API_KEY.to_owned()]));
    let fresh = h.session_token().await;
    let (status, _, _) = h.stream(&fresh, events()).await;
    assert_eq!(status, 200);
    assert_eq!(h.sim.meter_requests().events_recorded, 1);
    let (status, refused, _) = h
        .post_json("/v2/billing/meter_event_session", "sk_test_rolled", &json!({}))
        .await;
    assert_eq!(status, 401, "a session is made with an accepted API key: {refused}");
}

#[tokio::test]
async fn a_stream_request_carries_one_to_a_hundred_events() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("api_call", "count").await;
    let customer = h.customer().await;
    let token = h.session_token().await;
    let many: Vec<Value> = (0..101)
        .map(|n| stream_event("api_call", &customer, "1", &format!("m-{n}")))
        .collect();
    let (status, refused, _) = h.stream(&token, many.clone()).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "events");
    let (status, _, _) = h.stream(&token, Vec::new()).await;
    assert_eq!(status, 400, "no events");
    let (status, refused, _) = h
        .stream(
            &token,
            vec![json!({"event_name": "api_call", "payload": {"stripe_customer_id": customer}, "colour": "red"})],
        )
        .await;
    assert_eq!(status, 400, "an unknown field: {refused}");
    let (status, refused, _) = h
        .stream(&token, vec![json!({"payload": {"stripe_customer_id": customer}})])
        .await;
    assert_eq!(status, 400, "event_name is required: {refused}");
    assert_eq!(
        h.sim.meter_requests().events_accepted,
        0,
        "a refused request takes no event"
    );
    let (status, _, _) = h.stream(&token, many[..100].to_vec()).await;
    assert_eq!(status, 200, "a hundred is the most");
    assert_eq!(h.summed(&meter, &customer, around_now()).await, json!(100), "count");
}

#[tokio::test]
async fn beyond_the_meter_rate_limit_requests_get_429_and_record_nothing() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let token = h.session_token().await;
    let (status, set) = h.post("/sim/meter_events/rate_limit?per_second=2", &[]).await;
    assert_eq!(status, 200, "{set}");
    let (first, _) = h.event("api_call", &customer, "1", Some("r-1")).await;
    let (second, _, _) = h
        .stream(&token, vec![stream_event("api_call", &customer, "2", "r-2")])
        .await;
    let (third, limited, headers) = h
        .post_with_headers(
            "/v1/billing/meter_events",
            &[
                ("event_name", "api_call"),
                ("payload[stripe_customer_id]", &customer),
                ("payload[value]", "4"),
                ("identifier", "r-3"),
            ],
        )
        .await;
    assert_eq!((first, second, third), (200, 200, 429), "{limited}");
    assert_eq!(limited["error"]["code"], "rate_limit");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let (fourth, limited, headers) = h
        .stream(&token, vec![stream_event("api_call", &customer, "8", "r-4")])
        .await;
    assert_eq!(fourth, 429, "the stream shares the limit: {limited}");
    assert_eq!(limited["error"]["type"], "rate_limit");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        h.summed(&meter, &customer, around_now()).await,
        json!(3),
        "refused requests record nothing"
    );

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _) = h.event("api_call", &customer, "4", Some("r-3")).await;
    assert_eq!(status, 200, "after a second the limit admits again");
    let counts = h.sim.meter_requests();
    assert_eq!((counts.v1, counts.v2, counts.rate_limited), (3, 2, 2));
    assert_eq!(counts.events_recorded, 3);
    h.sim.set_meter_rate_limit(None);
    for n in 0..5 {
        let (status, _) = h.event("api_call", &customer, "1", Some(&format!("free-{n}"))).await;
        assert_eq!(status, 200, "no limit");
    }
}

#[tokio::test]
async fn events_stripe_cannot_count_bring_an_error_report_to_thin_destinations_only() {
    let h = Harness::start(Payload::Thin).await;
    let meter = h.meter("api_call", "sum").await;
    let customer = h.customer().await;
    let token = h.session_token().await;
    h.deliveries.lock().unwrap().clear();
    let (status, _, _) = h
        .stream(
            &token,
            vec![
                stream_event("api_call", "cus_nobody", "3", "bad-customer-1"),
                stream_event("api_call", "cus_nobody", "3", "bad-customer-2"),
                stream_event("api_call", &customer, "many", "bad-value"),
                stream_event("api_call", &customer, "5", "good"),
            ],
        )
        .await;
    assert_eq!(status, 200, "validation is asynchronous: the request is accepted");
    assert_eq!(
        h.summed(&meter, &customer, around_now()).await,
        json!(5),
        "only the valid one"
    );

    let delivered = h.delivered();
    assert_eq!(delivered.len(), 1, "one report for the request: {delivered:?}");
    let notification = &delivered[0];
    assert_eq!(notification["object"], "v2.core.event");
    assert_eq!(notification["type"], "v1.billing.meter.error_report_triggered");
    assert_eq!(
        notification["related_object"],
        json!({"id": meter, "type": "billing.meter", "url": format!("/v1/billing/meters/{meter}")})
    );
    assert!(notification.get("data").is_none(), "a notification carries no data");
    let (status, related) = h.get(notification["related_object"]["url"].as_str().unwrap()).await;
    assert_eq!((status, related["id"].as_str()), (200, Some(meter.as_str())));

    let id = notification["id"].as_str().unwrap();
    let (status, event) = h.get(&format!("/v2/core/events/{id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["type"], "v1.billing.meter.error_report_triggered");
    assert_eq!(event["snapshot_event"], Value::Null, "there is no snapshot of it");
    let data = &event["data"];
    assert_eq!(data["reason"]["error_count"], 3);
    let types = data["reason"]["error_types"].as_array().unwrap();
    let by_code = |code: &str| types.iter().find(|t| t["code"] == code).cloned().unwrap();
    let not_found = by_code("meter_event_customer_not_found");
    assert_eq!(not_found["error_count"], 2);
    let identifiers: Vec<&str> = not_found["sample_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["request"]["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(identifiers, ["bad-customer-1", "bad-customer-2"]);
    assert!(not_found["sample_errors"][0]["error_message"].is_string());
    let invalid = by_code("meter_event_invalid_value");
    assert_eq!(invalid["error_count"], 1);
    assert_eq!(invalid["sample_errors"][0]["request"]["identifier"], "bad-value");
    assert!(data["developer_message_summary"].is_string());
    for field in ["validation_start", "validation_end"] {
        OffsetDateTime::parse(data[field].as_str().unwrap(), &Rfc3339).unwrap();
    }
    let (_, listed) = h
        .get("/v2/core/events?types[0]=v1.billing.meter.error_report_triggered")
        .await;
    assert_eq!(listed["data"][0]["id"], id);

    // v1 the same; Stripe has no snapshot form of the event.
    let (status, _) = h.event("api_call", "cus_nobody", "1", Some("v1-bad")).await;
    assert_eq!(status, 200);
    assert_eq!(h.delivered().len(), 2);
    let (_, snapshots) = h.get("/v1/events?limit=100").await;
    assert!(
        snapshots["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "billing.meter.error_report_triggered"),
        "{snapshots}"
    );
    let snapshot_only = Harness::start(Payload::Snapshot).await;
    snapshot_only.meter("api_call", "sum").await;
    let (status, _) = snapshot_only.event("api_call", "cus_nobody", "1", None).await;
    assert_eq!(status, 200);
    assert!(
        snapshot_only.delivered().is_empty(),
        "snapshot destinations do not get it"
    );
}

/// The invoice's metered line (the one for the metered price).
fn line_of<'a>(invoice: &'a Value, price: &str) -> &'a Value {
    invoice["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| line["pricing"]["price_details"]["price"] == price)
        .unwrap_or_else(|| panic!("no line for {price}: {invoice}"))
}

#[tokio::test]
async fn a_renewal_invoice_bills_the_periods_metered_usage() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("api_call", "sum").await;
    let (status, price) = h
        .post(
            "/sim/prices?id=price_api_calls&meter=api_call&unit_amount_decimal=0.5&free_up_to=1000",
            &[],
        )
        .await;
    assert_eq!(status, 200, "{price}");
    assert_eq!(price["result"]["recurring"]["meter"], meter.as_str());
    let customer = h.customer().await;
    let checkout = |quantity: Option<&'static str>| {
        let mut form = vec![
            ("mode", "subscription"),
            ("customer", customer.as_str()),
            ("success_url", "https://app.example.com/ok"),
            ("line_items[0][price]", "price_basic"),
            ("line_items[0][quantity]", "1"),
            ("line_items[1][price]", "price_api_calls"),
        ];
        if let Some(quantity) = quantity {
            form.push(("line_items[1][quantity]", quantity));
        }
        form
    };
    let (status, refused) = h.post("/v1/checkout/sessions", &checkout(Some("1"))).await;
    assert_eq!(status, 400, "Checkout takes no quantity for a metered price: {refused}");
    assert_eq!(refused["error"]["param"], "line_items[1][quantity]");
    let (status, session) = h.post("/v1/checkout/sessions", &checkout(None)).await;
    assert_eq!(status, 200, "{session}");
    let session_id = session["id"].as_str().unwrap();
    let (status, done) = h.post(&format!("/sim/checkout/{session_id}/complete"), &[]).await;
    assert_eq!(status, 200, "{done}");
    let sub_id = done["result"]["subscription"].as_str().unwrap().to_owned();
    let (_, sub) = h.get(&format!("/v1/subscriptions/{sub_id}")).await;
    let items = sub["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let metered = items.iter().find(|i| i["price"]["id"] == "price_api_calls").unwrap();
    assert!(
        metered.get("quantity").is_none(),
        "a metered item has no quantity: {metered}"
    );
    assert_eq!(metered["price"]["recurring"]["usage_type"], "metered");
    let period_start = metered["current_period_start"].as_i64().unwrap();
    let (_, first) = h
        .get(&format!("/v1/invoices/{}", done["result"]["invoice"].as_str().unwrap()))
        .await;
    assert_eq!(
        first["amount_due"], 2000,
        "the first invoice bills the licensed price only"
    );
    assert_eq!(line_of(&first, "price_api_calls")["amount"], 0);

    // 1,234 units: 500 + 400 through v1 (one retried), 334 through the stream.
    for (value, identifier) in [("500", "u-1"), ("400", "u-2"), ("500", "u-1")] {
        let (status, _) = h.event("api_call", &customer, value, Some(identifier)).await;
        assert_eq!(status, 200);
    }
    let token = h.session_token().await;
    let (status, _, _) = h
        .stream(&token, vec![stream_event("api_call", &customer, "334", "u-3")])
        .await;
    assert_eq!(status, 200);
    // Another customer's usage is not this subscription's.
    let other = h.customer().await;
    h.event("api_call", &other, "9999", Some("other-1")).await;

    let (status, renewed) = h.post(&format!("/sim/subscriptions/{sub_id}/end_period"), &[]).await;
    assert_eq!(status, 200, "{renewed}");
    let (_, invoice) = h
        .get(&format!(
            "/v1/invoices/{}",
            renewed["result"]["invoice"].as_str().unwrap()
        ))
        .await;
    let usage = line_of(&invoice, "price_api_calls");
    let units = 500 + 400 + 334;
    assert_eq!(usage["quantity"], units);
    // Graduated: the first 1,000 free, the rest at 0.5 cents: 234 × 0.5 = 117 cents.
    let expected = (units - 1_000) / 2;
    assert_eq!(usage["amount"], expected);
    assert_eq!(usage["period"]["start"], period_start, "usage since the period began");
    assert!(usage["period"]["end"].as_i64().unwrap() >= period_start);
    assert_eq!(usage["object"], "line_item");
    assert_eq!(
        usage["parent"]["subscription_item_details"]["subscription_item"],
        metered["id"]
    );
    let licensed = line_of(&invoice, "price_basic");
    assert_eq!(licensed["amount"], 2000);
    assert_eq!(invoice["amount_due"], 2000 + expected);
    assert_eq!(invoice["total"], 2000 + expected);
    assert_eq!(invoice["amount_paid"], 2000 + expected);

    // A plan change replaces the licensed item and keeps the metered one.
    let licensed_item = items.iter().find(|i| i["price"]["id"] == "price_basic").unwrap();
    let (status, changed) = h
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[
                ("items[0][id]", licensed_item["id"].as_str().unwrap()),
                ("items[0][price]", "price_pro"),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let kept: Vec<&Value> = changed["items"]["data"].as_array().unwrap().iter().collect();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .any(|i| i["id"] == metered["id"] && i.get("quantity").is_none())
    );

    // The next period: 3 more units, all within the free tier; nothing billed twice.
    h.event("api_call", &customer, "3", Some("u-4")).await;
    let (_, renewed) = h.post(&format!("/sim/subscriptions/{sub_id}/end_period"), &[]).await;
    let (_, next) = h
        .get(&format!(
            "/v1/invoices/{}",
            renewed["result"]["invoice"].as_str().unwrap()
        ))
        .await;
    let usage = line_of(&next, "price_api_calls");
    assert_eq!(
        (usage["quantity"].clone(), usage["amount"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(next["amount_due"], 2000);
}

#[tokio::test]
async fn metered_prices_are_created_through_the_api_and_round_per_line() {
    let h = Harness::start(Payload::Snapshot).await;
    let meter = h.meter("storage_mb", "sum").await;
    let (status, tiered) = h
        .post(
            "/v1/prices",
            &[
                ("currency", "usd"),
                ("product_data[name]", "Storage"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", &meter),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "graduated"),
                ("tiers[0][up_to]", "100"),
                ("tiers[0][unit_amount]", "0"),
                ("tiers[1][up_to]", "inf"),
                ("tiers[1][unit_amount_decimal]", "0.25"),
                ("tiers[1][flat_amount]", "10"),
                ("lookup_key", "storage_monthly"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tiered}");
    let tiered_id = tiered["id"].as_str().unwrap();
    assert!(tiered_id.starts_with("price_"));
    assert_eq!(tiered["object"], "price");
    assert_eq!(tiered["type"], "recurring");
    assert_eq!(tiered["billing_scheme"], "tiered");
    assert_eq!(tiered["tiers_mode"], "graduated");
    assert_eq!(tiered["recurring"]["usage_type"], "metered");
    assert_eq!(tiered["recurring"]["meter"], meter.as_str());
    assert_eq!(tiered["lookup_key"], "storage_monthly");
    assert_eq!(tiered["unit_amount"], Value::Null);
    assert!(tiered["product"].as_str().unwrap().starts_with("prod_"));
    let (status, shown) = h.get(&format!("/v1/prices/{tiered_id}")).await;
    assert_eq!(status, 200);
    assert!(shown.get("tiers").is_none(), "tiers only when expanded");
    assert_eq!(shown["recurring"], tiered["recurring"]);
    let (_, expanded) = h.get(&format!("/v1/prices/{tiered_id}?expand[]=tiers")).await;
    assert_eq!(expanded["tiers"][0]["up_to"], 100);
    assert_eq!(expanded["tiers"][1]["up_to"], Value::Null, "inf");
    assert_eq!(expanded["tiers"][1]["unit_amount_decimal"], "0.25");
    assert_eq!(expanded["tiers"][1]["flat_amount"], 10);

    let (status, per_unit) = h
        .post(
            "/v1/prices",
            &[
                ("currency", "usd"),
                ("product", "prod_storage"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", &meter),
                ("unit_amount_decimal", "0.05"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{per_unit}");
    assert_eq!(per_unit["unit_amount"], Value::Null, "not a whole number of cents");
    assert_eq!(per_unit["unit_amount_decimal"], "0.05");
    assert_eq!(per_unit["billing_scheme"], "per_unit");
    let per_unit_id = per_unit["id"].as_str().unwrap();

    for (form, why) in [
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("unit_amount", "1"),
            ],
            "a metered price needs a meter",
        ),
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("recurring[interval]", "month"),
                ("recurring[usage_type]", "metered"),
                ("recurring[meter]", "mtr_nope"),
                ("unit_amount", "1"),
            ],
            "an unknown meter",
        ),
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("recurring[interval]", "month"),
                ("recurring[aggregate_usage]", "sum"),
                ("unit_amount", "1"),
            ],
            "aggregate_usage is gone since Basil",
        ),
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("unit_amount", "1"),
                ("unit_amount_decimal", "1"),
            ],
            "one of unit_amount and unit_amount_decimal",
        ),
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("billing_scheme", "tiered"),
                ("tiers_mode", "graduated"),
                ("tiers[0][up_to]", "5"),
                ("tiers[0][unit_amount]", "1"),
            ],
            "the last tier goes up to inf",
        ),
        (
            vec![
                ("currency", "usd"),
                ("product", "p"),
                ("unit_amount", "1"),
                ("lookup_key", "storage_monthly"),
            ],
            "a lookup key in use",
        ),
    ] {
        let (status, refused) = h.post("/v1/prices", &form).await;
        assert!(status == 400 || status == 404, "{why}: {status} {refused}");
    }
    let (status, default) = h.get("/v1/prices/price_anything").await;
    assert_eq!(
        (status, default["unit_amount"].clone()),
        (200, json!(2000)),
        "unknown ids keep the default"
    );

    // 130 MB: tiered 100 free + 30 × 0.25 + 10 flat = 17.5 → 18; per unit 30 MB... both priced
    // on one renewal, each line rounded once (Stripe: 30 × 0.05 = 1.5, rounded up to 2).
    let customer = h.customer().await;
    for (price, items) in [(tiered_id, 130), (per_unit_id, 30)] {
        let (_, session) = h
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", &customer),
                    ("success_url", "https://app.example.com/ok"),
                    ("line_items[0][price]", price),
                ],
            )
            .await;
        let (_, done) = h
            .post(
                &format!("/sim/checkout/{}/complete", session["id"].as_str().unwrap()),
                &[],
            )
            .await;
        let sub = done["result"]["subscription"].as_str().unwrap().to_owned();
        let value = items.to_string();
        h.event("storage_mb", &customer, &value, Some(&format!("{price}-usage")))
            .await;
        let (_, renewed) = h.post(&format!("/sim/subscriptions/{sub}/end_period"), &[]).await;
        let (_, invoice) = h
            .get(&format!(
                "/v1/invoices/{}",
                renewed["result"]["invoice"].as_str().unwrap()
            ))
            .await;
        let line = line_of(&invoice, price);
        assert_eq!(line["quantity"], items);
        let expected = if price == tiered_id { 18 } else { 2 };
        assert_eq!(line["amount"], expected, "{price}: {line}");
        assert_eq!(invoice["amount_due"], expected);
        // The other subscription's usage (same customer and meter) was billed there already:
        // each renewal bills its own period since its own start.
    }
}
