//! EventBridge envelopes (as the rule invokes the receiver) on arbitrary text: never a panic,
//! and an envelope from another account or source is never enqueued.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shared::config::EventBridgeSettings;
use shared::eventbridge::{EventBridgeReceiver, Verdict};
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
        // Raw values: an accepted envelope may hold numbers no f64 holds (the receiver keeps
        // the event's text as is), which a `Value` would refuse.
        let envelope: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(payload).expect("an enqueued envelope is a JSON object");
        let field = |name: &str| envelope.get(name).map(|raw| raw.get().to_owned());
        assert_eq!(field("account").as_deref(), Some(format!("\"{ACCOUNT}\"").as_str()), "enqueued from another account");
        assert_eq!(
            field("source").as_deref(),
            Some(format!("\"{SOURCE}\"").as_str()),
            "enqueued from another source"
        );
    }
});
