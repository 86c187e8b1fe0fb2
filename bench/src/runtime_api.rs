//! A local Lambda Runtime API (the HTTP interface `lambda_runtime` polls) that hands a
//! function binary a fixed list of events and times what it does with them, the way the
//! Lambda service would see it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

use crate::proc;

#[derive(Default)]
struct Progress {
    pid: Option<u32>,
    cpu: proc::CpuMeter,
    events: VecDeque<Vec<u8>>,
    issued: u64,
    started: HashMap<String, Instant>,
    first_next: Option<Instant>,
    cpu_at_init: Option<Duration>,
    cpu_after_first: Option<Duration>,
    cpu_at_end: Option<Duration>,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    progress: Arc<Mutex<Progress>>,
    finished: Arc<Notify>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Progress) -> T) -> T {
        f(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Debug, Clone)]
pub struct Measurement {
    pub init: Duration,
    pub first: Duration,
    pub warm: Vec<Duration>,
    pub cpu_init: Duration,
    pub cpu_per_warm: Duration,
    pub peak_rss_kib: u64,
}

/// Runs `binary` as Lambda would (`AWS_LAMBDA_RUNTIME_API` pointing here) until it has
/// answered every event, then stops it.
pub async fn measure(binary: &Path, env: &[(String, String)], events: Vec<Vec<u8>>) -> Result<Measurement, String> {
    let count = events.len();
    let shared = Shared {
        progress: Arc::new(Mutex::new(Progress {
            events: events.into(),
            ..Progress::default()
        })),
        finished: Arc::new(Notify::new()),
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The function's log goes to a file (Lambda pipes it to CloudWatch): its cost stays in
    // the figures, and a failure can show why.
    let log_path = std::env::temp_dir().join(format!("bench-{}.log", addr.port()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let spawned_at = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let pid = child.id().ok_or("the function exited at once")?;
    shared.with(|p| p.pid = Some(pid));

    let mut peak_rss_kib = 0;
    let finished = shared.finished.notified();
    tokio::pin!(finished);
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut finished => break,
            _ = &mut deadline => return Err("timed out after 300 s".into()),
            status = child.wait() => return Err(format!("the function exited early ({status:?}); errors: {:?}", shared.with(|p| p.errors.clone()))),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {
                peak_rss_kib = peak_rss_kib.max(proc::peak_rss_kib(pid).unwrap_or(0));
            }
        }
    }
    peak_rss_kib = peak_rss_kib.max(proc::peak_rss_kib(pid).unwrap_or(0));
    let _ = child.kill().await;
    server.abort();

    let failures = shared.with(|p| p.errors.len());
    let log_tail = match failures {
        0 => String::new(),
        _ => std::fs::read_to_string(&log_path)
            .map(|log| log.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&log_path);
    shared.with(|p| {
        if let Some(error) = p.errors.first() {
            return Err(format!(
                "{} of {count} invocations failed; first: {error}\nlog (last lines):\n{log_tail}",
                p.errors.len()
            ));
        }
        let (Some(first_next), Some(cpu_init), Some(cpu_after_first), Some(cpu_at_end)) =
            (p.first_next, p.cpu_at_init, p.cpu_after_first, p.cpu_at_end)
        else {
            return Err("the function did not complete a single invocation".into());
        };
        let warm = p.latencies.get(1..).unwrap_or_default().to_vec();
        Ok(Measurement {
            init: first_next - spawned_at,
            first: p.latencies.first().copied().unwrap_or_default(),
            cpu_per_warm: (cpu_at_end.saturating_sub(cpu_after_first)) / u32::try_from(warm.len().max(1)).unwrap_or(1),
            warm,
            cpu_init,
            peak_rss_kib,
        })
    })
}

async fn next(State(shared): State<Shared>) -> Response {
    let arrived = Instant::now();
    // A fast function can poll before `measure` has recorded its pid. It is blocked on this
    // poll, so its CPU time does not move while the pid is awaited.
    while shared.with(|p| p.pid.is_none()) {
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    let issued = shared.with(|p| {
        if p.first_next.is_none() {
            p.first_next = Some(arrived);
            p.cpu_at_init = p.pid.and_then(|pid| p.cpu.read(pid));
        }
        match p.events.pop_front() {
            Some(event) => {
                p.issued += 1;
                let id = format!("bench-{}", p.issued);
                p.started.insert(id.clone(), Instant::now());
                Some((id, event))
            }
            None => {
                p.cpu_at_end = p.pid.and_then(|pid| p.cpu.read(pid));
                None
            }
        }
    });
    let Some((id, event)) = issued else {
        // Every event is answered: hold the poll, as Lambda freezes an idle function.
        shared.finished.notify_one();
        return std::future::pending().await;
    };
    let mut headers = HeaderMap::new();
    let deadline = shared::unix_now().saturating_add(60) * 1000;
    for (name, value) in [
        ("lambda-runtime-aws-request-id", id),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".into(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    (StatusCode::OK, headers, event).into_response()
}

fn finish(shared: &Shared, id: &str, failure: Option<String>) {
    shared.with(|p| {
        if let Some(started) = p.started.remove(id) {
            p.latencies.push(started.elapsed());
        }
        if p.latencies.len() == 1 {
            p.cpu_after_first = p.pid.and_then(|pid| p.cpu.read(pid));
        }
        p.errors.extend(failure);
    });
}

async fn response(State(shared): State<Shared>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    // An SQS consumer reporting failed items, or an HTTP answer other than 2xx, is a response
    // but not the work being measured.
    let text = String::from_utf8_lossy(&body);
    let not_2xx = text.contains("\"statusCode\":") && !text.contains("\"statusCode\":2");
    let failed = text.contains("\"itemIdentifier\"") || not_2xx;
    finish(&shared, &id, failed.then(|| text.chars().take(300).collect()));
    StatusCode::ACCEPTED
}

async fn error(State(shared): State<Shared>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    finish(
        &shared,
        &id,
        Some(String::from_utf8_lossy(&body).chars().take(300).collect()),
    );
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    shared.with(|p| p.errors.push(format!("init: {}", String::from_utf8_lossy(&body))));
    shared.finished.notify_one();
    StatusCode::ACCEPTED
}
