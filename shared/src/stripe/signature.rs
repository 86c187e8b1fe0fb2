//! Verification of the `Stripe-Signature` header, as Stripe signs deliveries:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=...][,v0=...]`.
//!
//! Every configured secret is tried against every `v1` entry, because during a rotation Stripe
//! signs with both the old and the new secret and the endpoint may hold either or both.

use std::num::NonZeroU64;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's own default tolerance: five minutes either side of the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Bounds the work an attacker can ask for with a header stuffed with entries.
const MAX_V1_SIGNATURES: usize = 8;
const SHA256_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no webhook signing secret is configured")]
    NotConfigured,
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed")]
    MalformedHeader,
    #[error("the Stripe-Signature header carries no v1 signature")]
    NoV1Signature,
    #[error("the signature timestamp is outside the tolerance window")]
    TimestampOutOfTolerance,
    #[error("no v1 signature matches any configured secret")]
    NoMatch,
}

/// Verifies deliveries against one or more secrets. The keyed HMAC state is built once per
/// secret at start, so a verification costs one HMAC over the body per secret, no key setup.
#[derive(Clone)]
pub struct SignatureVerifier {
    keyed: Vec<HmacSha256>,
    tolerance_secs: NonZeroU64,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("secrets", &self.keyed.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

/// A parsed header: the literal timestamp (signed as sent) and the decoded `v1` signatures.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    pub timestamp_text: &'a str,
    pub timestamp: i64,
    pub v1: Vec<[u8; SHA256_LEN]>,
}

impl SignatureVerifier {
    pub fn new(secrets: &[SecretString], tolerance_secs: NonZeroU64) -> Self {
        let keyed = secrets
            .iter()
            .filter(|secret| !secret.expose_secret().is_empty())
            .filter_map(|secret| HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).ok())
            .collect();
        Self { keyed, tolerance_secs }
    }

    pub fn is_configured(&self) -> bool {
        !self.keyed.is_empty()
    }

    /// Checks `header` against the raw `body` bytes at the receiver's time `now_unix`.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_unix: i64) -> Result<(), SignatureError> {
        if self.keyed.is_empty() {
            return Err(SignatureError::NotConfigured);
        }
        let header = parse_header(header.ok_or(SignatureError::MissingHeader)?)?;
        let skew = (i128::from(now_unix) - i128::from(header.timestamp)).unsigned_abs();
        if skew > u128::from(self.tolerance_secs.get()) {
            return Err(SignatureError::TimestampOutOfTolerance);
        }
        for keyed in &self.keyed {
            let mut mac = keyed.clone();
            mac.update(header.timestamp_text.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            // Every candidate is compared, in constant time, so timing reveals neither which
            // entry nor how many bytes matched.
            let matched = header.v1.iter().fold(subtle::Choice::from(0), |acc, candidate| {
                acc | expected.as_slice().ct_eq(candidate)
            });
            if bool::from(matched) {
                return Ok(());
            }
        }
        Err(SignatureError::NoMatch)
    }
}

/// Parses `t=...,v1=...` entries. Unknown schemes (including Stripe's dummy `v0`) are ignored;
/// a `v1` value that is not 64 hex digits can never match and is skipped like Stripe's SDKs do.
pub fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let mut timestamp: Option<(&str, i64)> = None;
    let mut v1 = Vec::new();
    for entry in header.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (scheme, value) = entry.split_once('=').ok_or(SignatureError::MalformedHeader)?;
        match scheme {
            "t" => {
                if timestamp.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::MalformedHeader);
                }
                let parsed = value.parse::<i64>().map_err(|_| SignatureError::MalformedHeader)?;
                timestamp = Some((value, parsed));
            }
            "v1" => {
                let mut decoded = [0u8; SHA256_LEN];
                if v1.len() < MAX_V1_SIGNATURES && hex::decode_to_slice(value, &mut decoded).is_ok() {
                    v1.push(decoded);
                }
            }
            _ => {}
        }
    }
    let (timestamp_text, timestamp) = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        v1,
    })
}

/// Builds a header the way Stripe does; for tests, the local simulator and the benchmarks.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(signature_bytes(secret, timestamp, body))
    )
}

