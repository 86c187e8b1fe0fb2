//! API Gateway HTTP API (payload v2) ↔ [`WebhookReceiver`]. The raw event is handled here
//! rather than through `lambda_http`, whose body decoding panics on invalid base64.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};

use super::{Delivery, Reply, WebhookReceiver, decode_body};
use crate::queue::EventQueue;

pub async fn handle<Q: EventQueue>(
    receiver: &WebhookReceiver<Q>,
    request: &ApiGatewayV2httpRequest,
    now_unix: i64,
) -> ApiGatewayV2httpResponse {
    let reply = match decode_body(request.body.as_deref(), request.is_base64_encoded) {
        Ok(body) => {
            let delivery = Delivery {
                method: request.request_context.http.method.as_str(),
                signature: request
                    .headers
                    .get("stripe-signature")
                    .and_then(|value| value.to_str().ok()),
                body: &body,
            };
            receiver.receive(delivery, now_unix).await
        }
        Err(reply) => reply,
    };
    // The dashboard's webhook answers by class (API Gateway's own metrics mix in the billing API).
    let class = match reply.status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    crate::telemetry::count_by("WebhookAnswers", "Status", class);
    response(reply)
}

pub fn response(reply: Reply) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(reply.status);
    response.headers = headers;
    response.body = Some(Body::Text(reply.body.to_owned()));
    response
}
