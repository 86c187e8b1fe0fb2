//! `billing`: the system on a laptop.
//!
//! - `billing demo` starts everything in-process on free 127.0.0.1 ports and walks a whole
//!   subscription lifecycle through the public HTTP API, then again with duplicated and
//!   shuffled webhook delivery; exits 0 only if every step saw the expected state.
//! - `billing dev` serves the billing API and the webhook on 127.0.0.1 (default port 3000)
//!   with the events and payment-failed processors running in-process.
//! - `billing event-types` prints the event types to enable on the Stripe webhook endpoint.

mod demo;
mod local;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "billing", version, about = "Stripe billing backend: local run and demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk the whole lifecycle against the offline Stripe simulator (no AWS, no Stripe, no network).
    Demo,
    /// Print the event types to enable on the Stripe webhook endpoint (from the routing table).
    EventTypes,
    /// Serve the API and webhook locally with in-process processors.
    Dev {
        /// Port on 127.0.0.1.
        #[arg(long, env = "PORT", default_value_t = 3000)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    shared::telemetry::init_with_default(if matches!(cli.command, Command::Demo) {
        "warn"
    } else {
        "info"
    });
    let outcome = match cli.command {
        Command::Demo => demo::run().await,
        Command::Dev { port } => local::serve(port).await,
        Command::EventTypes => {
            shared::routing::handled_event_types().for_each(|event_type| println!("{event_type}"));
            Ok(())
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
