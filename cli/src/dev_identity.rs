//! `billing dev`'s stand-in for API Gateway's JWT authorizer: the `X-Billing-User` header
//! becomes the verified `sub` claim in the request context, exactly where the authorizer puts
//! it in Lambda, and `X-Billing-Claims` (a JSON object) adds the token's other claims — an
//! organisation and a role, say: `{"org_id":"acme","org_role":"admin"}`. Values that are not
//! strings are passed as API Gateway's HTTP API passes them: an array as `[a b]`, anything
//! else as its JSON text. It lives here, in the CLI, so the billing API's Lambda binary has no
//! code that reads these headers at all: there, a request carrying only them is a 401.

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde_json::Value;

pub const HEADER: &str = "x-billing-user";
pub const CLAIMS_HEADER: &str = "x-billing-claims";

pub async fn from_header(mut request: Request, next: Next) -> Response {
    let user = request.headers_mut().remove(HEADER);
    let extra = request.headers_mut().remove(CLAIMS_HEADER);
    let Some(user) = user.as_ref().and_then(|value| value.to_str().ok()) else {
        return next.run(request).await;
    };
    let mut claims = HashMap::from([("sub".to_owned(), user.to_owned())]);
    if let Some(extra) = extra {
        match extra.to_str().ok().map(claims_of) {
            Some(Ok(more)) => claims.extend(more),
            _ => {
                let body = serde_json::json!({
                    "error": "invalid_dev_claims",
                    "message": "X-Billing-Claims must be a JSON object of claims, e.g. {\"org_id\":\"acme\",\"org_role\":\"admin\"}",
                });
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
        }
    }
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims;
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
    next.run(request).await
}

fn claims_of(text: &str) -> Result<HashMap<String, String>, serde_json::Error> {
    let object: serde_json::Map<String, Value> = serde_json::from_str(text)?;
    Ok(object
        .into_iter()
        .filter(|(name, _)| name != "sub")
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Array(items) => {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|item| match item {
                            Value::String(text) => text,
                            other => other.to_string(),
                        })
                        .collect();
                    format!("[{}]", items.join(" "))
                }
                other => other.to_string(),
            };
            (name, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// Answers the claims the request context carries, as the billing API would read them.
    async fn claims_seen(request: Request) -> axum::Json<Value> {
        let claims = match request.extensions().get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|jwt| serde_json::to_value(&jwt.claims).unwrap()),
            _ => None,
        };
        axum::Json(claims.unwrap_or(Value::Null))
    }

    async fn call(headers: &[(&str, &str)]) -> (u16, Value) {
        let app = Router::new()
            .route("/", get(claims_seen))
            .layer(axum::middleware::from_fn(from_header));
        let mut request = Request::builder().uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn org_claims_from_the_dev_header() {
        let (status, claims) = call(&[
            ("X-Billing-User", "ann"),
            (
                "X-Billing-Claims",
                r#"{"org_id":"acme","org_role":["member","admin"],"sub":"mallory","n":3}"#,
            ),
        ])
        .await;
        assert_eq!(status, 200);
        // The header's `sub` never replaces X-Billing-User's; lists arrive as API Gateway's
        // HTTP API passes them.
        assert_eq!(
            claims,
            serde_json::json!({"sub": "ann", "org_id": "acme", "org_role": "[member admin]", "n": "3"})
        );
        let (_, claims) = call(&[("X-Billing-User", "ann")]).await;
        assert_eq!(claims, serde_json::json!({"sub": "ann"}));
        // Claims without a user are no identity at all.
        let (_, claims) = call(&[("X-Billing-Claims", r#"{"org_id":"acme"}"#)]).await;
        assert_eq!(claims, Value::Null);
        let (status, error) = call(&[("X-Billing-User", "ann"), ("X-Billing-Claims", "org_id=acme")]).await;
        assert_eq!((status, error["error"].as_str()), (400, Some("invalid_dev_claims")));
    }
}
