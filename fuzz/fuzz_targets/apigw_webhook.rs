//! API Gateway v2 events into the webhook receiver (base64 bodies, any headers, any method):
//! never a panic, never a 2xx without a valid signature, and nothing enqueued on a refusal.
#![no_main]

use std::num::NonZeroU64;
use std::sync::LazyLock;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use shared::queue::{MemoryQueue, QueueName};
use shared::stripe::SignatureVerifier;
use shared::webhook::{WebhookReceiver, apigw, decode_body};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<ApiGatewayV2httpRequest>(data) else {
        return;
    };
    let _ = decode_body(event.body.as_deref(), event.is_base64_encoded);
    let verifier = SignatureVerifier::new(
        &[SecretString::from("whsec_fuzz")],
        NonZeroU64::new(300).expect("300 is not zero"),
    );
    let receiver = WebhookReceiver::new(verifier, MemoryQueue::new());
    let response = RUNTIME.block_on(apigw::handle(&receiver, &event, 1_763_900_000));
    // Without a signature made with the secret, nothing is accepted and nothing enqueued.
    assert!(response.status_code >= 400, "an unsigned delivery was accepted");
    let queued: usize = QueueName::ALL.iter().map(|queue| receiver.queue().depth(*queue)).sum();
    assert_eq!(queued, 0, "a refused delivery enqueued something");
});
