//! What the daemons of a test binary log, for tests that assert what a user sees.
//!
//! One global subscriber per process, installed by the first test that asks: the
//! daemon's tasks run on tokio worker threads, out of reach of a thread-local
//! subscriber. It keeps two captures, INFO and above and WARN and above, so a test
//! reads only the level it asserts on. Tests run side by side in one binary, so each
//! looks for lines only its own scenario can produce.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub type Buffer = Arc<Mutex<Vec<u8>>>;

struct Captures {
    info: Buffer,
    warnings: Buffer,
}

fn captures() -> &'static Captures {
    static CAPTURES: OnceLock<Captures> = OnceLock::new();
    CAPTURES.get_or_init(|| {
        let captures = Captures {
            info: Buffer::default(),
            warnings: Buffer::default(),
        };
        let (info, warnings) = (captures.info.clone(), captures.warnings.clone());
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || Sink(info.clone()))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || Sink(warnings.clone()))
                    .with_filter(LevelFilter::WARN),
            )
            .try_init()
            .expect("no other global subscriber in this test binary: they all share this one");
        captures
    })
}

/// Everything logged at INFO and above from the first call on.
pub fn info() -> Buffer {
    captures().info.clone()
}

/// Everything logged at WARN and above from the first call on.
pub fn warnings() -> Buffer {
    captures().warnings.clone()
}

/// The text of a capture. A test that failed while holding the lock leaves the
/// bytes as they were, so the lock's poisoning is ignored.
pub fn text(buffer: &Buffer) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

struct Sink(Buffer);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
