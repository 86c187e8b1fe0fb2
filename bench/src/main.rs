//! `cargo run --release -p bench -- coldstart`: builds the release function binaries and the
//! floor, runs each under a local Lambda Runtime API (`runtime_api`) against moto and a Stripe
//! stand-in on 127.0.0.1, and prints one table row per function.

mod functions;
mod keepalive;
mod proc;
mod runtime_api;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use runtime_api::Measurement;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Cold start, latency, CPU and memory of each function binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The load + chaos run: signed events for many customers, duplicated and shuffled, into
    /// the local webhook, with faults injected into every dependency; exits 1 on any mismatch.
    Chaos {
        #[arg(long, default_value_t = 500)]
        customers: usize,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Share of events delivered twice.
        #[arg(long, default_value_t = 0.1)]
        duplicates: f64,
        /// Share of calls to each dependency that fail.
        #[arg(long, default_value_t = 0.01)]
        faults: f64,
        /// SQS's maxReceiveCount.
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        time_limit: u64,
        /// Deliver each event as a snapshot or its thin twin, each copy by webhook or EventBridge.
        #[arg(long)]
        mixed: bool,
    },
    /// The usage processor: reports per second, Stripe requests per 1,000, DynamoDB writes.
    Usage {
        #[arg(long, default_value_t = 100_000)]
        reports: usize,
        #[arg(long, default_value_t = 50)]
        accounts: usize,
    },
    Coldstart {
        /// Invocations per cold start.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Cold starts per function; the table shows the median start.
        #[arg(long, default_value_t = 5)]
        starts: usize,
        /// Only these functions (default: all, and the floor).
        #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(functions::ALL))]
        only: Vec<String>,
        /// Use the release binaries already in target/release.
        #[arg(long)]
        no_build: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let (n, starts, only, no_build) = match Cli::parse().command {
        Command::Coldstart {
            n,
            starts,
            only,
            no_build,
        } => (n, starts, only, no_build),
        Command::Chaos {
            customers,
            events,
            duplicates,
            faults,
            max_receives,
            time_limit,
            mixed,
        } => {
            let config = billing_tests::chaos::ChaosConfig {
                customers,
                events,
                duplicate_rate: duplicates,
                fault_rate: faults,
                max_receives,
                time_limit: Duration::from_secs(time_limit),
                arrival: match mixed {
                    true => billing_tests::chaos::Arrival::Mixed,
                    false => billing_tests::chaos::Arrival::Webhook,
                },
            };
            return chaos(&config).await;
        }
        Command::Usage { reports, accounts } => {
            println!(
                "{reports} reports of {accounts} accounts (half a sum meter, half a count meter), SQS batches of 100, processed one batch at a time (one task)\n"
            );
            println!(
                "| adapters | reports | reports/s | Stripe requests per 1,000 | DynamoDB item writes per report | DynamoDB requests per report |"
            );
            println!("|---|---|---|---|---|---|");
            for f in usage::run(reports, accounts).await {
                println!(
                    "| {} | {} | {:.0} | {:.1} | {:.3} | {:.3} |",
                    f.label,
                    f.reports,
                    f.per_second,
                    f.stripe_per_thousand,
                    f.item_writes_per_report,
                    f.requests_per_report
                );
            }
            return ExitCode::SUCCESS;
        }
    };
    let names: Vec<&str> = functions::ALL
        .into_iter()
        .filter(|name| only.is_empty() || only.iter().any(|o| o == name))
        .collect();
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    if !no_build && let Err(error) = build(&names) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let stripe = functions::stripe().await;
    let aws_endpoint = match keepalive::start(billing_tests::aws::endpoint().await).await {
        Ok(url) => url,
        Err(error) => {
            eprintln!("error: the keep-alive proxy in front of moto: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{n} invocations per cold start, median of {starts} starts; {} CPUs; moto (behind a keep-alive proxy) and the Stripe stand-in on 127.0.0.1\n",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "| function | binary | init | first invocation | warm p50 | warm p99 | CPU init | CPU per warm invocation | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in names {
        let binary = release.join(name);
        let mut runs = Vec::new();
        for _ in 0..starts.max(1) {
            let setup = functions::setup(name, n.max(2), &stripe, &aws_endpoint).await;
            match runtime_api::measure(&binary, &setup.env, setup.events).await {
                Ok(measurement) => runs.push(measurement),
                Err(error) => {
                    eprintln!("error: {name}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let size = std::fs::metadata(&binary).map_or(0, |m| m.len());
        println!("{}", row(name, size, &mut runs));
    }
    ExitCode::SUCCESS
}

async fn chaos(config: &billing_tests::chaos::ChaosConfig) -> ExitCode {
    println!(
        "{} customers, ~{} events, {:.0}% duplicates, {:.1}% faults per dependency call, maxReceiveCount {}; all on 127.0.0.1",
        config.customers,
        config.events,
        config.duplicate_rate * 100.0,
        config.fault_rate * 100.0,
        config.max_receives
    );
    match billing_tests::chaos::run(config).await {
        Ok(report) => {
            println!("{}", report.summary());
            for example in &report.examples {
                println!("  mismatch: {example}");
            }
            if report.mismatches() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn build(names: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--release"]);
    for name in names {
        command.args(["-p", name]);
    }
    let status = command.status().map_err(|e| format!("cargo build: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("cargo build --release failed ({status})"))
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// The run with the median init time stands for the function; its warm figures are its own.
fn row(name: &str, size: u64, runs: &mut [Measurement]) -> String {
    runs.sort_by_key(|m| m.init);
    let Some(median) = runs.get(runs.len() / 2) else {
        return format!("| {name} | no run |");
    };
    let mut warm = median.warm.clone();
    warm.sort();
    format!(
        "| {name} | {:.1} MiB | {} | {} | {} | {} | {} | {} | {:.1} MiB |",
        size as f64 / 1_048_576.0,
        ms(median.init),
        ms(median.first),
        ms(percentile(&warm, 0.5)),
        ms(percentile(&warm, 0.99)),
        ms(median.cpu_init),
        ms(median.cpu_per_warm),
        median.peak_rss_kib as f64 / 1024.0,
    )
}
