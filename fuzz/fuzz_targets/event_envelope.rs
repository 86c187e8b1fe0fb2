//! The event parsers (snapshot and thin shapes) on arbitrary bytes: never a panic, and what
//! the receivers accept and enqueue the processors can read — otherwise an accepted event
//! would be dropped as "not an event" after Stripe was told it arrived. (The receiver may
//! refuse more, e.g. an object with duplicate keys, which Stripe never sends: a refusal makes
//! Stripe retry, so it loses nothing.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::stripe::{Event, EventEnvelope};

fuzz_target!(|data: &[u8]| {
    if EventEnvelope::parse(data).is_ok() {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Err(reason) = Event::parse(text) {
                panic!("the receiver accepted an event the processor cannot read: {reason}");
            }
        }
    }
});
