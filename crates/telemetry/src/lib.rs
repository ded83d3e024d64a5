//! Logging and the admin server every Attaché binary runs.
//!
//! The admin server listens on its own address, apart from the producer's
//! API, and serves three endpoints:
//!
//! - `/healthz` returns 200 while the process serves HTTP.
//! - `/readyz` returns 200 while every [`Readiness`] check is set, and 503
//!   with the failing names otherwise. Each binary registers a `database`
//!   check, which [`keep_checking`] refreshes every few seconds, and a
//!   `broker` check, set while its RabbitMQ consumer or publisher is attached.
//! - `/metrics` encodes the process-wide Prometheus registry, where each
//!   crate registers its metrics.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use attache_config::LogFormat;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Directives added to the default filter for libraries whose info logs
/// repeat Attaché's own or carry nothing to act on. Refinery logs every
/// migration it applies, which `attache_store` also logs. tokio-postgres
/// logs each server NOTICE, such as the one for refinery's
/// `CREATE TABLE IF NOT EXISTS` at every start.
const QUIET_LIBRARIES: &str = "refinery_core=warn,tokio_postgres=warn";

/// Installs the global log subscriber. Filters come from `RUST_LOG`, with
/// `info` as the default. Logs go to stderr, keeping stdout for command
/// output. Calls after the first do nothing, so tests may call it again.
pub fn init_logging(format: LogFormat) {
    init_logging_with_default(format, "info");
}

/// Installs the global log subscriber like [`init_logging`], with
/// `default_filter` when `RUST_LOG` is unset; tests use `warn`.
pub fn init_logging_with_default(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| quieted(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal, so files and log
        // collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Builds the filter `directives`, with [`QUIET_LIBRARIES`] added.
fn quieted(directives: &str) -> EnvFilter {
    EnvFilter::new(format!("{directives},{QUIET_LIBRARIES}"))
}

/// One named readiness flag.
type Check = (&'static str, Arc<AtomicBool>);

/// Named readiness flags. The process is ready when every flag is set.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<std::sync::Mutex<Vec<Check>>>,
}

impl Readiness {
    /// Registers a check named `name`, initially failing, and returns its flag.
    pub fn check(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks
            .lock()
            .expect("the readiness lock is never held across a panic")
            .push((name, flag.clone()));
        flag
    }

    /// Returns the names of failing checks.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .lock()
            .expect("the readiness lock is never held across a panic")
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Runs `check` every `interval` until `shutdown` fires and stores whether
/// it passed in `flag`, so readiness follows a dependency that comes and
/// goes, such as the database.
pub async fn keep_checking<F, Fut, E>(
    flag: Arc<AtomicBool>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        let passed = match check().await {
            Ok(()) => true,
            Err(error) => {
                if flag.load(Ordering::Relaxed) {
                    tracing::warn!(%error, "readiness check failed");
                }
                false
            }
        };
        flag.store(passed, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Creates the readiness checks every binary has: `database`, refreshed by
/// `ping` every five seconds until `shutdown`, and `broker`, whose flag is
/// returned for the consumer or publisher to set.
pub fn database_and_broker_readiness<F, Fut, E>(
    shutdown: &CancellationToken,
    ping: F,
) -> (Readiness, Arc<AtomicBool>)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + 'static,
{
    let readiness = Readiness::default();
    let database_ready = readiness.check("database");
    database_ready.store(true, Ordering::Relaxed);
    tokio::spawn(keep_checking(
        database_ready,
        std::time::Duration::from_secs(5),
        shutdown.clone(),
        ping,
    ));
    let broker_ready = readiness.check("broker");
    (readiness, broker_ready)
}

/// Binds a listener on `addr`, naming the address and the setting that
/// chose it (`setting`) in the error, so an address in use is easy to fix.
pub async fn bind_listener(
    addr: std::net::SocketAddr,
    setting: &str,
) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {addr} ({setting}): {error}: choose a free address"),
        )
    })
}

/// Serves the admin endpoints on `listener` until `shutdown` fires.
pub async fn serve_admin(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "admin server failed");
    }
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let failing = readiness.failing();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": failing.is_empty(), "failing": failing })),
    )
}

async fn metrics() -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut body) {
        tracing::error!(%error, "failed to encode metrics");
        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        body,
    )
        .into_response()
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds in a Unix process");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer that keeps every line in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn default_filter_hides_library_info() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(quieted("info"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "refinery_core::traits::r#async", "applying migration: V1__tasks");
            tracing::warn!(target: "refinery_core::traits::r#async", "migration failed");
            tracing::info!(target: "attache_store", version = 1, "applied migration");
            tracing::info!(target: "tokio_postgres::connection", "NOTICE: relation exists");
        });

        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(
            !logged.contains("applying migration: V1__tasks"),
            "{logged}"
        );
        assert!(logged.contains("migration failed"), "{logged}");
        assert!(logged.contains("applied migration"), "{logged}");
        assert!(!logged.contains("NOTICE"), "{logged}");
    }
}
