//! The cleaner at work in a device's task: cleans each poll's readings before the
//! router hands them to the backends (so every backend sees the same decision),
//! logs what it decided and keeps the epochs file up to date.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::energy::cleaner::{Cleaned, DeviceCounters};
use crate::energy::counters::{CounterSettings, Reason};
use crate::energy::epochs::{EpochStore, SharedEpochs};
use crate::reading::{DeviceId, Reading};

/// How often the last accepted readings are saved (and always on shutdown and at a
/// new epoch): often enough to notice a swap across a restart, seldom enough to
/// spare an SD card.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// What one poll's cleaning counted, for the device's status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub glitches: u64,
    pub epochs: u64,
}

#[derive(Debug)]
pub struct CounterIngest {
    device: DeviceId,
    settings: CounterSettings,
    counters: DeviceCounters,
    /// None when the epochs file cannot be opened: cleaning goes on in memory.
    store: Option<SharedEpochs>,
    /// The epochs file's `data_version` this device last read its offsets at: a
    /// new one means `mesura epochs` changed something.
    seen_version: Option<i64>,
    saved_at: Instant,
    dirty: bool,
}

impl CounterIngest {
    /// Opens the epochs file every device shares (once, at the daemon's start):
    /// `None` when counters are not cleaned or it cannot be opened.
    pub fn open_store(data_dir: &Path, settings: &CounterSettings) -> Option<SharedEpochs> {
        if !settings.enabled {
            return None;
        }
        match EpochStore::open_in(data_dir) {
            Ok(store) => Some(std::sync::Arc::new(std::sync::Mutex::new(store))),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the epochs file: counters are cleaned in memory only, offsets will not survive a restart");
                None
            }
        }
    }

    /// Restores the device's epochs from the shared epochs file.
    pub fn open(device: DeviceId, store: Option<SharedEpochs>, settings: CounterSettings) -> CounterIngest {
        let store = store.filter(|_| settings.enabled);
        let (restored, seen_version) = match store.as_ref() {
            Some(store) => {
                let store = lock(store);
                (Some(store.restore(&device)), store.data_version().ok())
            }
            None => (None, None),
        };
        let counters = match restored {
            Some(Ok((identity, counters))) => DeviceCounters::restore(identity, counters),
            Some(Err(e)) => {
                tracing::error!(device = %device, error = %e, "cannot read the epochs file: counters start afresh");
                DeviceCounters::default()
            }
            None => DeviceCounters::default(),
        };
        CounterIngest {
            device,
            settings,
            counters,
            store,
            seen_version,
            saved_at: Instant::now(),
            dirty: false,
        }
    }

    /// Cleans one poll's readings: returns what to publish and what was counted.
    pub fn apply(&mut self, readings: Vec<Reading>, identity: Option<&str>) -> (Vec<Reading>, Counted) {
        if !self.settings.enabled {
            return (readings, Counted::default());
        }
        self.follow_user_epochs();
        let previous_identity = self.counters.identity().map(str::to_owned);
        let Cleaned {
            readings,
            glitches,
            epochs,
        } = self.counters.clean(readings, identity, &self.settings);
        let mut counted = Counted::default();
        for g in &glitches {
            counted.glitches += 1;
            tracing::warn!(device = %self.device, metric = %g.metric, value = %g.value, at = %g.timestamp, "counter glitch: a reading off the counter's track, followed by one back on it; stored raw as sent, left out of the lifetime series");
        }
        for (metric, epoch) in &epochs {
            if epoch.reason != Reason::First {
                counted.epochs += 1;
                tracing::warn!(
                    device = %self.device, metric = %metric, reason = epoch.reason.as_str(),
                    offset = epoch.offset, start = %epoch.start,
                    old_identity = previous_identity.as_deref().unwrap_or(""), new_identity = identity.unwrap_or(""),
                    "counter epoch started: the raw value is stored as sent, {metric}_lifetime carries on"
                );
            }
            if let Some(store) = &self.store {
                if let Err(e) = lock(store).start_epoch(&self.device, metric, epoch, identity) {
                    tracing::error!(device = %self.device, error = %e, "cannot record the new epoch: its offset will not survive a restart");
                }
            }
        }
        self.dirty |= !readings.is_empty();
        if !epochs.is_empty() || self.saved_at.elapsed() >= SAVE_EVERY {
            self.save();
        }
        (readings, counted)
    }

    /// Saves the last accepted readings (done at most every minute, and at the end).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(store) = &self.store else { return };
        if let Err(e) = lock(store).save_last(&self.device, self.counters.identity(), self.counters.state()) {
            tracing::warn!(device = %self.device, error = %e, "cannot save the counters' last readings");
        }
        self.saved_at = Instant::now();
        self.dirty = false;
    }

    /// Takes the offsets a user set with `mesura epochs add|undo` since the last poll.
    fn follow_user_epochs(&mut self) {
        let Some(store) = &self.store else { return };
        let store = lock(store);
        match store.data_version() {
            Ok(now) if Some(now) == self.seen_version => return,
            Ok(now) => self.seen_version = Some(now),
            Err(e) => {
                tracing::debug!(device = %self.device, error = %e, "cannot check the epochs file");
                return;
            }
        }
        let offsets = match store.offsets(&self.device) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(device = %self.device, error = %e, "cannot read the epochs file");
                return;
            }
        };
        let current: std::collections::HashMap<String, f64> = self
            .counters
            .state()
            .map(|(m, offset, _)| (m.to_string(), offset))
            .collect();
        for (metric, offset) in offsets {
            if current.get(&metric).is_some_and(|o| (o - offset).abs() > f64::EPSILON) {
                tracing::info!(device = %self.device, metric = %metric, offset, "counter offset changed in the epochs file: applied from the next reading");
                self.counters.set_offset(&metric, offset);
            }
        }
    }
}

impl Drop for CounterIngest {
    fn drop(&mut self) {
        self.save();
    }
}

/// The shared store; a task that panicked holding it left it consistent (each
/// write is one SQLite statement or transaction).
fn lock(store: &SharedEpochs) -> std::sync::MutexGuard<'_, EpochStore> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}
