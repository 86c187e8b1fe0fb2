//! Runs the real `billing` binary the way an operator does: configured only through the
//! environment, here pointed at moto.

use billing_tests::{aws, unique};

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A clean environment (none of the developer's AWS profile or Stripe keys) in an empty
/// directory (no `.env`), with moto's endpoint and static credentials.
pub async fn run(args: &[&str], env: &[(&'static str, String)]) -> Run {
    run_in(&std::env::temp_dir().join(unique("billing-cli-")), args, env).await
}

/// Like [`run`], in `dir` (which may hold a `.env`).
pub async fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&'static str, String)]) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_billing"))
        .args(args)
        .env_clear()
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", aws::endpoint().await)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("run billing");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
