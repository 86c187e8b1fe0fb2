//! The Stripe-Signature header parser and verifier on arbitrary headers and bodies: never a
//! panic, and a header made correctly for the fuzzed body always verifies while the fuzzed
//! header verifies only if it carries that same signature.
#![no_main]

use std::num::NonZeroU64;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use shared::stripe::signature::{SignatureVerifier, parse_header, sign};

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_763_900_000;

fuzz_target!(|input: (&str, &[u8])| {
    let (header, body) = input;
    let _ = parse_header(header);
    let verifier = SignatureVerifier::new(
        &[SecretString::from(SECRET)],
        NonZeroU64::new(300).expect("300 is not zero"),
    );
    let _ = verifier.verify(Some(header), body, NOW);
    let good = sign(SECRET, NOW, body);
    assert!(
        verifier.verify(Some(&good), body, NOW).is_ok(),
        "a correct header was refused"
    );
    if verifier.verify(Some(header), body, NOW).is_ok() {
        let expected = good.rsplit("v1=").next().unwrap_or_default();
        assert!(
            header.contains(expected),
            "a header without the right signature verified"
        );
    }
});
