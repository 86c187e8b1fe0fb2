//! A Stripe stand-in over real HTTP (wiremock): tests mount responses built from Stripe's
//! official fixtures, and every request the client sent can be checked against the spec.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use shared::stripe::{RetryPolicy, StripeClient};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use stripe_simulator::spec::Spec;

pub struct StripeStandIn {
    pub server: MockServer,
}

impl StripeStandIn {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    /// A client with the production code path and short waits, so retries are quick.
    pub fn client(&self) -> StripeClient {
        self.client_with(RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            deadline: Duration::from_secs(10),
        })
    }

    pub fn client_with(&self, retry: RetryPolicy) -> StripeClient {
        let base = url::Url::parse(&self.server.uri()).expect("stand-in URL");
        let http = StripeClient::http_client().expect("http client");
        StripeClient::new(http, base, SecretString::from("sk_test_standin".to_string()), retry)
    }

    /// `GET /v1/subscriptions` and `GET /v1/checkout/sessions` answer empty lists: a new
    /// customer with nothing bought and no session open, as the checkout route reads first.
    pub async fn serve_empty_lists(&self) {
        for list in ["/v1/subscriptions", "/v1/checkout/sessions"] {
            Mock::given(method("GET"))
                .and(path(list))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"object": "list", "url": list, "has_more": false, "data": []})),
                )
                .mount(&self.server)
                .await;
        }
    }

    pub async fn requests(&self) -> Vec<wiremock::Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// Fails the test if any request sent so far is one Stripe would reject.
    pub async fn assert_requests_valid(&self) {
        let spec = Spec::load();
        let requests = self.requests().await;
        assert!(!requests.is_empty(), "no request reached the stand-in");
        for request in requests {
            let result = spec.validate(
                request.method.as_str(),
                request.url.path(),
                request.url.query(),
                &request.body,
            );
            assert_eq!(
                result,
                Ok(()),
                "{} {} would be rejected by Stripe",
                request.method,
                request.url
            );
        }
    }
}
