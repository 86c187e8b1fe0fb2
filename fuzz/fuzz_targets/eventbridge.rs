//! EventBridge envelopes (as the rule invokes the receiver) on arbitrary text: never a panic,
//! and an envelope from another account or source is never enqueued.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shared::config::EventBridgeSettings;
use shared::eventbridge::{Envelope, EventBridgeReceiver, Verdict};
use shared::queue::MemoryQueue;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

const ACCOUNT: &str = "123456789012";
const SOURCE: &str = "aws.partner/stripe.com/ed_fuzz";

fuzz_target!(|payload: &str| {
    let settings = EventBridgeSettings {
        account: ACCOUNT.into(),
        source: Some(SOURCE.into()),
    };
    let receiver = EventBridgeReceiver::new(settings, MemoryQueue::new());
    let verdict = RUNTIME.block_on(receiver.receive(payload));
    if let Ok(Verdict::Enqueued) = verdict {
        // Read as the receiver reads it (strings unescaped, the event left as text).
        let envelope: Envelope<'_> = serde_json::from_str(payload).expect("an enqueued envelope parses");
        assert_eq!(envelope.account, ACCOUNT, "enqueued from another account");
        assert_eq!(envelope.source, SOURCE, "enqueued from another source");
    }
});
