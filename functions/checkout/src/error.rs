//! The API's one error type: each variant is a status and a stable JSON `error` code.
//! Internal causes are logged here and never returned to the caller.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::processing::ProcessError;
use shared::store::StoreError;
use shared::stripe::StripeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid caller identity")]
    Unauthorized,
    #[error("forbidden: {code}")]
    Forbidden { code: &'static str, message: String },
    #[error("bad request: {code}")]
    BadRequest { code: &'static str, message: String },
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {code}")]
    Conflict { code: &'static str, hint: &'static str },
    #[error("body too large")]
    PayloadTooLarge,
    #[error("rate limited ({class}); retry after {retry_after} s")]
    RateLimited { class: &'static str, retry_after: u64 },
    #[error("Stripe call failed")]
    Stripe(#[from] StripeError),
    #[error("store call failed")]
    Store(#[from] StoreError),
}

impl From<ProcessError> for ApiError {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::Stripe(error) => ApiError::Stripe(error),
            ProcessError::Store(error) => ApiError::Store(error),
            other => ApiError::Store(StoreError::Backend(other.to_string())),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"})),
            ApiError::Forbidden { code, message } => {
                (StatusCode::FORBIDDEN, json!({"error": code, "message": message}))
            }
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, json!({"error": code, "message": message}))
            }
            ApiError::NotFound(code) => (StatusCode::NOT_FOUND, json!({"error": code})),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"})),
            ApiError::Conflict { code, hint } => (StatusCode::CONFLICT, json!({"error": code, "hint": hint})),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "payload_too_large"})),
            ApiError::RateLimited { class, retry_after } => {
                let body = json!({"error": "rate_limited", "limit": class, "retry_after": retry_after});
                let retry_after = HeaderValue::from(*retry_after);
                return (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, retry_after)], Json(body)).into_response();
            }
            // Stripe refuses a reused Idempotency-Key with different parameters: the caller's
            // mistake, so a 409 rather than a provider failure.
            ApiError::Stripe(error) if error.api().is_some_and(|api| api.error_type == "idempotency_error") => (
                StatusCode::CONFLICT,
                json!({"error": "idempotency_key_reused", "hint": "this Idempotency-Key was used with a different request"}),
            ),
            ApiError::Stripe(error) => {
                let api = error.api();
                tracing::error!(error = %error, stripe_request_id = api.and_then(|a| a.request_id.as_deref()),
                    stripe_code = api.and_then(|a| a.code.as_deref()), "Stripe call failed");
                (
                    StatusCode::BAD_GATEWAY,
                    json!({"error": "payment_provider_unavailable"}),
                )
            }
            ApiError::Store(error) => {
                tracing::error!(error = %error, "store call failed");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal"}))
            }
        };
        (status, Json(body)).into_response()
    }
}
