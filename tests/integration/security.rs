//! Checks on the code itself, for properties no behavioural test can see: a `==` on signature
//! bytes verifies correctly yet leaks, through timing, how many leading bytes matched.
//!
//! The scan reads lines: a comparison that rustfmt splits over lines, or one hidden in a call
//! such as `contains(&expected)`, escapes it. It guards the verifier's one `ct_eq` fold against
//! the easy regression; review guards against the rest.

use std::path::{Path, PathBuf};

const SIGNATURE_WORDS: [&str; 7] = ["expected", "candidate", "mac", "v1", "signature", "digest", "finalize"];

/// Lines of production code that compare something signature-like with `==`, `!=` or `.eq(`.
fn variable_time_comparisons(source: &str) -> Vec<String> {
    let production = source.split("#[cfg(test)]").next().unwrap_or_default();
    production
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .filter(|code| code.contains("==") || code.contains("!=") || code.contains(".eq("))
        .filter(|code| SIGNATURE_WORDS.iter().any(|word| code.contains(word)))
        .map(|code| code.trim().to_owned())
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_scanner_catches_a_variable_time_signature_comparison() {
    for regression in [
        "if expected.as_slice() == candidate { return Ok(()) }",
        "header.v1.iter().any(|c| c == &expected)",
        "hex::encode(mac.finalize().into_bytes()) == signature",
        "if digest.eq(&given) {",
    ] {
        assert_eq!(variable_time_comparisons(regression).len(), 1, "{regression}");
    }
}

#[test]
fn signature_bytes_are_compared_in_constant_time_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let verifier = std::fs::read_to_string(root.join("shared/src/stripe/signature.rs")).unwrap();
    assert!(
        verifier.contains(".ct_eq("),
        "the verifier compares with subtle's constant-time ct_eq"
    );
    let mut files = Vec::new();
    rust_files(&root.join("shared/src"), &mut files);
    rust_files(&root.join("functions"), &mut files);
    // The files that compute or handle signatures; elsewhere `expected` is, say, a cursor.
    let scanned: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|file| {
            let source = std::fs::read_to_string(&file).ok()?;
            (source.contains("Hmac") || source.contains("signature")).then_some((file, source))
        })
        .collect();
    for must in ["signature.rs", "webhook/mod.rs", "webhook/apigw.rs"] {
        assert!(
            scanned.iter().any(|(file, _)| file.ends_with(must)),
            "{must} is scanned"
        );
    }
    let offending: Vec<String> = scanned
        .iter()
        .flat_map(|(file, source)| {
            variable_time_comparisons(source)
                .into_iter()
                .map(move |line| format!("{}: {line}", file.display()))
        })
        .collect();
    assert!(offending.is_empty(), "variable-time comparisons: {offending:#?}");
}