fn signature_bytes(secret: &str, timestamp: i64, body: &[u8]) -> [u8; SHA256_LEN] {
    // An HMAC accepts a key of any length, so building it cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_BODY: &str = r#"{"id":"evt_test_1","object":"event","type":"invoice.payment_failed","data":{"object":{"id":"in_1","object":"invoice"}}}"#;
    const VECTOR_SIG: &str = "53e7527ec21ab7237646d2634f9eb0e0255cb678939e8c3dbbec5cf2a639f66f";
    const NOW: i64 = 1_700_000_000;

    fn verifier(secrets: &[&str]) -> SignatureVerifier {
        let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(s.to_string())).collect();
        SignatureVerifier::new(&secrets, NonZeroU64::new(DEFAULT_TOLERANCE_SECS).unwrap())
    }

    #[test]
    fn official_test_vector_matches() {
        assert_eq!(
            sign("whsec_test_secret", NOW, VECTOR_BODY.as_bytes()),
            format!("t={NOW},v1={VECTOR_SIG}")
        );
        let header = format!("t={NOW},v1={VECTOR_SIG}");
        assert_eq!(
            verifier(&["whsec_test_secret"]).verify(Some(&header), VECTOR_BODY.as_bytes(), NOW),
            Ok(())
        );
    }

    #[test]
    fn any_v1_against_any_secret_is_accepted() {
        let good = hex::encode(signature_bytes("whsec_b", NOW, b"{}"));
        let bad = "00".repeat(32);
        let v = verifier(&["whsec_a", "whsec_b"]);
        for header in [
            format!("t={NOW},v1={good},v1={bad},v1={bad}"),
            format!("t={NOW},v1={bad},v1={bad},v1={good}"),
            format!("v0={bad},v1={good},t={NOW},scheme9=x"),
        ] {
            assert_eq!(v.verify(Some(&header), b"{}", NOW), Ok(()), "{header}");
        }
    }

    #[test]
    fn v0_only_is_rejected() {
        let sig = hex::encode(signature_bytes("whsec_a", NOW, b"{}"));
        let header = format!("t={NOW},v0={sig}");
        assert_eq!(
            verifier(&["whsec_a"]).verify(Some(&header), b"{}", NOW),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn tolerance_applies_in_both_directions() {
        let v = verifier(&["whsec_a"]);
        for (offset, expected) in [
            (-301, Err(SignatureError::TimestampOutOfTolerance)),
            (301, Err(SignatureError::TimestampOutOfTolerance)),
            (-299, Ok(())),
            (299, Ok(())),
            (300, Ok(())),
        ] {
            let header = sign("whsec_a", NOW + offset, b"{}");
            assert_eq!(v.verify(Some(&header), b"{}", NOW), expected, "offset {offset}");
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let sig = hex::encode(signature_bytes("whsec_a", NOW, b"{}"));
        let v = verifier(&["whsec_a"]);
        for header in [
            String::new(),
            ",,,".to_string(),
            format!("v1={sig}"),
            format!("t=abc,v1={sig}"),
            format!("t=-5,v1={sig}"),
            format!("t=99999999999999999999999,v1={sig}"),
            format!("t={NOW},t={NOW},v1={sig}"),
            format!("t={NOW};v1={sig}"),
            "garbage".to_string(),
        ] {
            assert!(v.verify(Some(&header), b"{}", NOW).is_err(), "{header:?} accepted");
        }
        assert_eq!(v.verify(None, b"{}", NOW), Err(SignatureError::MissingHeader));
    }

    #[test]
    fn no_secret_fails_closed() {
        let header = sign("whsec_a", NOW, b"{}");
        assert_eq!(
            verifier(&[]).verify(Some(&header), b"{}", NOW),
            Err(SignatureError::NotConfigured)
        );
        assert_eq!(
            verifier(&[""]).verify(Some(&header), b"{}", NOW),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn tampered_body_is_rejected() {
        let header = sign("whsec_a", NOW, VECTOR_BODY.as_bytes());
        let mut tampered = VECTOR_BODY.as_bytes().to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verifier(&["whsec_a"]).verify(Some(&header), &tampered, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_and_bodies_never_panic(header in ".{0,300}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), now in proptest::num::i64::ANY) {
            let _ = verifier(&["whsec_a", "whsec_b"]).verify(Some(&header), &body, now);
        }

        #[test]
        fn structured_headers_never_panic(t in proptest::num::i64::ANY, sigs in proptest::collection::vec("[0-9a-fA-F]{0,70}", 0..12), noise in "[a-z0-9=,]{0,40}") {
            let mut header = format!("t={t}");
            for sig in &sigs { header.push_str(&format!(",v1={sig}")); }
            header.push_str(&noise);
            let _ = verifier(&["whsec_a"]).verify(Some(&header), b"{}", t);
        }
    }
}
