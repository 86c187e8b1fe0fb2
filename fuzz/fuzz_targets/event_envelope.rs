//! The event parsers (snapshot and thin shapes) on arbitrary bytes: never a panic, and the
//! webhook's envelope and the processor's event agree on what is an event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::stripe::{Event, EventEnvelope};

fuzz_target!(|data: &[u8]| {
    let envelope = EventEnvelope::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let event = Event::parse(text);
        if event.is_ok() {
            assert!(envelope.is_ok(), "the processor read an event the receiver refuses");
        }
    }
});
