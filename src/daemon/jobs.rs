//! The daemon's background jobs beside the devices and backends: the disk guard
//! and the downsampler of the SQLite file (both in `backends/sqlite/`), and the
//! status API's server; started and stopped by `app.rs` at start, reload and
//! shutdown.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::BaseConfig;
use crate::daemon::live::SharedStatus;
use crate::host::clock::SharedClock;

/// Starts the disk guard for the SQLite database of `base`, if it is enabled.
pub(super) fn start_guard(
    base: &BaseConfig,
    clock: &SharedClock,
    status: &SharedStatus,
) -> Option<(CancellationToken, JoinHandle<()>)> {
    let running = base.disk_guard.enabled && base.backends.sqlite.is_some();
    status
        .disk_guard
        .set_max_percent(running.then_some(base.disk_guard.max_disk_used_percent));
    let sqlite = base.backends.sqlite.as_ref()?;
    if !base.disk_guard.enabled {
        return None;
    }
    let token = CancellationToken::new();
    let task = tokio::spawn(crate::backends::sqlite::guard::run(
        base.data_dir.join(&sqlite.path),
        base.disk_guard.clone(),
        clock.clone(),
        status.disk_guard.clone(),
        token.clone(),
    ));
    Some((token, task))
}

/// Starts retention and downsampling for the SQLite database of `base`, if enabled.
pub(super) fn start_downsampler(base: &BaseConfig, clock: &SharedClock) -> Option<(CancellationToken, JoinHandle<()>)> {
    let sqlite = base.backends.sqlite.as_ref()?;
    if !base.retention.enabled {
        return None;
    }
    let token = CancellationToken::new();
    let task = tokio::spawn(crate::backends::sqlite::downsample::run(
        base.data_dir.join(&sqlite.path),
        base.retention.clone(),
        clock.clone(),
        token.clone(),
    ));
    Some((token, task))
}

/// Stops a status API server. Its graceful shutdown waits for open connections;
/// a client that keeps one open must not hold up a reload.
pub(super) async fn stop_api(api: Option<(std::net::SocketAddr, CancellationToken, JoinHandle<()>)>) {
    if let Some((_, stop, mut task)) = api {
        stop.cancel();
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

pub(super) async fn stop_guard(guard: Option<(CancellationToken, JoinHandle<()>)>) {
    if let Some((token, task)) = guard {
        token.cancel();
        let _ = task.await;
    }
}
