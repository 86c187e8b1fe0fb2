//! The webhook receiver: verify Stripe's signature over the raw bytes, route by event type,
//! enqueue the body unchanged, answer. No Stripe or DynamoDB call happens here, so Stripe gets
//! its 2xx within milliseconds and all real work is retried from the queue, not by Stripe.

pub mod apigw;

use std::borrow::Cow;

use base64::Engine;

use crate::config::Rotating;
use crate::queue::EventQueue;
use crate::routing::{self, Routed};
use crate::stripe::EventEnvelope;
use crate::stripe::signature::{SignatureError, SignatureVerifier};

/// SQS's message limit is 256 KiB for body and attributes together; 1 KiB is kept for the
/// attributes, so any body accepted here is one SQS accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024 - 1024;

/// An HTTP delivery reduced to what the receiver looks at.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub method: &'a str,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// The answer: a status and a small, fixed JSON body that reveals nothing about secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: &'static str,
}

impl Reply {
    pub const RECEIVED: Reply = Reply {
        status: 200,
        body: r#"{"received":true}"#,
    };
    pub const IGNORED: Reply = Reply {
        status: 200,
        body: r#"{"received":true,"ignored":true}"#,
    };
    pub const METHOD_NOT_ALLOWED: Reply = Reply {
        status: 405,
        body: r#"{"error":"method_not_allowed"}"#,
    };
    pub const TOO_LARGE: Reply = Reply {
        status: 413,
        body: r#"{"error":"payload_too_large"}"#,
    };
    pub const INVALID_ENCODING: Reply = Reply {
        status: 400,
        body: r#"{"error":"invalid_body_encoding"}"#,
    };
    pub const INVALID_SIGNATURE: Reply = Reply {
        status: 400,
        body: r#"{"error":"invalid_signature"}"#,
    };
    pub const INVALID_PAYLOAD: Reply = Reply {
        status: 400,
        body: r#"{"error":"invalid_payload"}"#,
    };
    pub const NOT_CONFIGURED: Reply = Reply {
        status: 500,
        body: r#"{"error":"not_configured"}"#,
    };
    pub const ENQUEUE_FAILED: Reply = Reply {
        status: 500,
        body: r#"{"error":"temporarily_unavailable"}"#,
    };
}

/// Decodes an API Gateway body: text as is, `isBase64Encoded` bodies decoded (an invalid one
/// is the caller's error, never a panic).
pub fn decode_body(body: Option<&str>, is_base64: bool) -> Result<Cow<'_, [u8]>, Reply> {
    let body = body.unwrap_or_default();
    if !is_base64 {
        return Ok(Cow::Borrowed(body.as_bytes()));
    }
    // Checked before decoding so an oversized body costs no allocation.
    if body.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
        return Err(Reply::TOO_LARGE);
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map(Cow::Owned)
        .map_err(|_| Reply::INVALID_ENCODING)
}

pub struct WebhookReceiver<Q> {
    /// Built from the signing secret(s), rebuilt when the secret changes in Secrets Manager.
    verifier: Rotating<SignatureVerifier>,
    queue: Q,
}

impl<Q: EventQueue> WebhookReceiver<Q> {
    /// A receiver whose secrets come from `verifier` (a fixed one converts).
    pub fn new(verifier: impl Into<Rotating<SignatureVerifier>>, queue: Q) -> Self {
        Self {
            verifier: verifier.into(),
            queue,
        }
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    #[tracing::instrument(name = "webhook", skip_all)]
    pub async fn receive(&self, delivery: Delivery<'_>, now_unix: i64) -> Reply {
        if !delivery.method.eq_ignore_ascii_case("POST") {
            return Reply::METHOD_NOT_ALLOWED;
        }
        if delivery.body.len() > MAX_BODY_BYTES {
            tracing::warn!(bytes = delivery.body.len(), "webhook body over the limit");
            return Reply::TOO_LARGE;
        }
        let verifier = self.verifier.current().await;
        let mut verdict = verifier.verify(delivery.signature, delivery.body, now_unix);
        if matches!(verdict, Err(SignatureError::NoMatch | SignatureError::NotConfigured)) {
            // No secret we hold signed it: the endpoint's secret may have been rolled a moment
            // ago. Read the secret again (at most ten times per refresh window) and retry.
            if let Some(fresh) = self.verifier.reread_if_changed(&verifier).await {
                verdict = fresh.verify(delivery.signature, delivery.body, now_unix);
            }
        }
        match verdict {
            Ok(()) => {}
            Err(SignatureError::NotConfigured) => {
                tracing::error!(
                    "no webhook signing secret configured: refusing every delivery (put STRIPE_WEBHOOK_SECRET in the secret STRIPE_WEBHOOK_SECRET_ARN names)"
                );
                return Reply::NOT_CONFIGURED;
            }
            Err(reason) => {
                tracing::warn!(%reason, "webhook signature rejected");
                return Reply::INVALID_SIGNATURE;
            }
        }
        let Ok(body) = std::str::from_utf8(delivery.body) else {
            return Reply::INVALID_PAYLOAD;
        };
        let envelope = match EventEnvelope::parse(delivery.body) {
            Ok(envelope) => envelope,
            Err(reason) => {
                tracing::warn!(%reason, "signed payload is not a Stripe event");
                return Reply::INVALID_PAYLOAD;
            }
        };
        match routing::enqueue(&self.queue, &envelope, body).await {
            Ok(Routed::Enqueued) => Reply::RECEIVED,
            Ok(Routed::Ignored) => Reply::IGNORED,
            Err(_) => Reply::ENQUEUE_FAILED,
        }
    }
}
