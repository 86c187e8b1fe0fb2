//! The least a Rust Lambda can be: the runtime client and an echo. The cold-start harness runs
//! it beside the real functions, built with the same profile, so their figures read as a cost
//! over this floor rather than as absolute numbers from one machine. It runs on the same
//! current-thread scheduler as the functions, so the difference is the functions' own work.

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, lambda_runtime::Error>(event.payload)
    }))
    .await
}
