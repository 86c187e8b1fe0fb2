//! `billing dev`'s stand-in for API Gateway's JWT authorizer: the `X-Billing-User` header
//! becomes the verified `sub` claim in the request context, exactly where the authorizer puts
//! it in Lambda. It lives here, in the CLI, so the billing API's Lambda binary has no code
//! that reads the header at all: there, a request carrying only the header is a 401.

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::request::RequestContext;

pub const HEADER: &str = "x-billing-user";

pub async fn from_header(mut request: Request, next: Next) -> Response {
    if let Some(user) = request.headers_mut().remove(HEADER) {
        if let Ok(user) = user.to_str() {
            let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
            jwt.claims.insert("sub".into(), user.to_owned());
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            authorizer.jwt = Some(jwt);
            let mut context = ApiGatewayV2httpRequestContext::default();
            context.authorizer = Some(authorizer);
            request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
        }
    }
    next.run(request).await
}
