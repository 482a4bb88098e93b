//! Watches config.yaml, the devices directory and its `alerts/` folder. The directories themselves are
//! watched, not the files, so editors' atomic saves (write a temp file, rename it
//! over the original), `cp`, `mv`, `rm` and `git checkout` are all seen. A burst of
//! events becomes one notification once the files have been quiet for `debounce`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::is_device_file;

#[derive(Debug)]
pub struct ConfigWatcher {
    // Kept alive for as long as we want events.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    debounce: Duration,
}

/// A steady stream of events (a log file written in config.d every second) must
/// not postpone a reload forever.
const MAX_DEBOUNCE_ROUNDS: u32 = 10;

impl ConfigWatcher {
    pub fn start(config_file: &Path, devices_dir: &Path, debounce: Duration) -> notify::Result<ConfigWatcher> {
        let config_file = absolute(config_file);
        let devices_dir = absolute(devices_dir);
        let config_dir = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let (tx, events) = mpsc::channel(16);
        let relevant_devices_dir = devices_dir.clone();
        let relevant_alerts_dir = crate::config::alerts::alerts_dir(&devices_dir);
        let relevant_config = config_file.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let relevant = event.paths.iter().any(|p| {
                let parent = p.parent();
                *p == relevant_config
                    // The alerts folder itself appearing or going: its rules do too.
                    || *p == relevant_alerts_dir
                    || ((parent == Some(relevant_devices_dir.as_path()) || parent == Some(relevant_alerts_dir.as_path()))
                        && is_device_file(p))
            });
            if relevant {
                // Full means a notification is already pending: nothing is lost.
                let _ = tx.try_send(());
            }
        })?;
        // Recursive, for the rule files in `alerts/` (a folder that may be created
        // later); events elsewhere below are filtered out above.
        watcher.watch(&devices_dir, RecursiveMode::Recursive)?;
        if config_dir != devices_dir {
            watcher.watch(&config_dir, RecursiveMode::NonRecursive)?;
        }
        Ok(ConfigWatcher {
            _watcher: watcher,
            events,
            debounce,
        })
    }

    /// Resolves once a burst of changes has settled.
    pub async fn changed(&mut self) -> Option<()> {
        self.events.recv().await?;
        for _ in 0..MAX_DEBOUNCE_ROUNDS {
            match tokio::time::timeout(self.debounce, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => break,
            }
        }
        Some(())
    }
}

/// Events carry absolute, canonical paths when the watched path is one.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}
