//! Stripe's form encoding of arbitrary JSON parameters: never a panic, and what it writes
//! parses back (with a standard form parser) into exactly the scalar leaves it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::stripe::form::encode;

fn leaves(value: &Value, out: &mut usize) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
        Value::Object(map) => map.values().for_each(|item| leaves(item, out)),
        _ => *out += 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let encoded = encode(&params);
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(encoded.as_bytes()).into_owned().collect();
    let mut expected = 0;
    if let Value::Object(map) = &params {
        map.values().for_each(|value| leaves(value, &mut expected));
    }
    assert_eq!(pairs.len(), expected, "every scalar is one pair, nothing else");
});
