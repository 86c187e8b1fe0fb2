//! What the over-HTTP simulator tests share: a webhook that records what it is sent.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

pub type Deliveries = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A webhook that records every delivery with its `Stripe-Signature` header.
pub async fn webhook() -> (String, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Deliveries>, headers: HeaderMap, body: Bytes| async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().unwrap().push((signature, body));
                    "{}"
                },
            ),
        )
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, deliveries)
}

pub fn form_body(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}
