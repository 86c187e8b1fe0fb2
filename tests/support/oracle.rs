//! The official SDK as the tests' oracle: runs python3 (with `stripe==16.1.0` from
//! tests/requirements.txt) and returns what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

/// `python3 <args…>` with `stdin` written to it; panics with Python's error if it fails.
pub fn python(args: &[&str], stdin: &str) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with the stripe package (pip install -r tests/requirements.txt)");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write to python3");
    }
    let output = child.wait_with_output().expect("python3 ran");
    assert!(
        output.status.success(),
        "stripe-python failed (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `stripe.WebhookSignature.generate_signature_header` from the official Python SDK: the
/// `Stripe-Signature` header Stripe would send for `payload`.
pub fn signature_header(payload: &str, secret: &str, timestamp: i64) -> String {
    let script = "import sys, stripe; print(stripe.WebhookSignature.generate_signature_header(sys.stdin.read(), sys.argv[1], timestamp=int(sys.argv[2])))";
    let output = python(&["-c", script, secret, &timestamp.to_string()], payload);
    String::from_utf8(output).expect("a header is text").trim().to_owned()
}
