//! `billing`: operations against a deployment, and the system on a laptop.
//!
//! - `billing backfill | drift | redrive | replay | inspect` act on a deployment (AWS, or
//!   moto through `AWS_ENDPOINT_URL`) with the same configuration as the Lambdas.
//! - `billing demo` starts everything in-process on free 127.0.0.1 ports and walks a whole
//!   subscription lifecycle through the public HTTP API, then again with duplicated and
//!   shuffled webhook delivery; exits 0 only if every step saw the expected state.
//! - `billing dev` serves the billing API and the webhook on 127.0.0.1 (default port 3000)
//!   with the events and payment-failed processors running in-process.
//! - `billing event-types` prints the event types to enable on the Stripe webhook endpoint.
//! - `billing setup` wires Stripe to a deployed stack (webhook endpoint or event destination,
//!   signing secret); `billing doctor` checks the live wiring.

mod demo;
mod dev_identity;
mod local;
mod ops;
mod wiring;

use clap::{Parser, Subcommand, ValueEnum};
use shared::queue::QueueName;

use ops::{Deployment, Output, Since, Subject};

#[derive(Parser)]
#[command(
    name = "billing",
    version,
    about = "Stripe billing backend: operations, local run and demo"
)]
struct Cli {
    /// Print reports as JSON (operations commands).
    #[arg(long, global = true)]
    json: bool,
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
        /// How the simulator delivers events: to the webhook, to the EventBridge receiver, or both.
        #[arg(long, value_enum, default_value = "webhook")]
        delivery: local::DeliveryMode,
        /// Which event shape it delivers: snapshot (the object inside) or thin (a reference).
        #[arg(long, value_enum, default_value = "snapshot")]
        payload: local::PayloadMode,
    },
    /// Enqueue every Stripe event since a time that the ledger has not completed.
    Backfill {
        /// 2026-11-01, 2026-11-01T08:00:00Z, Unix seconds, or a span back from now: 90m, 36h, 7d.
        #[arg(long, value_parser = Since::parse)]
        since: Since,
    },
    /// Compare a random sample of stored subscriptions with Stripe and repair the drifted ones.
    Drift {
        #[arg(long, default_value_t = 100)]
        sample: usize,
    },
    /// Move dead-lettered messages back to their source queue.
    Redrive {
        #[arg(long, value_enum)]
        queue: QueueArg,
        /// Only count what would move.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = ops::Method::Auto)]
        method: ops::Method,
    },
    /// Fetch one event from Stripe and enqueue it.
    Replay {
        /// The Stripe event id (evt_...).
        event_id: String,
    },
    /// Print what is stored for an account or a customer, and its access now.
    Inspect {
        #[command(subcommand)]
        subject: InspectArg,
    },
    /// Wire Stripe to the deployed stack: the webhook endpoint (or event destination) and its
    /// signing secret. Idempotent; --dry-run shows the plan.
    Setup {
        #[command(flatten)]
        target: TargetArgs,
        /// Webhook endpoint, or Amazon EventBridge event destination.
        #[arg(long, value_enum, default_value = "webhook")]
        delivery: wiring::Delivery,
        /// The event destination's payload (eventbridge only).
        #[arg(long, value_enum, default_value = "snapshot")]
        payload: wiring::Payload,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the live wiring: endpoint, events, API version, secret, key mode, queues, alarms,
    /// reconcile cursor, last processed event. Exits 1 when a check fails.
    Doctor {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Usage reports: send some, or reconcile an account's counter with Stripe's meter.
    Usage {
        #[command(subcommand)]
        action: UsageArg,
    },
}

#[derive(Subcommand)]
enum UsageArg {
    /// Queue usage reports (`USAGE_QUEUE_URL`), or send them to a local `billing dev`.
    Report {
        /// The billable account.
        #[arg(long, required_unless_present = "file")]
        account: Option<String>,
        /// The catalog's meter key.
        #[arg(long, required_unless_present = "file")]
        meter: Option<String>,
        #[arg(long, default_value_t = 1.0)]
        value: f64,
        /// Unique per unit of use: a repeat counts once.
        #[arg(long, required_unless_present = "file")]
        identifier: Option<String>,
        /// Unix seconds (default: when it is queued).
        #[arg(long)]
        timestamp: Option<i64>,
        /// Reports as JSON lines, one per line, instead.
        #[arg(long, conflicts_with_all = ["account", "meter", "identifier", "timestamp"])]
        file: Option<std::path::PathBuf>,
        /// A local `billing dev`'s URL (e.g. http://127.0.0.1:3000) instead of the queue.
        #[arg(long)]
        dev: Option<url::Url>,
    },
    /// Compares an account's counter with Stripe's meter event summary for the period.
    Reconcile {
        #[arg(long)]
        account: String,
        #[arg(long)]
        meter: String,
        /// A time inside the period to check (Unix seconds; default now).
        #[arg(long)]
        at: Option<i64>,
    },
}

#[derive(clap::Args)]
struct TargetArgs {
    /// The CloudFormation stack (default: stack_name in ./samconfig.toml).
    #[arg(long)]
    stack: Option<String>,
    /// Read the stack's outputs from this JSON file instead of CloudFormation.
    #[arg(long)]
    outputs: Option<std::path::PathBuf>,
}

impl From<TargetArgs> for wiring::Target {
    fn from(args: TargetArgs) -> Self {
        wiring::Target {
            stack: args.stack,
            outputs: args.outputs,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum QueueArg {
    Events,
    PaymentFailed,
}

#[derive(Subcommand)]
enum InspectArg {
    /// By the billing account: the JWT `sub`, or the claim `BILLING_ACCOUNT_CLAIM` names.
    #[command(alias = "user")]
    Account { id: String },
    /// By the Stripe customer id (cus_...).
    Customer { id: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Local settings for `dev` and the operations commands; real environment variables win.
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    shared::telemetry::init_with_default(if matches!(cli.command, Command::Demo) {
        tracing::level_filters::LevelFilter::WARN
    } else {
        tracing::level_filters::LevelFilter::INFO
    });
    if let Err(error) = dotenv.as_ref()
        && !error.not_found()
    {
        eprintln!("warning: .env was not read: {error}");
    }
    let output = Output { json: cli.json };
    let outcome = match cli.command {
        Command::Demo => local::launch(0, demo::Demo).await.map_err(Into::into),
        Command::Dev {
            port,
            delivery,
            payload,
        } => local::launch(port, local::Dev { delivery, payload })
            .await
            .map_err(Into::into),
        Command::EventTypes => {
            shared::routing::handled_event_types().for_each(|event_type| println!("{event_type}"));
            Ok(())
        }
        Command::Setup {
            target,
            delivery,
            payload,
            dry_run,
        } => match wiring::Wiring::load(&target.into()).await {
            Ok(wired) => wiring::setup(&wired, delivery, payload, dry_run, output)
                .await
                .map_err(Into::into),
            Err(error) => Err(error.into()),
        },
        Command::Doctor { target } => match wiring::Wiring::load(&target.into()).await {
            Ok(wired) => wiring::doctor(&wired, output).await.map_err(Into::into),
            Err(error) => Err(error.into()),
        },
        Command::Usage {
            action:
                UsageArg::Report {
                    account,
                    meter,
                    value,
                    identifier,
                    timestamp,
                    file,
                    dev,
                },
        } => {
            let reports = match file {
                Some(path) => read_reports(&path),
                None => Ok(vec![shared::usage::UsageEvent {
                    account: account.unwrap_or_default(),
                    meter: meter.unwrap_or_default(),
                    value,
                    identifier,
                    timestamp,
                }]),
            };
            let to = dev.map_or(ops::Destination::Queue, ops::Destination::Dev);
            match reports {
                Ok(reports) => ops::usage_report(reports, to, output).await.map_err(Into::into),
                Err(error) => Err(error),
            }
        }
        operation => operate(operation, output).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain(&*error));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn operate(command: Command, output: Output) -> Result<(), Box<dyn std::error::Error>> {
    let deployment = Deployment::load().await?;
    match command {
        Command::Backfill { since } => ops::backfill(&deployment, since, output).await?,
        Command::Drift { sample } => ops::drift(&deployment, sample, output).await?,
        Command::Redrive { queue, dry_run, method } => {
            let queue = match queue {
                QueueArg::Events => QueueName::Events,
                QueueArg::PaymentFailed => QueueName::PaymentFailed,
            };
            ops::redrive(&deployment, queue, method, dry_run, output).await?
        }
        Command::Replay { event_id } => ops::replay(&deployment, &event_id, output).await?,
        Command::Inspect { subject } => {
            let subject = match subject {
                InspectArg::Account { id } => Subject::Account(id),
                InspectArg::Customer { id } => Subject::Customer(id),
            };
            ops::inspect(&deployment, subject, output).await?
        }
        Command::Usage {
            action: UsageArg::Reconcile { account, meter, at },
        } => ops::usage_reconcile(&deployment, &account, &meter, at, output).await?,
        Command::Demo
        | Command::Dev { .. }
        | Command::EventTypes
        | Command::Setup { .. }
        | Command::Doctor { .. }
        | Command::Usage {
            action: UsageArg::Report { .. },
        } => {}
    }
    Ok(())
}

/// Usage reports from a JSON-lines file (blank lines skipped); the first bad line is named.
fn read_reports(path: &std::path::Path) -> Result<Vec<shared::usage::UsageEvent>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(at, line)| {
            serde_json::from_str(line).map_err(|error| format!("{}:{}: {error}", path.display(), at + 1).into())
        })
        .collect()
}

/// An error with its causes: "the Stripe call failed: ... : connection refused".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
