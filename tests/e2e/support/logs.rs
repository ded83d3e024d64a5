//! Log capture for the end-to-end tests.
//!
//! Every test runs the binaries' code in this one process, so one global
//! subscriber serves them all. It writes into a bounded in-memory buffer at
//! debug level for Attaché's own crates, so a test can search a full run's
//! logs for secrets. With `RUST_LOG` set, logs go to stderr instead, for
//! debugging.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The most log bytes kept; later lines are dropped.
const MAX_CAPTURED: usize = 256 * 1024 * 1024;

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the subscriber once; returns whether logs are captured.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            attache_telemetry::init_logging(attache_config::LogFormat::Text);
            return false;
        }
        let filter = EnvFilter::new(
            "warn,attache_producer=debug,attache_fetch_worker=debug,attache_callback_worker=debug,\
             attache_egress=debug,attache_aws=debug,attache_queue=debug,attache_store=debug",
        );
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(Captured)
            .with_ansi(false)
            .try_init()
            .is_ok()
    })
}

/// Returns everything captured so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap()).into_owned()
}

struct Captured;

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut captured = CAPTURED.lock().unwrap();
        if captured.len() + bytes.len() <= MAX_CAPTURED {
            captured.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        Captured
    }
}
