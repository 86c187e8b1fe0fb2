//! The demo is a test too: the real `billing` binary walks the lifecycle against the simulator,
//! orderly and then with duplicated, shuffled delivery, and must exit 0.

use std::process::Command;

#[test]
fn the_demo_walks_the_whole_lifecycle_in_both_delivery_modes() {
    let output = Command::new(env!("CARGO_BIN_EXE_billing"))
        .arg("demo")
        .env_remove("STRIPE_SECRET_KEY")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run billing demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("period ends").count(), 2, "{stdout}");
    assert!(stdout.contains("renewal payment fails: grace, one email"), "{stdout}");
    assert!(stdout.contains("Both passes reached the same final state"), "{stdout}");
}
