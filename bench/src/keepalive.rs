//! moto answers every request with `Connection: close`, so a function talking to it directly
//! pays a TCP connect on every AWS call, which a real AWS endpoint (HTTP/1.1 keep-alive) does
//! not charge. The functions reach moto through this keep-alive proxy instead: the reconnects
//! happen here, outside the measured process.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Larger than any request or answer the functions exchange with moto.
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
}

/// Starts the proxy on 127.0.0.1 in front of `upstream`; returns its URL.
pub async fn start(upstream: &str) -> Result<String, String> {
    let state = Upstream {
        base: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::new(),
    };
    let app = Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Hop-by-hop headers belong to one connection and are not forwarded.
fn end_to_end(name: &HeaderName) -> bool {
    ![
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outbound = upstream.http.request(parts.method, format!("{}{path}", upstream.base));
    for (name, value) in parts.headers.iter().filter(|(name, _)| end_to_end(name)) {
        outbound = outbound.header(name, value);
    }
    let answer = match outbound.body(body).send().await {
        Ok(answer) => answer,
        Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers().iter().filter(|(name, _)| end_to_end(name)) {
        response = response.header(name, value);
    }
    let body = answer.bytes().await.unwrap_or_default();
    response
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
